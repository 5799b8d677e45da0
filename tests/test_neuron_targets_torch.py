"""Channel and neuron targets, and gradients at a layer, against Captum on both AlexNets.

The lecture's procedure for deconvnet and guided backprop -- pick a layer, set the
gradient there to 0 except for one neuron (or a channel's mean), backprop to the
image -- is Captum's NeuronGradient, NeuronDeconvolution and NeuronGuidedBackprop;
"what gradient reaches conv3?" is LayerGradientXActivation with
``multiply_by_inputs=False`` (Captum's layer gradient, not multiplied by the
activation).  Same random weights, float64 on both sides (no float32 ReLU sign
flips, no max-pool near-ties): the results must agree to rounding.

Cost: each variant's float64 AlexNet runs a few forward/backward passes per side
on one thread (tens of seconds on a busy 2-core machine in all).
"""
import _need as need
import numpy as np
import pytest

torch = need.module("torch")
captum_attr = need.module("captum.attr")

from _reference import rel_err, torch_alexnet, torch_state_dict  # noqa: E402

import tinygrad_explain as te  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-9                 # float64 on both sides: rounding only
LAYER = "conv5"
CHANNEL, NEURON = 7, (3, 5, 6)
TARGETS = [(LAYER, CHANNEL), (LAYER,) + NEURON]      # image 0: a channel's mean, image 1: one neuron
CAPTUM = {"backprop": "NeuronGradient", "deconvnet": "NeuronDeconvolution", "guided": "NeuronGuidedBackprop"}


@pytest.fixture(scope="module", params=["torchvision", "caffe"])
def pair(request):
    torch.manual_seed(0)
    tm = torch_alexnet(request.param).double()
    m = te.models.alexnet(request.param)
    m.load_state_dict(torch_state_dict(tm, m.layer_names))
    m.astype(np.float64)
    H = m.input_shape[1]
    x = np.random.default_rng(0).standard_normal((2, 3, H, H))
    return m, tm, x


def module(m, tm, layer):
    """The torch module that is te layer ``layer`` (one module per layer, same order)."""
    return tm[m.layer_names.index(layer)]


def selector(out):
    """Captum's neuron selector for TARGETS: S_0 = mean of channel CHANNEL, S_1 = the neuron."""
    return torch.stack([out[0, CHANNEL].mean(), out[(1,) + NEURON]])


@pytest.mark.parametrize("rule", ["backprop", "deconvnet", "guided"])
def test_channel_and_neuron_targets_match_captum(pair, rule):
    m, tm, x = pair
    ours = te.explain.gradient(m, x, TARGETS, rule=rule)
    ref = getattr(captum_attr, CAPTUM[rule])(tm, module(m, tm, LAYER)).attribute(
        torch.from_numpy(x).requires_grad_(True), selector).detach().numpy()
    assert ours.dtype == np.float64 and np.abs(ref[0]).max() > 0 and np.abs(ref[1]).max() > 0
    assert rel_err(ours[0], ref[0]) < TOL and rel_err(ours[1], ref[1]) < TOL


def test_vector_layer_neuron_matches_captum(pair):
    """("fc7", k): neuron k of a vector layer (the guided rule, the one with both masks)."""
    m, tm, x = pair
    ours = te.explain.gradient(m, x, ("fc7", 11), rule="guided")
    ref = captum_attr.NeuronGuidedBackprop(tm, module(m, tm, "fc7")).attribute(
        torch.from_numpy(x).requires_grad_(True), 11).detach().numpy()
    assert np.abs(ref).max() > 0 and rel_err(ours, ref) < TOL


def test_layer_gradient_matches_captum(pair):
    """dS_c / d(conv3 output) for a class target: Captum's layer gradient."""
    m, tm, x = pair
    ours = te.explain.gradient(m, x, [5, 17], layer="conv3")
    ref = captum_attr.LayerGradientXActivation(tm, module(m, tm, "conv3"), multiply_by_inputs=False).attribute(
        torch.from_numpy(x), target=[5, 17]).detach().numpy()
    assert ours.shape == (2,) + m.shapes["conv3"] and np.abs(ref).max() > 0
    assert rel_err(ours, ref) < TOL
