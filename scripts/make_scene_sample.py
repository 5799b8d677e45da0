#!/usr/bin/env python3
"""Regenerate tinygrad_explain/data/fashion_scenes_sample.npz (and, with --bank, the exemplar bank).

The sample is the first 500 scenes of the Fashion-MNIST *test* split (indices
0..499, seed 0, 64x64), so tests and demos can use real scenes without the
Debian package ``dataset-fashion-mnist``.  Needs that package (or
TGE_FASHION_MNIST pointing at the four IDX files)::

    apt-get install -y dataset-fashion-mnist
    python scripts/make_scene_sample.py            # writes the shipped file
    python scripts/make_scene_sample.py --out x.npz --n 100

Arrays stored (np.savez_compressed, no pickles): images uint8 (n,64,64,3),
labels uint8 (n,), masks bool (n,64,64), boxes int64 (n,4) as (x0,y0,x1,y1),
indices int64 (n,), seed int64 scalar.

``--bank`` writes tinygrad_explain/data/fashion_scenes_bank.npz instead: the
first 2,000 scenes of the *training* split at scene seed 100 (the decoders'
training scenes; never the test split), images, labels, indices and seed only --
the scenes that ``te.explain.invert(..., recipe="exemplar")`` retrieves
(explain/exemplar.py).
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tinygrad_explain.data.scenes import SAMPLE_PATH, generate  # noqa: E402
from tinygrad_explain.explain.exemplar import BANK_PATH  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", action="store_true",
                    help="write the exemplar bank (training split, seed 100, 2000 scenes) instead of the sample")
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped file")
    ap.add_argument("--n", type=int, default=None, help="scenes (default 500; with --bank 2000)")
    ap.add_argument("--seed", type=int, default=None, help="scene seed (default 0; with --bank 100)")
    args = ap.parse_args(argv)
    split = "train" if args.bank else "test"
    args.out = args.out or (BANK_PATH if args.bank else SAMPLE_PATH)
    args.n = args.n or (2000 if args.bank else 500)
    args.seed = (100 if args.bank else 0) if args.seed is None else args.seed
    d = generate(split, n=args.n, seed=args.seed, size=64, progress=True)
    if args.bank:
        d = {k: d[k] for k in ("images", "labels", "indices", "seed")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from tinygrad_explain.core.safe_io import atomic_write
    with atomic_write(args.out) as f:
        np.savez_compressed(f, **d)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, {args.n} {split}-split scenes, "
          f"seed {args.seed})")


if __name__ == "__main__":
    main()
