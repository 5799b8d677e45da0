"""The public API carries type hints: every public function and method of the engine, the ops
(Tensor's methods and properties, each Function's forward/backward, the functional API), the layers,
the explainers and image / draw / models / modelfile annotates its parameters and its return, and
every annotation names something that exists (``typing.get_type_hints`` resolves it)."""
import importlib
import inspect
import typing

import pytest

from tinygrad_explain.core.models import LayerOutputs, Network

MODULES = ["tinygrad_explain.explain." + m for m in (
    "_common", "attribution", "metrics", "sanity", "statistics", "quality", "transforms", "benchmark", "features",
    "gradients", "optimize", "visualize", "inversion", "grabcut", "methods", "regularizers", "decoder")] + \
    ["tinygrad_explain.core." + m for m in ("engine", "ops", "nn", "models", "architecture")] + \
    ["tinygrad_explain.data." + m for m in ("image", "preprocessing", "pixels", "display")] + \
    ["tinygrad_explain.modelfiles." + m for m in ("modelfile", "format")] + \
    ["tinygrad_explain.apps." + m for m in ("draw", "gallery")]


def _public_callables(mod):
    for name, v in vars(mod).items():
        if name.startswith("_") or getattr(v, "__module__", None) != mod.__name__:
            continue
        if inspect.isfunction(v):
            yield name, v
        elif inspect.isclass(v):
            for mname, m in vars(v).items():
                m = m.__func__ if isinstance(m, (staticmethod, classmethod)) else m
                m = m.fget if isinstance(m, property) else m
                if inspect.isfunction(m) and (not mname.startswith("_") or mname in ("__init__", "__call__")):
                    yield f"{name}.{mname}", m


@pytest.mark.parametrize("module", MODULES)
def test_public_api_is_annotated(module):
    mod = importlib.import_module(module)
    problems = []
    for name, f in _public_callables(mod):
        try:   # in the function's own module (ops attaches methods to Tensor); image / modelfile
            # import Network for the hints only (TYPE_CHECKING)
            hints = typing.get_type_hints(f, f.__globals__, {"Network": Network, "LayerOutputs": LayerOutputs})
        except NameError as e:
            problems.append(f"{name}: {e}")
            continue
        params = [p for p, v in inspect.signature(f).parameters.items()
                  if p not in ("self", "cls") and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
        problems += [f"{name}: parameter {p!r} has no type hint" for p in params if p not in hints]
        if "return" not in hints and f.__name__ != "__init__":
            problems.append(f"{name}: no return type")
    assert not problems, "\n".join(problems)
