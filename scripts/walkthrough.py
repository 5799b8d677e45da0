#!/usr/bin/env python
"""A teaching walkthrough: backprop to the image, layer by layer: `tinygrad-explain walkthrough`.

    python scripts/walkthrough.py ARGS...   is   tinygrad-explain walkthrough ARGS...

The code is tinygrad_explain.apps.walkthrough (installed with the package).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from tinygrad_explain.apps.walkthrough import main  # noqa: E402

if __name__ == "__main__":
    rc = main()
    sys.exit(rc if isinstance(rc, int) else 0)
