"""The new attribution methods without the torch reference: SmoothGrad's noise,
gradient x input's sum rule, channel / neuron targets, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from _reference import tiny_network

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.explain import attribution as A

pytestmark = pytest.mark.usefixtures("one_thread")
TARGETS = [0, 3, 4, 1]


@pytest.fixture(scope="module")
def x64():
    return np.random.default_rng(0).standard_normal((4, 3, 13, 13))


def test_smoothgrad_noise_level_and_seed():
    x = np.zeros((2, 3, 8, 8))
    x[0, 0, 0, 0], x[1] = 2.0, np.linspace(-1, 1, 192).reshape(3, 8, 8)    # ranges 2 and 2
    x[1] *= 3                                                              # range 6
    eps = A.smoothgrad_noise(x, 0.1, 4000, seed=5)
    assert eps.shape == (2, 4000, 3, 8, 8)
    np.testing.assert_allclose(eps[0].std(), 0.2, rtol=0.01)
    np.testing.assert_allclose(eps[1].std(), 0.6, rtol=0.01)
    np.testing.assert_array_equal(eps, A.smoothgrad_noise(x, 0.1, 4000, seed=5))
    assert not np.array_equal(eps, A.smoothgrad_noise(x, 0.1, 4000, seed=6))


def test_gradient_x_input_sums_to_the_score_without_biases(x64):
    """Euler: a bias-free ReLU/max-pool/linear network is positively homogeneous of degree 1,
    so sum(x * dS/dx) = S(x).  (LRN is not homogeneous: the net here has none.)"""
    te.manual_seed(0)
    m = te.Network([("conv1", nn.Conv2d(3, 5, 3, 1, 1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2)),
                    ("flatten", nn.Flatten()), ("fc", nn.Linear(5 * 6 * 6, 5))], (3, 13, 13)).astype(np.float64)
    for layer in ("conv1", "fc"):
        m.layers[layer].bias.data[:] = 0
    with te.no_grad():
        s = m(x64).numpy()[np.arange(4), TARGETS]
    np.testing.assert_allclose(te.explain.gradient_x_input(m, x64, TARGETS).sum(axis=(1, 2, 3)), s, rtol=1e-10)


@pytest.fixture(scope="module")
def tiny():
    return tiny_network(dropout=False).astype(np.float64), np.random.default_rng(2).standard_normal((3, 2, 9, 9))


def test_smoothgrad_of_a_neuron_is_the_mean_gradient_of_the_noisy_copies(tiny):
    m, x = tiny
    target = ("conv2", 1, 2, 3)
    eps = A.smoothgrad_noise(x, 0.2, 4, seed=7)
    by_hand = np.mean([te.explain.gradient(m, x + eps[:, k], target) for k in range(4)], axis=0)
    ours = te.explain.smooth_gradient(m, x, target, noise=0.2, samples=4, seed=7, batch_size=5)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-10, atol=1e-14)
    per_image = [0, "conv2:1", ("conv2", 1, 2, 3)]                  # mixed layers: refused, one call per layer
    with pytest.raises(te.explain.ExplainError, match="different layers"):
        te.explain.smooth_gradient(m, x, per_image, samples=2)


def test_occlusion_of_a_channel_is_the_drop_of_its_mean_activation(tiny):
    m, x = tiny
    occ = te.explain.occlusion(m, x[:1], ("conv2", 4), patch=9, stride=1, fill=[0.0, 0.0])   # one square: all
    with te.no_grad():
        full = m(x[:1], until="conv2").numpy()[0, 4].mean()
        zero = m(np.zeros_like(x[:1]), until="conv2").numpy()[0, 4].mean()
    np.testing.assert_allclose(occ[0], np.full((9, 9), full - zero), rtol=1e-10)


def test_gradcam_of_a_neuron_above_the_layer(tiny):
    m, x = tiny
    cam = te.explain.gradcam(m, x, ("fc1", 2), layer="relu2", upsample_to_input=False)
    g = te.explain.gradient(m, x, ("fc1", 2), layer="relu2")
    with te.no_grad():
        a = m(x, until="relu2").numpy()
    np.testing.assert_allclose(cam, np.maximum((g.mean(axis=(2, 3), keepdims=True) * a).sum(1), 0))
    assert A.default_cam_layer(m) == "relu2"


@pytest.mark.parametrize("call, message", [
    (lambda m, x: te.explain.smoothgrad(m, x, 0, samples=0), "samples must be an integer >= 1"),
    (lambda m, x: te.explain.smoothgrad(m, x, 0, noise=-1), "noise must be a finite level"),
    (lambda m, x: te.explain.gradcam(m, x, 0, layer="fc1"), "needs a layer with feature maps"),
    (lambda m, x: te.explain.gradcam(m, x, 0, layer="conv9"), "unknown layer 'conv9'"),
    (lambda m, x: te.explain.occlusion(m, x, 0, patch=10), "need 1 <= patch <= 9"),
    (lambda m, x: te.explain.occlusion(m, x, 0, output="logit"), "output must be"),
    (lambda m, x: te.explain.gradient_x_input(m, x, 7), "out of range"),
])
def test_bad_input(tiny, call, message):
    m, x = tiny
    with pytest.raises(te.explain.ExplainError, match=message):
        call(m, x)
