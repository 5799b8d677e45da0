"""The application layer (tinygrad_explain/apps/): the old flat names still import, as the same
modules; nothing below the applications imports them; and the applications' own imports form no
cycle (figures <-> figures_robust / figures_resnet went through a private name before)."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import tinygrad_explain as te
from tinygrad_explain._aliases import ALIASES

# the applications' rows of the package's one alias table, as full names (cli's submodules too)
_APP_ALIASES = {f"tinygrad_explain.{old}": f"tinygrad_explain.{new}" for old, new in ALIASES.items()
                if new.startswith("apps.")}
_APP_ALIASES.update({f"tinygrad_explain.cli.{m}": f"tinygrad_explain.apps.cli.{m}"
                     for m in ("evaluate", "explain", "sanity")})

PACKAGE = Path(te.__file__).resolve().parent


@pytest.mark.parametrize("old, new", sorted(_APP_ALIASES.items()))
def test_old_names_are_the_new_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(old).__name__ == new


def test_old_from_imports_in_a_fresh_process():
    """``from tinygrad_explain import figures`` etc. in a process that imported nothing else first."""
    code = ("from tinygrad_explain import figures, explorer, draw, cli, walkthrough, gallery\n"
            "import tinygrad_explain.cli.sanity as s\n"
            "assert figures.__name__ == 'tinygrad_explain.apps.figures' and callable(figures.main)\n"
            "assert s.__name__ == 'tinygrad_explain.apps.cli.sanity' and explorer.Explorer and draw.heat\n")
    env_path = str(PACKAGE.parent)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, cwd=env_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The tinygrad_explain modules ``path`` imports (at its top or inside functions)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("tinygrad_explain"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("tinygrad_explain"))
    return out


def test_nothing_below_the_applications_imports_them():
    # the package's __init__ installs the aliases only; __main__ is the command line's entry, on top
    top = (PACKAGE / "__init__.py", PACKAGE / "__main__.py")
    below = [p for p in PACKAGE.rglob("*.py") if "apps" not in p.relative_to(PACKAGE).parts and p not in top]
    found = [f"{p.relative_to(PACKAGE.parent)}: {sorted(i for i in _imports(p) if '.apps' in i)}"
             for p in below if any(".apps" in i for i in _imports(p))]
    assert not found, f"modules below apps/ that import it: {found}"


def test_the_applications_import_no_cycle():
    files = {_module_name(p): p for p in (PACKAGE / "apps").rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None
    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, f"import cycles among the applications: {cycles[0]}"


def test_the_cycle_check_can_fail(tmp_path):
    """_imports sees a relative import of a sibling (what a cycle is made of)."""
    f = PACKAGE / "apps" / "figures_robust.py"
    assert "tinygrad_explain.apps.figures.captions" in _imports(f)
    assert "tinygrad_explain.apps.gallery" in _imports(f)
