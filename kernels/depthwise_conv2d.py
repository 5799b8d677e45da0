"""Depthwise convolution: each input channel convolved with its own filters
(groups = C input channels, weight (O, 1, kh, kw), O = m*C: channel multiplier m,
output channel o reads input channel c = o // m).  MobileNetV2's 3x3 layers
(m = 1).  As im2col + GEMM this is C products of one row each -- a Python loop of
hundreds of tiny GEMMs -- so it has its own loops:

    y[n, o, i, j]  = b[o] + sum_{a, d} w[o, 0, a, d] * x[n, c, i*sh - ph + a, j*sw - pw + d]   (0 outside)
Chain rule:
    dx[n, c, h, w] = sum_{o of c} sum_{a, d, (i, j): i*sh - ph + a = h, j*sw - pw + d = w} g[n, o, i, j] * w[o, 0, a, d]
    dw[o, 0, a, d] = sum_{n, i, j} g[n, o, i, j] * x[n, c, i*sh - ph + a, j*sw - pw + d]
    db[o]          = sum_{n, i, j} g[n, o, i, j]            (layout.bias_grad)

Every loop runs tap by tap (a, d) over the output rows and columns whose input
pixel is inside (the ranges of ``im2col._valid``, computed once per tap: no test
per pixel), so the inner loop is a vectorised multiply-add along a row.  Sums are
in the array's dtype, in a fixed order whatever the thread count -- each output:
the bias, then the taps in row-major order; each input pixel's gradient: by
ascending output row i, then tap column d -- and the weight gradient's long sums
(over the batch and the image) in float64.  The CUDA twin adds in the same orders.
Stride 1 with short rows (ow < 32) runs each tap over the whole zero-padded plane in
one loop (the padding's terms add w * 0: the same sums).
"""
import numpy as np
from numba import uint64

from ._numba import kernel, prange
from .im2col import _valid, out_size


@kernel
def _forward(x, w, b, sh, sw, ph, pw, y):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    m = O // C
    oh, ow = y.shape[2], y.shape[3]
    Wp = W + 2 * pw                     # stride 1: rows of the zero-padded plane, Wp wide
    for no in prange(N * O):
        n = no // O
        o = no % O
        plane = x[n, o // m].reshape(-1)
        out = y[n, o].reshape(-1)
        if sh == 1 and sw == 1 and ow < 32:
            # short rows (MobileNet's 14x14 and 7x7 planes): each tap one long loop over the
            # padded plane, outputs computed Wp wide (the kw - 1 extra columns dropped)
            xpad = np.zeros((H + 2 * ph) * Wp + kw, x.dtype)
            for h in range(H):
                for v in range(W):
                    xpad[(h + ph) * Wp + pw + v] = plane[h * W + v]
            acc = np.full(oh * Wp, b[o], y.dtype)
            for a in range(kh):
                for d in range(kw):
                    wv = w[o, 0, a, d]
                    base = uint64(a * Wp + d)
                    for q in range(uint64(oh * Wp)):
                        acc[q] += wv * xpad[base + q]
            for i in range(oh):
                for j in range(ow):
                    out[i * ow + j] = acc[i * Wp + j]
            continue
        for q in range(oh * ow):
            out[q] = b[o]
        for a in range(kh):
            i0, i1 = _valid(oh, sh, a - ph, H)          # output rows whose input row is inside
            for d in range(kw):
                j0, j1 = _valid(ow, sw, d - pw, W)
                wv = w[o, 0, a, d]
                for i in range(i0, i1):
                    src = uint64((i * sh + a - ph) * W + j0 * sw + d - pw)
                    dst = uint64(i * ow + j0)
                    for j in range(uint64(j1 - j0)):
                        out[dst + j] += wv * plane[src + j * uint64(sw)]


@kernel
def _backward_input(g, w, sh, sw, ph, pw, dx):
    N, C, H, W = dx.shape
    O, _, kh, kw = w.shape
    m = O // C
    oh, ow = g.shape[2], g.shape[3]
    Wp = W + 2 * pw
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = dx[n, c].reshape(-1)
        if sh == 1 and sw == 1 and ow < 32:
            # short rows: as in _forward, each tap one loop over the padded plane, g laid out
            # Wp wide (its extra columns 0: their terms add w * 0)
            dpad = np.zeros((H + 2 * ph) * Wp + kw, dx.dtype)
            gwide = np.zeros(oh * Wp, g.dtype)
            for o in range(c * m, (c + 1) * m):
                gp = g[n, o].reshape(-1)
                for i in range(oh):
                    for j in range(ow):
                        gwide[i * Wp + j] = gp[i * ow + j]
                for a in range(kh - 1, -1, -1):
                    for d in range(kw):
                        wv = w[o, 0, a, d]
                        base = uint64(a * Wp + d)
                        for q in range(uint64(oh * Wp)):
                            dpad[base + q] += wv * gwide[q]
            for h in range(H):
                for v in range(W):
                    plane[h * W + v] = dpad[(h + ph) * Wp + pw + v]
            continue
        for o in range(c * m, (c + 1) * m):
            gp = g[n, o].reshape(-1)
            for a in range(kh - 1, -1, -1):             # a descending: each pixel's terms by ascending i
                i0, i1 = _valid(oh, sh, a - ph, H)
                for d in range(kw):
                    j0, j1 = _valid(ow, sw, d - pw, W)
                    wv = w[o, 0, a, d]
                    for i in range(i0, i1):
                        dst = uint64((i * sh + a - ph) * W + j0 * sw + d - pw)
                        src = uint64(i * ow + j0)
                        for j in range(uint64(j1 - j0)):
                            plane[dst + j * uint64(sw)] += wv * gp[src + j]


@kernel
def _backward_weight(g, x, sh, sw, ph, pw, dw):
    N, C, H, W = x.shape
    O, _, kh, kw = dw.shape
    m = O // C
    oh, ow = g.shape[2], g.shape[3]
    for o in prange(O):
        c = o // m
        for a in range(kh):
            i0, i1 = _valid(oh, sh, a - ph, H)
            for d in range(kw):
                j0, j1 = _valid(ow, sw, d - pw, W)
                s = 0.0                         # a sum over the batch and the image: in float64
                for n in range(N):
                    plane = x[n, c].reshape(-1)
                    gp = g[n, o].reshape(-1)
                    for i in range(i0, i1):
                        src = uint64((i * sh + a - ph) * W + j0 * sw + d - pw)
                        dst = uint64(i * ow + j0)
                        for j in range(uint64(j1 - j0)):
                            s += gp[dst + j] * plane[src + j * uint64(sw)]
                dw[o, 0, a, d] = s


def _check(x, w):
    if w.shape[1] != 1 or w.shape[0] % x.shape[1]:
        raise ValueError(f"depthwise convolution: weight {w.shape} is not (m*C, 1, kh, kw) for C = {x.shape[1]}")


def forward(x, w, b, stride, padding):
    """x (N, C, H, W), w (m*C, 1, kh, kw), b (m*C,) or None -> y (N, m*C, OH, OW)."""
    _check(x, w)
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    oh, ow = out_size(H, kh, stride[0], padding[0]), out_size(W, kw, stride[1], padding[1])
    y = np.empty((N, O, oh, ow), dtype=x.dtype)
    b = np.zeros(O, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    _forward(np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=x.dtype), b, stride[0], stride[1],
             padding[0], padding[1], y)
    return y


def backward_input(g, w, x_shape, stride, padding):
    """g (N, m*C, OH, OW) -> dx (x_shape)."""
    dx = np.zeros(x_shape, dtype=g.dtype)
    _backward_input(np.ascontiguousarray(g), np.ascontiguousarray(w, dtype=g.dtype), stride[0], stride[1],
                    padding[0], padding[1], dx)
    return dx


def backward_weight(g, x, w_shape, stride, padding):
    """g (N, m*C, OH, OW), x (N, C, H, W) -> dw (w_shape) in g's dtype."""
    dw = np.empty(w_shape, dtype=g.dtype)
    _backward_weight(np.ascontiguousarray(g), np.ascontiguousarray(x, dtype=g.dtype), stride[0], stride[1],
                     padding[0], padding[1], dw)
    return dw
