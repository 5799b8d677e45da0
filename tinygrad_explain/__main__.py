"""``python -m tinygrad_explain COMMAND ...``: the command line of :mod:`tinygrad_explain.apps.cli`
(installed as the console script ``tinygrad-explain``)."""
import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
