"""Every op's backward against float64 central differences (``te.gradcheck``),
plus each layer op's forward against a naive NumPy reference.

The backward of an op is only as good as its agreement with its own forward,
so the forward references matter too: a wrong forward with a consistent
backward would pass gradcheck.
"""
import _need as need
import numpy as np
import pytest
from _reference import (  # noqa: F401
    away_from_zero,
    distinct,
    forward_difference,
    kink_margin,
    numeric_grad,
    one_and_all_threads,
    rng,
    serial_kernels,
    tiny_network,
)

import tinygrad_explain as te
from tinygrad_explain import kernels as K
from tinygrad_explain.core import naive, ops

pytestmark = pytest.mark.usefixtures("serial_kernels")


# --------------------------------------------------------------------------
# the naive NumPy references for the forward passes live in the package
# (tinygrad_explain/core/naive.py, forward and backward); tests/test_naive.py
# checks their backward against the fast kernels
# --------------------------------------------------------------------------
conv_ref = naive.conv2d_forward
lrn_ref = naive.lrn_forward
avgpool_ref = naive.adaptive_avg_pool2d_forward


def maxpool_ref(x, k, s, p):
    return naive.max_pool2d_forward(x, k, s, p)[0]


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
# (x shape, w shape, stride, padding, groups)
CONV_CASES = [
    ((1, 2, 5, 7), (3, 2, 3, 3), 1, 1, 1),          # non-square input, same padding
    ((2, 4, 6, 5), (4, 2, 3, 3), 2, 0, 2),          # groups=2, stride 2, batch 2
    ((1, 3, 11, 13), (2, 3, 5, 5), 4, 2, 1),        # AlexNet-like stride 4, kernel 5, padding 2
    ((2, 2, 4, 6), (3, 2, 1, 1), 1, 0, 1),          # 1x1 kernel
    ((1, 4, 7, 6), (6, 2, 5, 5), 2, 2, 2),          # kernel 5, groups 2, stride 2, padding 2
    ((1, 2, 9, 8), (2, 1, 3, 3), 4, 1, 2),          # stride 4 with 3x3 (skipped pixels get zero grad)
    ((1, 2, 5, 6), (2, 2, 3, 3), (1, 2), (0, 1), 1),  # per-axis stride/padding
]


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CONV_CASES)
def test_conv2d_forward_matches_reference(xs, ws, stride, padding, groups):
    x, w, b = rng(1).standard_normal(xs), rng(2).standard_normal(ws), rng(3).standard_normal(ws[0])
    y = te.conv2d(te.Tensor(x), te.Tensor(w), te.Tensor(b), stride, padding, groups).numpy()
    np.testing.assert_allclose(y, conv_ref(x, w, b, stride, padding, groups), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CONV_CASES)
def test_conv2d_gradcheck(xs, ws, stride, padding, groups):
    x, w, b = rng(1).standard_normal(xs), rng(2).standard_normal(ws), rng(3).standard_normal(ws[0])
    assert te.gradcheck(lambda x, w, b: te.conv2d(x, w, b, stride, padding, groups), [x, w, b])


def test_conv2d_gradcheck_no_bias():
    x, w = rng(1).standard_normal((2, 2, 6, 5)), rng(2).standard_normal((3, 2, 3, 3))
    assert te.gradcheck(lambda x, w: te.conv2d(x, w, None, 1, 1), [x, w])


@pytest.mark.parametrize("which", [0, 1, 2])
def test_conv2d_gradcheck_one_input_at_a_time(which):
    """Only x, only w, or only b requires grad (the needs_grad branches)."""
    arrs = [rng(1).standard_normal((2, 4, 6, 5)), rng(2).standard_normal((4, 2, 3, 3)), rng(3).standard_normal(4)]
    inputs = [a if i == which else te.Tensor(a) for i, a in enumerate(arrs)]
    assert te.gradcheck(lambda x, w, b: te.conv2d(x, w, b, 2, 1, 2), inputs)


@pytest.mark.parametrize("budget", [None, 6000, 1])
def test_conv2d_batch_chunks(monkeypatch, budget):
    """A batch of 9.  ``budget`` shrinks the implementation's im2col chunk budget
    (if it has one) so that the batch is processed in chunks of 2 + a last
    single image, or one image at a time; results must not change."""
    if budget is not None:
        monkeypatch.setattr(ops.Conv2d, "COL_BUDGET", budget, raising=False)
    x, w, b = rng(1).standard_normal((9, 4, 10, 10)), rng(2).standard_normal((4, 2, 3, 3)), rng(3).standard_normal(4)
    y = te.conv2d(te.Tensor(x), te.Tensor(w), te.Tensor(b), 1, 1, 2).numpy()
    np.testing.assert_allclose(y, conv_ref(x, w, b, 1, 1, 2), rtol=1e-12, atol=1e-12)
    assert te.gradcheck(lambda x, w, b: te.conv2d(x, w, b, 1, 1, 2), [x, w, b], max_checks=60)


@pytest.mark.parametrize("budget", [None, 6000])
def test_conv2d_kept_col_equals_recomputed(monkeypatch, budget):
    """Training keeps forward's im2col for the weight gradient; a second backward
    (retain_graph) has to recompute it.  Both must give the same weight gradient."""
    if budget is not None:
        monkeypatch.setattr(ops.Conv2d, "COL_BUDGET", budget, raising=False)
    x = te.Tensor(rng(1).standard_normal((9, 4, 10, 10)).astype(np.float32), requires_grad=True)
    w = te.Tensor(rng(2).standard_normal((6, 4, 3, 3)).astype(np.float32), requires_grad=True)
    y = te.conv2d(x, w, None, 2, 1)
    g = rng(3).standard_normal(y.shape).astype(np.float32)
    y.backward(g, retain_graph=True)
    first_w, first_x = w.grad.copy(), x.grad.copy()
    w.grad = x.grad = None
    y.backward(g)
    np.testing.assert_array_equal(w.grad, first_w)
    np.testing.assert_array_equal(x.grad, first_x)


# --------------------------------------------------------------------------
# relu and its three backward rules
# --------------------------------------------------------------------------
def test_relu_gradcheck_backprop():
    assert te.gradcheck(te.relu, [away_from_zero((2, 3, 4, 5))])


def test_relu_forward():
    x = away_from_zero((3, 7))
    np.testing.assert_array_equal(te.relu(te.Tensor(x)).numpy(), np.maximum(x, 0))


def _relu_grad(x, g, rule):
    t = te.Tensor(x.copy(), requires_grad=True)
    y = te.relu(t)
    with te.relu_backward(rule):
        y.backward(g)
    return t.grad


# The lecture's slide: a 4x4 feature map, ReLU forward, then one gradient
# passed back under each rule.  Expected matrices written out by hand.
SLIDE_X = np.array([[1, -1, 5, 2],
                    [2, -5, -7, 3],
                    [-2, 2, 4, -1],
                    [3, -1, 2, 6]], np.float32)
SLIDE_RELU = np.array([[1, 0, 5, 2],
                       [2, 0, 0, 3],
                       [0, 2, 4, 0],
                       [3, 0, 2, 6]], np.float32)
SLIDE_G = np.array([[-2, 3, -1, 1],
                    [6, -3, 1, 4],
                    [2, -1, 3, -2],
                    [1, 3, -4, 5]], np.float32)
SLIDE_EXPECTED = {
    # dy * [x > 0]
    "backprop": [[-2, 0, -1, 1],
                 [6, 0, 0, 4],
                 [0, -1, 3, 0],
                 [1, 0, -4, 5]],
    # dy * [dy > 0]
    "deconvnet": [[0, 3, 0, 1],
                  [6, 0, 1, 4],
                  [2, 0, 3, 0],
                  [1, 3, 0, 5]],
    # dy * [x > 0] * [dy > 0]
    "guided": [[0, 0, 0, 1],
               [6, 0, 0, 4],
               [0, 0, 3, 0],
               [1, 0, 0, 5]],
}


def test_relu_slide_forward():
    np.testing.assert_array_equal(te.relu(te.Tensor(SLIDE_X)).numpy(), SLIDE_RELU)


@pytest.mark.parametrize("rule", ["backprop", "deconvnet", "guided"])
def test_relu_slide_rules(rule):
    g = _relu_grad(SLIDE_X, SLIDE_G, rule)
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, np.array(SLIDE_EXPECTED[rule], np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (2, 3, 4, 4)])
def test_relu_slide_rules_batched(shape):
    """The same slide tiled into a batch (the rules are elementwise, any layout)."""
    x = np.broadcast_to(SLIDE_X, shape).copy()
    g = np.broadcast_to(SLIDE_G, shape).copy()
    for rule, exp in SLIDE_EXPECTED.items():
        np.testing.assert_array_equal(_relu_grad(x, g, rule), np.broadcast_to(np.array(exp, np.float32), shape))


def test_relu_rules_at_zero():
    """x = 0 is not 'positive' (backprop and guided block), g = 0 passes 0 everywhere."""
    x = np.array([0.0, 0.0, 0.0, 2.0, -1.0])
    g = np.array([3.0, -3.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(_relu_grad(x, g, "backprop"), [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(_relu_grad(x, g, "deconvnet"), [3, 0, 0, 0, 0])
    np.testing.assert_array_equal(_relu_grad(x, g, "guided"), [0, 0, 0, 0, 0])


def test_relu_guided_equals_backprop_for_positive_upstream():
    """With dy > 0 everywhere guided == backprop, which is the true gradient
    (checked against central differences of sum(w * relu(x)), w > 0)."""
    x = away_from_zero((2, 3, 5))
    w = rng(5).uniform(0.5, 2.0, x.shape)
    g_guided = _relu_grad(x, w, "guided")
    np.testing.assert_array_equal(g_guided, _relu_grad(x, w, "backprop"))
    xx = x.copy()
    num = numeric_grad(lambda: float((np.maximum(xx, 0) * w).sum()), xx)
    np.testing.assert_allclose(g_guided.reshape(-1), [num[i] for i in range(x.size)], rtol=1e-6, atol=1e-8)
    # and the deconvnet rule differs there (it ignores the sign of x)
    assert not np.array_equal(_relu_grad(x, w, "deconvnet"), g_guided)


def test_relu_all_rules_equal_gradient_for_positive_input_and_upstream():
    """x > 0 and dy > 0: all three rules pass dy through unchanged -- the gradient."""
    x = rng(6).uniform(0.1, 2.0, (2, 4))
    g = rng(7).uniform(0.1, 2.0, (2, 4))
    for rule in te.RELU_RULES:
        np.testing.assert_array_equal(_relu_grad(x, g, rule), g)


def test_relu_rules_read_the_one_table():
    """Each rule's result is the formula dx = g * [x > 0 if mask_x] * [g > 0 if mask_g]
    with its masks from te.engine.RELU_MASKS (the table the kernels are driven by)."""
    assert te.engine.RELU_MASKS == {"backprop": (True, False), "deconvnet": (False, True), "guided": (True, True)}
    assert te.RELU_RULES == ("backprop", "deconvnet", "guided")
    x = away_from_zero((3, 7), seed=2)
    g = away_from_zero((3, 7), seed=3)
    for rule, (mask_x, mask_g) in te.engine.RELU_MASKS.items():
        formula = g * ((x > 0) if mask_x else 1) * ((g > 0) if mask_g else 1)
        np.testing.assert_array_equal(_relu_grad(x, g, rule), formula)


def test_relu_propagates_nan():
    """relu(NaN) = NaN (not 0), as in PyTorch; a NaN gradient comes back as NaN under every
    rule, even where the masks would block a number; a NaN x lets g through (PyTorch's
    threshold_backward does the same).  Infinities are numbers: masked like any other."""
    x = np.array([np.nan, np.nan, -1.0, -1.0, 2.0, 2.0, np.inf, -np.inf, -0.0])
    g = np.array([1.0, -1.0, np.nan, 1.0, np.nan, -np.inf, 1.0, 1.0, 1.0])
    y = te.relu(te.Tensor(x)).numpy()
    np.testing.assert_array_equal(y, [np.nan, np.nan, 0, 0, 2, 2, np.inf, 0, 0])
    assert not np.signbit(y[-1])
    expect = {"backprop": [1, -1, np.nan, 0, np.nan, -np.inf, 1, 0, 0],
              "deconvnet": [1, 0, np.nan, 1, np.nan, 0, 1, 1, 1],
              "guided": [1, 0, np.nan, 0, np.nan, 0, 1, 0, 0]}
    for rule in te.RELU_RULES:
        np.testing.assert_array_equal(_relu_grad(x, g, rule), expect[rule], err_msg=rule)
    torch = need.module("torch")
    xt = torch.from_numpy(x).requires_grad_(True)
    torch.relu(xt).backward(torch.from_numpy(np.nan_to_num(g, nan=5.0)))
    assert torch.isnan(torch.relu(torch.from_numpy(x))[:2]).all()
    np.testing.assert_array_equal(_relu_grad(x, np.nan_to_num(g, nan=5.0), "backprop"), xt.grad.numpy())


def _guided_net(x, w1, b1, w2):
    """conv -> relu -> conv -> relu -> sum; with positive weights and inputs
    every pre-activation and every upstream gradient is positive."""
    h = te.relu(te.conv2d(x, w1, b1, 1, 1))
    return te.relu(te.conv2d(h, w2, None, 1, 0)).sum()


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_relu_rules_equal_true_gradient_in_positive_network(rule):
    r = rng(8)
    x = r.uniform(0.1, 1.0, (1, 2, 5, 6))
    w1, b1, w2 = r.uniform(0.1, 1.0, (3, 2, 3, 3)), r.uniform(0.1, 1.0, 3), r.uniform(0.1, 1.0, (2, 3, 3, 3))
    xt = te.Tensor(x.copy(), requires_grad=True)
    out = _guided_net(xt, te.Tensor(w1), te.Tensor(b1), te.Tensor(w2))
    with te.relu_backward(rule):
        out.backward()
    with te.no_grad():
        num = numeric_grad(lambda: float(_guided_net(te.Tensor(x), te.Tensor(w1), te.Tensor(b1),
                                                     te.Tensor(w2)).data), x)
    np.testing.assert_allclose(xt.grad.reshape(-1), [num[i] for i in range(x.size)], rtol=1e-6, atol=1e-8)
    # and it is bit-identical to the backprop rule here
    xb = te.Tensor(x.copy(), requires_grad=True)
    _guided_net(xb, te.Tensor(w1), te.Tensor(b1), te.Tensor(w2)).backward()
    np.testing.assert_array_equal(xt.grad, xb.grad)


# --------------------------------------------------------------------------
# max pooling (inputs without ties)
# --------------------------------------------------------------------------
POOL_CASES = [((2, 3, 7, 9), 3, 2, 0),     # AlexNet's overlapping 3x3 stride 2
              ((1, 2, 6, 5), 3, 2, 1),     # ... with padding
              ((1, 2, 8, 8), 2, 2, 0),     # non-overlapping
              ((1, 2, 5, 7), 3, 1, 1),     # stride 1: every pixel in up to 9 windows
              ((2, 2, 13, 13), 3, 2, 0)]   # AlexNet pool5 geometry (13 -> 6)


@pytest.mark.parametrize("xs,k,s,p", POOL_CASES)
def test_max_pool2d_forward_matches_reference(xs, k, s, p):
    x = distinct(xs, seed=1)
    np.testing.assert_array_equal(te.max_pool2d(te.Tensor(x), k, s, p).numpy(), maxpool_ref(x, k, s, p))


@pytest.mark.parametrize("shape,s", [((2, 3, 7, 9), 2), ((1, 2, 8, 5), 1), ((1, 2, 11, 10), 3), ((1, 1, 3, 3), 2)])
def test_max_pool2d_3x3_fast_path_matches_the_general_kernel(shape, s):
    """kernels/max_pool2d.py's unrolled 3x3 kernel against its general one, on ties (a
    quantised input: most windows hold their maximum twice or more) and NaNs: the same
    maxima and the same switches (the first maximum in row-major order)."""
    M, out_size = K.max_pool2d, K.im2col.out_size     # the package's kernels, not a second copy as top-level `kernels`
    x = np.round(rng(3).standard_normal(shape) * 2).astype(np.float32)
    x.reshape(-1)[::7] = np.nan
    oh, ow = out_size(shape[2], 3, s, 0), out_size(shape[3], 3, s, 0)
    y0, s0 = np.empty(shape[:2] + (oh, ow), np.float32), np.empty(shape[:2] + (oh, ow), np.int32)
    M._forward.serial(x, 3, s, 0, y0, s0)
    y1, s1 = M.forward(x, 3, s, 0)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(s1, s0)
    if x.size > 9:                          # NaN windows and others are both exercised
        assert np.isnan(y0).any() and (~np.isnan(y0)).any()


def test_max_pool2d_padding_is_minus_infinity():
    """All-negative input: padded positions must never win."""
    x = -1.0 - rng(2).random((1, 1, 4, 4))
    y = te.max_pool2d(te.Tensor(x), 3, 2, 1).numpy()
    assert (y < -1).all()
    np.testing.assert_array_equal(y, maxpool_ref(x, 3, 2, 1))


@pytest.mark.parametrize("xs,k,s,p", POOL_CASES)
def test_max_pool2d_gradcheck(xs, k, s, p):
    assert te.gradcheck(lambda x: te.max_pool2d(x, k, s, p), [distinct(xs, seed=1)])


def test_max_pool2d_overlapping_windows_add_up():
    """A pixel that is the max of several overlapping windows receives their sum."""
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 10.0      # the centre is in all four 3x3 stride-2 windows
    t = te.Tensor(x, requires_grad=True)
    te.max_pool2d(t, 3, 2).backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros_like(x)
    expected[0, 0, 2, 2] = 10.0
    np.testing.assert_array_equal(t.grad, expected)


# --------------------------------------------------------------------------
# local response normalisation
# --------------------------------------------------------------------------
LRN_CASES = [(3, 1e-4, 0.75, 1.0, 7),    # Caffe parameters, C > size
             (5, 1e-4, 0.75, 1.0, 7),
             (5, 1e-4, 0.75, 1.0, 3),    # C < size
             (3, 1.0, 0.75, 1.0, 2),     # large alpha: a non-trivial cross-channel term
             (5, 2.0, 0.75, 1.0, 7),
             (5, 0.5, 0.75, 2.0, 4),     # k = 2, C < size
             (4, 1.5, 0.6, 1.0, 6)]      # even size: asymmetric window


@pytest.mark.parametrize("size,alpha,beta,k,C", LRN_CASES)
def test_lrn_forward_matches_reference(size, alpha, beta, k, C):
    x = 2 * rng(1).standard_normal((2, C, 3, 4))
    y = te.local_response_norm(te.Tensor(x), size, alpha, beta, k).numpy()
    np.testing.assert_allclose(y, lrn_ref(x, size, alpha, beta, k), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("size,alpha,beta,k,C", LRN_CASES)
def test_lrn_gradcheck(size, alpha, beta, k, C):
    x = 2 * rng(1).standard_normal((2, C, 3, 4))
    assert te.gradcheck(lambda t: te.local_response_norm(t, size, alpha, beta, k), [x])


def test_lrn_cross_channel_term_is_checked():
    """With alpha = 2 the Jacobian is far from diagonal (so gradcheck above
    really tests the cross-channel part of the backward)."""
    x = 2 * rng(1).standard_normal((1, 5, 1, 1))
    t = te.Tensor(x, requires_grad=True)
    g = np.zeros_like(x)
    g[0, 2] = 1
    te.local_response_norm(t, 5, 2.0, 0.75, 1.0).backward(g)
    off = np.delete(t.grad.reshape(-1), 2)
    assert np.abs(off).max() > 0.01 * abs(t.grad[0, 2, 0, 0])


# --------------------------------------------------------------------------
# linear, adaptive average pooling, dropout, reshapes, softmax, loss
# --------------------------------------------------------------------------
def test_linear_forward_and_gradcheck():
    x, w, b = rng(1).standard_normal((3, 5)), rng(2).standard_normal((4, 5)), rng(3).standard_normal(4)
    np.testing.assert_allclose(te.linear(te.Tensor(x), te.Tensor(w), te.Tensor(b)).numpy(), x @ w.T + b, rtol=1e-12)
    assert te.gradcheck(te.linear, [x, w, b])
    assert te.gradcheck(lambda x, w: te.linear(x, w), [x, w])


@pytest.mark.parametrize("in_hw,out_hw", [((6, 4), (3, 2)),    # divisible
                                          ((7, 5), (3, 2)),    # non-divisible: overlapping windows
                                          ((13, 13), (6, 6)),  # AlexNet
                                          ((2, 3), (4, 5)),    # output larger than input
                                          ((6, 6), (6, 6))])   # identity
def test_adaptive_avg_pool2d(in_hw, out_hw):
    x = rng(1).standard_normal((2, 3) + in_hw)
    np.testing.assert_allclose(te.adaptive_avg_pool2d(te.Tensor(x), out_hw).numpy(), avgpool_ref(x, out_hw),
                               rtol=1e-12, atol=1e-14)
    assert te.gradcheck(lambda t: te.adaptive_avg_pool2d(t, out_hw), [x])


def test_dropout_train_gradcheck_with_fixed_seed():
    """Reseeding inside fn gives the same mask on every evaluation, so central
    differences see one fixed linear map -- the one backward must use."""
    x = rng(1).standard_normal((2, 3, 4))

    def fn(t):
        te.manual_seed(123)
        return te.dropout(t, 0.4, training=True)
    assert te.gradcheck(fn, [x])


def test_dropout_backward_reuses_forward_mask():
    te.manual_seed(5)
    x = away_from_zero((4, 50), seed=2)
    t = te.Tensor(x, requires_grad=True)
    p = 0.3
    y = te.dropout(t, p, training=True)
    kept = y.numpy() != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y.numpy()[kept], x[kept] / (1 - p), rtol=1e-15)
    g = rng(3).standard_normal(x.shape)
    y.backward(g)                                # no new random draws may happen here
    np.testing.assert_allclose(t.grad, g * kept / (1 - p), rtol=1e-15)


def test_dropout_eval_is_identity():
    x = rng(1).standard_normal((2, 6))
    t = te.Tensor(x, requires_grad=True)
    y = te.dropout(t, 0.5, training=False)
    np.testing.assert_array_equal(y.numpy(), x)
    assert te.gradcheck(lambda t: te.dropout(t, 0.5, training=False), [x])
    assert te.gradcheck(lambda t: te.dropout(t, 0.0, training=True), [x])


def test_flatten_and_reshape():
    x = rng(1).standard_normal((2, 3, 2, 2))
    assert te.flatten(te.Tensor(x)).shape == (2, 12)
    assert te.gradcheck(te.flatten, [x])
    assert te.gradcheck(lambda t: t.reshape(4, 6) * te.Tensor(np.arange(24.0).reshape(4, 6)), [x])
    assert te.gradcheck(lambda t: t.reshape((3, -1)), [x])


def test_log_softmax():
    s = 3 * rng(1).standard_normal((3, 5))
    ref = s - s.max(1, keepdims=True) - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(te.log_softmax(te.Tensor(s)).numpy(), ref, rtol=1e-12)
    assert te.gradcheck(te.log_softmax, [s])


def test_log_softmax_large_scores_stable():
    s = np.array([[1000.0, 0.0, -1000.0]])
    y = te.log_softmax(te.Tensor(s)).numpy()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [[0.0, -1000.0, -2000.0]])


def test_cross_entropy():
    s = 2 * rng(1).standard_normal((4, 5))
    labels = np.array([0, 3, 3, 1])
    lp = s - np.log(np.exp(s).sum(1, keepdims=True))
    loss = te.cross_entropy(te.Tensor(s), labels)
    assert loss.shape == ()
    np.testing.assert_allclose(float(loss.data), -lp[np.arange(4), labels].mean(), rtol=1e-12)
    assert te.gradcheck(lambda t: te.cross_entropy(t, labels), [s])
    # composes: a scalar loss of a linear layer's output
    x, w = rng(2).standard_normal((4, 3)), rng(3).standard_normal((5, 3))
    assert te.gradcheck(lambda x, w: te.cross_entropy(te.linear(x, w), labels) * 2.0, [x, w])


# --------------------------------------------------------------------------
# exp, log, max, softmax, logsumexp; log_softmax and cross_entropy against them
# --------------------------------------------------------------------------
def test_exp_and_log():
    x = rng(1).standard_normal((3, 4))
    np.testing.assert_allclose(te.exp(te.Tensor(x)).numpy(), np.exp(x), rtol=1e-15)
    assert te.gradcheck(te.exp, [x]) and te.gradcheck(lambda t: t.exp() * 2.0, [x])
    pos = rng(2).uniform(0.2, 3.0, (3, 4))
    np.testing.assert_allclose(te.log(te.Tensor(pos)).numpy(), np.log(pos), rtol=1e-15)
    assert te.gradcheck(te.log, [pos]) and te.gradcheck(lambda t: t.log(), [pos])
    np.testing.assert_allclose(te.log(te.exp(te.Tensor(x))).numpy(), x, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_max_over_an_axis(axis, keepdims):
    x = distinct((2, 3, 4), seed=1)                       # no ties: max is differentiable here
    out = te.amax(te.Tensor(x), axis=axis, keepdims=keepdims)
    np.testing.assert_array_equal(out.numpy(), x.max(axis=axis, keepdims=keepdims))
    assert te.gradcheck(lambda t: t.max(axis=axis, keepdims=keepdims), [x])


def test_max_ties_split_the_gradient_equally():
    """The stated subgradient: k tied maxima get g/k each (PyTorch's amax does the same)."""
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [5.0, -1.0, 0.0]])
    t = te.Tensor(x, requires_grad=True)
    t.max(axis=1).backward(np.array([1.0, 3.0, 2.0]))
    np.testing.assert_allclose(t.grad, [[0, 0.5, 0.5], [1, 1, 1], [2, 0, 0]], rtol=1e-15)
    t = te.Tensor(x, requires_grad=True)
    t.max().backward()                                    # one maximum over everything: 5
    np.testing.assert_array_equal(t.grad, (x == 5.0).astype(float))
    torch = need.module("torch")
    for axis in (0, 1):
        tt = torch.from_numpy(x).requires_grad_(True)
        torch.amax(tt, dim=axis).sum().backward()
        t = te.Tensor(x, requires_grad=True)
        t.max(axis=axis).sum().backward()
        np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-15)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(axis):
    s = 3 * rng(1).standard_normal((3, 5))
    e = np.exp(s - s.max(axis, keepdims=True))
    ref = e / e.sum(axis, keepdims=True)
    p = te.softmax(te.Tensor(s), axis=axis).numpy()
    np.testing.assert_allclose(p, ref, rtol=1e-14)
    np.testing.assert_allclose(p.sum(axis), 1.0, rtol=1e-14)
    assert te.gradcheck(lambda t: te.softmax(t, axis=axis), [s])
    assert te.gradcheck(lambda t: t.softmax(axis=axis) * t, [s])
    # an array in, no graph: the package's softmax of plain scores (te.explain.predict)
    np.testing.assert_array_equal(te.softmax(s, axis=axis).numpy(), p)
    big = te.softmax(te.Tensor(np.array([[1000.0, 0.0, -1000.0]]))).numpy()
    np.testing.assert_allclose(big, [[1.0, 0.0, 0.0]], atol=1e-300)


@pytest.mark.parametrize("axis, keepdims", [(-1, False), (-1, True), (0, False), ((0, 1), False)])
def test_logsumexp(axis, keepdims):
    s = 3 * rng(1).standard_normal((3, 5))
    ref = np.log(np.exp(s).sum(axis=axis, keepdims=keepdims))
    np.testing.assert_allclose(te.logsumexp(te.Tensor(s), axis=axis, keepdims=keepdims).numpy(), ref, rtol=1e-14)
    assert te.gradcheck(lambda t: t.logsumexp(axis=axis, keepdims=keepdims), [s])
    # its gradient is the softmax
    t = te.Tensor(s, requires_grad=True)
    te.logsumexp(t, axis=-1).sum().backward()
    np.testing.assert_allclose(t.grad, te.softmax(s).numpy(), rtol=1e-14)


def test_logsumexp_extremes():
    s = np.array([[1000.0, 1000.0], [-np.inf, -np.inf], [np.inf, 0.0], [np.nan, 0.0]])
    with np.errstate(divide="ignore", invalid="ignore"):     # log(0) and inf - inf, on purpose
        y = te.logsumexp(te.Tensor(s)).numpy()
    np.testing.assert_allclose(y[0], 1000.0 + np.log(2.0), rtol=1e-15)
    assert y[1] == -np.inf and y[2] == np.inf and np.isnan(y[3])


def test_log_softmax_is_scores_minus_logsumexp():
    s = 3 * rng(2).standard_normal((4, 6))
    for axis in (-1, 0):
        composed = lambda t: t - te.logsumexp(t, axis=axis, keepdims=True)  # noqa: E731
        np.testing.assert_allclose(te.log_softmax(te.Tensor(s), axis=axis).numpy(), composed(te.Tensor(s)).numpy(),
                                   rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(te.exp(te.log_softmax(te.Tensor(s), axis=axis)).numpy(),
                                   te.softmax(s, axis=axis).numpy(), rtol=1e-14)
        v = rng(3).standard_normal(s.shape)
        a, b = te.Tensor(s, requires_grad=True), te.Tensor(s, requires_grad=True)
        te.log_softmax(a, axis=axis).backward(v)
        composed(b).backward(v)
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-13, atol=1e-14)
        assert te.gradcheck(lambda t: te.log_softmax(t, axis=axis), [s])


def test_cross_entropy_is_the_mean_negative_log_softmax_of_the_label():
    s = 2 * rng(4).standard_normal((5, 4))
    labels = np.array([0, 3, 3, 1, 2])
    a, b = te.Tensor(s, requires_grad=True), te.Tensor(s, requires_grad=True)
    loss = te.cross_entropy(a, labels)
    composed = -te.log_softmax(b)[(np.arange(5), labels)].mean()
    np.testing.assert_allclose(float(loss.data), float(composed.data), rtol=1e-15)
    loss.backward()
    composed.backward()
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-14, atol=1e-16)


# --------------------------------------------------------------------------
# elementwise arithmetic with broadcasting, reductions
# --------------------------------------------------------------------------
BCAST = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((2, 1, 4), (1, 3, 1)), ((3,), ())]


@pytest.mark.parametrize("sa,sb", BCAST)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_ops_broadcast(op, sa, sb):
    a = away_from_zero(sa, seed=1)
    b = away_from_zero(sb, seed=2, lo=0.5)
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
         "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    out = f(te.Tensor(a), te.Tensor(b))
    np.testing.assert_allclose(out.numpy(), f(a, b), rtol=1e-14)
    assert out.shape == np.broadcast_shapes(sa, sb)
    assert te.gradcheck(f, [a, b])
    assert te.gradcheck(f, [b, a])


def test_scalar_and_reflected_ops():
    a = away_from_zero((2, 3), seed=1, lo=0.5)
    for f, ref in [(lambda t: t + 2.5, a + 2.5), (lambda t: 2.5 + t, 2.5 + a), (lambda t: t - 1.5, a - 1.5),
                   (lambda t: 1.5 - t, 1.5 - a), (lambda t: 3.0 * t, 3.0 * a), (lambda t: t * 3.0, a * 3.0),
                   (lambda t: t / 4.0, a / 4.0), (lambda t: -t, -a), (lambda t: a * t, a * a)]:
        np.testing.assert_allclose(f(te.Tensor(a)).numpy(), ref, rtol=1e-14)
        assert te.gradcheck(f, [a])


@pytest.mark.parametrize("p", [2.0, 3.0, 0.5, 1.5, -1.0, -2.0])
def test_pow(p):
    x = rng(1).uniform(0.5, 2.0, (3, 4))
    np.testing.assert_allclose((te.Tensor(x) ** p).numpy(), x ** p, rtol=1e-14)
    assert te.gradcheck(lambda t: t ** p, [x])


def test_abs():
    x = away_from_zero((3, 4))
    np.testing.assert_array_equal(te.Tensor(x).abs().numpy(), np.abs(x))
    assert te.gradcheck(lambda t: t.abs(), [x])


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (1, -1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_and_mean(axis, keepdims):
    x = rng(1).standard_normal((2, 3, 4))
    for name, ref in (("sum", np.sum), ("mean", np.mean)):
        out = getattr(te.Tensor(x), name)(axis=axis, keepdims=keepdims)
        np.testing.assert_allclose(out.numpy(), ref(x, axis=axis, keepdims=keepdims), rtol=1e-13)
        assert te.gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), [x])


# --------------------------------------------------------------------------
# forward differences by indexing (total variation) and indexing
# --------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, -2, 3, 2])
def test_forward_difference(axis):
    x = rng(1).standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(forward_difference(te.Tensor(x), axis).numpy(), np.diff(x, axis=axis), rtol=1e-14)
    assert te.gradcheck(lambda t: forward_difference(t, axis), [x])


def test_total_variation_loss():
    """TV(x) = sum of squared differences along H and along W."""
    x = rng(1).standard_normal((1, 3, 5, 6))

    def tv(t):
        return (forward_difference(t, -1) ** 2).sum() + (forward_difference(t, -2) ** 2).sum()
    ref = (np.diff(x, axis=-1) ** 2).sum() + (np.diff(x, axis=-2) ** 2).sum()
    np.testing.assert_allclose(float(tv(te.Tensor(x)).data), ref, rtol=1e-13)
    assert te.gradcheck(tv, [x])
    assert te.gradcheck(lambda t: (forward_difference(t, -1) ** 2 + 1e-2).__pow__(0.5).sum(), [x])


@pytest.mark.parametrize("idx", [
    (0, 2),                                   # scores[0, c]
    (slice(None), 1),
    (0, slice(1, 3)),
    (Ellipsis, slice(None, None, 2)),
    np.array([1, 1, 0]),                      # repeated fancy index: gradients add up
    (np.array([0, 1, 1]), np.array([2, 0, 0])),
])
def test_indexing(idx):
    x = rng(1).standard_normal((2, 4))
    np.testing.assert_array_equal(te.Tensor(x)[idx].numpy(), x[idx])
    assert te.gradcheck(lambda t: t[idx], [x])


def test_indexing_boolean_mask():
    x = rng(1).standard_normal((3, 4))
    m = x > 0
    assert te.gradcheck(lambda t: t[m], [x])
    assert te.gradcheck(lambda t: t[te.Tensor(m)], [x])


def test_take_and_put_rows():
    """TakeRows picks distinct rows of a batch and PutRows scatters rows into a zero batch (its
    adjoint; the layer inversion's row bookkeeping): forward by hand, backward by gradcheck."""
    x = rng(1).standard_normal((3, 2, 4))
    rows = np.array([2, 0])
    np.testing.assert_array_equal(ops.TakeRows.apply(te.Tensor(x), rows=rows).numpy(), x[rows])
    put = ops.PutRows.apply(te.Tensor(x[:2]), rows=rows, n=4).numpy()
    np.testing.assert_array_equal(put[[2, 0]], x[:2])
    np.testing.assert_array_equal(put[[1, 3]], 0)
    assert te.gradcheck(lambda t: ops.TakeRows.apply(t, rows=rows), [x])
    assert te.gradcheck(lambda t: ops.PutRows.apply(t, rows=rows, n=4), [x[:2]])


# --------------------------------------------------------------------------
# a small whole network, end to end
# --------------------------------------------------------------------------
def _bind(model):
    """fn(x, *params) that runs ``model`` with the given parameter tensors."""
    slots = [(layer, p) for layer in model.layers.values() for p in layer.params]

    def fn(x, *params):
        for (layer, p), t in zip(slots, params):
            setattr(layer, p, t)
        return model(x)
    return fn


@pytest.mark.parametrize("alpha", [1e-4, 1.0])
def test_network_gradcheck_input_and_all_weights(alpha):
    model = tiny_network(seed=1, lrn_alpha=alpha).astype(np.float64)
    x = rng(2).standard_normal((2, 2, 9, 9))
    assert kink_margin(model, x) > 1e-4, "test point too close to a ReLU kink or max-pool tie: change the seed"
    params = [p.data.copy() for p in model.parameters()]
    assert te.gradcheck(_bind(model), [x] + params, max_checks=40)


def test_network_requires_grad_weights_match_central_differences():
    """The training path: ``model.requires_grad_(True)`` fills every
    parameter's .grad (and the input's) with dL/dparam."""
    model = tiny_network(seed=5, lrn_alpha=1.0).astype(np.float64).requires_grad_(True)
    x = rng(6).standard_normal((2, 2, 9, 9))
    assert kink_margin(model, x) > 1e-4, "test point too close to a ReLU kink or max-pool tie: change the seed"
    labels = np.array([2, 0])
    xt = te.Tensor(x, requires_grad=True)
    loss = te.cross_entropy(model(xt), labels)
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == np.float64
               for p in model.parameters())

    def f():
        with te.no_grad():
            return float(te.cross_entropy(model(te.Tensor(x)), labels).data)
    r = rng(5)
    for t, arr in [(xt, x)] + [(p, p.data) for p in model.parameters()]:
        idx = r.choice(arr.size, min(arr.size, 25), replace=False)
        num = numeric_grad(f, arr, idx=idx)
        ana = t.grad.reshape(-1)
        for i, v in num.items():
            assert abs(ana[i] - v) <= 1e-6 + 1e-4 * abs(v), (t.shape, i, ana[i], v)


def test_network_train_mode_dropout_gradcheck():
    model = tiny_network(seed=1).astype(np.float64).train()
    x = rng(2).standard_normal((2, 2, 9, 9))
    assert kink_margin(model, x) > 1e-4, "test point too close to a ReLU kink or max-pool tie: change the seed"

    def fn(t):
        te.manual_seed(9)
        return model(t)
    assert te.gradcheck(fn, [x], max_checks=60)


# --------------------------------------------------------------------------
# gradcheck cannot pass vacuously
# --------------------------------------------------------------------------
class _WrongScale(te.Function):
    """y = 2x, but backward claims 3g."""

    def forward(self, x):
        return 2 * x

    def backward(self, g):
        return 3 * g


class _ZeroGrad(te.Function):
    def forward(self, x):
        return x * x

    def backward(self, g):
        return np.zeros_like(g)


class _SwappedInputs(te.Function):
    """y = a * b**2 with the two gradients swapped."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b * b

    def backward(self, g):
        return g * 2 * self.a * self.b, g * self.b * self.b


class _OneElementWrong(te.Function):
    """Correct except for one element -- gradcheck checks every element."""

    def forward(self, x):
        return x * 1.0

    def backward(self, g):
        g = g.copy()
        g.reshape(-1)[-1] *= 1.01
        return g


@pytest.mark.parametrize("fn,n", [(_WrongScale.apply, 1), (_ZeroGrad.apply, 1),
                                  (_SwappedInputs.apply, 2), (_OneElementWrong.apply, 1)])
def test_gradcheck_catches_wrong_backward(fn, n):
    inputs = [rng(i).uniform(0.5, 1.5, (3, 4)) for i in range(n)]
    with pytest.raises(te.GradcheckError, match="analytic"):
        te.gradcheck(fn, inputs)
    assert te.gradcheck(fn, inputs, raise_exception=False) is False


def test_gradcheck_accepts_correct_custom_function_and_rejects_float32():
    class Square(te.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return 2 * self.x * g
    assert te.gradcheck(Square.apply, [rng(0).standard_normal((3, 3))])
    with pytest.raises(te.GradcheckError, match="float64"):
        te.gradcheck(lambda t: te.Tensor(t.data.astype(np.float32), requires_grad=True), [np.ones(3)])


# --------------------------------------------------------------------------
# the parallel kernels give the serial results, bit for bit
# --------------------------------------------------------------------------
def test_kernels_parallel_equals_serial(monkeypatch):
    """Every kernel writes each output element from exactly one parallel
    iteration, so the thread count must not change a single bit (a race or
    a reduction split across threads would).  These arrays are small, so the
    size threshold is lowered to 0 to make the parallel versions run."""
    numba = need.module("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    from tinygrad_explain.kernels import _numba
    monkeypatch.setattr(_numba, "PARALLEL_MIN", 0)
    calls = {"parallel": 0}
    for mod in (K.im2col, K.relu, K.max_pool2d, K.lrn, K.avg_pool2d, K.layout, K.clip, K.depthwise_conv2d,
                K.batch_norm):
        for name in dir(mod):
            k = getattr(mod, name)
            if isinstance(k, _numba.kernel):
                par = k.parallel

                def counting(*a, _par=par):
                    calls["parallel"] += 1
                    return _par(*a)
                monkeypatch.setattr(k, "parallel", counting)
    r = rng(11)
    x = r.standard_normal((3, 8, 15, 13)).astype(np.float32)
    w = r.standard_normal((6, 4, 3, 3)).astype(np.float32)
    wd, bd = (rng(13).standard_normal(sh).astype(np.float32) for sh in ((16, 1, 3, 3), (16,)))
    b = r.standard_normal(6).astype(np.float32)

    def run():
        out = []
        for f in (lambda t: te.conv2d(t, te.Tensor(w), te.Tensor(b), 2, 1, 2),
                  te.relu,
                  lambda t: te.max_pool2d(t, 3, 2, 1),
                  lambda t: te.max_pool2d(t, 3, 2, 0),          # the unrolled 3x3 kernel
                  lambda t: te.local_response_norm(t, 5, 1.0, 0.75, 1.0),
                  lambda t: te.adaptive_avg_pool2d(t, (4, 5)),
                  lambda t: ops.max_pool2d(t, 3, 2, 1, ceil_mode=True),
                  lambda t: ops.avg_pool2d(t, 3, 2, 1, False, True),
                  ops.relu6,
                  lambda t: ops.conv2d(t, te.Tensor(wd), te.Tensor(bd), 1, 1, 8),    # depthwise, multiplier 2
                  lambda t: ops.batch_norm(t, bd[:8], bd[8:] ** 2 + 0.1, te.Tensor(wd[:8, 0, 0, 0]),
                                           te.Tensor(wd[8:, 0, 0, 0])),
                  ):
            t = te.Tensor(x.copy(), requires_grad=True)
            y = f(t)
            g = np.random.default_rng(12).standard_normal(y.shape).astype(np.float32)
            with te.relu_backward("guided"):
                y.backward(g)
            out += [y.numpy().copy(), t.grad.copy()]
        return out
    serial, parallel = one_and_all_threads(run)
    assert calls["parallel"] > 0, "the parallel kernels never ran"
    for i, (a, c) in enumerate(zip(serial, parallel)):
        assert a.tobytes() == c.tobytes(), f"output {i} differs between 1 and {numba.config.NUMBA_NUM_THREADS} threads"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_split_over_threads_equals_one_thread(monkeypatch, dtype):
    """With several threads a batch's convolution runs one slice of images per
    thread (kernels/threads.py), forward and backward to the input, image by
    image on one BLAS thread: the same bits as on one thread, the forward equal
    to the naive reference, the gradient checked against central differences
    with all threads."""
    numba = need.module("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    x, w, b = (a.astype(dtype) for a in (rng(1).standard_normal((5, 4, 9, 8)), rng(2).standard_normal((6, 2, 3, 3)),
                                          rng(3).standard_normal(6)))
    g = rng(4).standard_normal((5, 6, 5, 4)).astype(dtype)
    ran = []
    real = K.threads.over_batch
    monkeypatch.setattr(K.threads, "over_batch", lambda fn, n, work=0: (ran.append(n), real(fn, n, work))[1])

    def run():
        t = te.Tensor(x, requires_grad=True)
        y = te.conv2d(t, te.Tensor(w), te.Tensor(b), 2, 1, 2)
        y.backward(g)
        return y.numpy().copy(), t.grad.copy()
    (y1, dx1), (yn, dxn) = one_and_all_threads(run)
    assert ran == [5, 5, 5, 5]                      # forward and backward, on one thread and on all
    assert yn.tobytes() == y1.tobytes() and dxn.tobytes() == dx1.tobytes()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y1, conv_ref(x, w, b, 2, 1, 2), rtol=tol, atol=tol)
    if dtype == np.float64:
        prev = numba.get_num_threads()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        try:
            assert te.gradcheck(lambda t: te.conv2d(t, te.Tensor(w), te.Tensor(b), 2, 1, 2), [x], max_checks=60)
        finally:
            numba.set_num_threads(prev)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_upsample_nearest(factor):
    """Forward against np.repeat along both axes; backward (the sum over each block) gradchecked."""
    x = rng(2).standard_normal((2, 3, 4, 5))
    ref = np.repeat(np.repeat(x, factor, axis=2), factor, axis=3)
    np.testing.assert_array_equal(te.upsample(te.Tensor(x), factor).numpy(), ref)
    assert te.gradcheck(lambda t: te.upsample(t, factor) * te.Tensor(rng(3).standard_normal(ref.shape)), [x])


def test_unflatten():
    x = rng(1).standard_normal((2, 12))
    y = te.unflatten(te.Tensor(x), (3, 2, 2))
    np.testing.assert_array_equal(y.numpy(), x.reshape(2, 3, 2, 2))
    assert te.gradcheck(lambda t: te.unflatten(t, (3, 2, 2)) * te.Tensor(np.arange(24.0).reshape(2, 3, 2, 2)), [x])
