"""The old flat import paths, kept for one release: one table, old dotted name -> new module.

Until version 0.2 the package was one flat folder (``tinygrad_explain.engine``,
``tinygrad_explain.modelfile``, ...).  Its modules now live in layer packages
(``core``, ``data``, ``modelfiles``, ``training``, ``testing``, ``apps``).  So that code
written against the old paths keeps working for one release,

    import tinygrad_explain.engine as e          # the very module object of tinygrad_explain.core.engine
    from tinygrad_explain.modelfile import load_model

resolve through :data:`ALIASES`.  Nothing is copied: the old name is bound in
``sys.modules`` to the new module object, so monkeypatching through either name
patches the same module.  A module that is already imported (the core, which
``import tinygrad_explain`` loads) is bound at once; any other is found lazily by
:class:`AliasFinder` (a ``sys.meta_path`` finder) the first time its old name is
imported, which imports the new module and binds it.  Old names are deprecated:
import the new paths; this table goes in the release after next.

To move another module, add one row ``"old_name": "layer.new_name"`` (relative to
the package) to :data:`ALIASES`; nothing else changes.  A *name* that moved to another
module keeps its old address the same way through :data:`MOVED_NAMES` (a module-level
``__getattr__`` on the old module, installed here: the old module never imports the new
one, so no import cycle is needed to keep it).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

PACKAGE = __name__.rsplit(".", 1)[0]

# old module name (relative to the package) -> new module name (relative to the package)
ALIASES: dict[str, str] = {
    # the engine core
    "engine": "core.engine",
    "ops": "core.ops",
    "nn": "core.nn",
    "models": "core.models",
    "graph": "core.graph",
    "naive": "core.naive",
    "gradcheck": "core.gradcheck",
    "device": "core.device",
    "safe_io": "core.safe_io",
    # data sets and images
    "image": "data.image",
    "scenes": "data.scenes",
    "fashion_mnist": "data.fashion_mnist",
    "imagenet": "data.imagenet",
    # model files and converters
    "modelfile": "modelfiles.modelfile",
    "convert": "modelfiles.convert",
    "caffemodel": "modelfiles.caffemodel",
    "torch_checkpoint": "modelfiles.torch_checkpoint",
    "onnx_import": "modelfiles.onnx_import",
    "shipped": "modelfiles.shipped",
    # training
    "train": "training.train",
    "optim": "training.optim",
    "checkpoint": "training.checkpoint",
    "parallel": "training.parallel",
    "adversarial": "training.adversarial",
    # test-only references
    "torch_reference": "testing.torch_reference",
    # the applications (a row covers its submodules too: cli.sanity -> apps.cli.sanity)
    "figures": "apps.figures",
    "figures_resnet": "apps.figures_resnet",
    "figures_robust": "apps.figures_robust",
    "gallery": "apps.gallery",
    "explorer": "apps.explorer",
    "draw": "apps.draw",
    "walkthrough": "apps.walkthrough",
    "cli": "apps.cli",
}


# (old module, old name) -> (new module, new name), all relative to the package
MOVED_NAMES: dict[tuple[str, str], tuple[str, str]] = {
    # the recipe lookup, now recipes.lookup (explain/recipes.py)
    ("explain.optimize", "recipe"): ("explain.recipes", "lookup"),
    # rebuilding a network from its description moved above models and graph (issue #29: no import cycle)
    ("core.models", "from_architecture"): ("core.architecture", "from_architecture"),
}


def _full(name: str) -> str:
    return f"{PACKAGE}.{name}"


class _AliasLoader(importlib.abc.Loader):
    """Hands back the already-imported new module instead of making a new one."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        # importlib set the alias spec on the real module: give it back its own
        module.__spec__ = sys.modules[self.target].__spec__ = self._spec
        module.__loader__ = self._spec.loader

    def load(self):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``tinygrad_explain.<old>`` (and its submodules) through :data:`ALIASES`."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(PACKAGE + "."):
            return None
        rest = fullname[len(PACKAGE) + 1:]
        head, _, tail = rest.partition(".")
        if head not in ALIASES:
            return None
        new = _full(ALIASES[head]) + ("." + tail if tail else "")
        loader = _AliasLoader(new)
        module = loader.load()                   # import the new module first (its own spec is kept)
        if fullname in sys.modules:              # the import bound it meanwhile
            return None
        return importlib.machinery.ModuleSpec(fullname, loader, origin=getattr(module, "__file__", None),
                                              is_package=hasattr(module, "__path__"))


def _forward_names(module_name: str, moved: dict[str, tuple[str, str]]) -> None:
    """Give ``module_name`` a ``__getattr__`` (PEP 562) that finds its moved names in their new homes."""
    module = importlib.import_module(_full(module_name))
    previous = module.__dict__.get("__getattr__")
    if getattr(previous, "_moved_names", None) is moved:
        return

    def __getattr__(name):
        if name in moved:
            new_module, new_name = moved[name]
            return getattr(importlib.import_module(_full(new_module)), new_name)
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    __getattr__._moved_names = moved
    module.__getattr__ = __getattr__


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once), bind the old names of modules already imported,
    and forward the moved names (:data:`MOVED_NAMES`)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())   # first: an old name must never find a stale file of the same name
    for old, new in ALIASES.items():
        module = sys.modules.get(_full(new))
        if module is not None:
            sys.modules.setdefault(_full(old), module)
    by_module: dict[str, dict[str, tuple[str, str]]] = {}
    for (old_module, old_name), new in MOVED_NAMES.items():
        by_module.setdefault(old_module, {})[old_name] = new
    for old_module, moved in by_module.items():
        _forward_names(old_module, moved)
