"""A teaching walkthrough: backprop to the image, one layer at a time.

1. Build a tiny CNN (conv - ReLU - max-pool - conv - ReLU - max-pool - fc - ReLU - fc).
2. Run one forward pass on a random image and print every layer's output shape.
3. Keep every layer's output (``model(x, keep=...)``), backprop once from
   dS_c/dS = one-hot(c), and walk back layer by layer reading the gradient that
   reached each layer (``outs[layer].grad``): its shape and norm, and at each
   ReLU how many entries the rule let through (backprop, then deconvnet and guided).
4. Run conv1 through the fast kernels (im2col + GEMM) and through te.naive's
   loop over output positions: the same numbers, forward and backward.
5. Check the input gradient dS_c/dx against central finite differences
   (te.gradcheck, float64).

    tinygrad-explain walkthrough [--rule backprop|deconvnet|guided] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import tinygrad_explain as te
from tinygrad_explain.core import nn


def tiny_network(seed=0, dtype=np.float32):
    te.manual_seed(seed)
    layers = [("conv1", nn.Conv2d(3, 4, 3, 1, 1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2, 2)),
              ("conv2", nn.Conv2d(4, 6, 3, 1, 1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2, 2)),
              ("flatten", nn.Flatten()), ("fc1", nn.Linear(6 * 2 * 2, 8)), ("relu3", nn.ReLU()),
              ("fc2", nn.Linear(8, 3))]
    return te.Network(layers, (3, 8, 8), class_names=["circle", "square", "triangle"]).astype(dtype)


def walk(model, x, target, rule, verbose=True):
    """One forward pass that keeps every layer's output (``model(x, keep=...)``: each
    kept output retains its gradient), one backward pass from dS_c/dS = one-hot(c),
    then the gradient that reached each layer read off layer by layer.
    Returns dS_target/dx."""
    names = model.layer_names
    xt = te.Tensor(x, requires_grad=True)
    outs = model(xt, keep=names)
    if verbose:
        print(f"\nforward pass: input {tuple(x.shape)}")
        for name, layer in model.layers.items():
            print(f"  {name:<8} {type(layer).__name__:<18} -> {tuple(outs[name].shape)}")
    scores = outs.output
    if verbose:
        print(f"scores S = {np.array2string(scores.numpy()[0], precision=3)}; target c = {target} "
              f"({model.class_names[target]})")
        print(f"\nbackward pass ({rule}): start with dS_c/dS = one-hot(c)")
    onehot = np.zeros(scores.shape, scores.dtype)
    onehot[0, target] = 1
    with te.relu_backward(rule):
        scores.backward(onehot)
    # the input of layer k is the output of layer k - 1 (the image for k = 0)
    inputs = [xt] + [outs[n] for n in names[:-1]]
    for k in range(len(names) - 1, -1, -1):
        name, layer = names[k], model.layers[names[k]]
        g_out = outs[name].grad if k < len(names) - 1 else onehot
        g_in = inputs[k].grad
        if verbose:
            note = ""
            if isinstance(layer, nn.ReLU):
                xin = inputs[k].data
                passed = int((g_in != 0).sum())
                rule_txt = {"backprop": "dx = dy*[x>0]", "deconvnet": "dx = dy*[dy>0]",
                            "guided": "dx = dy*[x>0]*[dy>0]"}[rule]
                note = (f"  ReLU rule {rule_txt}: {passed}/{g_out.size} entries passed "
                        f"(x>0: {int((xin > 0).sum())}, dy>0: {int((g_out > 0).sum())})")
            print(f"  d S_c / d(input of {name:<7}) shape {str(tuple(g_in.shape)):<14} "
                  f"norm {np.linalg.norm(g_in):9.5f}{note}")
    return xt.grad


def fast_vs_naive(model, x):
    """conv1 through the fast path (im2col + GEMM, kernels/) and through the naive
    loops of te.naive (one output position at a time): the same numbers."""
    conv = model.layers["conv1"]
    w, b = conv.weight.data, conv.bias.data
    xt = te.Tensor(x, requires_grad=True)
    y = te.conv2d(xt, te.Tensor(w), te.Tensor(b), conv.stride, conv.padding, conv.groups)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    y_naive = te.naive.conv2d_forward(x, w, b, conv.stride, conv.padding, conv.groups)
    dx_naive = te.naive.conv2d_backward(g, x, w, conv.stride, conv.padding, conv.groups)[0]
    print("\nthe fast conv1 (im2col + GEMM) against te.naive's loop over output positions:")
    print(f"  forward  max |fast - naive| = {np.abs(y.numpy() - y_naive).max():.2e}")
    print(f"  backward max |fast - naive| = {np.abs(xt.grad - dx_naive).max():.2e} (dS/dx for a random dS/dy)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="tinygrad-explain walkthrough", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule", choices=te.RELU_RULES, default="backprop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    model = tiny_network(args.seed, np.float64)
    print(model)
    x = np.random.default_rng(args.seed).standard_normal((1,) + model.input_shape)
    with te.no_grad():
        target = int(model(x).data[0].argmax())
    g = walk(model, x, target, args.rule)

    # the same gradient in one call, through the public API
    api = te.explain.gradient(model, x, target, rule=args.rule)
    print(f"\nte.explain.gradient gives the same: max |difference| = {np.abs(api - g).max():.2e}")
    for other in te.RELU_RULES:
        if other != args.rule:
            print(f"\n--- the same walk under the {other} rule (summary) ---")
            go = walk(model, x, target, other, verbose=False)
            print(f"input-gradient norm {np.linalg.norm(go):.5f} (vs {np.linalg.norm(g):.5f} for {args.rule}); "
                  f"cosine with {args.rule}: "
                  f"{float((go * g).sum() / (np.linalg.norm(go) * np.linalg.norm(g) + 1e-30)):.3f}")

    fast_vs_naive(model, x)

    print("\nfinite-difference check of dS_c/dx (te.gradcheck, float64, every input element):")
    ok = te.gradcheck(lambda t: model(t)[:, target], [x], eps=1e-6, atol=1e-7, rtol=1e-5)
    print("  passed" if ok else "  FAILED")
    def score():
        with te.no_grad():
            return float(model(x).data[0, target])
    num = np.zeros_like(x)
    for i, v in te.central_differences(score, x, eps=1e-6).items():
        num.reshape(-1)[i] = v
    bp = te.explain.gradient(model, x, target)
    print(f"  max |analytic - numeric| = {np.abs(bp - num).max():.2e} (max |gradient| {np.abs(num).max():.3f})")
    if args.rule != "backprop":
        print(f"  ({args.rule} is not a gradient: it differs from the numeric derivative by "
              f"{np.abs(g - num).max():.2e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
