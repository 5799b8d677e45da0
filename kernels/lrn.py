"""Local response normalisation across channels (Caffe / torch formula).

With window w(c) = [c - size//2, c + (size-1)//2] (clipped to [0, C)):
    scale[c] = k + alpha/size * sum_{c' in w(c)} x[c']^2
    y[c]     = x[c] * scale[c]^(-beta)
Backward (c' such that c is in w(c'), i.e. c' in [c - (size-1)//2, c + size//2]):
    dx[c] = dy[c] * scale[c]^(-beta)
            - (2 * alpha * beta / size) * x[c] * sum_{c'} dy[c'] * y[c'] / scale[c']
All per pixel (n, h, w); the loops run over (n, c) planes in parallel.
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _forward(x, size, alpha, beta, k, y, scale):
    N, C, L = x.shape
    lo_off = size // 2
    hi_off = (size - 1) // 2
    a = alpha / size
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        lo = max(0, c - lo_off)
        hi = min(C - 1, c + hi_off)
        for l in range(L):
            s = 0.0
            for cc in range(lo, hi + 1):
                v = x[n, cc, l]
                s += v * v
            sc = k + a * s
            scale[n, c, l] = sc
            y[n, c, l] = x[n, c, l] * sc ** (-beta)


@kernel
def _backward(x, y, scale, dy, size, alpha, beta, dx):
    N, C, L = x.shape
    lo_off = (size - 1) // 2
    hi_off = size // 2
    coef = 2.0 * alpha * beta / size
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        lo = max(0, c - lo_off)
        hi = min(C - 1, c + hi_off)
        for l in range(L):
            t = 0.0
            for cc in range(lo, hi + 1):
                t += dy[n, cc, l] * y[n, cc, l] / scale[n, cc, l]
            dx[n, c, l] = dy[n, c, l] * scale[n, c, l] ** (-beta) - coef * x[n, c, l] * t


def forward(x, size, alpha, beta, k):
    N, C = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(N, C, -1)
    y = np.empty_like(x3)
    scale = np.empty_like(x3)
    _forward(x3, size, alpha, beta, k, y, scale)
    return y.reshape(x.shape), scale


def backward(x, y, scale, dy, size, alpha, beta):
    N, C = x.shape[:2]
    shp = scale.shape
    dx = np.empty(shp, dtype=dy.dtype)
    _backward(np.ascontiguousarray(x).reshape(shp), y.reshape(shp), scale,
              np.ascontiguousarray(dy).reshape(shp), size, alpha, beta, dx)
    return dx.reshape(x.shape)
