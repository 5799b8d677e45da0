#!/usr/bin/env python
"""Student copies of the notebooks: the cells tagged ``solution`` removed (and, with
--drop-checks, the ``solution-check`` cells too, for an exam).  Outputs are cleared.
Writes only into --out, which must not be the notebooks' own folder.

    python scripts/student_notebooks.py --out student/ [--drop-checks] [notebooks/01_....ipynb ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def student_copy(nb, drop_checks=False):
    """The notebook (nbformat node) without its solution cells; outputs cleared."""
    drop = {"solution"} | ({"solution-check"} if drop_checks else set())
    nb.cells = [c for c in nb.cells if not drop & set(c.metadata.get("tags", []))]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    ap.add_argument("--out", type=Path, required=True, help="folder for the student copies (created)")
    ap.add_argument("--drop-checks", action="store_true", help="remove the solution-check cells too")
    args = ap.parse_args(argv)
    import nbformat

    from tinygrad_explain.core.safe_io import atomic_write
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    out = args.out.resolve()
    if any(p.resolve().parent == out for p in paths):
        print(f"error: --out {args.out} is the notebooks' own folder; choose another", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        nb = student_copy(nbformat.read(p, as_version=4), args.drop_checks)
        with atomic_write(out / p.name, mode="w") as f:
            nbformat.write(nb, f)
        print(f"wrote {out / p.name} ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
