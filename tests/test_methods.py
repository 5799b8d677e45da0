"""te.explain.methods, the one method table of the CLI, the explorer, the sanity checks and the
benchmark: each entry computes what its te.explain function computes, with the shape its docstring
promises, and offers only options its function takes."""
import inspect

import numpy as np
import pytest
from _reference import tiny_network

import tinygrad_explain as te
from tinygrad_explain.explain import methods

X = te.explain
DIRECT = {   # what each name means, written out with te.explain's own functions
    "gradient": lambda m, x, t: X.gradient(m, x, t),
    "saliency": lambda m, x, t: X.saliency(m, x, t),
    "deconvnet": lambda m, x, t: X.gradient(m, x, t, rule="deconvnet"),
    "guided": lambda m, x, t: X.gradient(m, x, t, rule="guided"),
    "smoothgrad": lambda m, x, t: X.smoothgrad(m, x, t),
    "gradcam": lambda m, x, t: X.gradcam(m, x, t),
    "guided-gradcam": lambda m, x, t: X.guided_gradcam(m, x, t),
    "occlusion": lambda m, x, t: X.occlusion(m, x, t),
    "grad-x-input": lambda m, x, t: X.gradient_x_input(m, x, t),
    "grabcut": lambda m, x, t: X.saliency(m, x, t),
}
CHANNELS = {"gradient", "deconvnet", "guided", "guided-gradcam", "grad-x-input"}     # (N, C, H, W)


@pytest.fixture(scope="module")
def tiny():
    return tiny_network(dropout=False), np.random.default_rng(3).standard_normal((2, 2, 9, 9)).astype(np.float32)


def test_every_method_is_listed_and_described():
    assert set(methods.METHODS) == set(DIRECT)
    for name, m in methods.METHODS.items():
        assert m.name == name and m.summary and m.paper and m.rule in te.RELU_RULES
        assert m.help == f"{m.summary} ({m.paper})."
        params = inspect.signature(m.fn).parameters
        assert list(params)[:3] == ["model", "x", "target"], name
        assert set(m.options) <= set(params), name


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_method_computes_its_function(tiny, name):
    model, x = tiny
    got = methods.get(name).fn(model, x, [0, 2])
    want = DIRECT[name](model, x, [0, 2])
    assert got.shape == ((2, 2, 9, 9) if name in CHANNELS else (2, 9, 9))
    np.testing.assert_array_equal(got, want)


def test_get_accepts_underscores_and_names_the_choices():
    assert methods.get("guided_gradcam") is methods.METHODS["guided-gradcam"]
    with pytest.raises(X.ExplainError, match="unknown method 'lime'; choose from gradient, saliency"):
        methods.get("lime")
