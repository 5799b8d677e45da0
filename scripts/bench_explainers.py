#!/usr/bin/env python
"""Which explanation can you trust?  Every explainer on scenes whose object masks are known.

For each scene and method (te.explain.benchmark: gradient, saliency, deconvnet,
guided, SmoothGrad, Grad-CAM, guided Grad-CAM, occlusion, gradient x input, and the
centre and random baselines), one map of the ground-truth class, scored by
(te.explain.metrics):

  pointing        the map's maximum within 15 * 64/224 = 4.3 px of the object (TorchRay's
                  pointing game, tolerance scaled from 224 px), on all scenes
  pointing hard   the same on the "hard" scenes: object < 20% of the image on a
                  cluttered background (mean Sobel magnitude > 0.03 outside the object)
  mask IoU        the map -> GrabCut (Simonyan et al.'s seeds: 95% / 30% quantiles) ->
                  largest component, IoU with the true mask
  box acc.        fraction of scenes whose GrabCut box has IoU >= 0.5 with the true box
  deletion        area under the class probability as pixels, most important first, are
                  replaced by the blurred image (Petsiuk et al. 2018; lower is better)
  insertion       the same, pixels inserted into the blurred image (higher is better)
  ms/image        the map's computation time per image

    python scripts/bench_explainers.py                          # the 500 shipped scenes (~1 h on 2 busy cores)
    python scripts/bench_explainers.py --limit 50               # a quick look
    python scripts/bench_explainers.py --scenes test            # all 10,000 test scenes (needs dataset-fashion-mnist)
        # -> a dataset job (te.explain.dataset.run_dataset): per-scene scores in --out (HDF5), chunk by
        #    chunk on a local Dask cluster (--workers, or --scheduler tcp://host:8786 for an existing one);
        #    killed, the same command resumes where it stopped
    python scripts/bench_explainers.py --json out.json --plot out.png
    python scripts/bench_explainers.py --first 250 --limit 250 --save b.npz   # one part (saved after every batch)
    python scripts/bench_explainers.py --merge a.npz b.npz --json out.json    # the parts' table
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv=None):
    from tinygrad_explain.explain.benchmark import METHODS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", choices=("sample", "test"), default="sample",
                    help="the 500 shipped scenes (default) or the 10,000 test scenes (needs the data set)")
    ap.add_argument("--limit", type=int, help="only N scenes (from --first)")
    ap.add_argument("--first", type=int, default=0, help="the first scene (default 0)")
    ap.add_argument("--save", help="write the per-scene scores to this .npz after every batch (for --merge)")
    ap.add_argument("--merge", nargs="+", metavar="NPZ", help="no run: the table of runs saved with --save")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--weights", help="model file (default: the embedded model)")
    ap.add_argument("--target", choices=("truth", "predicted"), default="truth",
                    help="explain the ground-truth class (default, as TorchRay) or the predicted one")
    ap.add_argument("--steps", type=int, default=8,
                    help="deletion / insertion steps (default 8: 1/8 of the pixels each)")
    ap.add_argument("--blur", type=float,
                    help="deletion / insertion baseline blur sigma in px (default 1/8 of the side)")
    ap.add_argument("--samples", type=int, default=25, help="SmoothGrad samples (default 25)")
    ap.add_argument("--patch", type=int, default=10, help="occlusion patch (default 10 px)")
    ap.add_argument("--stride", type=int, default=6, help="occlusion stride (default 6 px: 10 x 10 positions)")
    ap.add_argument("--cam-layer", help="Grad-CAM layer (default: the last conv layer after its ReLU)")
    ap.add_argument("--batch-size", type=int, default=25, help="scenes per batch (default 25)")
    ap.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad's noise and the random baseline")
    ap.add_argument("--json", help="write the table and settings to this JSON file")
    ap.add_argument("--plot", help="write the table as a bar chart (PNG) to this file")
    ap.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1; 0 = library default)")
    ap.add_argument("--out", help="--scenes test: the dataset job's HDF5 file (default "
                                  "bench_explainers_test_FIRST_STOP.h5); an unfinished one is resumed")
    ap.add_argument("--workers", type=int, help="--scenes test: local Dask workers (default: the cores; 0 = "
                                                "in this process)")
    ap.add_argument("--scheduler", help="--scenes test: an existing Dask scheduler (tcp://host:8786)")
    ap.add_argument("--chunk-size", type=int, default=50, help="--scenes test: scenes per chunk (default 50)")
    ap.add_argument("--maps", action="store_true", help="--scenes test: keep the maps in --out too")
    ap.add_argument("--overwrite", action="store_true", help="--scenes test: replace --out if it holds another job")
    args = ap.parse_args(argv)

    import tinygrad_explain as te
    from tinygrad_explain.apps import figures
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain import benchmark as B
    te.set_num_threads(args.threads)
    try:
        model = te.load_model(args.weights)
        if args.merge:
            res = B.concat([B.load(f) for f in args.merge])
            labels = np.asarray(res["targets"]) if args.target == "truth" else None
        elif args.scenes == "sample":
            data = scenes.load_sample()
            N = len(data["images"])
            stop = N if args.limit is None else min(N, args.first + max(1, args.limit))
            data = {k: v[args.first:stop] for k, v in data.items() if k != "seed"}
        else:
            from tinygrad_explain.explain import dataset as D
            stop = 10000 if args.limit is None else min(10000, args.first + max(1, args.limit))
            out = args.out or f"bench_explainers_test_{args.first}_{stop}.h5"
            t0 = time.perf_counter()
            D.run_dataset(args.weights, D.Scenes("test", args.first, stop), args.methods, out=out,
                          target=args.target, chunk_size=args.chunk_size, seed=args.seed, steps=args.steps,
                          blur_sigma=args.blur, smoothgrad_samples=args.samples, occlusion_patch=args.patch,
                          occlusion_stride=args.stride, cam_layer=args.cam_layer, maps=args.maps,
                          scheduler=args.scheduler or (None if args.workers == 0 else "local"),
                          workers=args.workers or None, threads=args.threads or None, overwrite=args.overwrite)
            res = D.load(out)
            labels = np.asarray(res["targets"]) if args.target == "truth" else None
            if args.target != "truth":
                labels = scenes.SceneDataset("test").labels[args.first:stop].astype(np.int64)
    except (FileNotFoundError, te.ModelFileError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.scenes == "sample" and not args.merge:
        t0 = time.perf_counter()
        labels, parts, b = np.asarray(data["labels"]), [], args.batch_size
        for s in range(0, len(labels), b):       # part by part, so that --save keeps what is done
            parts.append(B.evaluate(model, data["images"][s:s + b], data["masks"][s:s + b], data["boxes"][s:s + b],
                                    labels[s:s + b], args.methods, indices=data["indices"][s:s + b],
                                    target=args.target, steps=args.steps, blur_sigma=args.blur, batch_size=b,
                                    seed=args.seed, smoothgrad_samples=args.samples, occlusion_patch=args.patch,
                                    occlusion_stride=args.stride, cam_layer=args.cam_layer, progress=False))
            if args.save:
                B.save(B.concat(parts), args.save)
            print(f"{s + len(parts[-1]['hard'])} / {len(labels)} scenes, {time.perf_counter() - t0:.0f} s", flush=True)
        res = B.concat(parts)
    seconds = time.perf_counter() - t0 if not args.merge else sum(r["seconds"] for r in res["methods"].values())
    # --scenes test: this run's wall time (for a resumed job, of the part it ran)
    n = len(res["hard"])
    rows = B.summarize(res)
    acc = float((res["predicted"] == labels).mean()) if labels is not None else float("nan")
    hard = int(res["hard"].sum())
    print(f"{n} {args.scenes} scenes ({hard} hard), classification accuracy {acc:.3f}, {seconds:.0f} s in all; "
          f"target: {args.target} class; pointing tolerance {res['tolerance']:.2f} px; deletion / insertion: "
          f"{args.steps} steps to a blur of sigma {res['blur_sigma']:.1f} px")
    print(B.format_table(rows))
    if "chunk_seconds" in res:
        print(f"{seconds / max(1, n):.3f} s per scene wall, {np.sum(res['chunk_seconds']) / max(1, n):.3f} s per "
              "scene on a worker (all methods and metrics)")
    rows_hard = B.summarize(B.subset(res, res["hard"])) if hard else {}
    if hard:
        print(f"the {hard} hard scenes:")
        print(B.format_table(rows_hard))
    versus = {}
    if "centre" in res["methods"]:
        versus = {"all": B.versus_baseline(res), **({"hard": B.versus_baseline(B.subset(res, res["hard"]))}
                                                    if hard > 1 else {})}
        for which, vs in versus.items():
            print(f"better than the centred baseline ({which} scenes; per-scene difference, 95% bootstrap CI):")
            print(B.format_versus(vs))
    report = {"scenes": args.scenes, "n": n, "hard": hard, "classification_accuracy": acc, "seconds": seconds,
              "target": args.target, "tolerance_px": res["tolerance"], "steps": args.steps,
              "blur_sigma": res["blur_sigma"], "smoothgrad_samples": args.samples, "occlusion_patch": args.patch,
              "occlusion_stride": args.stride,
              "cam_layer": args.cam_layer or te.explain.attribution.default_cam_layer(model),
              "weights": args.weights or "embedded (weights/fashion_scenes_alexnet.h5)", "threads": args.threads,
              "seconds_per_scene": seconds / max(1, n),
              "worker_seconds_per_scene": (float(np.sum(res["chunk_seconds"])) / max(1, n)
                                           if "chunk_seconds" in res else None),
              "rows": rows, "rows_hard": rows_hard,
              "versus_centre": versus}
    if args.json:
        from tinygrad_explain.core.safe_io import atomic_write
        with atomic_write(args.json, mode="w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        figures.plot_benchmark(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
