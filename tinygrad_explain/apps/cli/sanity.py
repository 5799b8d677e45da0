"""Sanity checks for saliency maps (Adebayo et al. 2018) on the embedded model.

For the first ``--scenes`` shipped sample scenes (default 50), explained for
their true class, compares every method's explanation on the trained model with
its explanation on

* the model with its weights re-initialised from fc8 down, one more layer per
  step (cascading randomisation), down to conv1;
* the model with one layer at a time re-initialised (independent randomisation);
* the same architecture trained on randomly permuted labels
  (``te.load_model("random_labels")``: the data-randomisation test);
* and, as the floor to read these against, its explanation of the next scene
  (``other_scene``: what explanations of unrelated images share);

by the Spearman rank correlation of the absolute and of the signed maps, SSIM
and the correlation of HOG features (``te.explain.sanity``).  Prints one table
per test (mean over the scenes, +- the standard deviation), writes every
number (mean, std, count per method, layer and measure) to ``--json``.

    tinygrad-explain sanity                          # 50 scenes, all methods and tests
    tinygrad-explain sanity --scenes 500 --dataset sanity500.h5   # a dataset job: chunks on a local
        # Dask cluster (--workers, --scheduler tcp://host:8786), written to the HDF5 file as they finish;
        # killed, the same command resumes (te.explain.dataset.run_sanity); over 500 needs the test split
    tinygrad-explain sanity --scenes 10 --methods gradient guided --tests cascade
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import tinygrad_explain as te
from tinygrad_explain.core.safe_io import write_text
from tinygrad_explain.data import scenes
from tinygrad_explain.explain import sanity

SHORT = {"spearman_abs": "rank|.|", "spearman": "rank", "ssim": "SSIM", "hog": "HOG"}


def format_table(summary: dict, test: str, measure: str, methods) -> str:
    """One test's table: methods x steps, ``mean+-std`` of one measure."""
    steps = list(summary[test])
    w = max(8, max(len(s) for s in steps) + 1)
    lines = [f"{test}: {SHORT[measure]} ({measure}), mean +- std over the scenes",
             f"{'method':<16}" + "".join(f"{s:>{w + 6}}" for s in steps)]
    for m in methods:
        cells = []
        for s in steps:
            d = summary[test][s][m][measure]
            cells.append("n/a" if d["mean"] is None else f"{d['mean']:+.2f}+-{d['std']:.2f}")
        lines.append(f"{m:<16}" + "".join(f"{c:>{w + 6}}" for c in cells))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="tinygrad-explain sanity", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--scenes", type=int, default=sanity.SCENES, help=f"sample scenes to explain (the first N of 500; "
                                                               f"default {sanity.SCENES})")
    ap.add_argument("--methods", nargs="+", default=list(sanity.METHODS), choices=sanity.METHODS,
                    help="methods to check (default: every one the registry te.explain.methods flags `sanity`)")
    ap.add_argument("--tests", nargs="+", choices=sanity.TESTS,
                    help="default: all (without \"data\" when --twin is another architecture, e.g. for "
                         "--weights resnet)")
    ap.add_argument("--weights", default=None, help="model file (default: the embedded model)")
    ap.add_argument("--twin", default="random_labels",
                    help="model file (or shipped name) trained on permuted labels, for the data test")
    ap.add_argument("--seed", type=int, default=0, help="re-initialisation seed")
    ap.add_argument("--json", type=Path, default=Path("out") / "sanity_checks.json",
                    help="where to write every number (default out/sanity_checks.json, under the current folder)")
    ap.add_argument("--threads", type=int, default=1, help="threads for Numba and BLAS")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--dataset", type=Path, help="run as a dataset job writing to this HDF5 file (resumable)")
    ap.add_argument("--workers", type=int, help="--dataset: local Dask workers (default: the cores; 0 = here)")
    ap.add_argument("--scheduler", help="--dataset: an existing Dask scheduler (tcp://host:8786)")
    ap.add_argument("--overwrite", action="store_true", help="--dataset: replace the file if it holds another job")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error(f"--scenes must be >= 1, got {args.scenes}")
    te.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = te.load_model(args.weights)
    twin = te.load_model(args.twin) if args.tests is None or "data" in args.tests else None
    if args.tests is None:                     # the default: every test that this model and twin allow
        fits = sanity.twin_fits(model, twin)
        args.tests = [t for t in sanity.TESTS if t != "data" or fits]
        if not fits:
            print(f"(no data test: the twin {args.twin} is another architecture than the model; --twin FILE "
                  "gives one trained on permuted labels)")
    elif twin is not None:
        try:
            sanity.check_twin(model, twin)
        except te.explain.ExplainError as e:
            ap.error(str(e))
    data = scenes.load_sample()
    if args.dataset:
        from tinygrad_explain.explain import dataset as D
        n = args.scenes
        if n <= len(data["images"]):           # the sample is test scenes 0..499: no data set needed
            images = D.Array(data["images"][:n], data["labels"][:n].astype(np.int64))
        else:
            images = D.Scenes("test", 0, n)
        try:
            D.run_sanity(args.weights, images, args.methods, args.tests, out=args.dataset, twin=args.twin,
                         seed=args.seed, scheduler=args.scheduler or (None if args.workers == 0 else "local"),
                         workers=args.workers or None, threads=args.threads, overwrite=args.overwrite,
                         progress=not args.no_progress)
        except (D.DatasetError, FileNotFoundError) as e:
            print(f"{ap.prog}: error: {e}", file=sys.stderr)
            return 2
        result = D.load_sanity(args.dataset)
    else:
        n = min(args.scenes, len(data["images"]))
        x = np.concatenate([te.image.load(im, model) for im in data["images"][:n]])
        labels = data["labels"][:n].astype(np.int64)
        twin = twin if "data" in args.tests else None
        result = sanity.run(model, x, labels, methods=args.methods, tests=args.tests, twin=twin, seed=args.seed,
                            progress=not args.no_progress, indices=np.arange(n))
    summary = result.summary()
    seconds = time.perf_counter() - t0
    for test in summary:
        for measure in sanity.MEASURES:
            print(format_table(summary, test, measure, args.methods), end="\n\n")
    out = {"scenes": n, "targets": "true label", "methods": args.methods, "seed": args.seed,
           "weights": str(args.weights or "embedded"), "twin": args.twin if "data" in args.tests else None,
           "seconds": round(seconds, 1), "summary": summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.json, json.dumps(out, indent=1))
    print(f"{n} scenes, {len(args.methods)} methods in {seconds:.0f} s; wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
