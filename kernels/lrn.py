"""Local response normalisation across channels (Caffe / torch formula).

With window w(c) = [c - size//2, c + (size-1)//2] (clipped to [0, C)):
    scale[c] = k + alpha/size * sum_{c' in w(c)} x[c']^2
    y[c]     = x[c] * scale[c]^(-beta)
Backward (c' such that c is in w(c'), i.e. c' in [c - (size-1)//2, c + size//2]):
    dx[c] = dy[c] * scale[c]^(-beta)
            - (2 * alpha * beta / size) * x[c] * sum_{c'} dy[c'] * y[c'] / scale[c']
All per pixel (n, h, w).  The forward keeps ``scale`` and ``scale^(-beta)``;
the loops run over (n, c) planes in parallel with the pixel index innermost
(contiguous, vectorisable).  AlexNet's beta = 0.75 takes a fast path:
s^(-3/4) = r * sqrt(r) with r = 1/sqrt(s), exactly rounded square roots
instead of exp/log.
"""
import math

import numpy as np

from ._numba import kernel, prange


@kernel
def _forward(x, size, alpha, beta, k, y, scale, spow):
    N, C, L = x.shape
    lo_off = size // 2
    hi_off = (size - 1) // 2
    a = alpha / size
    fast = beta == 0.75
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        acc = np.zeros(L, dtype=np.float64)
        for cc in range(max(0, c - lo_off), min(C - 1, c + hi_off) + 1):
            for l in range(L):
                v = x[n, cc, l]
                acc[l] += v * v
        if fast:
            for l in range(L):
                sc = k + a * acc[l]
                r = 1.0 / math.sqrt(sc)
                p = r * math.sqrt(r)
                scale[n, c, l] = sc
                spow[n, c, l] = p
                y[n, c, l] = x[n, c, l] * p
        else:
            for l in range(L):
                sc = k + a * acc[l]
                p = sc ** (-beta)
                scale[n, c, l] = sc
                spow[n, c, l] = p
                y[n, c, l] = x[n, c, l] * p


@kernel
def _ratio(dy, y, scale, t):
    """t = dy * y / scale, the term every channel's window sums in the backward."""
    N, C, L = t.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for l in range(L):
            t[n, c, l] = dy[n, c, l] * y[n, c, l] / scale[n, c, l]


@kernel
def _backward(x, spow, dy, t, size, alpha, beta, dx):
    N, C, L = x.shape
    lo_off = (size - 1) // 2
    hi_off = size // 2
    coef = 2.0 * alpha * beta / size
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        acc = np.zeros(L, dtype=np.float64)
        for cc in range(max(0, c - lo_off), min(C - 1, c + hi_off) + 1):
            for l in range(L):
                acc[l] += t[n, cc, l]
        for l in range(L):
            dx[n, c, l] = dy[n, c, l] * spow[n, c, l] - coef * x[n, c, l] * acc[l]


def forward(x, size, alpha, beta, k):
    """x (N, C, H, W) -> y, and the saved (scale, scale^-beta) for backward."""
    N, C = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(N, C, -1)
    y, scale, spow = np.empty_like(x3), np.empty_like(x3), np.empty_like(x3)
    _forward(x3, size, alpha, beta, k, y, scale, spow)
    return y.reshape(x.shape), (scale, spow)


def backward(x, y, saved, dy, size, alpha, beta):
    scale, spow = saved
    shp = scale.shape
    dy3 = np.ascontiguousarray(dy).reshape(shp).astype(scale.dtype, copy=False)
    t = np.empty(shp, dtype=scale.dtype)
    _ratio(dy3, y.reshape(shp), scale, t)
    dx = np.empty(shp, dtype=scale.dtype)
    _backward(np.ascontiguousarray(x).reshape(shp), spow, dy3, t, size, alpha, beta, dx)
    return dx.reshape(x.shape)
