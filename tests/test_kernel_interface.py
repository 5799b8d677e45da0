"""Both kernel backends implement the declared interface (kernels/interface.py),
and the interface declares every kernel the package calls."""
import re
from pathlib import Path
from types import SimpleNamespace

from tinygrad_explain import kernels as K
from tinygrad_explain.kernels import gpu as G
from tinygrad_explain.kernels import interface as I

PACKAGE = Path(K.__file__).resolve().parents[1] / "tinygrad_explain"


def test_the_cpu_package_implements_the_whole_interface():
    assert I.missing(K) == []


def test_the_gpu_module_implements_all_but_the_cpu_only_kernels():
    # importing kernels.gpu needs no CuPy: its wrappers reach CuPy only when called
    assert I.missing(G, gpu=True) == []
    for name, ns in I.INTERFACE.items():
        if ns.cpu_only:
            assert ns.why, name                      # a CPU-only kernel says what the GPU does instead


def test_an_incomplete_backend_is_reported_line_by_line():
    fake = SimpleNamespace(__name__="fake", relu=SimpleNamespace(forward=lambda x: x, backward=lambda y, g: g))
    problems = I.missing(fake, gpu=True)
    assert "fake: no namespace 'max_pool2d'" in problems
    assert any(p.startswith("fake: relu.backward(y, g) differs") for p in problems)


def test_every_kernel_the_package_calls_is_declared():
    """ops / nn / the optimiser reach kernels as K.<ns>.<fn>, B.<ns>.<fn> (B = K.backend(x))
    or K.backend(x).<ns>.<fn>: each must be in the interface."""
    pattern = re.compile(r"\b(?:K|B|K\.backend\([^)]*\))\.([a-z_0-9]+)\.([a-z_0-9]+)\b")
    used = set()
    for path in PACKAGE.rglob("*.py"):
        used |= {m.groups() for m in pattern.finditer(path.read_text())}
    assert used, "the pattern found no kernel calls"
    undeclared = sorted(f"{ns}.{fn}" for ns, fn in used
                        if ns not in I.INTERFACE or fn not in I.INTERFACE[ns].functions)
    assert undeclared == []
