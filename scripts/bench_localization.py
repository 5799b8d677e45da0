#!/usr/bin/env python
"""Weakly supervised localisation on scenes with known masks (Simonyan et al. 2014, section 6).

For each scene: saliency of the *predicted* class -> GrabCut (95% / 30% saliency
quantiles as foreground / background seeds) -> largest connected component ->
mask and box, scored against the ground truth by IoU.  Localisation accuracy =
fraction of scenes with box IoU >= 0.5.  Baselines: (b) the saliency map
(smoothed as for GrabCut) thresholded at its 80% quantile (largest component, no GrabCut), (c) one centred
box of the average ground-truth size.

    python scripts/bench_localization.py                 # the 500 shipped scenes, embedded model
    python scripts/bench_localization.py -n 100 --weights model.h5
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=500, help="number of scenes (default: all 500 shipped)")
    ap.add_argument("--weights", help="model file (default: the embedded model)")
    ap.add_argument("--fg-quantile", type=float, default=0.95)
    ap.add_argument("--bg-quantile", type=float, default=0.30)
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1; 0 = library default)")
    args = ap.parse_args(argv)

    import tinygrad_explain as te
    te.set_num_threads(args.threads)
    from tinygrad_explain import scenes
    from tinygrad_explain.explain import localization as L
    try:
        model = te.load_model(args.weights)
    except (FileNotFoundError, te.ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = scenes.load_sample()
    n = max(1, min(args.n, len(data["images"])))
    res = L.evaluate(model, data["images"][:n], data["masks"][:n], data["boxes"][:n],
                     fg_quantile=args.fg_quantile, bg_quantile=args.bg_quantile)
    acc = float((res["predicted"] == data["labels"][:n]).mean())
    rows = L.summarize(res)
    print(f"{n} scenes, classification accuracy {acc:.3f}, {res['seconds']:.1f} s")
    print(L.format_table(rows))
    g, b, c = (r[3] for r in rows)
    verdict = "better than both baselines" if g > b and g > c else "NOT better than both baselines"
    print(f"saliency + GrabCut localisation accuracy {g:.3f} ({verdict}; target >= 0.80)")
    if args.json:
        from tinygrad_explain.safe_io import atomic_write
        with atomic_write(args.json, mode="w") as f:
            json.dump({"n": n, "classification_accuracy": acc,
                       "rows": [dict(method=t, mask_iou=m, box_iou=bi, accuracy=a) for t, m, bi, a in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
