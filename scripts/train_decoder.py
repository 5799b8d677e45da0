#!/usr/bin/env python3
"""Fit the learned inversion decoders (weights/fashion_scenes_alexnet_decoder_<layer>.h5).

Why a decoder
-------------
Optimisation-based inversion (Mahendran & Vedaldi 2015) asks the network which
image has a given code; from pool5 on, the embedded model's code leaves so much
open (where exactly the item is, whether it is light or dark, the background)
that the hand-made priors fill the gap with texture, and the reconstructions
correlate with the original no better than with an unrelated scene
(docs/explainers.md).  Dosovitskiy & Brox ("Inverting Visual Representations
with Convolutional Networks", CVPR 2016) *learn* the inverse instead: a decoder D
fitted on many images x to minimise the pixel error

    L(D) = sum over the training scenes of ||D(phi(x)) - x||^2          (model space)

whose minimiser is the expected image given the code, E[x | phi(x)]: what the
code determines comes out, what it leaves open is averaged away (grey, blurred).

The decoder here is the *linear* one, D(c) = upsample_x2(W c + b): the best
affine read-out of a 32 x 32 image from the code, in closed form (ridge
regression, float64), so it is exact, reproducible and fitted in about 3 minutes:

    minimise  sum_n ||W z_n + b - y_n||^2 + lam ||W||^2,
    z_n = (c_n - mean) / std  (each code feature standardised over the training scenes),
    y_n = x_n averaged over 2 x 2 blocks  (for a nearest-neighbour x2 upsampling this
          is the same minimiser as the full-size pixel error),
    W = Y^T Z (Z^T Z + lam I)^-1,

with lam chosen from a grid by the error on held-out training-split scenes.  The
standardisation is folded into the written layer (W / std, b - W mean / std), so
the file takes the raw code.  Its architecture: flatten -> linear -> unflatten
(3, 32, 32) -> upsample x2: a model file of the engine's format whose
input_shape is the code's shape as a map ((C, H, W) of pool5, (F, 1, 1) of an fc
layer).  (Dosovitskiy & Brox's decoders are convolutional and trained by SGD; on
this 2-core machine such a decoder, trained with Adam for 500 steps of 64 scenes,
still answered every code with the mean scene, where this linear one is fitted
exactly.)

Data: scenes of the *training* split (scene seed 100, never the test split),
their codes from the model (evaluation mode).  Prints each layer's pixel error
on 1,000 test scenes against that of always answering the mean scene.

    python scripts/train_decoder.py                       # the shipped decoders (about 3 minutes)
    python scripts/train_decoder.py --layers fc7 --train-size 2000 --out-dir /tmp   # smoke test

Needs Fashion-MNIST (Debian package ``dataset-fashion-mnist``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import tinygrad_explain as te  # noqa: E402
from tinygrad_explain.core.architecture import from_architecture  # noqa: E402
from tinygrad_explain.core.engine import Tensor, no_grad  # noqa: E402
from tinygrad_explain.data import scenes  # noqa: E402
from tinygrad_explain.data.image import to_model  # noqa: E402
from tinygrad_explain.explain import decoder as dec  # noqa: E402
from tinygrad_explain.modelfiles.modelfile import save_model  # noqa: E402

LAMBDAS = (0.01, 0.1, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def codes_of(model, images_uint8, layers, batch=250):
    """{layer: (N, D) float64} flattened codes of uint8 NHWC scenes (evaluation mode)."""
    out = {l: np.empty((len(images_uint8), int(np.prod(model.shapes[l]))), np.float64) for l in layers}
    last = max(layers, key=model.layer_names.index)
    with no_grad():
        for a in range(0, len(images_uint8), batch):
            acts = model(to_model(images_uint8[a:a + batch], model), until=last, keep=layers)
            for l in layers:
                v = acts[l].numpy()
                out[l][a:a + batch] = v.reshape(len(v), -1)
    return out


def block_means(x, f):
    """(N, C, H, W) -> (N, C*H/f*W/f): the mean over each f x f block, flattened."""
    N, C, H, W = x.shape
    return x.reshape(N, C, H // f, f, W // f, f).mean(axis=(3, 5), dtype=np.float64).reshape(N, -1)


def fit_ridge(z, y, lam):
    """W (K, D), b (K,) minimising sum ||W z + b - y||^2 + lam ||W||^2 (b unpenalised:
    the targets are centred first)."""
    zm, ym = z.mean(0), y.mean(0)
    zc, yc = z - zm, y - ym
    G = zc.T @ zc
    G[np.diag_indices_from(G)] += lam
    W = np.linalg.solve(G, zc.T @ yc).T
    return W, ym - W @ zm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", default=",".join(dec.DECODER_LAYERS), help="comma-separated layers of the model")
    ap.add_argument("--model", default="embedded", help="a name of te.load_model or a model file")
    ap.add_argument("--train-size", type=int, default=20000, help="training-split scenes to fit on")
    ap.add_argument("--val-size", type=int, default=2000, help="further training-split scenes that choose lambda")
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--factor", type=int, default=2, help="the decoder's output is upsampled by this factor")
    ap.add_argument("--out-dir", default=None, help="where the .h5 files go (default: next to the model file)")
    ap.add_argument("--force", action="store_true", help="overwrite existing decoder files")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    model = te.load_model(args.model)
    layers = [l.strip() for l in args.layers.split(",") if l.strip()]
    for l in layers:
        if l not in model.shapes:
            ap.error(f"layer {l!r} is not a layer of the model {args.model!r} (it has {', '.join(model.layer_names)})")
    outs = {l: dec.decoder_path(args.model, l) for l in layers}
    if args.out_dir:
        outs = {l: Path(args.out_dir) / p.name for l, p in outs.items()}
    for p in outs.values():
        if p.exists() and not args.force:
            ap.error(f"{p} exists; pass --force to overwrite it")
    C, H, W = model.input_shape
    f = args.factor
    if H % f or W % f:
        ap.error(f"--factor {f} does not divide the input size {H} x {W}")

    n = args.train_size + args.val_size
    data = scenes.generate("train", n=n, seed=100, progress=True)
    y = block_means(to_model(data["images"], model), f)
    codes = codes_of(model, data["images"], layers)
    test = scenes.generate("test", n=args.test_size, seed=0, progress=False)
    y_test = block_means(to_model(test["images"], model), f)
    test_codes = codes_of(model, test["images"], layers)
    tr, va = slice(0, args.train_size), slice(args.train_size, n)
    mean_error = float(((y_test - y[tr].mean(0)) ** 2).mean())
    print(f"test error of always answering the mean scene: {mean_error:.4f} (model space, per value, "
          f"at {H // f} x {W // f})")
    report = {}
    for l in layers:
        c = codes[l]
        mu, sd = c[tr].mean(0), c[tr].std(0)
        sd = sd + 1e-3 * sd.mean() + 1e-12           # dead features (std 0) stay 0 after standardising
        z = (c - mu) / sd
        val = {}
        for lam in LAMBDAS:
            Wl, bl = fit_ridge(z[tr], y[tr], lam)
            val[lam] = float(((z[va] @ Wl.T + bl - y[va]) ** 2).mean())
        lam = min(val, key=val.get)
        Wl, bl = fit_ridge(z[tr], y[tr], lam)
        Wraw = Wl / sd[None, :]                     # fold the standardisation in: raw codes go in
        braw = bl - Wraw @ mu
        d = from_architecture(dec.decoder_architecture(model.shapes[l], (C, H // f, W // f), f),
                              dec.decoder_input_shape(model.shapes[l]))
        d.load_state_dict({"fc.weight": Wraw.astype(np.float32), "fc.bias": braw.astype(np.float32)})
        with no_grad():
            pred = d(Tensor(test_codes[l].reshape((-1,) + d.input_shape).astype(np.float32))).numpy()
        err = float(((block_means(pred, f) - y_test) ** 2).mean())
        print(f"{l}: lambda {lam:g} (validation errors {', '.join(f'{k:g}: {v:.4f}' for k, v in val.items())}); "
              f"test error {err:.4f} = {err / mean_error:.3f} of the mean scene's")
        outs[l].parent.mkdir(parents=True, exist_ok=True)
        save_model(d, outs[l])
        report[l] = {"lambda": lam, "validation_errors": {str(k): v for k, v in val.items()}, "test_error": err,
                     "test_error_mean_scene": mean_error}
        print(f"wrote {outs[l]}")
    summary = {"model": args.model, "settings": vars(args), "layers": report,
               "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
