#!/usr/bin/env python3
"""Which natural-image priors make class models that the independent judge recognises?

Makes the class models of every class on the embedded model with each variant
of settings below (``te.explain.class_model(model, seed=S, **settings)``),
shows them to the judge as they are displayed (``te.explain.quality.recognised``)
and prints one row per variant: classes recognised (k/10), the judge's mean
probability of the target, and the embedded model's own mean (min) softmax.
The table in docs/explainers.md ("Class models: which priors does the judge
recognise?") was measured with it.  The judge is a measuring instrument only:
nothing here feeds its verdict back into the optimisation.

    python scripts/sweep_class_models.py                       # every variant (~1 h on 2 busy cores)
    python scripts/sweep_class_models.py --only default old    # some of them
    python scripts/sweep_class_models.py --only default --seeds 0 1 2 --pictures /tmp/cm
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
from tinygrad_explain.explain import quality as q  # noqa: E402

STRONG = dict(decay=1.5, jitter=0.125, scales=(0.8, 0.9, 1.0, 1.1, 1.2), angles=(-15, -10, -5, 0, 5, 10, 15))
OLD = dict(recipe="natural-opaque", steps=300, lr=0.05, decay=1.0, jitter=0.0625, scales=(0.9, 0.95, 1.0, 1.05, 1.1),
           angles=(-10, -5, 0, 5, 10))          # the natural recipe before the sweep
PIXEL = dict(param="pixel", colour=None)
VARIANTS = {
    "paper": dict(recipe="simonyan2014"),
    "old": OLD,
    "old-600": dict(OLD, steps=600),
    "old-logsoftmax": dict(OLD, objective="log_softmax"),
    "octaves-blur": dict(OLD, **PIXEL, octaves=(4, 2, 1), blur_every=4, blur_sigma=(1.0, 0.3)),
    "octaves-blur-logsoftmax": dict(OLD, **PIXEL, octaves=(4, 2, 1), blur_every=4, blur_sigma=(1.0, 0.3),
                                    objective="log_softmax"),
    "octaves8-tv": dict(OLD, **PIXEL, octaves=(8, 4, 2, 1), blur_every=2, blur_sigma=(1.5, 0.5), tv=0.05,
                        steps=400),
    "yosinski": dict(OLD, **PIXEL, scales=(1.0,), angles=(0,), blur_every=4, blur_sigma=(0.8, 0.4)),
    "yosinski-octaves-600": dict(OLD, **PIXEL, scales=(1.0,), angles=(0,), octaves=(4, 2, 1), blur_every=4,
                                 blur_sigma=(1.0, 0.4), steps=600),
    "smooth-l2": dict(OLD, decay=2.0, l2=0.01, steps=400),
    "strong-300": dict(OLD, **STRONG),
    "strong-600": dict(OLD, **STRONG, steps=600),
    "strong-900": dict(OLD, **STRONG, steps=900),
    "strong-f1-600": dict(OLD, **dict(STRONG, decay=1.0), steps=600),
    "milder-600": dict(OLD, decay=1.5, jitter=0.09, scales=(0.85, 0.92, 1.0, 1.08, 1.15),
                       angles=(-10, -5, 0, 5, 10), steps=600),
    "opaque": dict(recipe="natural-opaque"),     # strong robustness, 1/f^1.5, lr 0.1, 600 steps, no transparency
    "opacity-1": dict(opacity=1.0),              # transparency with a weaker opacity prior
    "light": dict(backgrounds="light"),          # ... over light backgrounds (shown over white)
    "any": dict(backgrounds="any"),              # ... over backgrounds of any brightness (shown over the mean)
    "default": {},                               # the natural recipe now: the same with transparency, dark, 3.0
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="these variants (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--judge", default="judge", help="the judge's model file (default: the shipped judge)")
    ap.add_argument("--pictures", help="write each variant's pictures as one PNG strip into this folder")
    ap.add_argument("--json", help="write the rows to this JSON file")
    args = ap.parse_args(argv)
    te.set_num_threads(1)
    model, judge = te.load_model(), te.load_model(args.judge)
    rows = []
    print(f"{'variant':<26}{'seed':>5}{'steps':>6}  judge      p  softmax mean (min)   seconds")
    for name in args.only or list(VARIANTS):
        for seed in args.seeds:
            kw = dict(VARIANTS[name])
            t = time.perf_counter()
            v = te.explain.class_model(model, seed=seed, progress=False, **kw)
            r = q.recognised(judge, v.display, list(range(model.num_classes)))
            recipe = kw.get("recipe", te.explain.visualize.DEFAULT_RECIPE)
            steps = kw.get("steps", te.explain.visualize.CLASS_MODEL_RECIPES[recipe]["steps"])
            row = dict(variant=name, seed=seed, steps=steps, recognised=int(r["top1"].sum()),
                       of=len(r["top1"]), mean_p=float(r["p_target"].mean()),
                       softmax_mean=float(v.probability.mean()), softmax_min=float(v.probability.min()),
                       predicted=r["predicted"].tolist(), seconds=time.perf_counter() - t)
            rows.append(row)
            print(f"{name:<26}{seed:>5}{steps:>6}  {row['recognised']:>2}/{row['of']:<3} {row['mean_p']:6.3f}  "
                  f"{row['softmax_mean']:.3f} ({row['softmax_min']:.3f})  {row['seconds']:8.0f}", flush=True)
            if args.pictures:
                from PIL import Image
                Path(args.pictures).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate(v.display, 1)).save(Path(args.pictures) / f"{name}_seed{seed}.png")
    if args.json:
        from tinygrad_explain.core.safe_io import write_text
        write_text(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
