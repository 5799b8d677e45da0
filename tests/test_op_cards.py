"""The op table at the top of tinygrad_explain/core/ops.py (``ops.CARDS``) against the code.

* every Function subclass in ops has exactly one card, and every card names one;
* every naive reference, CPU kernel module and CUDA source a card names exists, each
  .cu defines the kernels ``kernels/gpu.py`` compiles from it, and a stem's kernels and
  its GPU namespace carry the stem (``max_pool2d.cu``: ``max_pool2d_forward<T>``...);
* each card's CPU kernel computes its naive reference's forward on a small float64
  input, called through the names the card gives (the ops' forwards and backwards are
  checked against the naive ones in tests/test_naive.py and test_gradcheck_ops.py:
  here a card whose naive reference is not exercised there fails);
* the test a card names for its gradcheck exists, once, and calls ``te.gradcheck``
  (which refuses anything but float64).
"""
import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
from _reference import distinct, rng

from tinygrad_explain import kernels as K
from tinygrad_explain.core import naive, ops
from tinygrad_explain.core.engine import Function
from tinygrad_explain.kernels import gpu, interface

TESTS = Path(__file__).resolve().parent
KERNEL_DIR = Path(K.__file__).resolve().parent
KERNEL_CARDS = [c for c in ops.CARDS if c.cpu or c.cuda]


def _test_functions():
    """{test function name: [(file, source)]} over tests/test_*.py."""
    found = {}
    for f in sorted(TESTS.glob("test_*.py")):
        text = f.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                found.setdefault(node.name, []).append((f.name, ast.get_source_segment(text, node)))
    return found


def test_every_function_in_ops_has_one_card():
    functions = {name for name, obj in vars(ops).items()
                 if inspect.isclass(obj) and issubclass(obj, Function) and obj.__module__ == ops.__name__}
    names = [c.function for c in ops.CARDS]
    assert len(names) == len(set(names)), "a Function has two cards"
    assert functions - set(names) == set(), "Functions in ops.py without a card in ops.CARDS"
    assert set(names) - functions == set(), "cards naming no Function of ops.py"


@pytest.mark.parametrize("card", [c for c in ops.CARDS if c.naive], ids=lambda c: c.function)
def test_naive_reference_exists(card):
    for part in ("forward", "backward"):
        assert callable(getattr(naive, f"{card.naive}_{part}", None)), f"naive.{card.naive}_{part}"


@pytest.mark.parametrize("card", KERNEL_CARDS, ids=lambda c: c.function)
def test_kernel_modules_and_cuda_sources_exist(card):
    for name in card.cpu.split():
        assert (KERNEL_DIR / f"{name}.py").is_file(), f"kernels/{name}.py"
        assert getattr(K, name).__file__ == str(KERNEL_DIR / f"{name}.py")    # K.<name> is that module
        assert name in interface.INTERFACE, f"kernels/{name}.py is not declared in kernels/interface.py"
    for source in card.cuda.split():
        text = (KERNEL_DIR / source).read_text()
        assert source in gpu.KERNELS, f"kernels/gpu.py does not compile {source}"
        for kernel in gpu.KERNELS[source]:
            assert f"__global__ void {kernel}(" in text, f"{source} does not define {kernel}"
        stem = source.removesuffix(".cu")
        if stem == card.naive or stem in card.cpu.split() and stem not in ("im2col", "layout"):
            # a stem's CUDA kernels are <stem>_forward / <stem>_backward*, its GPU twin gpu.<stem>
            assert all(k.startswith(stem + "_") for k in gpu.KERNELS[source]), gpu.KERNELS[source]
            assert hasattr(gpu, stem) and stem in card.cpu.split()


def test_the_stems_are_the_same_at_every_level():
    """A kernel card's CPU module and CUDA source carry its naive stem (the named exceptions:
    convolution's building blocks, and the adaptive pooling held by avg_pool2d)."""
    exceptions = {"Conv2d", "AdaptiveAvgPool2d", "Linear"}        # Linear: cuBLAS on the GPU, no .cu
    for card in KERNEL_CARDS:
        if card.function not in exceptions:
            assert card.cpu == card.naive and card.cuda == f"{card.naive}.cu", card
    conv = next(c for c in ops.CARDS if c.function == "Conv2d")
    assert conv.naive == "conv2d" and "depthwise_conv2d" in conv.cpu.split()


def _params(fn):
    return [q.name for q in inspect.signature(fn).parameters.values()]


# the naive forward and the kernel's take the same arguments, in the same order, by the same names,
# except: conv2d (im2col + GEMM), linear (a packed weight) and batch_norm (the folded scale) -- the op
# prepares what the kernel takes
SAME_FORWARD = {"relu": "relu", "clip": "clip", "max_pool2d": "max_pool2d", "avg_pool2d": "avg_pool2d",
                "lrn": "lrn", "adaptive_avg_pool2d": "avg_pool2d.adaptive"}


@pytest.mark.parametrize("stem", sorted(SAME_FORWARD))
def test_naive_and_kernel_forwards_take_the_same_arguments(stem):
    module, _, prefix = SAME_FORWARD[stem].partition(".")
    kernel = getattr(getattr(K, module), f"{prefix}_forward" if prefix else "forward")
    assert _params(getattr(naive, f"{stem}_forward")) == _params(kernel)


def test_max_pool2d_backwards_take_the_same_switches():
    assert _params(naive.max_pool2d_backward) == _params(K.max_pool2d.backward) == \
        _params(gpu.max_pool2d.backward)
    x = distinct((1, 2, 7, 6))
    y, switch = K.max_pool2d.forward(x, 3, 2, 1)
    g = rng(1).standard_normal(y.shape)
    np.testing.assert_array_equal(K.max_pool2d.backward(g, switch, x.shape),
                                  naive.max_pool2d_backward(g, naive.max_pool2d_forward(x, 3, 2, 1)[1], x.shape))


# --------------------------------------------------------------------------
# each card's CPU kernel against its naive reference, forward, float64
# --------------------------------------------------------------------------
def _conv2d():
    x, w, b = rng(0).standard_normal((2, 3, 7, 6)), rng(1).standard_normal((4, 3, 3, 3)), rng(2).standard_normal(4)
    oh, ow = K.im2col.out_size(7, 3, 2, 1), K.im2col.out_size(6, 3, 1, 1)
    col = K.im2col.im2col(x, 3, 3, (2, 1), (1, 1))
    y = np.empty((2, 4, oh * ow))
    K.layout.rows_to_nchw(w.reshape(4, -1) @ col, b, y)
    yield y.reshape(2, 4, oh, ow), naive.conv2d_forward(x, w, b, (2, 1), 1)
    wd, bd = rng(3).standard_normal((6, 1, 3, 3)), rng(4).standard_normal(6)       # depthwise, m = 2
    yield K.depthwise_conv2d.forward(x, wd, bd, (1, 2), (1, 0)), naive.conv2d_forward(x, wd, bd, (1, 2), (1, 0), 3)


def _linear():
    x, w, b = rng(0).standard_normal((3, 7)), rng(1).standard_normal((5, 7)), rng(2).standard_normal(5)
    yield K.linear.forward(x, K.linear.pack(w), b), naive.linear_forward(x, w, b)


def _relu():
    x = rng(0).standard_normal((2, 3, 4, 5))
    yield K.relu.forward(x), naive.relu_forward(x)


def _clip():
    x = 2 * rng(0).standard_normal((2, 3, 4, 5))
    yield K.clip.forward(x, -0.5, 0.7), naive.clip_forward(x, -0.5, 0.7)


def _max_pool2d():
    ties = np.round(rng(0).standard_normal((2, 2, 9, 8)))          # many ties: the first maximum wins
    for x, window, ceil in ((distinct((1, 2, 8, 7)), (3, 2, 1), False), (ties, (3, 2, 0), False),
                            (ties, (2, 2, 1), True)):
        yield K.max_pool2d.forward(x, *window, ceil_mode=ceil), naive.max_pool2d_forward(x, *window, ceil_mode=ceil)


def _avg_pool2d():
    x = rng(0).standard_normal((2, 3, 7, 8))
    for args in ((3, 2, 1, True, False), (2, 2, 0, False, True)):
        yield K.avg_pool2d.forward(x, *args), naive.avg_pool2d_forward(x, *args)


def _adaptive_avg_pool2d():
    x = rng(0).standard_normal((2, 3, 7, 8))
    yield K.avg_pool2d.adaptive_forward(x, (3, 5)), naive.adaptive_avg_pool2d_forward(x, (3, 5))


def _lrn():
    x = rng(0).standard_normal((2, 7, 3, 4))
    yield K.lrn.forward(x, 5, 0.5, 0.75, 2.0)[0], naive.lrn_forward(x, 5, 0.5, 0.75, 2.0)


def _batch_norm():
    x = rng(0).standard_normal((2, 3, 4, 5))
    mean, var, weight, bias = rng(1).standard_normal(3), rng(2).random(3) + 0.5, rng(3).standard_normal(3), \
        rng(4).standard_normal(3)
    scale = weight / np.sqrt(var + 1e-3)
    yield K.batch_norm.forward(x, mean, scale, bias), naive.batch_norm_forward(x, mean, var, weight, bias, 1e-3)


KERNEL_VS_NAIVE = {"conv2d": _conv2d, "linear": _linear, "relu": _relu, "clip": _clip, "max_pool2d": _max_pool2d,
                   "avg_pool2d": _avg_pool2d, "adaptive_avg_pool2d": _adaptive_avg_pool2d, "lrn": _lrn,
                   "batch_norm": _batch_norm}


def test_every_kernel_card_is_checked_against_its_naive_reference():
    assert {c.naive for c in ops.CARDS if c.naive and c.cpu} == set(KERNEL_VS_NAIVE)


@pytest.mark.parametrize("stem", sorted(KERNEL_VS_NAIVE))
def test_cpu_kernel_forward_equals_naive_forward(stem):
    n = 0
    for fast, ref in KERNEL_VS_NAIVE[stem]():
        fast, ref = (fast, ref) if isinstance(ref, tuple) else ((fast,), (ref,))
        for a, b in zip(fast, ref, strict=True):               # max_pool2d: (y, switches), the switches exactly
            assert a.shape == b.shape and a.dtype == b.dtype, (stem, a.shape, b.shape, a.dtype, b.dtype)
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13, err_msg=stem)
        n += 1
    assert n >= 1


def test_the_naive_references_are_checked_through_the_ops():
    """Each naive reference's forward and backward are compared with the op's in tests/test_naive.py."""
    sources = [src for tests in _test_functions().values() for f, src in tests if f == "test_naive.py"]
    for card in ops.CARDS:
        if card.naive:
            assert any(f"naive.{card.naive}_forward(" in s and f"naive.{card.naive}_backward(" in s
                       for s in sources), f"no test in test_naive.py compares naive.{card.naive}_* with the op"


def test_each_card_names_its_gradcheck():
    found = _test_functions()
    for card in ops.CARDS:
        where = found.get(card.gradcheck, [])
        assert len(where) == 1, f"{card.function}: test {card.gradcheck} defined {len(where)} times in tests/"
        assert "gradcheck(" in where[0][1], f"{card.function}: {where[0][0]}::{card.gradcheck} does not gradcheck"
