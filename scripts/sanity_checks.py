#!/usr/bin/env python
"""Sanity checks of saliency maps (Adebayo et al. 2018): `tinygrad-explain sanity`.

    python scripts/sanity_checks.py ARGS...   is   tinygrad-explain sanity ARGS...

The code is tinygrad_explain.apps.cli.sanity (installed with the package).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from tinygrad_explain.apps.cli.sanity import main  # noqa: E402

if __name__ == "__main__":
    rc = main()
    sys.exit(rc if isinstance(rc, int) else 0)
