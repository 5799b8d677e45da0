"""The GPU kernels: hand-written CUDA, compiled at run time through CuPy.

Each ``kernels/<stem>.cu`` is the twin of ``kernels/<stem>.py``: the same array
layouts, the same formula in its header comment, and (where the CPU kernel
fixes an order of floating-point additions) the same order, so that most GPU
results equal the CPU bits.  This module mirrors the CPU package: the
namespaces ``im2col``, ``layout``, ``relu``, ``clip``, ``depthwise_conv2d``, ``batch_norm``, ``max_pool2d``,
``lrn``, ``avg_pool2d`` and ``workspace`` offer wrappers with the CPU wrappers' signatures and return
conventions, taking and returning CuPy arrays.  ``kernels.backend(array)``
picks this module for a CuPy array, the CPU package for a NumPy array.

Compilation.  A ``.cu`` file is compiled by NVRTC (``cupy.RawModule``) the
first time one of its kernels runs -- never at import, and only once a CuPy
array exists -- for T = float and T = double (C++ templates instantiated
through ``name_expressions``).  CuPy caches the binary on disk
(``~/.cupy/kernel_cache``), so a second process does not recompile.
``--fmad=false``: no fused multiply-add contraction, as in the CPU kernels
(exact IEEE operations, reproducible results).

Launches.  Every kernel is a grid-stride loop over its output elements (one
thread per element, ``THREADS`` per block), on CuPy's current stream, so a
launch returns at once and kernels, cuBLAS calls and CuPy element-wise ops run
in issue order.  Matrix products are not here: ``ops`` calls ``cupy.matmul``
(cuBLAS).
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import avg_pool2d as _cpu_avg_pool2d
from . import im2col as _cpu_im2col

SOURCE_DIR = Path(__file__).resolve().parent
# source file -> kernel templates it defines (each instantiated for float and double)
KERNELS = {
    "im2col.cu": ("im2col", "col2im"),
    "layout.cu": ("rows_to_nchw", "nchw_to_rows", "bias_grad"),
    "relu.cu": ("relu_forward", "relu_backward"),
    "clip.cu": ("clip_forward", "clip_backward"),
    "batch_norm.cu": ("batch_norm_forward", "batch_norm_backward_input", "batch_norm_backward_params"),
    "depthwise_conv2d.cu": ("depthwise_conv2d_forward", "depthwise_conv2d_backward_input",
                            "depthwise_conv2d_backward_weight"),
    "max_pool2d.cu": ("max_pool2d_forward", "max_pool2d_backward"),
    "lrn.cu": ("lrn_forward", "lrn_backward"),
    "avg_pool2d.cu": ("avg_pool2d_forward", "avg_pool2d_backward"),
}
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("--std=c++17", "--fmad=false")
THREADS = 256
MAX_BLOCKS = 1 << 20        # grid-stride loops cover anything larger
REDUCE_THREADS = 256        # bias_grad: one block per channel (power of two <= 1024)


def name_expressions(fname):
    """The template instantiations compiled from ``fname``, e.g. ``im2col<float>``."""
    return [f"{k}<{t}>" for k in KERNELS[fname] for t in CTYPES.values()]


@functools.lru_cache(maxsize=None)
def _module(fname):
    import cupy
    code = (SOURCE_DIR / fname).read_text()
    return cupy.RawModule(code=code, options=OPTIONS, name_expressions=name_expressions(fname))


@functools.lru_cache(maxsize=None)
def _function(fname, name, ctype):
    return _module(fname).get_function(f"{name}<{ctype}>")


def _ctype(dtype):
    try:
        return CTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"the GPU kernels take float32 or float64 arrays, got {np.dtype(dtype)}") from None


def _launch(fname, name, dtype, total, args, threads=THREADS, blocks=None):
    """Run kernel ``name<T>`` of ``fname`` (T from ``dtype``) over ``total`` elements."""
    fn = _function(fname, name, _ctype(dtype))
    if blocks is None:
        if total <= 0:
            return
        blocks = min(-(-int(total) // threads), MAX_BLOCKS)
    fn((int(blocks),), (int(threads),), args)


def _i(v):
    return np.int32(v)


def _ll(v):
    return np.int64(v)


def _f(v):
    return np.float64(v)


def _contig(a):
    import cupy
    return cupy.ascontiguousarray(a)


def _check_out(out, shape, dtype, what):
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"{what}: out must be a C-contiguous {np.dtype(dtype)} array of shape {tuple(shape)}, "
                         f"got {out.dtype} {tuple(out.shape)} (contiguous: {out.flags.c_contiguous})")


# --------------------------------------------------------------------------
# im2col / col2im (twin of kernels/im2col.py)
# --------------------------------------------------------------------------
def _rows_of(col, N, oh, ow, rows):
    """The band rows = (i0, i1) of a whole-image col (R, N*OH*OW), as a C-contiguous array."""
    i0, i1 = rows
    return _contig(col.reshape(col.shape[0], N, oh, ow)[:, :, i0:i1]).reshape(col.shape[0], -1)


def _im2col(x, kh, kw, stride, padding, out=None, rows=None):
    """x (N, C, H, W) -> col (C*kh*kw, N*OH*OW).  ``rows`` = (i0, i1): only that band of
    output rows (the CPU's memory bound; on the GPU, where ops take whole images, it is
    cut from the whole col)."""
    import cupy
    if rows is not None:
        N, oh = x.shape[0], _cpu_im2col.out_size(x.shape[2], kh, stride[0], padding[0])
        band = _rows_of(_im2col(x, kh, kw, stride, padding), N, oh,
                        _cpu_im2col.out_size(x.shape[3], kw, stride[1], padding[1]), rows)
        if out is None:
            return band
        _check_out(out, band.shape, x.dtype, "im2col")
        out[...] = band
        return out
    N, C, H, W = x.shape
    oh, ow = _cpu_im2col.out_size(H, kh, stride[0], padding[0]), _cpu_im2col.out_size(W, kw, stride[1], padding[1])
    shape = (C * kh * kw, N * oh * ow)
    if out is None:
        out = cupy.empty(shape, dtype=x.dtype)
    _check_out(out, shape, x.dtype, "im2col")
    _launch("im2col.cu", "im2col", x.dtype, out.size,
            (_contig(x), _i(N), _i(C), _i(H), _i(W), _i(kh), _i(kw), _i(stride[0]), _i(stride[1]),
             _i(padding[0]), _i(padding[1]), _i(oh), _i(ow), out))
    return out


def _col2im(col, x_shape, kh, kw, stride, padding, out=None, rows=None):
    """col (C*kh*kw, N*OH*OW) -> dx (N, C, H, W), summing overlapping windows.
    ``out``, if given, must be zero-filled; the sums are added into it.  ``rows`` = (i0, i1):
    col holds only that band of output rows (placed into a zero whole-image col here)."""
    import cupy
    if rows is not None:
        N, H, W = x_shape[0], x_shape[2], x_shape[3]
        oh = _cpu_im2col.out_size(H, kh, stride[0], padding[0])
        ow = _cpu_im2col.out_size(W, kw, stride[1], padding[1])
        full = cupy.zeros((col.shape[0], N, oh, ow), dtype=col.dtype)
        full[:, :, rows[0]:rows[1]] = col.reshape(col.shape[0], N, rows[1] - rows[0], ow)
        return _col2im(full.reshape(col.shape[0], -1), x_shape, kh, kw, stride, padding, out=out)
    N, C, H, W = x_shape
    oh, ow = _cpu_im2col.out_size(H, kh, stride[0], padding[0]), _cpu_im2col.out_size(W, kw, stride[1], padding[1])
    dx = cupy.zeros(x_shape, dtype=col.dtype) if out is None else out
    _check_out(dx, x_shape, col.dtype, "col2im")
    _launch("im2col.cu", "col2im", col.dtype, dx.size,
            (_contig(col), _i(N), _i(C), _i(H), _i(W), _i(kh), _i(kw), _i(stride[0]), _i(stride[1]),
             _i(padding[0]), _i(padding[1]), _i(oh), _i(ow), dx))
    return dx


# --------------------------------------------------------------------------
# layout (twin of kernels/layout.py)
# --------------------------------------------------------------------------
def _rows_to_nchw(rows, bias, out):
    """rows (O, N*L) + bias (O,) -> out (N, O, L); ``out`` may be ``rows`` itself when N = 1."""
    N, O, L = out.shape
    _check_out(out, (N, O, L), rows.dtype, "rows_to_nchw")
    rows = _contig(rows)
    b = _contig(bias.astype(rows.dtype, copy=False)) if bias is not None else rows
    _launch("layout.cu", "rows_to_nchw", rows.dtype, out.size,
            (rows, b, _i(bias is not None), _i(N), _i(O), _ll(L), out))
    return out


def _nchw_to_rows(dy, out=None):
    """dy (N, O, L) -> rows (O, N*L) (a view when N = 1)."""
    import cupy
    N, O, L = dy.shape
    if N == 1:
        return dy.reshape(O, L)
    if out is None:
        out = cupy.empty((O, N * L), dtype=dy.dtype)
    _check_out(out, (O, N * L), dy.dtype, "nchw_to_rows")
    _launch("layout.cu", "nchw_to_rows", dy.dtype, out.size, (_contig(dy), _i(N), _i(O), _ll(L), out))
    return out


def _bias_grad(dy):
    """dy (N, O, L) -> db (O,) = sum over n and l."""
    import cupy
    N, O, L = dy.shape
    db = cupy.empty(O, dtype=dy.dtype)
    if O:
        _launch("layout.cu", "bias_grad", dy.dtype, O, (_contig(dy), _i(N), _i(O), _ll(L), db),
                threads=REDUCE_THREADS, blocks=O)
    return db


# --------------------------------------------------------------------------
# relu (twin of kernels/relu.py)
# --------------------------------------------------------------------------
def _relu_forward(x):
    import cupy
    x = _contig(x)
    y = cupy.empty_like(x)
    _launch("relu.cu", "relu_forward", x.dtype, x.size, (x, _ll(x.size), y))
    return y


def _relu_backward(y, g, mask_x, mask_g):
    import cupy
    g = _contig(g)
    dx = cupy.empty_like(g)
    _launch("relu.cu", "relu_backward", g.dtype, g.size,
            (_contig(y), g, _ll(g.size), _i(bool(mask_x)), _i(bool(mask_g)), dx))
    return dx


# --------------------------------------------------------------------------
# clip (twin of kernels/clip.py)
# --------------------------------------------------------------------------
def _clip_forward(x, lo, hi):
    import cupy
    x = _contig(x)
    y = cupy.empty_like(x)
    t = x.dtype.type
    _launch("clip.cu", "clip_forward", x.dtype, x.size, (x, _ll(x.size), t(lo), t(hi), y))
    return y


def _clip_backward(y, g, lo, hi, mask_x, mask_g):
    import cupy
    g = _contig(g)
    dx = cupy.empty_like(g)
    t = g.dtype.type
    _launch("clip.cu", "clip_backward", g.dtype, g.size,
            (_contig(y), g, _ll(g.size), t(lo), t(hi), _i(bool(mask_x)), _i(bool(mask_g)), dx))
    return dx


# --------------------------------------------------------------------------
# depthwise convolution (twin of kernels/depthwise_conv2d.py)
# --------------------------------------------------------------------------
def _depthwise_conv2d_args(x_shape, w_shape, stride, padding):
    N, C, H, W = x_shape
    O, _, kh, kw = w_shape
    if w_shape[1] != 1 or O % C:
        raise ValueError(f"depthwise convolution: weight {tuple(w_shape)} is not (m*C, 1, kh, kw) for C = {C}")
    oh = _cpu_im2col.out_size(H, kh, stride[0], padding[0])
    ow = _cpu_im2col.out_size(W, kw, stride[1], padding[1])
    return (N, C, H, W, O, kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow)


def _depthwise_conv2d_forward(x, w, b, stride, padding):
    import cupy
    dims = _depthwise_conv2d_args(x.shape, w.shape, stride, padding)
    y = cupy.empty((dims[0], dims[4], dims[-2], dims[-1]), dtype=x.dtype)
    b = cupy.zeros(dims[4], x.dtype) if b is None else _contig(b.astype(x.dtype, copy=False))
    _launch("depthwise_conv2d.cu", "depthwise_conv2d_forward", x.dtype, y.size,
            (_contig(x), _contig(w.astype(x.dtype, copy=False)), b, *map(_i, dims), y))
    return y


def _depthwise_conv2d_backward_input(g, w, x_shape, stride, padding):
    import cupy
    dims = _depthwise_conv2d_args(x_shape, w.shape, stride, padding)
    dx = cupy.empty(x_shape, dtype=g.dtype)
    _launch("depthwise_conv2d.cu", "depthwise_conv2d_backward_input", g.dtype, dx.size,
            (_contig(g), _contig(w.astype(g.dtype, copy=False)), *map(_i, dims), dx))
    return dx


def _depthwise_conv2d_backward_weight(g, x, w_shape, stride, padding):
    import cupy
    dims = _depthwise_conv2d_args(x.shape, w_shape, stride, padding)
    dw = cupy.empty(w_shape, dtype=g.dtype)
    _launch("depthwise_conv2d.cu", "depthwise_conv2d_backward_weight", g.dtype, dw.size,
            (_contig(g), _contig(x.astype(g.dtype, copy=False)), *map(_i, dims), dw))
    return dw


# --------------------------------------------------------------------------
# batch normalisation (twin of kernels/batch_norm.py)
# --------------------------------------------------------------------------
def _bn_dims(a):
    return _i(a.shape[0]), _i(a.shape[1]), _ll(int(np.prod(a.shape[2:], dtype=np.int64)))


def _batch_norm_forward(x, mean, scale, bias):
    import cupy
    x = _contig(x)
    y = cupy.empty_like(x)
    _launch("batch_norm.cu", "batch_norm_forward", x.dtype, x.size,
            (x, _contig(mean), _contig(scale), _contig(bias), *_bn_dims(x), y))
    return y


def _batch_norm_backward_input(g, scale):
    import cupy
    g = _contig(g)
    dx = cupy.empty_like(g)
    _launch("batch_norm.cu", "batch_norm_backward_input", g.dtype, g.size, (g, _contig(scale), *_bn_dims(g), dx))
    return dx


def _batch_norm_backward_params(g, x, mean, inv):
    import cupy
    C = g.shape[1]
    dw, db = cupy.empty(C, g.dtype), cupy.empty(C, g.dtype)
    _launch("batch_norm.cu", "batch_norm_backward_params", g.dtype, C,
            (_contig(g), _contig(x), _contig(mean), _contig(inv), *_bn_dims(g), dw, db))
    return dw, db


# --------------------------------------------------------------------------
# max_pool2d (twin of kernels/max_pool2d.py)
# --------------------------------------------------------------------------
def _max_pool2d_forward(x, k, s, p, ceil_mode=False):
    import cupy
    N, C, H, W = x.shape
    oh, ow = _cpu_im2col.out_size(H, k, s, p, ceil_mode), _cpu_im2col.out_size(W, k, s, p, ceil_mode)
    y = cupy.empty((N, C, oh, ow), dtype=x.dtype)
    switch = cupy.empty((N, C, oh, ow), dtype=np.int32)
    _launch("max_pool2d.cu", "max_pool2d_forward", x.dtype, y.size,
            (_contig(x), _i(N), _i(C), _i(H), _i(W), _i(k), _i(s), _i(p), _i(oh), _i(ow), y, switch))
    return y, switch


def _max_pool2d_backward(g, switch, x_shape, window=None):
    """``window`` = (k, s, p) is required here: each thread gathers for one input
    pixel from the windows that contain it (the CPU scatter needs only the switches)."""
    import cupy
    if window is None:
        raise ValueError("the GPU max-pool backward needs window=(kernel_size, stride, padding)")
    k, s, p = window
    N, C, H, W = x_shape
    oh, ow = g.shape[2], g.shape[3]
    dx = cupy.empty(x_shape, dtype=g.dtype)
    _launch("max_pool2d.cu", "max_pool2d_backward", g.dtype, dx.size,
            (_contig(g), _contig(switch), _i(N), _i(C), _i(H), _i(W), _i(k), _i(s), _i(p), _i(oh), _i(ow), dx))
    return dx


# --------------------------------------------------------------------------
# lrn (twin of kernels/lrn.py)
# --------------------------------------------------------------------------
def _lrn_forward(x, size, alpha, beta, k):
    """x (N, C, H, W) -> y, and the saved (scale, scale^-beta) for backward."""
    import cupy
    N, C = x.shape[:2]
    x3 = _contig(x).reshape(N, C, -1)
    L = x3.shape[2]
    y, scale, spow = cupy.empty_like(x3), cupy.empty_like(x3), cupy.empty_like(x3)
    _launch("lrn.cu", "lrn_forward", x.dtype, x3.size,
            (x3, _i(N), _i(C), _ll(L), _i(size), _f(alpha), _f(beta), _f(k), y, scale, spow))
    return y.reshape(x.shape), (scale, spow)


def _lrn_backward(x, y, saved, g, size, alpha, beta):
    import cupy
    scale, spow = saved
    N, C, L = scale.shape
    g3 = _contig(g).reshape(scale.shape).astype(scale.dtype, copy=False)
    dx = cupy.empty(scale.shape, dtype=scale.dtype)
    _launch("lrn.cu", "lrn_backward", scale.dtype, dx.size,
            (_contig(x).reshape(scale.shape), _contig(y).reshape(scale.shape), scale, spow, g3,
             _i(N), _i(C), _ll(L), _i(size), _f(alpha), _f(beta), dx))
    return dx.reshape(x.shape)


# --------------------------------------------------------------------------
# average pooling, adaptive and windowed (twin of kernels/avg_pool2d.py; the windows
# are computed there, on the host, and copied to the GPU: a few int32s per axis)
# --------------------------------------------------------------------------
def _window_args(rows, cols):
    import cupy
    return tuple(cupy.asarray(a.astype(np.int32)) for a in (*rows, *cols))


def _avg_pool2d_run(x, rows, cols):
    import cupy
    N, C, H, W = x.shape
    OH, OW = len(rows[0]), len(cols[0])
    y = cupy.empty((N, C, OH, OW), dtype=x.dtype)
    _launch("avg_pool2d.cu", "avg_pool2d_forward", x.dtype, y.size,
            (_contig(x), _i(N), _i(C), _i(H), _i(W), _i(OH), _i(OW), *_window_args(rows, cols), y))
    return y


def _avg_pool2d_spread(dy, x_shape, rows, cols):
    import cupy
    N, C, H, W = x_shape
    OH, OW = dy.shape[2], dy.shape[3]
    dx = cupy.empty(x_shape, dtype=dy.dtype)
    _launch("avg_pool2d.cu", "avg_pool2d_backward", dy.dtype, dx.size,
            (_contig(dy), _i(N), _i(C), _i(H), _i(W), _i(OH), _i(OW), *_window_args(rows, cols), dx))
    return dx


def _avg_pool2d_adaptive_forward(x, out_hw):
    OH, OW = (int(v) for v in out_hw)
    return _avg_pool2d_run(x, _cpu_avg_pool2d.adaptive_windows(x.shape[2], OH),
                           _cpu_avg_pool2d.adaptive_windows(x.shape[3], OW))


def _avg_pool2d_adaptive_backward(g, x_shape):
    return _avg_pool2d_spread(g, x_shape, _cpu_avg_pool2d.adaptive_windows(x_shape[2], g.shape[2]),
                              _cpu_avg_pool2d.adaptive_windows(x_shape[3], g.shape[3]))


def _avg_pool2d_forward(x, k, s, p, ceil_mode=False, count_include_pad=True):
    H, W = x.shape[2:]
    return _avg_pool2d_run(x, _cpu_avg_pool2d.pool_windows(H, k, s, p, ceil_mode, count_include_pad),
                           _cpu_avg_pool2d.pool_windows(W, k, s, p, ceil_mode, count_include_pad))


def _avg_pool2d_backward(g, x_shape, k, s, p, ceil_mode=False, count_include_pad=True):
    H, W = x_shape[2:]
    return _avg_pool2d_spread(g, x_shape, _cpu_avg_pool2d.pool_windows(H, k, s, p, ceil_mode, count_include_pad),
                              _cpu_avg_pool2d.pool_windows(W, k, s, p, ceil_mode, count_include_pad))


# --------------------------------------------------------------------------
# workspace (twin of kernels/workspace.py): named scratch buffers in GPU memory
# --------------------------------------------------------------------------
_ws_local = threading.local()        # one set of buffers per thread, as on the CPU


def _ws_buffers():
    bufs = getattr(_ws_local, "buffers", None)
    if bufs is None:
        bufs = _ws_local.buffers = {}
    return bufs


def _ws_get(name, shape, dtype):
    """An uninitialised CuPy array of ``shape``/``dtype`` backed by this thread's named
    buffer (valid until the next call in the same thread that asks for the same name;
    kernels run in stream order, so reusing a buffer never races with an earlier kernel
    that reads it)."""
    import cupy
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    bufs = _ws_buffers()
    buf = bufs.get(name)
    if buf is None or buf.size < n:
        bufs.pop(name, None)
        buf = bufs[name] = cupy.empty(max(n, 1), dtype=np.uint8)
    return buf[:n].view(dtype).reshape(shape)


def _ws_clear():
    """Free this thread's scratch buffers (back to CuPy's memory pool)."""
    _ws_buffers().clear()


im2col = SimpleNamespace(out_size=_cpu_im2col.out_size, im2col=_im2col, col2im=_col2im)
layout = SimpleNamespace(rows_to_nchw=_rows_to_nchw, nchw_to_rows=_nchw_to_rows, bias_grad=_bias_grad)
relu = SimpleNamespace(forward=_relu_forward, backward=_relu_backward)
clip = SimpleNamespace(forward=_clip_forward, backward=_clip_backward)
batch_norm = SimpleNamespace(forward=_batch_norm_forward, backward_input=_batch_norm_backward_input,
                             backward_params=_batch_norm_backward_params)
depthwise_conv2d = SimpleNamespace(forward=_depthwise_conv2d_forward, backward_input=_depthwise_conv2d_backward_input,
                                   backward_weight=_depthwise_conv2d_backward_weight)
max_pool2d = SimpleNamespace(forward=_max_pool2d_forward, backward=_max_pool2d_backward)
lrn = SimpleNamespace(forward=_lrn_forward, backward=_lrn_backward)
avg_pool2d = SimpleNamespace(forward=_avg_pool2d_forward, backward=_avg_pool2d_backward,
                              adaptive_forward=_avg_pool2d_adaptive_forward,
                              adaptive_backward=_avg_pool2d_adaptive_backward)
workspace = SimpleNamespace(get=_ws_get, clear=_ws_clear)
