#!/usr/bin/env python
"""What does each layer of the embedded model keep?  A measurement behind the inversions.

An inversion can only recover what the code determines.  For scenes of the
shipped sample this script changes one thing at a time -- the background
(swapped for another scene's, the object kept by its ground-truth mask), the
object's colour (its grey levels inverted: light <-> dark), the object's
position (shifted by 8 px) -- and prints, for each layer, the normalised
error ||phi(x') - phi(x)||^2 / ||phi(x)||^2 (Mahendran & Vedaldi's squared
definition) between the code of the changed scene and the original's, beside
the same for a different scene of the same class and one of another class.
A change whose error is below what an inversion reaches (its own normalised
error) is invisible to that layer: the reconstruction cannot get it right
except by chance, and a correlation with the original cannot be expected there.

    python scripts/measure_invariances.py [--scenes 20]
"""
from __future__ import annotations

import argparse

import numpy as np

import tinygrad_explain as te
from tinygrad_explain.core.engine import Tensor, no_grad
from tinygrad_explain.data import image as te_image
from tinygrad_explain.data import scenes
from tinygrad_explain.explain.inversion import FIGURE_LAYERS


def codes(model, pictures, layers):
    """{layer: (N, D) float64} for uint8 pictures (N, H, W, 3)."""
    x = np.concatenate([te_image.load(p, model) for p in pictures])
    out, h = {}, Tensor(x)
    with no_grad():
        for name, layer in model.layers.items():
            h = layer(h)
            if name in layers:
                out[name] = h.numpy().reshape(len(x), -1).astype(np.float64)
            if len(out) == len(layers):
                break
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=20, help="sample scenes to average over (default 20)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    te.set_num_threads(args.threads)
    model = te.load_model()
    layers = [l for l in FIGURE_LAYERS if l in model.layer_names]
    d = scenes.load_sample()
    img, masks, labels = d["images"], d["masks"], d["labels"]
    n = min(args.scenes, len(img) // 2)
    rng = np.random.default_rng(0)
    base, variants = [], {k: [] for k in ("background swapped", "object light<->dark", "object shifted 8 px",
                                          "another scene, same class", "a scene of another class")}
    for i in range(n):
        j = (i + n) % len(img)                                      # a donor scene for the background
        m = masks[i][..., None]
        base.append(img[i])
        variants["background swapped"].append(np.where(m, img[i], img[j]))
        variants["object light<->dark"].append(np.where(m, 255 - img[i], img[i]))
        shifted = np.roll(img[i], 8, axis=1)
        variants["object shifted 8 px"].append(np.where(np.roll(m, 8, axis=1), shifted, img[i]))
        same = [k for k in range(len(img)) if labels[k] == labels[i] and k != i]
        other = [k for k in range(len(img)) if labels[k] != labels[i]]
        variants["another scene, same class"].append(img[rng.choice(same)])
        variants["a scene of another class"].append(img[rng.choice(other)])
    c0 = codes(model, np.stack(base), layers)
    rows = {}
    for name, pics in variants.items():
        c = codes(model, np.stack(pics), layers)
        rows[name] = {l: float(np.median(((c[l] - c0[l]) ** 2).sum(1) / (c0[l] ** 2).sum(1))) for l in layers}
    print(f"median normalised error ||phi(x') - phi(x)||^2 / ||phi(x)||^2 over {n} sample scenes")
    print(f"{'change':<28}" + "".join(f"{l:>8}" for l in layers))
    for name, r in rows.items():
        print(f"{name:<28}" + "".join(f"{r[l]:8.3f}" for l in layers))
    return rows


if __name__ == "__main__":
    main()
