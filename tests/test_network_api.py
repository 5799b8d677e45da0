"""Gradients at any layer without hooks, running part of a network, and networks of any
input shape (an MLP):

* ``Tensor.retain_grad()`` keeps an intermediate gradient, accumulated like a leaf's;
* ``model(x, keep=...)``: each kept output's ``.grad`` equals, bit for bit, the gradient
  obtained by restarting the rest of the network from a leaf holding that output,
  under all three ReLU rules;
* ``model(h, start=layer)`` equals the full forward, exactly;
* bad ``keep`` / ``start`` / ``until`` get one clear error;
* an MLP (``input_shape=(F,)``) takes (N, F), says so when given anything else, and
  one training step gives PyTorch's loss, gradients and updated weights (float64).
"""
import re

import _need as need
import numpy as np
import pytest
from _reference import serial_kernels, tiny_network  # noqa: F401

import tinygrad_explain as te
from tinygrad_explain.core import nn

pytestmark = pytest.mark.usefixtures("serial_kernels")


# --------------------------------------------------------------------------
# retain_grad
# --------------------------------------------------------------------------
def test_retain_grad_keeps_an_intermediate_gradient():
    x = te.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = (x * 2.0).retain_grad()
    z = (y * y).sum() + (y * 3.0).sum()          # y used twice: both contributions arrive
    z.backward()
    np.testing.assert_array_equal(y.grad, 2 * y.data + 3.0)
    np.testing.assert_array_equal(x.grad, 2 * (2 * y.data + 3.0))
    y.grad[:] = 0                                # its own array, aliasing nothing
    assert x.grad.any()


def test_retain_grad_accumulates_like_a_leaf_and_others_keep_none():
    x = te.Tensor(np.array([0.5, 1.5]), requires_grad=True)
    y = (x * x).retain_grad()
    w = y * 2.0
    s = w.sum()
    s.backward(retain_graph=True)
    s.backward()
    np.testing.assert_array_equal(y.grad, [4.0, 4.0])
    assert w.grad is None and s.grad is None


def test_retain_grad_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        te.Tensor(np.ones(3)).retain_grad()


# --------------------------------------------------------------------------
# keep= and start=
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    return tiny_network(seed=3).eval()


@pytest.fixture(scope="module")
def x(net):
    return np.random.default_rng(0).standard_normal((3,) + net.input_shape).astype(np.float32)


def _seed(out):
    return np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)


@pytest.mark.parametrize("rule", ["backprop", "deconvnet", "guided"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_keep_gradients_equal_restarting_from_a_leaf(net, x, rule, input_grad):
    """outs[L].grad == the gradient at a fresh leaf holding L's output, run with start=L."""
    kept = [n for n in net.layer_names[:-1]]                 # every layer below the scores
    xt = te.Tensor(x.copy(), requires_grad=input_grad)
    outs = net(xt, keep=kept)
    assert list(outs) == net.layer_names and outs.output is outs["fc2"]
    g = _seed(outs.output)
    with te.relu_backward(rule):
        outs.output.backward(g)
    for name in kept:
        leaf = te.Tensor(outs[name].data.copy(), requires_grad=True)
        with te.relu_backward(rule):
            net(leaf, start=name).backward(g)
        assert outs[name].grad is not None, name
        np.testing.assert_array_equal(outs[name].grad, leaf.grad, err_msg=name)
    if input_grad:                                           # the input's gradient is the ordinary one
        ref = te.Tensor(x.copy(), requires_grad=True)
        with te.relu_backward(rule):
            net(ref).backward(g)
        np.testing.assert_array_equal(xt.grad, ref.grad)
    else:
        assert xt.grad is None


def test_keep_one_layer_stops_the_backward_there(net, x):
    """With nothing below needing a gradient, the kept output is a leaf: no layer
    below it is differentiated."""
    outs = net(x, keep="pool1", until="fc1")
    assert list(outs) == ["pool1", "fc1"] and outs["pool1"]._ctx is None
    outs.output.backward(_seed(outs.output))
    leaf = te.Tensor(outs["pool1"].data.copy(), requires_grad=True)
    net(leaf, start="pool1", until="fc1").backward(_seed(outs.output))
    np.testing.assert_array_equal(outs["pool1"].grad, leaf.grad)


def test_keep_under_no_grad_only_keeps(net, x):
    with te.no_grad():
        outs = net(x, keep=("conv1", "relu2"))
    assert not any(t.requires_grad for t in outs.values())
    np.testing.assert_array_equal(outs["relu2"].data, net(x, until="relu2").data)
    assert isinstance(net(x, keep=()), te.models.LayerOutputs)


@pytest.mark.parametrize("layer", ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "flatten", "fc1",
                                   "relu3", "drop"])
def test_start_equals_the_full_forward(net, x, layer):
    with te.no_grad():
        h = net(x, until=layer).data
        np.testing.assert_array_equal(net(h, start=layer).data, net(x).data)
        if layer != "drop":
            np.testing.assert_array_equal(net(h, start=layer, until="drop").data, net(x, until="drop").data)


@pytest.mark.parametrize("kw, error, message", [
    (dict(keep="conv9"), KeyError, "keep: unknown layer 'conv9'.*did you mean"),
    (dict(start="pool"), KeyError, "start: unknown layer 'pool'.*did you mean"),
    (dict(until="fc9"), KeyError, "until: unknown layer 'fc9'"),
    (dict(keep=("fc1",), until="conv2"), ValueError, "keep: layer 'fc1' is not run .*'conv1' .. 'conv2'"),
    (dict(keep="conv1", start="pool1"), ValueError, "keep: layer 'conv1' is not run"),
    (dict(start="fc1", until="conv2"), ValueError, "until='conv2' does not come after start='fc1'"),
    (dict(start="fc1", until="fc1"), ValueError, "does not come after"),
    (dict(start="fc2"), ValueError, "start='fc2' is the last layer"),
    (dict(keep=3), TypeError, "keep must be a layer name or a list of layer names"),
])
def test_bad_keep_start_until(net, kw, error, message):
    shape = net.input_shape if "start" not in kw or kw["start"] not in net.layers else net.shapes[kw["start"]]
    with pytest.raises(error, match=message):
        net(np.zeros((1,) + shape, np.float32), **kw)


def test_start_checks_the_activation_shape(net, x):
    with pytest.raises(ValueError, match=r"input after layer 'pool1' must have shape \(N, C, H, W\) = "
                                         r"\(N, 4, 4, 4\), got \(3, 2, 9, 9\)"):
        net(x, start="pool1")
    with pytest.raises(ValueError, match=r"input after layer 'fc1' must have shape \(N, F\) = \(N, 5\), got rank 4"):
        net(x, start="fc1")


# --------------------------------------------------------------------------
# an MLP
# --------------------------------------------------------------------------
def mlp(dtype=np.float64):
    te.manual_seed(0)
    layers = [("fc1", nn.Linear(6, 8)), ("relu1", nn.ReLU()), ("fc2", nn.Linear(8, 8)), ("relu2", nn.ReLU()),
              ("fc3", nn.Linear(8, 3))]
    return te.Network(layers, input_shape=(6,), class_names=["a", "b", "c"]).astype(dtype)


def test_mlp_takes_vectors_and_says_so():
    m = mlp(np.float32)
    assert m.shapes == {"fc1": (8,), "relu1": (8,), "fc2": (8,), "relu2": (8,), "fc3": (3,)}
    assert m(np.ones((4, 6), np.float32)).shape == (4, 3)
    with pytest.raises(ValueError, match=r"input must have shape \(N, F\) = \(N, 6\), got \(4, 5\)"):
        m(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"input must have shape \(N, F\) = \(N, 6\), got rank 4 shape \(1, 6, 1, 1\)"):
        m(np.ones((1, 6, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"input must have shape \(N, F\) = \(N, 6\), got rank 1"):
        m(np.ones(6, np.float32))
    g = te.explain.gradient(m, np.ones(6, np.float32), "b")                # a single vector is a batch of one
    assert g.shape == (1, 6)
    np.testing.assert_array_equal(te.explain.saliency(m, np.ones(6, np.float32), "b"), np.abs(g))
    assert te.explain.gradient(m, np.ones((2, 6), np.float32), ("fc2", 5), rule="guided").shape == (2, 6)
    with pytest.raises(te.explain.ExplainError, match=r"\(N, 6\)"):
        te.explain.gradient(m, np.ones((2, 6), np.int64), 0)


def test_mlp_building_errors():
    with pytest.raises(ValueError, match=r"layer 'fc2' expects 9 input features, gets shape \(8,\)"):
        te.Network([("fc1", nn.Linear(6, 8)), ("fc2", nn.Linear(9, 3))], input_shape=(6,))
    with pytest.raises(ValueError, match=r"layer 'conv1' \(conv\) needs a \(C, H, W\) map as input, gets shape \(6,\)"):
        te.Network([("conv1", nn.Conv2d(6, 4, 3))], input_shape=(6,))
    with pytest.raises(ValueError, match=r"layer 'pool' \(maxpool\) needs a \(C, H, W\) map"):
        te.Network([("fc1", nn.Linear(6, 8)), ("pool", nn.MaxPool2d(2, 2))], input_shape=(6,))


def test_mlp_training_step_matches_pytorch():
    torch = need.module("torch")
    m = mlp().requires_grad_(True)
    tm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                             torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for i, name in zip((0, 2, 4), ("fc1", "fc2", "fc3")):
            tm[i].weight.copy_(torch.from_numpy(m.layers[name].weight.data))
            tm[i].bias.copy_(torch.from_numpy(m.layers[name].bias.data))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)

    loss = te.cross_entropy(m(x), y)
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    assert abs(float(loss.data) - tloss.item()) <= 1e-14 * abs(tloss.item())
    lr = 0.5
    for i, name in zip((0, 2, 4), ("fc1", "fc2", "fc3")):
        for p in ("weight", "bias"):
            ours, ref = getattr(m.layers[name], p), getattr(tm[i], p)
            assert np.abs(ref.grad.numpy()).max() > 0
            np.testing.assert_allclose(ours.grad, ref.grad.numpy(), rtol=1e-12, atol=1e-15, err_msg=f"{name}.{p}")
            ours.data -= lr * ours.grad                    # one SGD step on both sides
            with torch.no_grad():
                ref -= lr * ref.grad
    with te.no_grad():
        after = float(te.cross_entropy(m(x), y).data)
    with torch.no_grad():
        tafter = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y)).item()
    assert after < float(loss.data) and abs(after - tafter) <= 1e-12 * abs(tafter)


def test_walkthrough_script(capsys):
    """scripts/walkthrough.py reads every layer's gradient off one keep= pass: the input
    gradient it walks to equals te.explain.gradient exactly, and passes the finite-difference check."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "walkthrough.py"
    spec = importlib.util.spec_from_file_location("walkthrough", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--rule", "guided"]) == 0
    out = capsys.readouterr().out
    assert "te.explain.gradient gives the same: max |difference| = 0.00e+00" in out
    assert "d S_c / d(input of relu2  )" in out and "ReLU rule dx = dy*[x>0]*[dy>0]" in out
    fast_naive = re.findall(r"(forward|backward) +max \|fast - naive\| = (\S+)", out)
    assert [k for k, _ in fast_naive] == ["forward", "backward"] and all(float(v) < 1e-12 for _, v in fast_naive)


def test_load_model_draws_no_initial_weights(tmp_path):
    """load_model builds the layers without drawing random weights (the file's replace them all):
    the engine's generator is left where it was, the weights are the file's, and layers built
    afterwards (or after a failed load) are drawn as usual."""
    te.manual_seed(0)
    m = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)
    p = te.save_model(m, tmp_path / "m.h5")
    te.manual_seed(5)
    expected = te.engine.rng().random(4)
    te.manual_seed(5)
    loaded = te.load_model(p)
    assert np.array_equal(te.engine.rng().random(4), expected)
    for k, v in m.state_dict().items():
        assert np.array_equal(loaded.state_dict()[k], v), k
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(te.ModelFileError):
        te.load_model(tmp_path / "bad.h5")
    te.manual_seed(1)
    a = te.nn.Linear(3, 4).weight.numpy()
    te.manual_seed(1)
    assert np.array_equal(te.nn.Linear(3, 4).weight.numpy(), a) and np.abs(a).max() > 0
