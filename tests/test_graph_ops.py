"""The ops that graph networks need (VGG-BN, ResNet, MobileNetV2, SqueezeNet, GoogLeNet):
grouped and depthwise convolution, max-pooling with padding and ceil_mode, average
pooling (count_include_pad, ceil_mode), global average pooling, inference batch norm
(and its folding into a convolution), concatenation, clip / ReLU6 with the three ReLU
rules at the lower bound, residual add, sigmoid / SiLU / broadcast multiply.

Each op: forward AND backward against ``torch.nn.functional`` in float64 (torch is an
independent implementation; test-only), a float64 gradcheck, and its nn layer's
spec / output shape.  The naive references are compared with the fast kernels in
tests/test_naive.py.
"""
import numpy as np
import pytest
from _reference import away_from_zero, distinct, rng, serial_kernels  # noqa: F401

import tinygrad_explain as te
from tinygrad_explain.core import naive, nn, ops

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.usefixtures("serial_kernels")


def _te_grads(fn, arrays, g):
    """The engine's output and gradients of sum(fn(*tensors) * g)."""
    ts = [te.Tensor(a.copy(), requires_grad=True) for a in arrays]
    y = fn(*ts)
    y.backward(g)
    return y.numpy(), [t.grad for t in ts]


def _torch_grads(fn, arrays, g):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


def _same_as_torch(te_fn, torch_fn, arrays, seed=9, rtol=1e-12, atol=1e-12):
    """te and torch: equal outputs and equal gradients for every input (float64)."""
    with te.no_grad():
        shape = te_fn(*[te.Tensor(a) for a in arrays]).shape
    g = rng(seed).standard_normal(shape)
    y, grads = _te_grads(te_fn, arrays, g)
    y_t, grads_t = _torch_grads(torch_fn, arrays, g)
    np.testing.assert_allclose(y, y_t, rtol=rtol, atol=atol)
    for i, (a, b) in enumerate(zip(grads, grads_t)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")


# --------------------------------------------------------------------------
# convolution: groups in {1, 2, C}, depthwise with a channel multiplier
# --------------------------------------------------------------------------
# (x shape, w shape, stride, padding, groups)
CONV_CASES = [
    ((2, 4, 7, 9), (6, 4, 3, 3), 1, 1, 1),
    ((2, 4, 7, 9), (6, 2, 3, 3), 2, 1, 2),
    ((2, 6, 9, 7), (6, 1, 3, 3), 1, 1, 6),            # depthwise, MobileNetV2's stride 1
    ((1, 5, 8, 11), (5, 1, 3, 3), 2, 1, 5),           # depthwise, stride 2, odd sizes
    ((2, 3, 7, 6), (6, 1, 5, 5), 2, 2, 3),            # depthwise with multiplier 2, kernel 5
    ((1, 4, 6, 7), (4, 1, 3, 3), (1, 2), (0, 1), 4),  # per-axis stride / padding
    ((1, 8, 5, 5), (8, 2, 3, 3), 1, 1, 4),            # grouped, 4 groups of 2 channels
    ((1, 3, 6, 7), (6, 1, 3, 3), 1, 1, 3),            # depthwise stride 1, multiplier 2 (the short-row loops)
    ((1, 2, 5, 33), (2, 1, 3, 3), 1, 1, 2),           # depthwise stride 1, rows of 33 (the row-by-row loops)
]


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CONV_CASES)
def test_conv2d_groups_equals_torch(xs, ws, stride, padding, groups):
    x, w, b = rng(1).standard_normal(xs), rng(2).standard_normal(ws), rng(3).standard_normal(ws[0])
    _same_as_torch(lambda x_, w_, b_: ops.conv2d(x_, w_, b_, stride, padding, groups),
                   lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride, padding, 1, groups), [x, w, b])


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CONV_CASES)
def test_conv2d_groups_gradcheck(xs, ws, stride, padding, groups):
    x, w, b = rng(1).standard_normal(xs), rng(2).standard_normal(ws), rng(3).standard_normal(ws[0])
    assert te.gradcheck(lambda x_, w_, b_: ops.conv2d(x_, w_, b_, stride, padding, groups), [x, w, b],
                        max_checks=60)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_depthwise_one_input_at_a_time(which):
    """Only x, only w, or only b requires grad, and no bias (the needs_grad branches)."""
    arrs = [rng(1).standard_normal((2, 4, 6, 5)), rng(2).standard_normal((4, 1, 3, 3)), rng(3).standard_normal(4)]
    inputs = [a if i == which else te.Tensor(a) for i, a in enumerate(arrs)]
    assert te.gradcheck(lambda x, w, b: ops.conv2d(x, w, b, 2, 1, 4), inputs)
    if which < 2:
        assert te.gradcheck(lambda x, w: ops.conv2d(x, w, None, 1, 1, 4), inputs[:2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding", [((3, 8, 13, 12), (8, 1, 3, 3), 1, 1),
                                                  ((2, 6, 15, 15), (12, 1, 3, 3), 2, 1)])
def test_depthwise_kernel_equals_the_grouped_gemm_path(monkeypatch, dtype, xs, ws, stride, padding):
    """The depthwise loops against the same convolution run as C one-row GEMMs (the
    grouped path), forward, dx, dw and db."""
    x, w, b = (a.astype(dtype) for a in (rng(1).standard_normal(xs), rng(2).standard_normal(ws),
                                         rng(3).standard_normal(ws[0])))
    C = xs[1]

    def run():
        y = ops.conv2d(*(ts := [te.Tensor(a, requires_grad=True) for a in (x, w, b)]), stride, padding, C)
        y.backward(rng(4).standard_normal(y.shape).astype(dtype))
        return [y.numpy()] + [t.grad for t in ts]
    fast = run()
    monkeypatch.setattr(ops.Conv2d, "is_depthwise", staticmethod(lambda *a: False))
    gemm = run()
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for name, a, c in zip(("y", "dx", "dw", "db"), fast, gemm):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, c, rtol=tol, atol=tol * np.abs(c).max(), err_msg=name)


@pytest.mark.parametrize("budget", [None, 1])
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_conv_reads_the_image_itself(monkeypatch, budget, groups):
    """1x1 convolutions (ResNet's bottlenecks, MobileNet's pointwise layers) skip im2col and
    col2im on one image: frozen weights (input gradient only, image by image) and
    training with a chunk budget of one image (kept cols are views of x) equal torch."""
    if budget is not None:
        monkeypatch.setattr(ops.Conv2d, "COL_BUDGET", budget)
    x, w = rng(1).standard_normal((3, 4, 5, 7)), rng(2).standard_normal((6, 4 // groups, 1, 1))
    b = rng(3).standard_normal(6)
    conv = lambda x_, w_, b_: ops.conv2d(x_, w_, b_, 1, 0, groups)       # noqa: E731
    _same_as_torch(conv, lambda x_, w_, b_: F.conv2d(x_, w_, b_, 1, 0, 1, groups), [x, w, b])
    g = rng(4).standard_normal((3, 6, 5, 7))
    from tinygrad_explain import kernels as K
    for name in ("im2col", "col2im"):                   # the frozen-weight path uses neither
        monkeypatch.setattr(K.im2col, name, lambda *a, **k: pytest.fail("im2col/col2im on a 1x1 convolution"))
    _, (dx,) = _te_grads(lambda t: conv(t, te.Tensor(w), te.Tensor(b)), [x], g)
    _, (dx_t,) = _torch_grads(lambda t: F.conv2d(t, torch.tensor(w), torch.tensor(b), 1, 0, 1, groups), [x], g)
    np.testing.assert_allclose(dx, dx_t, rtol=1e-12, atol=1e-12)
    assert te.gradcheck(lambda t: conv(t, te.Tensor(w), te.Tensor(b)), [x])


@pytest.mark.parametrize("budget", [1, 700])
@pytest.mark.parametrize("xs,ws,stride,padding,groups", [((2, 4, 9, 11), (6, 4, 3, 3), 1, 1, 1),
                                                         ((2, 4, 11, 10), (6, 2, 5, 5), 2, 2, 2),
                                                         ((1, 3, 13, 13), (4, 3, 3, 3), (2, 1), (0, 1), 1)])
def test_conv2d_in_bands_of_output_rows(monkeypatch, budget, xs, ws, stride, padding, groups):
    """An image whose col exceeds COL_BUDGET is convolved in bands of output rows (one row
    per band at budget 1), forward and input gradient: the same as torch."""
    monkeypatch.setattr(ops.Conv2d, "COL_BUDGET", budget)
    x, w, b = rng(1).standard_normal(xs), rng(2).standard_normal(ws), rng(3).standard_normal(ws[0])
    from tinygrad_explain import kernels as K
    banded = []
    real = K.im2col.im2col
    monkeypatch.setattr(K.im2col, "im2col", lambda *a, **k: (banded.append(k.get("rows")), real(*a, **k))[1])
    g = rng(4).standard_normal(F.conv2d(torch.tensor(x), torch.tensor(w), None, stride, padding, 1, groups).shape)
    y, (dx,) = _te_grads(lambda t: ops.conv2d(t, te.Tensor(w), te.Tensor(b), stride, padding, groups), [x], g)
    y_t, (dx_t,) = _torch_grads(lambda t: F.conv2d(t, torch.tensor(w), torch.tensor(b), stride, padding, 1, groups),
                                [x], g)
    assert banded and all(r is not None for r in banded)
    np.testing.assert_allclose(y, y_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_t, rtol=1e-12, atol=1e-12)


def test_im2col_band_is_the_rows_of_the_whole_col():
    from tinygrad_explain import kernels as K
    x = rng(1).standard_normal((2, 3, 9, 8))
    R, s, p = 3 * 3 * 2, (2, 1), (1, 0)
    col = K.im2col.im2col(x, 3, 2, s, p)
    oh, ow = K.im2col.out_size(9, 3, 2, 1), K.im2col.out_size(8, 2, 1, 0)
    for i0, i1 in [(0, 2), (2, 5), (4, 5)]:
        band = K.im2col.im2col(x, 3, 2, s, p, rows=(i0, i1))
        np.testing.assert_array_equal(band, col.reshape(R, 2, oh, ow)[:, :, i0:i1].reshape(R, -1))
    dcol = rng(2).standard_normal(col.shape)
    whole = K.im2col.col2im(dcol, x.shape, 3, 2, s, p)
    parts = np.zeros(x.shape)
    for i0, i1 in [(0, 2), (2, 5)]:
        K.im2col.col2im(np.ascontiguousarray(dcol.reshape(R, 2, oh, ow)[:, :, i0:i1]).reshape(R, -1), x.shape,
                        3, 2, s, p, out=parts, rows=(i0, i1))
    np.testing.assert_allclose(parts, whole, rtol=1e-14, atol=1e-14)


def test_conv2d_refuses_dilation_and_bad_groups():
    x, w = te.Tensor(np.zeros((1, 4, 5, 5))), te.Tensor(np.zeros((4, 1, 3, 3)))
    with pytest.raises(ValueError, match="dilation 2 is not supported"):
        ops.conv2d(x, w, None, 1, 1, 4, dilation=2)
    with pytest.raises(ValueError, match="groups=2 does not fit 4 input channels"):
        ops.conv2d(x, w, None, 1, 1, 2)
    with pytest.raises(ValueError, match="groups must be an integer >= 1"):
        ops.conv2d(x, w, None, 1, 1, 0)
    with pytest.raises(ValueError, match=r"bias shape \(3,\) is not \(4,\)"):
        ops.conv2d(x, w, te.Tensor(np.zeros(3)), 1, 1, 4)
    assert ops.conv2d(x, w, None, 1, 1, 4, dilation=(1, 1)).shape == (1, 4, 5, 5)


# --------------------------------------------------------------------------
# max-pooling: padding and ceil_mode
# --------------------------------------------------------------------------
# (x shape, k, s, p, ceil_mode); the ceil cases include windows hanging off the end
# and one where PyTorch's rule drops the window that would start in the padding
MAXPOOL_CASES = [
    ((2, 3, 9, 8), 3, 2, 1, False),       # ResNet's stem pool
    ((1, 2, 8, 8), 3, 2, 0, True),        # GoogLeNet / SqueezeNet: 8 -> 4 (floor: 3)
    ((1, 2, 7, 10), 2, 2, 0, True),       # odd size, 2x2 windows: the last one holds one column
    ((1, 2, 6, 6), 3, 2, 1, True),        # ceil with padding: 6 -> 4 (floor: 3)
    ((1, 2, 5, 7), 2, 2, 1, True),        # a 4th row window would start in the padding: dropped
    ((2, 2, 11, 9), 3, 3, 1, True),       # stride 3
    ((1, 3, 5, 5), 3, 1, 1, True),        # stride 1: ceil changes nothing
]


@pytest.mark.parametrize("xs,k,s,p,ceil", MAXPOOL_CASES)
def test_max_pool2d_equals_torch(xs, k, s, p, ceil):
    x = distinct(xs, seed=1)
    _same_as_torch(lambda t: ops.max_pool2d(t, k, s, p, ceil), lambda t: F.max_pool2d(t, k, s, p, ceil_mode=ceil), [x])


@pytest.mark.parametrize("xs,k,s,p,ceil", MAXPOOL_CASES)
def test_max_pool2d_ceil_gradcheck(xs, k, s, p, ceil):
    assert te.gradcheck(lambda t: ops.max_pool2d(t, k, s, p, ceil), [distinct(xs, seed=1)])


def test_max_pool2d_padding_never_wins_in_ceil_windows():
    """All-negative input: neither the padding nor the part of a window past the end wins."""
    x = -1.0 - rng(2).random((1, 1, 6, 7))
    y = ops.max_pool2d(te.Tensor(x), 3, 2, 1, ceil_mode=True).numpy()
    assert y.shape == (1, 1, 4, 4) and (y < -1).all()
    np.testing.assert_array_equal(y, F.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True).numpy())


def test_max_pool2d_floor_mode_keeps_the_alexnet_fast_path(monkeypatch):
    """k = 3, p = 0 without ceil_mode still takes the unrolled 3x3 kernel; a ceil window
    that hangs off the end does not (it would read past the plane)."""
    from tinygrad_explain import kernels as K
    M = K.max_pool2d
    taken = []
    real = M._forward_3x3
    monkeypatch.setattr(M, "_forward_3x3", lambda *a: (taken.append(1), real(*a))[1])
    x = distinct((1, 2, 8, 8), seed=3)
    ops.max_pool2d(te.Tensor(x), 3, 2)
    assert taken == [1]
    ops.max_pool2d(te.Tensor(x), 3, 2, 0, ceil_mode=True)       # 8 -> 4 windows, the last one clipped
    assert taken == [1]
    ops.max_pool2d(te.Tensor(distinct((1, 2, 9, 9))), 3, 2, 0, ceil_mode=True)   # 9 -> 4 both ways
    assert taken == [1, 1]


def test_ceil_mode_output_size_rule():
    """Rounded up, but a last window that would start in the right padding is dropped;
    the sizes torch gives."""
    from tinygrad_explain import kernels as K
    for H, k, s, p in [(5, 2, 2, 1), (3, 2, 2, 1), (6, 3, 2, 1), (8, 3, 2, 0), (7, 2, 2, 0), (112, 3, 2, 0)]:
        n = F.max_pool2d(torch.zeros(1, 1, H, H), k, s, p, ceil_mode=True).shape[-1]
        assert K.im2col.out_size(H, k, s, p, ceil_mode=True) == n, (H, k, s, p)
        assert naive._out(H, k, s, p, ceil_mode=True) == n, (H, k, s, p)
    assert K.im2col.out_size(5, 2, 2, 1, ceil_mode=True) == 3 < (5 + 2 - 2 + 1) // 2 + 1


def test_pooling_refuses_bad_windows():
    x = te.Tensor(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="padding 2 must be at most half of kernel_size 3"):
        ops.max_pool2d(x, 3, 2, 2)
    with pytest.raises(ValueError, match="kernel_size 7 .* larger than the 4x4 input"):
        ops.avg_pool2d(x, 7)
    with pytest.raises(ValueError, match="pair of equal integers"):
        ops.max_pool2d(x, (3, 2), 1)
    assert ops.max_pool2d(x, (3, 3), (2, 2), (1, 1)).shape == (1, 1, 2, 2)


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------
AVGPOOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False),    # the default stride = kernel_size
    ((1, 2, 7, 9), 3, 2, 1, False),
    ((1, 2, 7, 9), 3, 2, 1, True),        # ceil with padding: the last windows hang off
    ((1, 2, 8, 8), 3, 2, 0, True),        # ceil without padding (GoogLeNet)
    ((1, 2, 5, 7), 2, 2, 1, True),        # the window that would start in the padding is dropped
    ((2, 2, 5, 6), 3, 1, 1, False),       # GoogLeNet's branch pool (3, 1, 1), as an average
    ((1, 1, 9, 7), 4, 3, 2, True),        # kernel 4, padding 2
]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("xs,k,s,p,ceil", AVGPOOL_CASES)
def test_avg_pool2d_equals_torch(xs, k, s, p, ceil, count_include_pad):
    x = rng(1).standard_normal(xs)
    _same_as_torch(lambda t: ops.avg_pool2d(t, k, s, p, count_include_pad, ceil),
                   lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=count_include_pad), [x])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("xs,k,s,p,ceil", AVGPOOL_CASES[1:5])
def test_avg_pool2d_gradcheck(xs, k, s, p, ceil, count_include_pad):
    assert te.gradcheck(lambda t: ops.avg_pool2d(t, k, s, p, count_include_pad, ceil), [rng(1).standard_normal(xs)])


def test_avg_pool2d_divisors_by_hand():
    """A 3 x 3 input of ones, k = 2, s = 2, p = 1, ceil_mode: two windows per axis (a third
    would start in the padding); the four windows hold 1, 2, 2, 4 pixels of x and are
    2 x 2 in the padded input.  count_include_pad divides by 4, else by the count."""
    x = te.Tensor(np.ones((1, 1, 3, 3)))
    np.testing.assert_array_equal(ops.avg_pool2d(x, 2, 2, 1, True, True).numpy()[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(ops.avg_pool2d(x, 2, 2, 1, False, True).numpy()[0, 0], np.ones((2, 2)))
    # 4 wide, k = 3, s = 2, p = 1 with ceil: windows start at columns -1, 1, 3 (the padded
    # input spans -1..4); the last covers 3, 4 (padding) and 5, past the padded input: divisor 2
    z = ops.avg_pool2d(te.Tensor(np.ones((1, 1, 4, 4))), 3, 2, 1, True, True).numpy()[0, 0]
    np.testing.assert_allclose(z[0], [4 / 9, 6 / 9, 2 / 6])


def test_global_avg_pool2d():
    x = rng(1).standard_normal((2, 5, 7, 3))
    _same_as_torch(ops.global_avg_pool2d, lambda t: F.adaptive_avg_pool2d(t, 1), [x])
    assert te.gradcheck(ops.global_avg_pool2d, [x])
    assert ops.global_avg_pool2d(te.Tensor(x)).shape == (2, 5, 1, 1)


# --------------------------------------------------------------------------
# batch normalisation, and folding it into a convolution
# --------------------------------------------------------------------------
def _bn_stats(C, seed=5):
    r = rng(seed)
    return r.standard_normal(C) * 2, r.random(C) * 3 + 0.1, r.standard_normal(C), r.standard_normal(C)


@pytest.mark.parametrize("xs", [(2, 3, 5, 4), (1, 7, 3, 3), (4, 6)])
def test_batch_norm_equals_torch(xs):
    x = rng(1).standard_normal(xs) * 3 + 1
    mean, var, gamma, beta = _bn_stats(xs[1])
    _same_as_torch(lambda t, w, b: ops.batch_norm(t, mean, var, w, b, 1e-3),
                   lambda t, w, b: F.batch_norm(t, torch.tensor(mean), torch.tensor(var), w, b, False, 0.0, 1e-3),
                   [x, gamma, beta])
    assert te.gradcheck(lambda t, w, b: ops.batch_norm(t, mean, var, w, b, 1e-3), [x, gamma, beta])


def test_batch_norm_without_affine_and_float32():
    x = rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    mean, var, _, _ = _bn_stats(3)
    y = ops.batch_norm(te.Tensor(x), mean, var).numpy()
    assert y.dtype == np.float32
    ref = F.batch_norm(torch.tensor(x), torch.tensor(mean, dtype=torch.float32),
                       torch.tensor(var, dtype=torch.float32), None, None, False, 0.0, 1e-5).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"batch_norm: var has shape \(2,\), expected \(3,\)"):
        ops.batch_norm(te.Tensor(x), mean, var[:2])


@pytest.mark.parametrize("groups,bias", [(1, True), (1, False), (4, True)])
def test_fold_batch_norm_equals_conv_then_batch_norm(groups, bias):
    r = rng(2)
    x = r.standard_normal((2, 4, 7, 6))
    w = r.standard_normal((8, 4 // groups, 3, 3))
    b = r.standard_normal(8) if bias else None
    mean, var, gamma, beta = _bn_stats(8)
    wf, bf = nn.fold_batch_norm(w, b, mean, var, gamma, beta, 1e-5)
    assert wf.dtype == bf.dtype == np.float64 and wf.shape == w.shape and bf.shape == (8,)
    folded = ops.conv2d(te.Tensor(x), te.Tensor(wf), te.Tensor(bf), 1, 1, groups).numpy()
    conv = ops.conv2d(te.Tensor(x), te.Tensor(w), None if b is None else te.Tensor(b), 1, 1, groups)
    ref = F.batch_norm(torch.tensor(conv.numpy()), *(torch.tensor(v) for v in (mean, var, gamma, beta)),
                       False, 0.0, 1e-5).numpy()
    np.testing.assert_allclose(folded, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"fold_batch_norm: var has shape \(7,\), expected \(8,\)"):
        nn.fold_batch_norm(w, b, mean, var[:7], gamma, beta)
    with pytest.raises(ValueError, match="var \\+ eps must be > 0"):
        nn.fold_batch_norm(w, b, mean, -var, gamma, beta)


# --------------------------------------------------------------------------
# concatenation, residual add, broadcast multiply, sigmoid, SiLU
# --------------------------------------------------------------------------
def test_concat_equals_torch():
    xs = [rng(i).standard_normal((2, c, 3, 4)) for i, c in enumerate((3, 1, 4))]
    _same_as_torch(lambda *t: ops.concat(t, 1), lambda *t: torch.cat(t, 1), xs)
    assert te.gradcheck(lambda *t: ops.concat(t, axis=1), xs)
    ys = [rng(i).standard_normal((2, 3, n)) for i, n in enumerate((2, 5))]
    _same_as_torch(lambda *t: ops.concat(t, -1), lambda *t: torch.cat(t, -1), ys)


def test_concat_gradient_only_where_needed_and_errors():
    a, b = te.Tensor(np.ones((1, 2, 2, 2)), requires_grad=True), te.Tensor(np.ones((1, 3, 2, 2)))
    ops.concat([a, b]).backward(np.arange(20.0).reshape(1, 5, 2, 2))
    np.testing.assert_array_equal(a.grad, np.arange(8.0).reshape(1, 2, 2, 2))
    with pytest.raises(ValueError, match="differ outside axis 1"):
        ops.concat([a, te.Tensor(np.ones((1, 3, 2, 3)))])
    with pytest.raises(ValueError, match="dtypes differ"):
        ops.concat([a, te.Tensor(np.ones((1, 3, 2, 2), np.float32))])
    with pytest.raises(ValueError, match="no tensors"):
        ops.concat([])


def test_residual_add_and_broadcast_multiply():
    """x + f(x) (same shapes) and x * s (N, C, 1, 1) (squeeze-and-excitation)."""
    x, f, s = rng(1).standard_normal((2, 3, 4, 5)), rng(2).standard_normal((2, 3, 4, 5)), rng(3).random((2, 3, 1, 1))
    _same_as_torch(ops.add, torch.add, [x, f])
    _same_as_torch(ops.mul, torch.mul, [x, s])
    assert te.gradcheck(lambda a, b: ops.add(a, b) * te.Tensor(s), [x, f])
    assert te.gradcheck(ops.mul, [x, s])


def test_residual_add_feeds_both_branches():
    """y = relu(x) + x: the gradient reaches x along both paths and adds up."""
    x = away_from_zero((1, 2, 3, 3))
    g = rng(4).standard_normal(x.shape)
    _, (dx,) = _te_grads(lambda t: ops.add(te.relu(t), t), [x], g)
    np.testing.assert_allclose(dx, g * (x > 0) + g, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sigmoid", "silu"])
def test_sigmoid_silu_equal_torch(name):
    x = rng(1).standard_normal((2, 3, 4, 5)) * 4
    x.flat[:4] = [-800.0, 800.0, 0.0, -40.0]           # no overflow at the extremes
    _same_as_torch(getattr(ops, name), getattr(torch, name) if name == "sigmoid" else F.silu, [x])
    assert te.gradcheck(getattr(ops, name), [x[:, :, 1:]])


# --------------------------------------------------------------------------
# clip / ReLU6 and the ReLU rules at the lower bound
# --------------------------------------------------------------------------
def _clip_input(lo, hi, seed=0):
    """Values away from both bounds (no kink within the gradcheck step), on both sides of each."""
    x = rng(seed).uniform(lo - 3, hi + 3, (2, 3, 4, 5))
    for bound in (lo, hi):
        near = np.abs(x - bound) < 0.05
        x[near] = bound + np.where(x[near] >= bound, 0.05, -0.05)
    return x


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-1.0, 0.5)])
def test_clip_equals_torch_hardtanh(lo, hi):
    x = _clip_input(lo, hi)
    _same_as_torch(lambda t: ops.clip(t, lo, hi), lambda t: F.hardtanh(t, lo, hi), [x])
    assert te.gradcheck(lambda t: ops.clip(t, lo, hi), [x])


def test_relu6_equals_torch():
    x = _clip_input(0.0, 6.0, seed=3)
    x.flat[:2] = [0.0, 6.0]                              # at a bound exactly: no gradient, as torch's
    _same_as_torch(ops.relu6, F.relu6, [x])


@pytest.mark.parametrize("rule", te.RELU_RULES)
@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-1.0, 0.5)])
def test_clip_rules_are_the_stated_masks(rule, lo, hi):
    """backprop g*(lo<x<hi); deconvnet relu(g)*(x<hi); guided g*(x>lo)*(x<hi)*(g>0): the
    masks written out here, independently of the kernel's encoding of the rules."""
    x = _clip_input(lo, hi, seed=1)
    x.flat[:4] = [lo, hi, lo, hi]                        # exactly at the bounds: blocked
    g = rng(2).standard_normal(x.shape)
    g.flat[2:4] = 0.0
    mask = {"backprop": (lo < x) & (x < hi),
            "deconvnet": (g > 0) & (x < hi),
            "guided": (x > lo) & (x < hi) & (g > 0)}[rule]
    t = te.Tensor(x, requires_grad=True)
    y = ops.clip(t, lo, hi)
    with te.relu_backward(rule):
        y.backward(g)
    np.testing.assert_array_equal(y.numpy(), np.minimum(np.maximum(x, lo), hi))
    np.testing.assert_array_equal(t.grad, g * mask)
    np.testing.assert_array_equal(t.grad, naive.clip_backward(g, x, lo, hi, rule))


def test_clip_nan_and_bounds():
    x = np.array([np.nan, -np.inf, np.inf, 3.0])
    t = te.Tensor(x, requires_grad=True)
    y = ops.relu6(t)
    np.testing.assert_array_equal(y.numpy(), [np.nan, 0.0, 6.0, 3.0])
    y.backward(np.array([1.0, 1.0, 1.0, np.nan]))
    np.testing.assert_array_equal(t.grad, [1.0, 0.0, 0.0, np.nan])     # NaN passes, as in ReLU
    np.testing.assert_array_equal(ops.clip(te.Tensor(x), None, 1.0).numpy(), [np.nan, -np.inf, 1.0, 1.0])
    with pytest.raises(ValueError, match="need lo <= hi"):
        ops.clip(t, 2.0, 1.0)


# --------------------------------------------------------------------------
# nn layers: specs, output shapes, parameters
# --------------------------------------------------------------------------
LAYERS = [
    (nn.Conv2d(6, 6, 3, 2, 1, groups=6), (6, 9, 8)),
    (nn.MaxPool2d(3, 2, 1), (2, 9, 8)),
    (nn.MaxPool2d(3, 2, 0, ceil_mode=True), (2, 8, 10)),
    (nn.AvgPool2d(3, 2, 1, count_include_pad=False, ceil_mode=True), (2, 7, 9)),
    (nn.AvgPool2d(2), (2, 7, 9)),
    (nn.GlobalAvgPool2d(), (3, 5, 4)),
    (nn.BatchNorm2d(3, eps=1e-3), (3, 4, 4)),
    (nn.Clip(-1.0, None), (2, 3, 3)),
    (nn.ReLU6(), (2, 3, 3)),
    (nn.Sigmoid(), (2, 3, 3)),
    (nn.SiLU(), (2, 3, 3)),
]


@pytest.mark.parametrize("layer,in_shape", LAYERS, ids=lambda v: getattr(v, "type", None))
def test_layer_spec_round_trip_and_out_shape(layer, in_shape):
    import json
    spec = json.loads(json.dumps(layer.spec()))
    again = nn.layer_from_spec(spec)
    assert type(again) is type(layer) and again.spec() == layer.spec()
    for p in layer.params:
        getattr(again, p).data = getattr(layer, p).data
    x = te.Tensor(rng(1).standard_normal((2,) + in_shape).astype(np.float32))
    y = layer(x)
    assert y.shape[1:] == layer.out_shape(in_shape)
    np.testing.assert_array_equal(again(x).numpy(), y.numpy())


def test_batchnorm_layer_state_and_errors():
    bn = nn.BatchNorm2d(4)
    assert bn.params == ("weight", "bias", "running_mean", "running_var")
    mean, var, gamma, beta = _bn_stats(4)
    net = te.Network([("bn", bn)], (4, 3, 3)).astype(np.float64)
    net.load_state_dict({"bn.weight": gamma, "bn.bias": beta, "bn.running_mean": mean, "bn.running_var": var})
    x = rng(1).standard_normal((2, 4, 3, 3))
    np.testing.assert_allclose(net(te.Tensor(x)).numpy(), naive.batch_norm_forward(x, mean, var, gamma, beta),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="running_var \\+ eps must be > 0"):
        net.load_state_dict({"bn.weight": gamma, "bn.bias": beta, "bn.running_mean": mean, "bn.running_var": -var})
    with pytest.raises(ValueError, match="batchnorm: eps must be a finite number > 0"):
        nn.BatchNorm2d(4, eps=0)
    with pytest.raises(ValueError, match="clip: need numbers lo <= hi"):
        nn.Clip(1, 0)
    with pytest.raises(ValueError, match="avgpool: padding 2 must be at most half"):
        nn.AvgPool2d(3, 1, 2)


def test_floor_mode_maxpool_spec_is_unchanged():
    """Model files of floor-mode networks (AlexNet) keep their exact architecture JSON."""
    assert nn.MaxPool2d(3, 2).spec() == {"type": "maxpool", "kernel_size": 3, "stride": 2, "padding": 0}
    assert nn.layer_from_spec({"type": "maxpool", "kernel_size": 3, "stride": 2, "padding": 0}).ceil_mode is False
