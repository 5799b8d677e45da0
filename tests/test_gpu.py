"""The GPU backend (CUDA kernels through CuPy) against the CPU engine.

Skipped as a whole unless CuPy imports and sees a CUDA device, so CI (no GPU)
stays green.  What runs on a GPU machine:

* every CUDA kernel against its Numba twin, float32 and float64, on shapes
  that exercise padding, strides, overlapping windows and odd sizes
  (data-movement kernels must agree exactly; arithmetic ones within 1e-4 of
  the largest magnitude, most of them agree to the bit);
* every op's forward and backward, GPU tensors against CPU tensors, and
  ``te.gradcheck`` in float64 on the GPU;
* both AlexNet layouts: scores and input gradients under all three ReLU
  rules equal the CPU engine's (1e-4 of the largest magnitude), a training
  step's weight gradients too;
* device plumbing (``Network.to``, ``load_model(device="gpu")``, refusals of
  inputs on the wrong device) and explainers end to end.
"""
import numpy as np
import pytest

from tinygrad_explain.core import device

cp = pytest.importorskip("cupy")
_OK, _WHY = device.gpu_available()
if not _OK:
    pytest.skip(f"no usable GPU: {_WHY}", allow_module_level=True)

from _reference import away_from_zero, distinct, forward_difference, rng  # noqa: E402

import tinygrad_explain as te  # noqa: E402
from tinygrad_explain import kernels as K  # noqa: E402
from tinygrad_explain.core import ops  # noqa: E402
from tinygrad_explain.kernels import gpu as G  # noqa: E402

TOL = 1e-4
DTYPES = [np.float32, np.float64]


def rel_err(a, ref):
    """max |a - ref| relative to the largest magnitude of ref (both moved to the host)."""
    a = np.asarray(device.move(a, "cpu"), np.float64)
    ref = np.asarray(device.move(ref, "cpu"), np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(np.abs(a - ref).max() / scale) if scale > 0 else float(np.abs(a - ref).max() if a.size else 0.0)


def assert_close(gpu, cpu, tol=TOL, what=""):
    assert device.of(gpu) == "gpu", f"{what}: expected a CuPy array, got {type(gpu)}"
    err = rel_err(gpu, cpu)
    assert err <= tol, f"{what}: GPU vs CPU relative error {err:.3g} > {tol:g}"


def assert_equal(gpu, cpu, what=""):
    assert device.of(gpu) == "gpu", f"{what}: expected a CuPy array, got {type(gpu)}"
    np.testing.assert_array_equal(gpu.get(), cpu, err_msg=what)


def gpu(a):
    return cp.asarray(a)


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------
def test_backend_dispatch():
    assert K.backend(np.zeros(3)) is K
    assert K.backend(cp.zeros(3)) is G
    for ns in ("im2col", "layout", "relu", "clip", "depthwise_conv2d", "batch_norm", "max_pool2d", "lrn", "avg_pool2d",
               "workspace"):
        assert hasattr(G, ns) and hasattr(K, ns), ns
    t = te.Tensor(cp.ones((2, 3), np.float32))
    assert t.device == "gpu" and isinstance(t.numpy(), np.ndarray)
    assert t.to("gpu") is t and t.to("cpu").device == "cpu"


def test_unsupported_dtype_is_a_clear_error():
    with pytest.raises(TypeError, match="float32 or float64"):
        G.relu.forward(cp.ones(4, np.int32))


# --------------------------------------------------------------------------
# kernels: CUDA twin against Numba twin
# --------------------------------------------------------------------------
IM2COL_CASES = [  # N, C, H, W, kh, kw, stride, padding
    (2, 3, 11, 13, 3, 3, (1, 1), (1, 1)),
    (1, 3, 35, 35, 11, 11, (4, 4), (2, 2)),
    (3, 4, 9, 7, 5, 3, (2, 1), (2, 0)),
    (2, 2, 6, 6, 1, 1, (1, 1), (0, 0)),
    (1, 5, 8, 8, 3, 3, (2, 2), (0, 0)),
]


@pytest.mark.parametrize("case", IM2COL_CASES)
@pytest.mark.parametrize("dt", DTYPES)
def test_im2col_col2im(case, dt):
    N, C, H, W, kh, kw, s, p = case
    x = rng(1).standard_normal((N, C, H, W)).astype(dt)
    col = K.im2col.im2col(x, kh, kw, s, p)
    assert_equal(G.im2col.im2col(gpu(x), kh, kw, s, p), col, "im2col")
    out = cp.full(col.shape, np.nan, dt)                       # out= is fully overwritten
    assert_equal(G.im2col.im2col(gpu(x), kh, kw, s, p, out=out), col, "im2col out=")
    dcol = rng(2).standard_normal(col.shape).astype(dt)
    dx = K.im2col.col2im(dcol, x.shape, kh, kw, s, p)
    assert_close(G.im2col.col2im(gpu(dcol), x.shape, kh, kw, s, p), dx, 1e-6, "col2im")
    acc = cp.ones(x.shape, dt)                                 # out= is added into
    assert_close(G.im2col.col2im(gpu(dcol), x.shape, kh, kw, s, p, out=acc), dx + 1, 1e-6, "col2im out=")
    oh = K.im2col.out_size(H, kh, s[0], p[0])
    band = (oh // 3, oh // 3 + max(1, oh // 2))               # a band of output rows
    cb = K.im2col.im2col(x, kh, kw, s, p, rows=band)
    assert_equal(G.im2col.im2col(gpu(x), kh, kw, s, p, rows=band), cb, "im2col rows")
    dcb = rng(3).standard_normal(cb.shape).astype(dt)
    assert_close(G.im2col.col2im(gpu(dcb), x.shape, kh, kw, s, p, rows=band),
                 K.im2col.col2im(dcb, x.shape, kh, kw, s, p, rows=band), 1e-6, "col2im rows")


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dt", DTYPES)
def test_layout(N, bias, dt):
    O, L = 5, 7
    rows = rng(1).standard_normal((O, N * L)).astype(dt)
    b = rng(2).standard_normal(O).astype(dt) if bias else None
    ref = K.layout.rows_to_nchw(rows.copy(), b, np.empty((N, O, L), dt))
    grows = gpu(rows)
    out = grows.reshape(N, O, L) if N == 1 else cp.empty((N, O, L), dt)   # N = 1: in place, as Conv2d does
    assert_equal(G.layout.rows_to_nchw(grows, None if b is None else gpu(b), out), ref, "rows_to_nchw")
    dy = rng(3).standard_normal((N, O, L)).astype(dt)
    assert_equal(G.layout.nchw_to_rows(gpu(dy)), K.layout.nchw_to_rows(dy), "nchw_to_rows")
    assert_close(G.layout.bias_grad(gpu(dy)), K.layout.bias_grad(dy), 1e-6, "bias_grad")


def test_bias_grad_large():
    dy = rng(1).standard_normal((32, 64, 3025)).astype(np.float32)
    assert_close(G.layout.bias_grad(gpu(dy)), dy.astype(np.float64).sum(axis=(0, 2)), 1e-5, "bias_grad")


@pytest.mark.parametrize("rule", te.RELU_RULES)
@pytest.mark.parametrize("dt", DTYPES)
def test_relu_kernels(rule, dt):
    x = rng(1).standard_normal((3, 4, 5, 6)).astype(dt)
    x[0, 0, 0, :3] = 0                                         # exact zeros: [x > 0] is False there
    g = rng(2).standard_normal(x.shape).astype(dt)
    g[0, 1, 0, :3] = 0
    x[1, 0, 0, :4] = [np.nan, np.nan, np.inf, -np.inf]       # NaN stays NaN; infinities are numbers
    g[1, 0, 0, :2] = [1.0, -1.0]
    g[1, 1, 0, :2] = np.nan                                    # a NaN gradient passes as NaN
    x[1, 1, 0, :2] = [-1.0, 1.0]
    y = K.relu.forward(x)
    assert np.isnan(y[1, 0, 0, :2]).all()
    assert_equal(G.relu.forward(gpu(x)), y, "relu forward")
    masks = te.engine.RELU_MASKS[rule]
    assert_equal(G.relu.backward(gpu(y), gpu(g), *masks), K.relu.backward(y, g, *masks), f"relu backward {rule}")


MAXPOOL_CASES = [(3, 2, 0), (2, 2, 0), (3, 2, 1), (3, 1, 1), (5, 3, 2), (1, 1, 0)]


@pytest.mark.parametrize("ksp", MAXPOOL_CASES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_kernels(ksp, dt, ties):
    k, s, p = ksp
    shape = (2, 3, 13, 11)
    x = (rng(1).integers(-3, 3, shape) if ties else distinct(shape)).astype(dt)
    y, sw = K.max_pool2d.forward(x, k, s, p)
    gy, gsw = G.max_pool2d.forward(gpu(x), k, s, p)
    assert_equal(gy, y, "maxpool y")
    assert_equal(gsw, sw, "maxpool switches")                # same first-maximum rule on ties
    dy = rng(2).standard_normal(y.shape).astype(dt)
    assert_close(G.max_pool2d.backward(gpu(dy), gsw, x.shape, (k, s, p)),
                 K.max_pool2d.backward(dy, sw, x.shape), 1e-6, "maxpool backward")


@pytest.mark.parametrize("size,beta", [(5, 0.75), (3, 0.5), (4, 0.75), (1, 1.3)])
@pytest.mark.parametrize("dt", DTYPES)
def test_lrn_kernels(size, beta, dt):
    x = (3 * rng(1).standard_normal((2, 7, 5, 6))).astype(dt)
    alpha, k = 1e-2, 2.0
    y, (scale, spow) = K.lrn.forward(x, size, alpha, beta, k)
    gy, (gscale, gspow) = G.lrn.forward(gpu(x), size, alpha, beta, k)
    assert_close(gy, y, TOL, "lrn y")
    assert_close(gscale, scale, TOL, "lrn scale")
    assert_close(gspow, spow, TOL, "lrn scale^-beta")
    dy = rng(2).standard_normal(x.shape).astype(dt)
    assert_close(G.lrn.backward(gpu(x), gy, (gscale, gspow), gpu(dy), size, alpha, beta),
                 K.lrn.backward(x, y, (scale, spow), dy, size, alpha, beta), TOL, "lrn backward")


@pytest.mark.parametrize("in_hw,out_hw", [((13, 13), (6, 6)), ((7, 5), (3, 2)), ((2, 3), (4, 5)), ((6, 6), (6, 6))])
@pytest.mark.parametrize("dt", DTYPES)
def test_avgpool_kernels(in_hw, out_hw, dt):
    x = rng(1).standard_normal((2, 3) + in_hw).astype(dt)
    y = K.avg_pool2d.adaptive_forward(x, out_hw)
    assert_close(G.avg_pool2d.adaptive_forward(gpu(x), out_hw), y, 1e-6, "avgpool forward")
    dy = rng(2).standard_normal(y.shape).astype(dt)
    assert_close(G.avg_pool2d.adaptive_backward(gpu(dy), x.shape), K.avg_pool2d.adaptive_backward(dy, x.shape), 1e-6,
                 "avgpool backward")


@pytest.mark.parametrize("case", [((2, 3, 9, 11), 3, 2, 0, True), ((1, 2, 8, 8), 3, 2, 0, True),
                                  ((2, 2, 7, 9), 3, 2, 1, True), ((1, 2, 5, 7), 2, 2, 1, True)])
@pytest.mark.parametrize("dt", DTYPES)
def test_maxpool_ceil_mode_kernels(case, dt):
    xs, k, s, p, ceil = case
    x = distinct(xs).astype(dt)
    y, sw = K.max_pool2d.forward(x, k, s, p, ceil_mode=ceil)
    gy, gsw = G.max_pool2d.forward(gpu(x), k, s, p, ceil_mode=ceil)
    assert_equal(gy, y, "maxpool ceil y")
    assert_equal(gsw, sw, "maxpool ceil switches")
    dy = rng(2).standard_normal(y.shape).astype(dt)
    assert_equal(G.max_pool2d.backward(gpu(dy), gsw, x.shape, (k, s, p)), K.max_pool2d.backward(dy, sw, x.shape),
                 "maxpool ceil backward")


@pytest.mark.parametrize("window", [(3, 2, 1, False, True), (3, 2, 1, True, False), (2, 2, 0, True, True),
                                    (3, 1, 1, False, False), (4, 3, 2, True, True)])
@pytest.mark.parametrize("dt", DTYPES)
def test_avgpool_window_kernels(window, dt):
    """Windowed average pooling: the same bits as the CPU (same windows, same order of sums)."""
    x = rng(1).standard_normal((2, 3, 9, 7)).astype(dt)
    y = K.avg_pool2d.forward(x, *window)
    assert_equal(G.avg_pool2d.forward(gpu(x), *window), y, "avgpool window forward")
    dy = rng(2).standard_normal(y.shape).astype(dt)
    assert_equal(G.avg_pool2d.backward(gpu(dy), x.shape, *window), K.avg_pool2d.backward(dy, x.shape, *window),
                 "avgpool window backward")


@pytest.mark.parametrize("rule", te.RELU_RULES)
@pytest.mark.parametrize("dt", DTYPES)
def test_clip_kernels(rule, dt):
    x = rng(1).uniform(-3, 9, (3, 4, 5, 6)).astype(dt)
    x.flat[:5] = [0.0, 6.0, np.nan, np.inf, -np.inf]          # at the bounds, NaN, infinities
    g = rng(2).standard_normal(x.shape).astype(dt)
    g.flat[5:7] = [np.nan, 0.0]
    y = K.clip.forward(x, 0.0, 6.0)
    assert_equal(G.clip.forward(gpu(x), 0.0, 6.0), y, "clip forward")
    masks = te.engine.RELU_MASKS[rule]
    assert_equal(G.clip.backward(gpu(y), gpu(g), 0.0, 6.0, *masks), K.clip.backward(y, g, 0.0, 6.0, *masks),
                 f"clip backward {rule}")


@pytest.mark.parametrize("case", [((2, 6, 9, 8), (6, 1, 3, 3), (1, 1), (1, 1)),
                                  ((1, 4, 11, 10), (8, 1, 3, 3), (2, 2), (1, 1)),
                                  ((2, 3, 7, 9), (3, 1, 5, 3), (2, 1), (2, 0)),
                                  ((1, 3, 6, 5), (6, 1, 3, 3), (1, 1), (1, 1)),
                                  ((1, 2, 4, 35), (2, 1, 3, 3), (1, 1), (1, 1))])
@pytest.mark.parametrize("dt", DTYPES)
def test_depthwise_kernels(case, dt):
    """The CUDA depthwise loops add in the CPU loops' order: the same bits."""
    xs, ws, stride, padding = case
    x, w, b = (rng(i).standard_normal(sh).astype(dt) for i, sh in enumerate((xs, ws, ws[:1]), 1))
    y = K.depthwise_conv2d.forward(x, w, b, stride, padding)
    assert_equal(G.depthwise_conv2d.forward(gpu(x), gpu(w), gpu(b), stride, padding), y, "depthwise forward")
    assert_equal(G.depthwise_conv2d.forward(gpu(x), gpu(w), None, stride, padding),
                 K.depthwise_conv2d.forward(x, w, None, stride, padding), "depthwise forward, no bias")
    g = rng(4).standard_normal(y.shape).astype(dt)
    assert_equal(G.depthwise_conv2d.backward_input(gpu(g), gpu(w), x.shape, stride, padding),
                 K.depthwise_conv2d.backward_input(g, w, x.shape, stride, padding), "depthwise dx")
    assert_equal(G.depthwise_conv2d.backward_weight(gpu(g), gpu(x), w.shape, stride, padding),
                 K.depthwise_conv2d.backward_weight(g, x, w.shape, stride, padding), "depthwise dw")


@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (3, 6)])
@pytest.mark.parametrize("dt", DTYPES)
def test_batchnorm_kernels(shape, dt):
    """Same formula, same order of the float64 sums: the same bits."""
    x = (3 * rng(1).standard_normal(shape) + 1).astype(dt)
    mean, scale, bias, inv = (rng(i).standard_normal(shape[1]).astype(dt) for i in range(2, 6))
    y = K.batch_norm.forward(x, mean, scale, bias)
    assert_equal(G.batch_norm.forward(gpu(x), gpu(mean), gpu(scale), gpu(bias)), y, "batchnorm forward")
    g = rng(6).standard_normal(shape).astype(dt)
    assert_equal(G.batch_norm.backward_input(gpu(g), gpu(scale)), K.batch_norm.backward_input(g, scale), "bn dx")
    for what, a, b in zip(("dweight", "dbias"), G.batch_norm.backward_params(gpu(g), gpu(x), gpu(mean), gpu(inv)),
                          K.batch_norm.backward_params(g, x, mean, inv)):
        assert_equal(a, b, f"batchnorm {what}")


def test_workspace_reuses_memory():
    a = G.workspace.get("test", (4, 5), np.float32)
    b = G.workspace.get("test", (3, 2), np.float64)
    assert a.shape == (4, 5) and b.shape == (3, 2) and b.dtype == np.float64
    assert a.data.ptr == b.data.ptr
    G.workspace.clear()


# --------------------------------------------------------------------------
# ops: GPU tensors against CPU tensors, forward and backward
# --------------------------------------------------------------------------
def both(fn, arrays, seed=9, tol=TOL, what="", const=()):
    """Run ``fn`` on CPU tensors and on GPU tensors (those at positions ``const``
    without requires_grad); backprop the same random upstream gradient; compare."""
    out = {}
    for where in ("cpu", "gpu"):
        ts = [te.Tensor(device.move(a, where), requires_grad=i not in const) for i, a in enumerate(arrays)]
        y = fn(*ts)
        g = rng(seed).standard_normal(y.shape).astype(y.dtype)
        y.backward(device.move(g, where))
        out[where] = (y, [t.grad for t in ts])
    (yc, gc), (yg, gg) = out["cpu"], out["gpu"]
    assert yg.device == "gpu"
    assert_close(yg.data, yc.data, tol, f"{what} forward")
    for i, (a, b) in enumerate(zip(gg, gc)):
        if i in const:
            assert a is None and b is None
        else:
            assert_close(a, b, tol, f"{what} grad of input {i}")


CONV_CASES = [  # x shape, w shape, stride, padding, groups
    ((2, 4, 10, 9), (6, 4, 3, 3), 1, 1, 1),
    ((3, 4, 12, 12), (6, 2, 5, 5), 2, 2, 2),
    ((1, 3, 27, 27), (8, 3, 11, 11), 4, 2, 1),
    ((2, 6, 7, 7), (6, 2, 3, 3), 1, 1, 3),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dt", DTYPES)
def test_conv2d_op(case, dt):
    xs, ws, s, p, g = case
    x, w, b = (rng(i).standard_normal(sh).astype(dt) for i, sh in enumerate((xs, ws, ws[:1]), 1))
    both(lambda x, w, b: te.conv2d(x, w, b, s, p, g), [x, w, b], what="conv2d")
    both(lambda x, w: te.conv2d(x, w, None, s, p, g), [x, w], what="conv2d no bias")
    both(lambda x, w, b: te.conv2d(x, w, b, s, p, g), [x, w, b], what="conv2d frozen weights", const=(1, 2))


@pytest.mark.parametrize("budget", [1, 3000])
def test_conv2d_gpu_batch_chunks(monkeypatch, budget):
    monkeypatch.setattr(ops.Conv2d, "GPU_COL_BUDGET", budget)
    x, w, b = rng(1).standard_normal((9, 4, 10, 10)), rng(2).standard_normal((4, 2, 3, 3)), rng(3).standard_normal(4)
    both(lambda x, w, b: te.conv2d(x, w, b, 1, 1, 2), [x, w, b], what=f"conv2d chunks {budget}")


@pytest.mark.parametrize("dt", DTYPES)
def test_depthwise_conv2d_op(dt):
    x, w, b = (rng(i).standard_normal(sh).astype(dt) for i, sh in enumerate(((2, 6, 9, 8), (6, 1, 3, 3), (6,)), 1))
    both(lambda x, w, b: te.conv2d(x, w, b, 2, 1, 6), [x, w, b], what="depthwise conv2d")
    both(lambda x, w, b: te.conv2d(x, w, b, 1, 1, 6), [x, w, b], what="depthwise conv2d frozen", const=(1, 2))


def test_graph_ops():
    """Pooling with ceil_mode / count_include_pad, global pooling, batch norm, concat,
    ReLU6 under each rule, sigmoid / SiLU: GPU tensors against CPU tensors."""
    x = rng(1).standard_normal((2, 4, 9, 7))
    both(lambda t: ops.max_pool2d(t, 3, 2, 1, ceil_mode=True), [distinct((2, 4, 9, 7))], what="max_pool2d ceil")
    both(lambda t: ops.avg_pool2d(t, 3, 2, 1, False, True), [x], what="avg_pool2d")
    both(ops.global_avg_pool2d, [x], what="global_avg_pool2d")
    mean, var = gpu(rng(2).standard_normal(4)), gpu(rng(3).random(4) + 0.1)
    both(lambda t, w, b: ops.batch_norm(t, mean if t.device == "gpu" else mean.get(),
                                        var if t.device == "gpu" else var.get(), w, b),
         [x, rng(4).standard_normal(4), rng(5).standard_normal(4)], what="batch_norm")
    both(lambda a, b: ops.concat([a, b], 1), [x, x[:, :2]], what="concat")
    both(ops.sigmoid, [x], what="sigmoid")
    both(ops.silu, [x], what="silu")
    for rule in te.RELU_RULES:
        with te.relu_backward(rule):
            both(ops.relu6, [3 * x + 3], what=f"relu6 {rule}")


@pytest.mark.parametrize("dt", DTYPES)
def test_linear_op(dt):
    x, w, b = (rng(i).standard_normal(sh).astype(dt) for i, sh in enumerate(((4, 7), (5, 7), (5,)), 1))
    both(te.linear, [x, w, b], what="linear")


@pytest.mark.parametrize("rule", te.RELU_RULES)
def test_relu_op_rules(rule):
    x = away_from_zero((2, 3, 4, 5)).astype(np.float32)
    res = {}
    for where in ("cpu", "gpu"):
        t = te.Tensor(device.move(x, where), requires_grad=True)
        y = te.relu(t)
        with te.relu_backward(rule):
            y.backward(device.move(rng(2).standard_normal(x.shape).astype(np.float32), where))
        res[where] = t.grad
    assert_equal(res["gpu"], res["cpu"], f"relu {rule}")


@pytest.mark.parametrize("ksp", [(3, 2, 0), (3, 2, 1), (2, 2, 0)])
def test_maxpool_op(ksp):
    both(lambda t: te.max_pool2d(t, *ksp), [distinct((2, 3, 9, 11)).astype(np.float32)], what="max_pool2d")


def test_lrn_op():
    both(lambda t: te.local_response_norm(t, 5, 1e-2, 0.75, 2.0), [3 * rng(1).standard_normal((2, 8, 5, 5))],
         what="lrn")


@pytest.mark.parametrize("out_hw", [(6, 6), (3, 2), (13, 13)])
def test_avgpool_op(out_hw):
    both(lambda t: te.adaptive_avg_pool2d(t, out_hw), [rng(1).standard_normal((2, 3, 13, 13))], what="avgpool")


def test_dropout_same_masks_as_cpu():
    x = away_from_zero((4, 50)).astype(np.float32)

    def f(t):
        te.manual_seed(7)
        return te.dropout(t, 0.3, training=True)
    both(f, [x], what="dropout")
    te.manual_seed(7)
    y = te.dropout(te.Tensor(gpu(x)), 0.3, training=True)
    te.manual_seed(7)
    np.testing.assert_array_equal(y.numpy(), te.dropout(te.Tensor(x), 0.3, training=True).numpy())


def test_log_softmax_and_cross_entropy_ops():
    s = 3 * rng(1).standard_normal((4, 6))
    both(te.log_softmax, [s], what="log_softmax")
    labels = np.array([0, 5, 5, 2])
    both(lambda t: te.cross_entropy(t, labels), [s], what="cross_entropy (host labels)")
    both(lambda t: te.cross_entropy(t, gpu(labels) if t.device == "gpu" else labels), [s],
         what="cross_entropy (device labels)")
    with pytest.raises(ValueError, match="labels"):
        te.cross_entropy(te.Tensor(gpu(s)), np.array([0, 1, 2, 9]))


@pytest.mark.parametrize("idx", [(0, 2), (slice(None), 1), (Ellipsis, slice(None, None, 2)),
                                 np.array([1, 1, 0]), (np.array([0, 1, 1]), np.array([2, 0, 0]))])
def test_index_op(idx):
    both(lambda t: t[idx], [rng(1).standard_normal((3, 4))], what=f"index {idx}")


def test_index_op_boolean_mask():
    x = rng(1).standard_normal((3, 4))
    m = x > 0
    both(lambda t: t[m if t.device == "cpu" else gpu(m)], [x], what="boolean index")


def test_elementwise_and_reductions():
    a, b = away_from_zero((2, 3, 4), 1), away_from_zero((3, 1), 2, lo=0.5)
    both(lambda x, y: (x + y) * (x - y) / y, [a, b], what="arithmetic with broadcasting")
    both(lambda x: (x * 2.5 - 1.5) / 4.0 + 3.0, [a], what="scalar constants")
    both(lambda x: (x.abs() ** 1.5 + x ** 2.0 + x ** -1.0).sum(axis=(1, 2)), [a], what="pow/abs/sum")
    both(lambda x: x.mean(axis=1, keepdims=True) + x.sum(), [a], what="mean/sum")
    x4 = rng(3).standard_normal((2, 3, 5, 6))
    both(lambda x: forward_difference(x, -1) ** 2.0, [x4], what="forward difference W")
    both(lambda x: forward_difference(x, 2), [x4], what="forward difference H")
    both(lambda x: te.flatten(x).reshape(6, -1), [x4], what="reshape")


def test_regularizer_ops():
    from tinygrad_explain.explain import regularizers as R
    x = rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    both(lambda t: R.l2(t), [x], what="l2")
    both(lambda t: R.alpha_norm(t, 6.0, 2.0), [x], what="alpha_norm")
    both(lambda t: R.total_variation(t, 2.0, 0.5), [x], what="tv beta=2")
    both(lambda t: R.total_variation(t, 1.0, 0.5), [x], what="tv beta=1")


def test_mixed_devices_are_refused():
    a, b = te.Tensor(np.ones(3, np.float32)), te.Tensor(cp.ones(3, np.float32))
    with pytest.raises(RuntimeError, match="different devices"):
        a + b
    with pytest.raises(RuntimeError, match="different devices"):
        b * np.ones(3, np.float32)


# --------------------------------------------------------------------------
# gradcheck in float64 on the GPU
# --------------------------------------------------------------------------
def test_gradcheck_on_gpu_layers():
    x, w, b = rng(1).standard_normal((2, 4, 6, 5)), rng(2).standard_normal((4, 2, 3, 3)), rng(3).standard_normal(4)
    assert te.gradcheck(lambda x, w, b: te.conv2d(x, w, b, 2, 1, 2), [gpu(x), gpu(w), gpu(b)], max_checks=40)
    assert te.gradcheck(te.relu, [gpu(away_from_zero((2, 3, 4)))])
    assert te.gradcheck(lambda t: te.max_pool2d(t, 3, 2, 1), [gpu(distinct((2, 2, 7, 6)))], max_checks=40)
    assert te.gradcheck(lambda t: te.local_response_norm(t, 3, 1e-1, 0.75, 1.0),
                        [gpu(rng(4).standard_normal((2, 5, 3, 3)))], max_checks=40)
    assert te.gradcheck(lambda t: te.adaptive_avg_pool2d(t, (3, 2)), [gpu(rng(5).standard_normal((2, 2, 7, 5)))],
                        max_checks=40)
    assert te.gradcheck(te.linear, [gpu(rng(6).standard_normal((3, 4))), gpu(rng(7).standard_normal((2, 4))),
                                    gpu(rng(8).standard_normal(2))])


def test_gradcheck_on_gpu_losses_and_regularizers():
    from tinygrad_explain.explain import regularizers as R
    s = gpu(2 * rng(1).standard_normal((4, 5)))
    assert te.gradcheck(te.log_softmax, [s])
    assert te.gradcheck(lambda t: te.cross_entropy(t, np.array([0, 3, 3, 1])), [s])
    for f in (te.exp, te.softmax, te.logsumexp, lambda t: te.amax(t, axis=1), lambda t: t.max(axis=(0, 1))):
        assert te.gradcheck(f, [s])
    assert te.gradcheck(te.log, [gpu(rng(4).uniform(0.2, 3.0, (4, 5)))])
    t = te.Tensor(gpu(np.array([[1.0, 3.0, 3.0]])), requires_grad=True)
    t.max(axis=1).backward(gpu(np.array([1.0])))                 # ties split the gradient, on the GPU too
    np.testing.assert_array_equal(t.grad.get(), [[0.0, 0.5, 0.5]])
    x = gpu(rng(2).standard_normal((2, 2, 5, 4)))
    assert te.gradcheck(lambda t: R.alpha_norm(t, 6.0, 2.0), [x], max_checks=40)
    assert te.gradcheck(lambda t: R.total_variation(t, 1.0, 0.5), [x], max_checks=40)

    def drop(t):
        te.manual_seed(123)
        return te.dropout(t, 0.4, training=True)
    assert te.gradcheck(drop, [gpu(rng(3).standard_normal((2, 3, 4)))])


# --------------------------------------------------------------------------
# whole networks
# --------------------------------------------------------------------------
def relu_sign_flips(m_cpu, m_gpu, x):
    flips, names = {}, m_cpu.layer_names
    for i, name in enumerate(names):
        if name.startswith("relu"):
            with te.no_grad():
                c = m_cpu(x, until=names[i - 1]).numpy()
                g = m_gpu(gpu(x), until=names[i - 1]).numpy()
            n = int((np.sign(c) != np.sign(g)).sum())
            if n:
                flips[name] = n
    return flips


@pytest.fixture(scope="module", params=["torchvision", "caffe"])
def alexnets(request):
    te.manual_seed(0)
    m_cpu = te.models.alexnet(request.param)
    m_gpu = te.models.alexnet(request.param)
    m_gpu.load_state_dict(m_cpu.state_dict())
    m_gpu.to("gpu")
    H = m_cpu.input_shape[1]
    x = rng(0).standard_normal((2, 3, H, H)).astype(np.float32)
    return request.param, m_cpu, m_gpu, x


def test_alexnet_scores_and_input_gradients(alexnets):
    variant, m_cpu, m_gpu, x = alexnets
    assert all(p.device == "gpu" for p in m_gpu.parameters()) and m_gpu.device == "gpu"
    onehot = np.zeros((2, 1000), np.float32)
    onehot[[0, 1], [5, 17]] = 1
    xc, xg = te.Tensor(x.copy(), requires_grad=True), te.Tensor(gpu(x), requires_grad=True)
    sc, sg = m_cpu(xc), m_gpu(xg)
    assert sg.device == "gpu"
    assert_close(sg.data, sc.data, TOL, f"{variant} scores")
    for rule in te.RELU_RULES:
        xc.grad = xg.grad = None
        with te.relu_backward(rule):
            sc.backward(onehot, retain_graph=True)
            sg.backward(gpu(onehot), retain_graph=True)
        err = rel_err(xg.grad, xc.grad)
        assert err <= TOL, (f"{variant} {rule} input gradient: relative error {err:.3g} > {TOL} "
                            f"(relu sign flips CPU vs GPU: {relu_sign_flips(m_cpu, m_gpu, x) or 'none'})")
    assert all(p.grad is None for p in m_gpu.parameters())       # frozen weights: no weight gradient


def test_alexnet_training_step(alexnets):
    variant, m_cpu, m_gpu, x = alexnets
    labels = np.array([3, 999])
    grads = {}
    try:
        for name, m, xx in (("cpu", m_cpu, x), ("gpu", m_gpu, gpu(x))):
            m.requires_grad_(True).train()
            te.manual_seed(11)                                      # same dropout masks
            loss = te.cross_entropy(m(xx), labels)
            loss.backward()
            grads[name] = (float(loss.numpy()), [p.grad for p in m.parameters()])
    finally:
        for m in (m_cpu, m_gpu):
            m.requires_grad_(False).eval()
    assert abs(grads["gpu"][0] - grads["cpu"][0]) <= TOL * abs(grads["cpu"][0])
    for i, (a, b) in enumerate(zip(grads["gpu"][1], grads["cpu"][1])):
        assert_close(a, b, 1e-3, f"{variant} weight gradient {i}")


# --------------------------------------------------------------------------
# device plumbing and explainers
# --------------------------------------------------------------------------
def _tiny():
    from tinygrad_explain.core import nn
    te.manual_seed(3)
    return te.Network([("conv1", nn.Conv2d(3, 8, 3, 1, 1)), ("relu1", nn.ReLU()),
                       ("norm1", nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)), ("pool1", nn.MaxPool2d(3, 2)),
                       ("flatten", nn.Flatten()), ("fc1", nn.Linear(8 * 7 * 7, 4))], (3, 16, 16),
                      class_names=["a", "b", "c", "d"])


def test_network_to_and_input_device_checks():
    m = _tiny()
    x = rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    ref = m(x).numpy()
    assert m.to("gpu") is m and m.device == "gpu"
    assert all(p.device == "gpu" for p in m.parameters())
    assert_close(m(gpu(x)).data, ref, TOL, "tiny network")
    with pytest.raises(TypeError, match="NumPy.*GPU"):
        m(x)
    m.to("cpu")
    assert all(p.device == "cpu" for p in m.parameters())
    with pytest.raises(TypeError, match="CuPy.*CPU"):
        m(gpu(x))
    np.testing.assert_array_equal(m(x).numpy(), ref)
    sd = m.to("gpu").state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    m.load_state_dict(sd)                                          # stays on the GPU
    assert all(p.device == "gpu" for p in m.parameters())


def test_load_model_on_gpu(tmp_path):
    m = _tiny()
    path = te.save_model(m, tmp_path / "tiny.h5")
    g = te.load_model(path, device="gpu")
    assert g.device == "gpu" and all(p.device == "gpu" for p in g.parameters())
    x = rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert_close(g(gpu(x)).data, m(x).numpy(), TOL, "loaded model")


def test_explainers_end_to_end_on_gpu():
    X = te.explain
    m_cpu = _tiny()
    m_gpu = _tiny().to("gpu")
    x = rng(4).standard_normal((2, 3, 16, 16)).astype(np.float32)
    for rule in te.RELU_RULES:
        gc, gg = X.gradient(m_cpu, x, [1, 2], rule=rule), X.gradient(m_gpu, x, [1, 2], rule=rule)
        assert isinstance(gg, np.ndarray)
        assert rel_err(gg, gc) <= TOL, rule
    sal = X.saliency(m_gpu, gpu(x), "c")                           # device input accepted too
    assert isinstance(sal, np.ndarray) and sal.shape == (2, 16, 16)
    sc, pc = X.predict(m_cpu, x)
    sg, pg = X.predict(m_gpu, x)
    assert rel_err(sg, sc) <= TOL
    from tinygrad_explain.explain.optimize import optimize

    def objective(t):
        return m_gpu(t)[:, 1]
    res = optimize(objective, np.zeros((2, 3, 16, 16), np.float32), steps=20, lr=0.5, l2=1e-3, alpha_norm=1e-4,
                   tv=1e-4, jitter=1, progress=False, device="gpu")
    assert isinstance(res.x, np.ndarray) and np.isfinite(res.x).all()
    assert res.history["objective"].shape == (20, 2)


def test_optimising_explainers_on_gpu_match_cpu():
    X = te.explain
    m_cpu, m_gpu = _tiny(), _tiny().to("gpu")
    vc = X.class_model(m_cpu, "b", steps=10, progress=False)
    vg = X.class_model(m_gpu, "b", steps=10, progress=False)
    assert isinstance(vg.image, np.ndarray)
    assert rel_err(vg.image, vc.image) <= 1e-3
    mc = X.maximize(m_cpu, "conv1", [0, 3], steps=5, progress=False)
    mg = X.maximize(m_gpu, "conv1", [0, 3], steps=5, progress=False)
    assert rel_err(mg.image, mc.image) <= 1e-3 and rel_err(mg.final, mc.final) <= 1e-3
    x = rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ic = X.invert(m_cpu, x, layer="fc1", inits=2, steps=5, progress=False)
    ig = X.invert(m_gpu, x, layer="fc1", inits=2, steps=5, progress=False)
    assert isinstance(ig.images, np.ndarray)
    assert rel_err(ig.images, ic.images) <= 1e-3 and rel_err(ig.errors, ic.errors) <= 1e-3
    layers = [l for l in m_cpu.layer_names if l.startswith(("conv", "fc"))][:2]
    lc = X.invert_layers(m_cpu, x, layers, steps=5, progress=False)
    lg = X.invert_layers(m_gpu, x, layers, steps=5, progress=False)
    assert rel_err(lg.images, lc.images) <= 1e-3 and rel_err(lg.errors, lc.errors) <= 1e-3
    # every prior of the shared optimiser on the device: octaves, scaling/rotation, blur schedule, clipping
    kw = dict(steps=6, recipe="simonyan2014", octaves=(2, 1), scales=(0.9, 1.1), angles=(-5, 5), jitter=1,
              blur_every=2, blur_sigma=(0.8, 0.3), clip=True, optimizer="adam", lr=0.05)
    oc, og = X.class_model(m_cpu, "b", progress=False, **kw), X.class_model(m_gpu, "b", progress=False, **kw)
    assert rel_err(og.image, oc.image) <= 1e-3
