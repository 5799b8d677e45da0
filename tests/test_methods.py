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


def by_hand(model, x, target, rule="backprop"):
    """dS_target/dx by one backward pass of the engine under ``rule`` (not through te.explain)."""
    with te.relu_backward(rule):
        xt = te.Tensor(x, requires_grad=True)
        scores = model(xt)
        pick = np.zeros(scores.shape, scores.numpy().dtype)
        pick[np.arange(len(x)), target] = 1
        (scores * te.Tensor(pick)).sum().backward()
    return np.asarray(xt.grad)


def smoothgrad_by_hand(model, x, target):
    """Smilkov et al.: |dS/dx| averaged over 25 noisy copies (15% of the range), then the max over channels."""
    noise = X.attribution.smoothgrad_noise(x, 0.15, 25, 0)
    g = np.mean([np.abs(by_hand(model, (x + noise[:, s]).astype(x.dtype), target)) for s in range(25)], axis=0)
    return g.max(1)


#: what each name means, computed without the registry: by one backward pass of the engine where the
#: method is a gradient, else with the te.explain function it names (checked by identity below)
DIRECT = {
    "gradient": lambda m, x, t: by_hand(m, x, t),
    "saliency": lambda m, x, t: np.abs(by_hand(m, x, t)).max(1),
    "deconvnet": lambda m, x, t: by_hand(m, x, t, "deconvnet"),
    "guided": lambda m, x, t: by_hand(m, x, t, "guided"),
    "smoothgrad": smoothgrad_by_hand,
    "gradcam": lambda m, x, t: X.gradcam(m, x, t),
    "guided-gradcam": lambda m, x, t: by_hand(m, x, t, "guided") * X.gradcam(m, x, t)[:, None],
    "occlusion": lambda m, x, t: X.occlusion(m, x, t),
    "grad-x-input": lambda m, x, t: x * by_hand(m, x, t),
    "grabcut": lambda m, x, t: np.abs(by_hand(m, x, t)).max(1),
}
#: the entries that are a te.explain function itself (no wrapper)
SAME_FUNCTION = {"saliency": X.saliency, "smoothgrad": X.smoothgrad, "gradcam": X.gradcam,
                 "guided-gradcam": X.guided_gradcam, "occlusion": X.occlusion, "grad-x-input": X.gradient_x_input,
                 "grabcut": X.saliency}
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
    """Each entry computes what its name means: the gradients against one backward pass of the engine
    (float32: the same operations in the same order, so equal to rounding)."""
    model, x = tiny
    got = methods.get(name).fn(model, x, [0, 2])
    want = DIRECT[name](model, x, [0, 2])
    assert got.shape == ((2, 2, 9, 9) if name in CHANNELS else (2, 9, 9))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max())
    if name in SAME_FUNCTION:
        assert methods.get(name).fn is SAME_FUNCTION[name]


def test_optimisations_are_registered_with_their_options():
    """class-model, maximize and invert: one signature fn(model, x, target, **options) -> Made, every
    option and requirement a keyword of fn, the CLI's help line from summary and paper."""
    assert set(methods.OPTIMIZATIONS) == {"class-model", "maximize", "invert"}
    assert set(methods.every()) == set(methods.METHODS) | set(methods.OPTIMIZATIONS)
    for name, m in methods.OPTIMIZATIONS.items():
        params = inspect.signature(m.fn).parameters
        assert list(params)[:3] == ["model", "x", "target"], name
        assert set(m.options) <= set(params) and set(m.required) <= set(m.options) | {"target"}, name
        assert m.help == f"{m.summary} ({m.paper})."
    assert methods.OPTIMIZATIONS["invert"].needs_image and not methods.OPTIMIZATIONS["class-model"].needs_image


def test_optimisation_entries_make_what_the_api_makes():
    """Each optimisation entry returns the display image(s) of the te.explain function it wraps."""
    from tinygrad_explain.apps.walkthrough import tiny_network
    model = tiny_network()                                   # RGB 8x8, classes circle, square, triangle
    made = methods.OPTIMIZATIONS["class-model"].fn(model, None, "square", steps=3, seed=1)
    v = X.class_model(model, 1, steps=3, seed=1, progress=False)
    np.testing.assert_array_equal(made.images[0], v.display[0])
    assert made.captions is None and made.lines == [
        f"class model of {v.labels[0]}: score {v.final[0]:.2f}, softmax {v.probability[0]:.4f}"]
    made = methods.OPTIMIZATIONS["maximize"].fn(model, None, None, layer="conv2", unit="1", steps=3)
    v = X.maximize(model, "conv2", 1, steps=3, progress=False)
    np.testing.assert_array_equal(made.images[0], v.display[0])
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    made = methods.OPTIMIZATIONS["invert"].fn(model, x, None, layer="fc1", inits=2, steps=3)
    inv = X.invert(model, x, layer="fc1", inits=2, steps=3, progress=False)
    assert len(made.images) == 2 and made.captions == [f"error {e:.3f}" for e in inv.errors]
    for a, b in zip(made.images, inv.display):
        np.testing.assert_array_equal(a, b)


def test_get_accepts_underscores_and_names_the_choices():
    assert methods.get("guided_gradcam") is methods.METHODS["guided-gradcam"]
    with pytest.raises(X.ExplainError, match="unknown method 'lime'; choose from gradient, saliency"):
        methods.get("lime")
