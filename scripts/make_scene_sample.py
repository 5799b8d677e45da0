#!/usr/bin/env python3
"""Regenerate tinygrad_explain/data/fashion_scenes_sample.npz.

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
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tinygrad_explain.scenes import SAMPLE_PATH, generate  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=SAMPLE_PATH)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    d = generate("test", n=args.n, seed=args.seed, size=64, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from tinygrad_explain.safe_io import atomic_write
    with atomic_write(args.out) as f:
        np.savez_compressed(f, **d)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, {args.n} scenes)")


if __name__ == "__main__":
    main()
