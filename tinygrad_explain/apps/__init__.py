"""The applications, on top of the library: what users run rather than import.

    figures/          every figure of the lecture + index.html (recipes, runner, command line, captions)
    figures_robust    the standard model beside its adversarially trained twin (one figure)
    figures_resnet    the embedded AlexNet beside the scene ResNet (one figure)
    gallery           a folder of figures with its index.html, written safely
    explorer          the local web page (explorer_static/ is its front end)
    draw              how maps, images and tables are drawn (PIL and OpenCV)
    walkthrough       backprop to the input on a tiny network, layer by layer (teaching)
    cli/              the command line ``tinygrad-explain COMMAND`` (``python -m tinygrad_explain``)

Imports go down only: ``apps`` uses ``explain`` and the layers below it; nothing
below imports ``apps``.  The old flat names (``tinygrad_explain.figures``,
``.explorer``, ``.draw``, ...) still import, for one release, through the alias
table :data:`_APP_ALIASES` (old module name -> new one).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module name -> its new home (one release of grace for ``import tinygrad_explain.figures`` ...)
_APP_ALIASES: dict[str, str] = {
    "tinygrad_explain.figures": "tinygrad_explain.apps.figures",
    "tinygrad_explain.figures_resnet": "tinygrad_explain.apps.figures_resnet",
    "tinygrad_explain.figures_robust": "tinygrad_explain.apps.figures_robust",
    "tinygrad_explain.gallery": "tinygrad_explain.apps.gallery",
    "tinygrad_explain.explorer": "tinygrad_explain.apps.explorer",
    "tinygrad_explain.draw": "tinygrad_explain.apps.draw",
    "tinygrad_explain.walkthrough": "tinygrad_explain.apps.walkthrough",
    "tinygrad_explain.cli": "tinygrad_explain.apps.cli",
    "tinygrad_explain.cli.evaluate": "tinygrad_explain.apps.cli.evaluate",
    "tinygrad_explain.cli.explain": "tinygrad_explain.apps.cli.explain",
    "tinygrad_explain.cli.sanity": "tinygrad_explain.apps.cli.sanity",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name as the module at its new name (the same module object)."""

    def __init__(self, table: dict[str, str]):
        self.table = table

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.table:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None                          # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module):
        # the import system returns whatever sys.modules holds under the name after this call:
        # the new module itself, untouched (its __name__ stays the new name)
        sys.modules[module.__name__] = importlib.import_module(self.table[module.__name__])


def _install_aliases(table: dict[str, str] = _APP_ALIASES) -> None:
    """Put the alias finder on ``sys.meta_path`` once (tinygrad_explain/__init__.py calls it)."""
    if not any(isinstance(f, _AliasFinder) and f.table is table for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(table))     # before a stale copy an editable install may map
