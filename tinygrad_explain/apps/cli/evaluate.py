"""Accuracy of the embedded model (or any model file) on Fashion-MNIST scenes.

Prints top-1 accuracy on

* the shipped sample (500 test scenes, works without Fashion-MNIST);
* the 10,000 test scenes (seed 0), rendered on the fly;
* plain Fashion-MNIST test images as background-free 64x64 "scenes": each
  grey 28x28 item upscaled (bilinear) to 48 px, centred on black, replicated
  to RGB (``tinygrad_explain.data.scenes.plain_scenes``).

The last two need Fashion-MNIST (Debian package ``dataset-fashion-mnist`` or
``TGE_FASHION_MNIST``) and are skipped with a note when it is absent.

    tinygrad-explain eval
    tinygrad-explain eval --model /tmp/m.h5 --n 2000
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import tinygrad_explain as te
from tinygrad_explain.core.safe_io import regular_file_problem
from tinygrad_explain.data import scenes
from tinygrad_explain.training import train


def per_class(scores, labels, names):
    pred = scores.argmax(1)
    return {names[c]: round(float((pred[labels == c] == c).mean()), 4) for c in range(len(names))
            if (labels == c).any()}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="tinygrad-explain eval", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default=None, help="model file (default: the embedded weights)")
    ap.add_argument("--n", type=int, default=10000, help="test scenes to evaluate (default: all 10,000)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--cache-dir", default=None, help="read rendered test scenes (.npy) from here if present")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for kernels and BLAS (default 1: fastest on a shared, busy machine; 0 = all)")
    ap.add_argument("--per-class", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    if args.threads:
        te.set_num_threads(args.threads)
    model = te.load_model(args.model)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    results = {"model": model.path}

    t = time.perf_counter()
    s = scenes.load_sample()
    sc = train.predict(model, s["images"], args.batch)
    results["sample_acc"] = float((sc.argmax(1) == s["labels"]).mean())
    print(f"shipped sample ({len(s['labels'])} test scenes): top-1 {results['sample_acc']:.2%} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)

    try:
        from tinygrad_explain.data.fashion_mnist import load_fashion_mnist
        items, labels = load_fashion_mnist("test")
    except FileNotFoundError as e:
        print(f"Fashion-MNIST not found, skipping the 10,000-scene and plain evaluations ({e})")
        items = None
    if items is not None:
        t = time.perf_counter()
        imgs = None
        if args.cache_dir:
            p = Path(args.cache_dir) / "scenes_test_images.npy"
            if p.exists():
                # memory-mapped (nothing allocated but the n scenes taken; no pickles), after the
                # regular-file check every loader makes (a FIFO would block)
                problem = regular_file_problem(p)
                if problem:
                    raise SystemExit(f"{p}: not a regular file ({problem})")
                imgs = np.array(np.lib.format.open_memmap(p, mode="r")[:args.n])
        if imgs is None:
            imgs = scenes.generate("test", n=args.n, seed=0, progress=False)["images"]
        lab = np.asarray(labels[:args.n])
        sc = train.predict(model, imgs, args.batch, progress=True)
        results["test_scenes_acc"] = float((sc.argmax(1) == lab).mean())
        results["test_scenes_n"] = int(len(lab))
        print(f"test scenes ({len(lab)}, seed 0): top-1 {results['test_scenes_acc']:.2%} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        if args.per_class:
            print("  per class:", per_class(sc, lab, names))

        t = time.perf_counter()
        plain = scenes.plain_scenes(items[:args.n])
        sc = train.predict(model, plain, args.batch, progress=True)
        results["plain_fashion_mnist_acc"] = float((sc.argmax(1) == lab).mean())
        print(f"plain Fashion-MNIST test ({len(lab)}, grey item upscaled to 48 px, centred on black, RGB): "
              f"top-1 {results['plain_fashion_mnist_acc']:.2%} ({time.perf_counter() - t:.1f} s)", flush=True)
        if args.per_class:
            print("  per class:", per_class(sc, lab, names))
    size = Path(model.path).stat().st_size
    results["file_bytes"] = size
    print(f"model file {model.path}: {size / 1e6:.2f} MB")
    if args.json:
        from tinygrad_explain.core.safe_io import write_text
        write_text(args.json, json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
