#!/usr/bin/env python
"""Compare this engine with PyTorch (and Captum) on both AlexNet variants.

Random weights are copied into an independent PyTorch model
(``tinygrad_explain.testing.torch_reference``); for a batch of random inputs it
prints the largest error relative to the largest magnitude of
    the class scores,
    the input gradient dS_c/dx (PyTorch autograd),
    the guided-backprop and deconvnet "gradients" (Captum's GuidedBackprop
    and Deconvolution).
The tests hold every one of these to <= 1e-4 (tests/test_torch_reference.py).

    python scripts/compare_torch.py [--batch 2] [--target 5]
"""
import argparse
import warnings

import numpy as np


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--target", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        from captum.attr import Deconvolution, GuidedBackprop
    except ImportError as e:
        raise SystemExit(f"needs torch and captum (pip install -e .[reference]): {e}")
    import tinygrad_explain as te
    from tinygrad_explain.testing.torch_reference import build
    warnings.filterwarnings("ignore", module="captum")
    print(f"{'variant':<12} {'scores':>9} {'backprop':>9} {'guided':>9} {'deconvnet':>9}   "
          "(max |te - torch| / max |torch|)")
    for variant in ("torchvision", "caffe"):
        te.manual_seed(args.seed)
        model = te.models.alexnet(variant)
        tm = build(variant, model.state_dict())
        x = np.random.default_rng(args.seed).standard_normal((args.batch,) + model.input_shape).astype(np.float32)
        onehot = np.zeros((args.batch, 1000), np.float32)
        onehot[:, args.target] = 1
        row = []
        xt = torch.tensor(x, requires_grad=True)
        out = tm(xt)
        row.append(rel(model(x).numpy(), out.detach().numpy()))
        out[:, args.target].sum().backward()
        refs = {"backprop": xt.grad.numpy(),
                "guided": GuidedBackprop(tm).attribute(torch.tensor(x, requires_grad=True), target=args.target),
                "deconvnet": Deconvolution(tm).attribute(torch.tensor(x, requires_grad=True), target=args.target)}
        for rule, ref in refs.items():
            xe = te.Tensor(x, requires_grad=True)
            s = model(xe)
            with te.relu_backward(rule):
                s.backward(onehot)
            row.append(rel(xe.grad, ref.detach().numpy() if hasattr(ref, "detach") else ref))
        print(f"{variant:<12} " + " ".join(f"{v:9.2e}" for v in row))


if __name__ == "__main__":
    main()
