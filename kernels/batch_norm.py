"""Inference batch normalisation: one pass per array instead of NumPy's three.

x (N, C, L) (L = H*W, or 1 after a fully connected layer), per channel c the
constants mean[c], scale[c] = weight[c] / sqrt(var[c] + eps), inv[c] = 1 / sqrt(var[c] + eps)
(computed by ``ops.BatchNorm`` in float64, passed in x's dtype):

    y[n, c, l]  = (x[n, c, l] - mean[c]) * scale[c] + bias[c]
Chain rule:
    dx[n, c, l] = g[n, c, l] * scale[c]
    dweight[c]  = sum_{n, l} g[n, c, l] * ((x[n, c, l] - mean[c]) * inv[c])
    dbias[c]    = sum_{n, l} g[n, c, l]

Each element in the array's dtype, the two sums in float64 (in n, l order), whatever
the thread count.
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _forward(x, mean, scale, bias, y):
    N, C, L = x.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        m, s, b = mean[c], scale[c], bias[c]
        for q in range(L):
            y[n, c, q] = (x[n, c, q] - m) * s + b


@kernel
def _backward_input(g, scale, dx):
    N, C, L = g.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        s = scale[c]
        for q in range(L):
            dx[n, c, q] = g[n, c, q] * s


@kernel
def _backward_params(g, x, mean, inv, dw, db):
    N, C, L = g.shape
    for c in prange(C):
        m, iv = mean[c], inv[c]
        sw = 0.0
        sb = 0.0
        for n in range(N):
            for q in range(L):
                gv = g[n, c, q]
                sw += gv * ((x[n, c, q] - m) * iv)
                sb += gv
        dw[c] = sw
        db[c] = sb


def _flat(a):
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


def forward(x, mean, scale, bias):
    """x (N, C, ...) and per-channel mean, scale, bias (C,) in x's dtype -> y (x's shape)."""
    y = np.empty(x.shape, x.dtype)
    _forward(_flat(x), mean, scale, bias, y.reshape(_flat(x).shape))
    return y


def backward_input(g, scale):
    """dx = g * scale[c]."""
    dx = np.empty(g.shape, g.dtype)
    _backward_input(_flat(g), scale, dx.reshape(_flat(g).shape))
    return dx


def backward_params(g, x, mean, inv):
    """(dweight, dbias), each (C,) in g's dtype."""
    C = g.shape[1]
    dw, db = np.empty(C, g.dtype), np.empty(C, g.dtype)
    _backward_params(_flat(g), _flat(x), mean, inv, dw, db)
    return dw, db
