"""The naive reference ops (tinygrad_explain/core/naive.py) against the fast kernels:
forward and backward, in float64, on small inputs with no max-pool ties and no
ReLU kinks.  The fast forward is checked against the naive forward in
test_gradcheck_ops.py; here each naive backward must equal the engine's
backward (itself gradchecked), so the naive file is a trustworthy definition."""
import numpy as np
import pytest
from _reference import away_from_zero, distinct, rng, serial_kernels  # noqa: F401

import tinygrad_explain as te
from tinygrad_explain.core import naive

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
    assert switch[0, 0, 0, 0] == 0                           # row 0, column 0
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


# --------------------------------------------------------------------------
# the graph networks' ops (tests/test_graph_ops.py compares them with torch)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("xs,ws,stride,padding", [((2, 4, 7, 6), (4, 1, 3, 3), 1, 1),
                                                  ((1, 3, 9, 8), (6, 1, 3, 3), 2, 1)])
def test_depthwise_conv2d_backward(xs, ws, stride, padding):
    """The depthwise loops (kernels/depthwise_conv2d.py) against the naive grouped convolution."""
    x, w, b = rng(0).standard_normal(xs), rng(1).standard_normal(ws), rng(2).standard_normal(ws[0])
    groups = xs[1]
    y_ref = naive.conv2d_forward(x, w, b, stride, padding, groups)
    g = rng(3).standard_normal(y_ref.shape)
    y, grads = _grads(lambda x_, w_, b_: te.conv2d(x_, w_, b_, stride, padding, groups), [x, w, b], g)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for fast, ref in zip(grads, naive.conv2d_backward(g, x, w, stride, padding, groups)):
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs,k,s,p", [((1, 2, 8, 8), 3, 2, 0), ((1, 2, 6, 7), 3, 2, 1), ((2, 1, 5, 7), 2, 2, 1)])
def test_max_pool2d_ceil_mode_backward(xs, k, s, p):
    x = distinct(xs)
    y_ref, switch = naive.max_pool2d_forward(x, k, s, p, ceil_mode=True)
    g = rng(3).standard_normal(y_ref.shape)
    y, (dx,) = _grads(lambda t: te.ops.max_pool2d(t, k, s, p, ceil_mode=True), [x], g)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(dx, naive.max_pool2d_backward(g, switch, x.shape), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("xs,k,s,p,ceil", [((2, 2, 7, 9), 3, 2, 1, False), ((1, 2, 7, 9), 3, 2, 1, True),
                                           ((1, 1, 8, 8), 2, 2, 0, False), ((1, 2, 5, 7), 2, 2, 1, True)])
def test_avg_pool2d_forward_backward(xs, k, s, p, ceil, count_include_pad):
    x = rng(0).standard_normal(xs)
    y_ref = naive.avg_pool2d_forward(x, k, s, p, ceil, count_include_pad)
    g = rng(1).standard_normal(y_ref.shape)
    y, (dx,) = _grads(lambda t: te.ops.avg_pool2d(t, k, s, p, count_include_pad, ceil), [x], g)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, naive.avg_pool2d_backward(g, x.shape, k, s, p, ceil, count_include_pad),
                               rtol=1e-12, atol=1e-14)


def test_batch_norm_forward_backward():
    x = rng(0).standard_normal((2, 3, 4, 5)) * 2 + 1
    mean, var = rng(1).standard_normal(3), rng(2).random(3) + 0.2
    weight, bias = rng(3).standard_normal(3), rng(4).standard_normal(3)
    g = rng(5).standard_normal(x.shape)
    y, (dx, dw, db) = _grads(lambda t, w_, b_: te.ops.batch_norm(t, mean, var, w_, b_, 1e-3), [x, weight, bias], g)
    np.testing.assert_allclose(y, naive.batch_norm_forward(x, mean, var, weight, bias, 1e-3), rtol=1e-12, atol=1e-13)
    for fast, ref in zip((dx, dw, db), naive.batch_norm_backward(g, x, mean, var, weight, 1e-3)):
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)


def test_concat_forward_backward():
    xs = [rng(i).standard_normal((2, c, 3, 3)) for i, c in enumerate((2, 3, 1))]
    g = rng(9).standard_normal((2, 6, 3, 3))
    y, grads = _grads(lambda *t: te.ops.concat(t, axis=1), xs, g)
    np.testing.assert_array_equal(y, naive.concat_forward(xs, axis=1))
    for fast, ref in zip(grads, naive.concat_backward(g, (2, 3, 1), axis=1)):
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("rule", te.RELU_RULES)
def test_clip_rules(rule):
    x = rng(0).uniform(-2, 8, (2, 3, 4, 5))
    x.flat[:2] = [0.0, 6.0]
    g = away_from_zero(x.shape, seed=1)
    t = te.Tensor(x.copy(), requires_grad=True)
    y = te.ops.relu6(t)
    with te.relu_backward(rule):
        y.backward(g)
    np.testing.assert_array_equal(y.numpy(), naive.clip_forward(x, 0.0, 6.0))
    np.testing.assert_array_equal(t.grad, naive.clip_backward(g, x, 0.0, 6.0, rule))
