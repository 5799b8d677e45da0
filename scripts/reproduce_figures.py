#!/usr/bin/env python
"""Reproduce every figure of the lecture "Explaining CNNs: Early Methods": `tinygrad-explain figures`.

    tinygrad-explain figures --out figures/                      # embedded model, sample scenes
    tinygrad-explain figures --out fig_alexnet/ --weights alexnet.h5 --images cat.jpg boat.jpg
    python scripts/reproduce_figures.py --out figures/           # the same, from a checkout

Writes PNGs and an index.html gallery with captions (the recipes: tinygrad_explain/apps/figures/;
the folder and the page: tinygrad_explain/apps/gallery.py),
prints the time of each figure, the class models' softmax per class and the
fc7 inversion errors.  When every figure is done, its files replace their namesakes
in the --out folder; nothing else there is touched (--out . is safe).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from tinygrad_explain.apps.figures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
