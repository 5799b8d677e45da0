"""The package's import graph, read from the source with ``ast``, draws the architecture of the folders:

    core (+ kernels)  <  data  <  modelfiles  <  training  <  explain  <  (the package's __init__)  <  apps

(a) no import cycle between modules, (b) imports only go down that list (or stay in a layer), (c) no
module imports a private name (``_name``) of another module, nor a private module of another package.
Every import counts: relative and absolute, at the top of a file or inside a function.  A failure lists
every violation with its file and line.

``tinygrad_explain/_aliases.py`` (the table of old flat paths, which imports by name at run time) is
exempt; ``testing/`` (test-only references) may import anything and nothing in the package may import it.
"""
from __future__ import annotations

import ast
import functools
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "tinygrad_explain"

LAYERS = ["core", "data", "modelfiles", "training", "explain", "api", "apps", "testing"]
# the first name below the package -> its layer ("api" is the package's own __init__: te.*)
LAYER_OF = {"core": "core", "kernels": "core", "data": "data", "modelfiles": "modelfiles",
            "training": "training", "explain": "explain", "apps": "apps",
            "__main__": "apps", "testing": "testing", "version": "core"}
EXEMPT = {f"{PKG}._aliases"}

# Known violations that other work in flight is removing (issue #29); each row is (importer, imported,
# name or None).  Delete a row when its violation is gone: the test fails on a row that no longer
# matches anything, so this list can only shrink.
KNOWN = {
    # the kernels: a private lock shared between kernel modules
    (f"{PKG}.kernels.threads", f"{PKG}.kernels._numba", "_PARALLEL_LOCK"),
}

@dataclass(frozen=True)
class Edge:
    src: str          # importing module
    dst: str          # imported module
    name: str | None  # the name taken from dst (None: the module itself)
    where: str        # file:line

    def __str__(self):
        return f"{self.where}: {self.src} -> {self.dst}" + (f" ({self.name})" if self.name else "")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package (kernels/ as tinygrad_explain.kernels, where the build maps it)."""
    found = {}
    for path in sorted((root / PKG).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    kernels = root / "kernels"
    if f"{PKG}.kernels" not in found and kernels.is_dir():
        for path in sorted(kernels.rglob("*.py")):
            parts = [PKG] + list(path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def edges(mods: dict[str, Path], root: Path = ROOT) -> tuple[list[Edge], list[str]]:
    """The import edges between modules of the package, and the imports of modules that do not exist
    (an old flat path used inside the package, say)."""
    out, unknown = [], []
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(root)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PKG or alias.name.startswith(PKG + "."):
                        (out if alias.name in mods else unknown).append(
                            Edge(mod, alias.name, None, where) if alias.name in mods else f"{where}: {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                elif node.module and (node.module == PKG or node.module.startswith(PKG + ".")):
                    base = node.module
                else:
                    continue
                if base not in mods:
                    unknown.append(f"{where}: {base}")
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in mods:
                        out.append(Edge(mod, sub, None, where))
                        continue
                    out.append(Edge(mod, base, alias.name, where))
                    names = _bound_names(mods[base])
                    if names is not None and alias.name not in names:
                        unknown.append(f"{where}: {base}.{alias.name}")
            # `module._private` through a module bound by an import is a private import as well
        out += _private_attributes(mod, tree, mods, package, rel)
    return out, unknown


@functools.lru_cache(maxsize=None)
def _bound_names(path: Path) -> frozenset[str] | None:
    """The names a module binds at its top level (also inside if / try / with there), or None when
    it can answer for more (a module-level ``__getattr__``, or ``import *``)."""
    names = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.name == "*":
                        names.add("*")
                    names.add(a.asname or a.name.split(".")[0])
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
    visit(ast.parse(path.read_text()).body)
    return None if "__getattr__" in names or "*" in names else frozenset(names)


def _private_attributes(mod, tree, mods, package, rel) -> list[Edge]:
    """``engine._xp`` where ``engine`` names a module of the package bound by an import in this file."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PKG):
            base = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in mods:
                    bound[alias.asname] = alias.name
            continue
        else:
            continue
        for alias in node.names:
            if f"{base}.{alias.name}" in mods:
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and _private(node.attr)):
            found.append(Edge(mod, bound[node.value.id], node.attr, f"{rel}:{node.lineno}"))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer(mod: str) -> str:
    if mod == PKG:
        return "api"
    head = mod.split(".")[1]
    assert head in LAYER_OF, f"{mod}: no layer for '{head}'; add it to LAYER_OF in tests/test_architecture.py"
    return LAYER_OF[head]


def _known(edge: Edge) -> bool:
    return (edge.src, edge.dst, edge.name) in KNOWN


@functools.lru_cache(maxsize=4)
def graph(root: Path = ROOT):
    mods = modules(root)
    found, unknown = edges(mods, root)
    return mods, tuple(e for e in found if e.src not in EXEMPT and e.dst not in EXEMPT and e.dst != e.src), unknown


def cycles(found: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    succ: dict[str, set[str]] = {}
    for e in found:
        succ.setdefault(e.src, set()).add(e.dst)
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(succ.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return comps


def _cycle_edges(comp: list[str], found: list[Edge]) -> list[Edge]:
    inside = set(comp)
    return [e for e in found if e.src in inside and e.dst in inside]


def test_every_import_names_a_module_that_exists():
    """Inside the package nobody imports through the old flat paths (tinygrad_explain.engine, ...),
    nor a name its module does not define (a name that moved, say)."""
    _, _, unknown = graph()
    assert not unknown, "imports of modules that do not exist:\n" + "\n".join(unknown)


def test_no_import_cycle():
    _, found, _ = graph()
    found = [e for e in found if not _known(e)]
    comps = cycles(found)
    assert not comps, "import cycles:\n" + "\n\n".join(
        " <-> ".join(c) + "\n  " + "\n  ".join(map(str, _cycle_edges(c, found))) for c in comps)


def test_imports_go_down_the_layers():
    _, found, _ = graph()
    up = [e for e in found if LAYERS.index(layer(e.dst)) > LAYERS.index(layer(e.src)) and not _known(e)]
    assert not up, "imports that go up the layers " + " < ".join(LAYERS) + ":\n" + "\n".join(
        f"{e}   [{layer(e.src)} -> {layer(e.dst)}]" for e in up)


def test_no_private_name_crosses_a_module():
    mods, found, _ = graph()
    bad = []
    for e in found:
        if _known(e):
            continue
        if e.name is not None and _private(e.name):
            bad.append(str(e))                                      # _name of another module
        elif _private(e.dst.rsplit(".", 1)[-1]) and not (e.src + ".").startswith(e.dst.rsplit(".", 1)[0] + "."):
            bad.append(f"{e}   [private module of another package]")
    assert not bad, "private names used across modules (make them public, or move the code):\n" + "\n".join(bad)


def test_the_allow_list_only_shrinks():
    """Every row of KNOWN still matches a real edge: a fixed violation must leave the list."""
    _, found, _ = graph()
    present = {(e.src, e.dst, e.name) for e in found}
    stale = [row for row in KNOWN if row not in present]
    assert not stale, "rows of KNOWN that match nothing any more (delete them):\n" + "\n".join(map(str, stale))


def test_the_checks_catch_what_they_look_for(tmp_path):
    """On a made-up package: a function-level import going up, a private name, a private attribute,
    a cycle through them, an old flat path and a name its module does not define are all found."""
    files = {"__init__.py": "", "core/__init__.py": "", "data/__init__.py": "",
             "core/a.py": "def f():\n    from ..data import b\n    return b\n_y = 1\n",
             "data/b.py": "from ..core.a import _y\n",
             "data/c.py": "from ..core import a\nfrom tinygrad_explain.engine import Tensor\nz = a._y\n"
                          "from ..core.a import gone\n"}
    for name, text in files.items():
        (tmp_path / PKG / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PKG / name).write_text(text)
    _, found, unknown = graph(tmp_path)
    a, b, c = (f"{PKG}.core.a", f"{PKG}.data.b", f"{PKG}.data.c")
    assert cycles(found) == [[a, b]]
    assert [(e.src, e.dst) for e in found if LAYERS.index(layer(e.dst)) > LAYERS.index(layer(e.src))] == [(a, b)]
    assert sorted((e.src, e.name) for e in found if e.name and _private(e.name)) == [(b, "_y"), (c, "_y")]
    assert unknown == [f"{PKG}/data/c.py:2: {PKG}.engine", f"{PKG}/data/c.py:4: {PKG}.core.a.gone"]


def test_old_paths_are_the_new_modules():
    """Every row of the alias table: the old flat path imports, and is the very module object of the
    new path (one module, not a copy: monkeypatching either patches both); ``te.gradcheck`` stays
    the function; a moved name answers at its old address."""
    import tinygrad_explain as te
    from tinygrad_explain import _aliases
    for old, new in _aliases.ALIASES.items():
        module = importlib.import_module(f"{PKG}.{old}")
        assert module is importlib.import_module(f"{PKG}.{new}"), old
        assert module.__name__ == module.__spec__.name == f"{PKG}.{new}", old
        assert sys.modules[f"{PKG}.{old}"] is module
    assert callable(te.gradcheck) and te.engine is sys.modules[f"{PKG}.engine"]
    for (old_module, old_name), (new_module, new_name) in _aliases.MOVED_NAMES.items():
        assert getattr(sys.modules[f"{PKG}.{old_module}"], old_name) is \
            getattr(importlib.import_module(f"{PKG}.{new_module}"), new_name)
    assert set(_aliases.ALIASES) == {n for n in _aliases.ALIASES if not (ROOT / PKG / f"{n}.py").exists()}, \
        "an old path is a file again: remove its alias row"
