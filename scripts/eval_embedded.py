#!/usr/bin/env python
"""Accuracy of a model file on Fashion-MNIST scenes: `tinygrad-explain eval`.

    python scripts/eval_embedded.py ARGS...   is   tinygrad-explain eval ARGS...

The code is tinygrad_explain.apps.cli.evaluate (installed with the package).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from tinygrad_explain.apps.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    rc = main()
    sys.exit(rc if isinstance(rc, int) else 0)
