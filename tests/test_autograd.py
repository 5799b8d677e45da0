"""The autodiff core: accumulation, no_grad, computing only what is needed,
the ReLU-rule context manager, and reproducible dropout."""
import numpy as np
import pytest
from _reference import rng, serial_kernels, tiny_network  # noqa: F401 (fixture)

import tinygrad_explain as te
from tinygrad_explain import kernels as K
from tinygrad_explain.core import engine, ops

pytestmark = pytest.mark.usefixtures("serial_kernels")


# --------------------------------------------------------------------------
# accumulation and graph shape
# --------------------------------------------------------------------------
def test_gradients_accumulate_across_two_backward_calls():
    x = te.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0, 6.0])
    (x * x * 3.0).sum().backward()                 # a second forward, a second backward
    np.testing.assert_array_equal(x.grad, [8.0, -16.0, 24.0])


def test_retain_graph_allows_a_second_backward():
    x = te.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x ** 3.0).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 3 * np.array([1.0, 4.0]))


def test_accumulation_into_network_weights():
    model = tiny_network(seed=1, dropout=False).requires_grad_(True)
    x = rng(2).standard_normal((2, 2, 9, 9)).astype(np.float32)
    model(x)[:, 1].sum().backward()
    first = {k: p.grad.copy() for k, p in zip(model.state_dict(), model.parameters())}
    model(x)[:, 1].sum().backward()
    for k, p in zip(model.state_dict(), model.parameters()):
        np.testing.assert_allclose(p.grad, 2 * first[k], rtol=1e-6, err_msg=k)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_second_backward_through_a_released_graph_is_not_silently_ignored():
    """ENGINE BUG (engine.py, Tensor.backward): after a backward without
    retain_graph the graph is released (``node._ctx = None``), and a later
    backward through any released node treats it as a *leaf*: the gradient is
    silently stored on the intermediate tensor and never reaches the inputs.
    PyTorch raises; accumulating correctly would also be acceptable -- a
    silently wrong x.grad is not.  Both common forms are checked:
      (a) calling backward twice on the same output;
      (b) two scores of one forward pass, back-propagated one after the other
          (``scores = model(x); scores[0, 1].backward(); scores[0, 2].backward()``)."""
    # (a)
    x = te.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    try:
        y.backward()
    except RuntimeError:
        pass
    else:
        np.testing.assert_array_equal(x.grad, [4.0, 8.0, 12.0],
                                      err_msg="second backward silently dropped the gradient")
    # (b)
    x = te.Tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=True)
    scores = x * np.array([[10.0, 20.0, 30.0]])
    scores[0, 1].backward()
    try:
        scores[0, 2].backward()
    except RuntimeError:
        pass
    else:
        np.testing.assert_array_equal(x.grad, [[0.0, 20.0, 30.0]],
                                      err_msg="backward of a second score of the same forward was silently dropped")


def test_node_used_twice_gets_both_contributions():
    x = te.Tensor(np.array([0.5, -1.5, 2.0]), requires_grad=True)
    (x * x + x).sum().backward()                   # diamond: x feeds Mul twice and Add once
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1)
    a = te.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (a + a).sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 2.0])


def test_intermediate_tensors_keep_no_grad():
    x = te.Tensor(np.ones(3), requires_grad=True)
    y = x * 2.0
    y.sum().backward()
    assert y.grad is None
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_deep_chain_has_no_recursion_limit():
    x = te.Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0])


def test_grad_dtype_and_shape_follow_the_tensor():
    x = te.Tensor(rng(1).standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    (x * 2.0).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == (2, 3)


def test_backward_argument_errors():
    x = te.Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"grad must be given.*\(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\), expected \(2, 3\)"):
        y.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        te.Tensor(np.ones(2)).sum().backward()
    with pytest.raises(TypeError, match="int64"):
        te.Tensor(np.arange(3), requires_grad=True)


# --------------------------------------------------------------------------
# no_grad
# --------------------------------------------------------------------------
class _Spy(te.Function):
    seen = []

    def forward(self, a, b):
        _Spy.seen.append(self.needs_grad)
        return a * b

    def backward(self, g):
        return g, g


def test_no_grad_records_no_graph():
    x = te.Tensor(np.ones(3), requires_grad=True)
    _Spy.seen.clear()
    with te.no_grad():
        assert not engine.is_grad_enabled()
        y = _Spy.apply(x, te.Tensor(np.ones(3), requires_grad=True))
        z = te.relu(te.conv2d(te.Tensor(np.ones((1, 1, 3, 3)), requires_grad=True),
                              te.Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)))
    assert engine.is_grad_enabled()
    assert _Spy.seen == [(False, False)]           # the op is told nothing needs a gradient
    for t in (y, z):
        assert not t.requires_grad and t._ctx is None and t._parents == ()
    with pytest.raises(RuntimeError):
        y.sum().backward()


def test_no_grad_restored_after_exception_and_nesting():
    with pytest.raises(ZeroDivisionError):
        with te.no_grad():
            1 / 0
    assert engine.is_grad_enabled()
    with te.no_grad():
        with te.no_grad():
            pass
        assert not engine.is_grad_enabled()       # the inner block restores the outer state
    assert engine.is_grad_enabled()


# --------------------------------------------------------------------------
# backward computes only what is needed
# --------------------------------------------------------------------------
@pytest.fixture
def conv_spy(monkeypatch):
    """Record, for every Conv2d/Linear backward: its needs_grad and which grads it returned,
    and count the im2col calls made during backward (only the weight gradient needs col)."""
    calls = {"conv": [], "linear": [], "im2col_in_backward": 0}
    in_backward = [False]
    orig_conv, orig_lin, orig_im2col = ops.Conv2d.backward, ops.Linear.backward, K.im2col.im2col

    def conv_backward(self, g):
        in_backward[0] = True
        try:
            out = orig_conv(self, g)
        finally:
            in_backward[0] = False
        calls["conv"].append((self.needs_grad, tuple(o is not None for o in out)))
        return out

    def lin_backward(self, g):
        out = orig_lin(self, g)
        calls["linear"].append((self.needs_grad, tuple(o is not None for o in out)))
        return out

    def im2col(*a, **k):
        if in_backward[0]:
            calls["im2col_in_backward"] += 1
        return orig_im2col(*a, **k)
    monkeypatch.setattr(ops.Conv2d, "backward", conv_backward)
    monkeypatch.setattr(ops.Linear, "backward", lin_backward)
    monkeypatch.setattr(K.im2col, "im2col", im2col)
    return calls


def test_frozen_weights_compute_no_weight_gradient(conv_spy):
    model = tiny_network(seed=1)                   # weights frozen by default
    assert not any(p.requires_grad for p in model.parameters())
    x = te.Tensor(rng(2).standard_normal((2, 2, 9, 9)).astype(np.float32), requires_grad=True)
    model(x)[0, 1].backward()
    assert x.grad is not None and np.abs(x.grad).max() > 0
    assert all(p.grad is None for p in model.parameters())
    assert conv_spy["conv"] == [((True, False, False), (True, False, False))] * 2
    assert conv_spy["linear"] == [((True, False, False), (True, False, False))] * 2
    assert conv_spy["im2col_in_backward"] == 0     # dw = dy @ col.T was never formed


def test_trainable_weights_with_constant_input(conv_spy):
    """Training: weights need gradients, the image does not -- the first conv
    must not compute dx (no col2im into the image)."""
    model = tiny_network(seed=1).requires_grad_(True)
    x = rng(2).standard_normal((2, 2, 9, 9)).astype(np.float32)
    te.cross_entropy(model(x), np.array([0, 2])).backward()
    assert all(p.grad is not None for p in model.parameters())
    first, second = conv_spy["conv"][-1], conv_spy["conv"][0]   # backward runs last layer first
    assert first == ((False, True, True), (False, True, True))
    assert second == ((True, True, True), (True, True, True))


def test_nothing_requires_grad_means_no_graph():
    model = tiny_network(seed=1)
    y = model(rng(2).standard_normal((1, 2, 9, 9)).astype(np.float32))
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y[0, 0].backward()


# --------------------------------------------------------------------------
# the ReLU backward rule
# --------------------------------------------------------------------------
def test_relu_backward_unknown_rule():
    with pytest.raises(ValueError, match=r"'bogus'.*backprop.*deconvnet.*guided"):
        with te.relu_backward("bogus"):
            pass
    assert engine.current_relu_rule() == "backprop"


def test_relu_rule_restored_after_block_and_after_exception():
    assert engine.current_relu_rule() == "backprop"
    with te.relu_backward("guided"):
        assert engine.current_relu_rule() == "guided"
        with te.relu_backward("deconvnet"):
            assert engine.current_relu_rule() == "deconvnet"
        assert engine.current_relu_rule() == "guided"
    assert engine.current_relu_rule() == "backprop"
    with pytest.raises(KeyError):
        with te.relu_backward("deconvnet"):
            raise KeyError("boom")
    assert engine.current_relu_rule() == "backprop"


def test_relu_rule_applies_when_backward_runs():
    """The rule is read at backward time, whatever was active during forward."""
    x = np.array([2.0, -1.0, 3.0])
    g = np.array([-1.0, 1.0, 1.0])
    t = te.Tensor(x, requires_grad=True)
    y = te.relu(t)                                 # forward under the default rule
    with te.relu_backward("guided"):
        y.backward(g)
    np.testing.assert_array_equal(t.grad, [0.0, 0.0, 1.0])
    t2 = te.Tensor(x, requires_grad=True)
    with te.relu_backward("deconvnet"):
        y2 = te.relu(t2)                           # forward under deconvnet, backward outside
    y2.backward(g)
    np.testing.assert_array_equal(t2.grad, [-1.0, 0.0, 1.0])


# --------------------------------------------------------------------------
# dropout reproducibility
# --------------------------------------------------------------------------
def test_dropout_same_seed_same_output():
    x = te.Tensor(rng(1).standard_normal((4, 100)))
    te.manual_seed(42)
    a = te.dropout(x, 0.5, training=True).numpy()
    b = te.dropout(x, 0.5, training=True).numpy()
    te.manual_seed(42)
    c = te.dropout(x, 0.5, training=True).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)                # the generator advances between calls
    te.manual_seed(43)
    assert not np.array_equal(a, te.dropout(x, 0.5, training=True).numpy())


def test_network_train_mode_reproducible_eval_deterministic():
    model = tiny_network(seed=1)
    x = rng(2).standard_normal((3, 2, 9, 9)).astype(np.float32)
    ev1, ev2 = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(ev1, ev2)
    model.train()
    te.manual_seed(7)
    tr1 = model(x).numpy()
    te.manual_seed(7)
    tr2 = model(x).numpy()
    np.testing.assert_array_equal(tr1, tr2)
    assert not np.array_equal(tr1, ev1)
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), ev1)
