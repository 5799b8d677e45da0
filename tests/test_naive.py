"""The naive reference ops (tinygrad_explain/naive.py) against the fast kernels:
forward and backward, in float64, on small inputs with no max-pool ties and no
ReLU kinks.  The fast forward is checked against the naive forward in
test_gradcheck_ops.py; here each naive backward must equal the engine's
backward (itself gradchecked), so the naive file is a trustworthy definition."""
import numpy as np
import pytest
from _reference import away_from_zero, distinct, rng, serial_kernels  # noqa: F401

import tinygrad_explain as te
from tinygrad_explain import naive

pytestmark = pytest.mark.usefixtures("serial_kernels")


def _grads(fn, arrays, g):
    """The engine's gradients of sum(fn(*tensors) * g) for every input."""
    ts = [te.Tensor(a.copy(), requires_grad=True) for a in arrays]
    y = fn(*ts)
    y.backward(g)
    return y.numpy(), [t.grad for t in ts]


@pytest.mark.parametrize("xs,ws,stride,padding,groups", [
    ((2, 4, 7, 6), (6, 2, 3, 3), 1, 1, 2),
    ((1, 3, 11, 13), (2, 3, 5, 5), 4, 2, 1),
    ((1, 2, 5, 6), (2, 2, 3, 3), (1, 2), (0, 1), 1),
])
def test_conv2d_backward(xs, ws, stride, padding, groups):
    x, w, b = rng(0).standard_normal(xs), rng(1).standard_normal(ws), rng(2).standard_normal(ws[0])
    y_ref = naive.conv2d_forward(x, w, b, stride, padding, groups)
    g = rng(3).standard_normal(y_ref.shape)
    y, (dx, dw, db) = _grads(lambda x_, w_, b_: te.conv2d(x_, w_, b_, stride, padding, groups), [x, w, b], g)
    ndx, ndw, ndb = naive.conv2d_backward(g, x, w, stride, padding, groups)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, ndb, rtol=1e-12, atol=1e-12)


def test_linear_forward_backward():
    x, w, b = rng(0).standard_normal((3, 7)), rng(1).standard_normal((5, 7)), rng(2).standard_normal(5)
    g = rng(3).standard_normal((3, 5))
    y, (dx, dw, db) = _grads(te.linear, [x, w, b], g)
    np.testing.assert_allclose(y, naive.linear_forward(x, w, b), rtol=1e-12)
    for fast, ref in zip((dx, dw, db), naive.linear_backward(g, x, w)):
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", te.RELU_RULES)
def test_relu_rules(rule):
    x, g = away_from_zero((2, 3, 4, 5), seed=0), away_from_zero((2, 3, 4, 5), seed=1)
    t = te.Tensor(x.copy(), requires_grad=True)
    y = te.relu(t)
    with te.relu_backward(rule):
        y.backward(g)
    np.testing.assert_array_equal(y.numpy(), naive.relu_forward(x))
    np.testing.assert_array_equal(t.grad, naive.relu_backward(g, x, rule))


@pytest.mark.parametrize("xs,k,s,p", [((2, 3, 9, 9), 3, 2, 0), ((1, 2, 8, 7), 3, 2, 1), ((1, 2, 6, 6), 2, 2, 0)])
def test_max_pool2d_backward(xs, k, s, p):
    x = distinct(xs)
    y_ref, switch = naive.max_pool2d_forward(x, k, s, p)
    g = rng(3).standard_normal(y_ref.shape)
    y, (dx,) = _grads(lambda t: te.max_pool2d(t, k, s, p), [x], g)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(dx, naive.max_pool2d_backward(g, switch, x.shape), rtol=1e-12, atol=1e-14)


def test_max_pool2d_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 3, 3))
    _, switch = naive.max_pool2d_forward(x, 3, 1, 0)
    _, (dx,) = _grads(lambda t: te.max_pool2d(t, 3, 1, 0), [x], np.ones((1, 1, 1, 1)))
    assert tuple(switch[0, 0, 0, 0]) == (0, 0)
    np.testing.assert_array_equal(dx, naive.max_pool2d_backward(np.ones((1, 1, 1, 1)), switch, x.shape))


@pytest.mark.parametrize("size,C", [(5, 7), (3, 4), (4, 6)])
def test_lrn_backward(size, C):
    x = rng(0).standard_normal((2, C, 3, 4)) * 3
    alpha, beta, k = 0.5, 0.75, 1.5                       # large alpha: the cross-channel term matters
    g = rng(1).standard_normal(x.shape)
    y, (dx,) = _grads(lambda t: te.local_response_norm(t, size, alpha, beta, k), [x], g)
    np.testing.assert_allclose(y, naive.lrn_forward(x, size, alpha, beta, k), rtol=1e-12)
    np.testing.assert_allclose(dx, naive.lrn_backward(g, x, size, alpha, beta, k), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("in_hw,out_hw", [((7, 9), (3, 4)), ((13, 13), (6, 6)), ((5, 5), (5, 5))])
def test_adaptive_avg_pool2d_backward(in_hw, out_hw):
    x = rng(0).standard_normal((2, 3) + in_hw)
    g = rng(1).standard_normal((2, 3) + out_hw)
    y, (dx,) = _grads(lambda t: te.adaptive_avg_pool2d(t, out_hw), [x], g)
    np.testing.assert_allclose(y, naive.adaptive_avg_pool2d_forward(x, out_hw), rtol=1e-12)
    np.testing.assert_allclose(dx, naive.adaptive_avg_pool2d_backward(g, x.shape), rtol=1e-12, atol=1e-14)
