"""SmoothGrad, Grad-CAM, guided Grad-CAM, occlusion and gradient x input equal Captum's
NoiseTunnel, LayerGradCam, GuidedGradCam, Occlusion and InputXGradient on the same
weights, in float64 (the small net of test_explain_torch.py: conv, ReLU, LRN,
overlapping max-pooling, linear layers).  SmoothGrad gets the identical noise:
Captum's noise draw is replaced by te's ``smoothgrad_noise``.
"""
from __future__ import annotations

import _need as need
import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.explain import attribution as A

torch = need.module("torch")
captum_attr = need.module("captum.attr")

from _reference import numeric_grad  # noqa: E402
from test_explain_torch import te_net, torch_net  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TARGETS = [0, 3, 4, 1]
RELU2 = 5            # index of relu2 in the torch Sequential (te layer "relu2")


@pytest.fixture(scope="module")
def nets64():
    net = torch_net().double()
    m = te_net(torch_net()).astype(np.float64)
    return net, m


@pytest.fixture(scope="module")
def x64():
    return np.random.default_rng(0).standard_normal((4, 3, 13, 13))


def close(ours, ref):
    """Equal to float64 rounding."""
    ref = np.asarray(ref)
    assert ref.dtype == np.float64 and np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_smoothgrad_matches_noise_tunnel(nets64, x64, monkeypatch):
    net, m = nets64
    noise, samples, seed = 0.2, 6, 3
    eps = A.smoothgrad_noise(x64, noise, samples, seed)           # (N, samples, C, H, W)

    def same_noise(inp, stdev, n):                                # Captum's draw, replaced by ours
        assert n == samples
        return inp.repeat_interleave(n, dim=0) + torch.from_numpy(eps.reshape((-1,) + inp.shape[1:]))
    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(same_noise))
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(net))
    xt = torch.from_numpy(x64).requires_grad_(True)
    for absolute in (False, True):
        ref = nt.attribute(xt, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples,
                           stdevs=1.0, target=TARGETS, abs=absolute).detach().numpy()
        ours = te.explain.smooth_gradient(m, x64, TARGETS, noise=noise, samples=samples, seed=seed,
                                          absolute=absolute, batch_size=7)
        close(ours, ref)
    close(te.explain.smoothgrad(m, x64, TARGETS, noise=noise, samples=samples, seed=seed), ref.max(1))


def test_gradcam_matches_layer_gradcam(nets64, x64):
    net, m = nets64
    lgc = captum_attr.LayerGradCam(net, net[RELU2])
    xt = torch.from_numpy(x64)
    ref = lgc.attribute(xt, target=TARGETS, relu_attributions=True)             # (N, 1, h, w)
    ours = te.explain.gradcam(m, x64, TARGETS, layer="relu2", upsample_to_input=False)
    close(ours, ref.detach().numpy()[:, 0])
    up = captum_attr.LayerAttribution.interpolate(ref, (13, 13), interpolate_mode="bilinear")
    close(te.explain.gradcam(m, x64, TARGETS, layer="relu2"), up.detach().numpy()[:, 0])
    assert A.default_cam_layer(m) == "relu2"
    close(te.explain.gradcam(m, x64, TARGETS), up.detach().numpy()[:, 0])


def test_guided_gradcam_matches_captum(nets64, x64):
    net, m = nets64
    ref = captum_attr.GuidedGradCam(net, net[RELU2]).attribute(torch.from_numpy(x64).requires_grad_(True),
                                                                target=TARGETS, interpolate_mode="bilinear")
    close(te.explain.guided_gradcam(m, x64, TARGETS, layer="relu2"), ref.detach().numpy())


@pytest.mark.parametrize("output", ["probability", "score"])
def test_occlusion_matches_captum(nets64, x64, output):
    net, m = nets64
    patch, stride = 4, 3                     # 13 = 4 + 3*3: the windows tile the image
    fwd = (lambda t: torch.softmax(net(t), 1)) if output == "probability" else net
    ref = captum_attr.Occlusion(fwd).attribute(torch.from_numpy(x64), sliding_window_shapes=(3, patch, patch),
                                               strides=(3, stride, stride), baselines=0.5, target=TARGETS,
                                               perturbations_per_eval=5).detach().numpy()
    ours = te.explain.occlusion(m, x64, TARGETS, patch=patch, stride=stride, output=output, batch_size=5)
    np.testing.assert_array_equal(A.grey(m)[:, 0, 0], 0.5)      # the test net has no preprocessing: grey = 0.5
    assert ref.dtype == np.float32    # Captum's Occlusion returns attributions.float() / counts: float32 rounding
    for c in range(3):                # Captum repeats the map in each channel
        np.testing.assert_allclose(ours, ref[:, c], rtol=2e-7, atol=1e-12)


def test_gradient_x_input_matches_captum(nets64, x64):
    net, m = nets64
    ref = captum_attr.InputXGradient(net).attribute(torch.from_numpy(x64).requires_grad_(True), target=TARGETS)
    close(te.explain.gradient_x_input(m, x64, TARGETS), ref.detach().numpy())


# --------------------------------------------------------------------------
# the gradients are gradients: central differences in float64
# --------------------------------------------------------------------------
def _score(m, x, t):
    with te.no_grad():
        return float(m(x).numpy()[0, t])


def test_smooth_gradient_is_the_gradient_of_the_smoothed_score(nets64, x64):
    _, m = nets64
    x = x64[:1].copy()
    eps = A.smoothgrad_noise(x, 0.1, 3, seed=1)[0]
    smoothed = lambda: np.mean([_score(m, x + e[None], 2) for e in eps])   # noqa: E731
    num = numeric_grad(smoothed, x, eps=1e-6, idx=range(0, x.size, 7))
    ana = te.explain.smooth_gradient(m, x, 2, noise=0.1, samples=3, seed=1).reshape(-1)
    for i, v in num.items():
        assert abs(ana[i] - v) <= 1e-6 + 1e-5 * abs(v), (i, ana[i], v)


def test_gradcams_layer_gradient_is_the_gradient_at_the_layer(nets64, x64):
    """dS/dA by central differences on A, running the layers above ``conv2`` by hand (its
    output, not relu2's: relu2's zeros tie in the max-pool above, a kink for differences)."""
    _, m = nets64
    g = te.explain.gradient(m, x64[:1], 3, layer="conv2")
    with te.no_grad():
        a = m(x64[:1], until="conv2").numpy().copy()
    assert np.abs(a).min() > 1e-4                                  # no ReLU kink within eps
    names = m.layer_names
    rest = names[names.index("conv2") + 1:]

    def score_from_a():
        h = te.Tensor(a)
        with te.no_grad():
            for n in rest:
                h = m.layers[n](h)
        return float(h.numpy()[0, 3])
    num = numeric_grad(score_from_a, a, eps=1e-6, idx=range(0, a.size, 5))
    for i, v in num.items():
        assert abs(g.reshape(-1)[i] - v) <= 1e-6 + 1e-5 * abs(v), (i, g.reshape(-1)[i], v)
    assert np.abs(g).max() > 0
