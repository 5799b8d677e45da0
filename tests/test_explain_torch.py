"""te.explain's three gradient rules equal PyTorch + Captum on the same weights.

Captum's Saliency (abs=False: the raw gradient), Deconvolution and
GuidedBackprop override only the backward of the ReLU modules -- exactly
what te.relu_backward does -- so on the same weights the input gradients
must agree to float32 rounding.
"""
from __future__ import annotations

import _need as need
import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core import nn

torch = need.module("torch")
captum_attr = need.module("captum.attr")

NAMES = ["a", "b", "c", "d", "e"]


pytestmark = pytest.mark.usefixtures("one_thread")


def torch_net():
    tn = torch.nn
    torch.manual_seed(0)
    net = tn.Sequential(
        tn.Conv2d(3, 6, 3, 1, 1), tn.ReLU(), tn.LocalResponseNorm(3, 1e-2, 0.75, 1.0), tn.MaxPool2d(3, 2),
        tn.Conv2d(6, 8, 3, 1, 1), tn.ReLU(), tn.MaxPool2d(2, 2), tn.Flatten(),
        tn.Linear(8 * 3 * 3, 16), tn.ReLU(), tn.Linear(16, 16), tn.ReLU(), tn.Linear(16, len(NAMES)))
    return net.eval()


def te_net(net):
    layers = [("conv1", nn.Conv2d(3, 6, 3, 1, 1)), ("relu1", nn.ReLU()),
              ("norm1", nn.LocalResponseNorm(3, 1e-2, 0.75, 1.0)),
              ("pool1", nn.MaxPool2d(3, 2)), ("conv2", nn.Conv2d(6, 8, 3, 1, 1)), ("relu2", nn.ReLU()),
              ("pool2", nn.MaxPool2d(2, 2)), ("flatten", nn.Flatten()), ("fc6", nn.Linear(72, 16)),
              ("relu6", nn.ReLU()),
              ("fc7", nn.Linear(16, 16)), ("relu7", nn.ReLU()), ("fc8", nn.Linear(16, len(NAMES)))]
    m = te.Network(layers, (3, 13, 13), class_names=NAMES)
    torch_names = {0: "conv1", 4: "conv2", 8: "fc6", 10: "fc7", 12: "fc8"}
    state = {}
    for i, name in torch_names.items():
        state[f"{name}.weight"] = net[i].weight.detach().numpy()
        state[f"{name}.bias"] = net[i].bias.detach().numpy()
    return m.load_state_dict(state)


@pytest.fixture(scope="module")
def nets():
    net = torch_net()
    return net, te_net(net)


@pytest.mark.parametrize("rule, method", [("backprop", "Saliency"), ("deconvnet", "Deconvolution"),
                                          ("guided", "GuidedBackprop")])
def test_rules_match_captum(nets, rule, method):
    net, m = nets
    x = np.random.default_rng(0).standard_normal((4, 3, 13, 13)).astype(np.float32)
    targets = [0, 3, 4, 1]
    with torch.no_grad():
        np.testing.assert_allclose(m(x).numpy(), net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    xt = torch.from_numpy(x).requires_grad_(True)
    attr = getattr(captum_attr, method)(net)
    kw = {"abs": False} if method == "Saliency" else {}
    ref = attr.attribute(xt, target=targets, **kw).detach().numpy()
    ours = te.explain.gradient(m, x, targets, rule=rule)
    scale = np.abs(ref).max()
    assert scale > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale)
    if rule == "backprop":          # and Simonyan's saliency = Captum's abs saliency, max over channels
        sal = captum_attr.Saliency(net).attribute(xt, target=targets, abs=True).detach().numpy().max(1)
        np.testing.assert_allclose(te.explain.saliency(m, x, targets), sal, rtol=1e-4, atol=1e-5 * scale)


def test_rules_differ_on_this_net(nets):
    _, m = nets
    x = np.random.default_rng(1).standard_normal((2, 3, 13, 13)).astype(np.float32)
    g = {r: te.explain.gradient(m, x, "c", rule=r) for r in te.RELU_RULES}
    assert not np.allclose(g["backprop"], g["guided"]) and not np.allclose(g["deconvnet"], g["guided"])
