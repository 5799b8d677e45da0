"""Local response normalisation across channels (Caffe / torch formula).

With window w(c) = [c - size//2, c + (size-1)//2] (clipped to [0, C)):
    scale[c] = k + alpha/size * sum_{c' in w(c)} x[c']^2
    y[c]     = x[c] * scale[c]^(-beta)
Backward (c' such that c is in w(c'), i.e. c' in [c - (size-1)//2, c + size//2]):
    dx[c] = dy[c] * scale[c]^(-beta)
            - (2 * alpha * beta / size) * x[c] * sum_{c'} dy[c'] * y[c'] / scale[c']
All per pixel (n, h, w).  Both kernels run over the channels of one image
with a sliding window: a float64 running sum per pixel adds the channel that
enters the window and subtracts the one that leaves it, so each plane is read
twice instead of ``size`` times; the pixel index is innermost (contiguous,
vectorisable), images run in parallel.  The forward keeps ``scale`` and
``scale^(-beta)``.  AlexNet's beta = 0.75 takes a fast path:
s^(-3/4) = r * sqrt(r) with r = 1/sqrt(s), exactly rounded square roots
instead of exp/log.
"""
import math

import numpy as np

from . import workspace
from ._numba import kernel, prange


@kernel
def _forward(x, size, alpha, beta, k, y, scale, spow):
    N, C, L = x.shape
    lo_off = size // 2                      # window of c: [c - lo_off, c + hi_off]
    hi_off = (size - 1) // 2
    a = alpha / size
    fast = beta == 0.75
    for n in prange(N):
        acc = np.zeros(L, dtype=np.float64)     # sum of x^2 over the window of channel c
        for c in range(-hi_off - 1, C):
            enter, leave = c + hi_off, c - lo_off - 1
            if enter >= 0 and enter < C:
                for l in range(L):
                    v = np.float64(x[n, enter, l])
                    acc[l] += v * v
            if leave >= 0:
                for l in range(L):
                    v = np.float64(x[n, leave, l])
                    acc[l] -= v * v
            if c < 0:
                continue
            # two loops, not one with the test inside: the pow path would keep
            # the fast one from being vectorised (~10x slower)
            if fast:
                for l in range(L):
                    sc = k + a * max(acc[l], 0.0)     # the running sum may round below 0
                    r = 1.0 / math.sqrt(sc)
                    p = r * math.sqrt(r)
                    scale[n, c, l] = sc
                    spow[n, c, l] = p
                    y[n, c, l] = x[n, c, l] * p
            else:
                for l in range(L):
                    sc = k + a * max(acc[l], 0.0)
                    p = sc ** (-beta)
                    scale[n, c, l] = sc
                    spow[n, c, l] = p
                    y[n, c, l] = x[n, c, l] * p


@kernel
def _backward(x, y, scale, spow, dy, size, alpha, beta, t, dx):
    """t = dy * y / scale (each channel's term, written once as it enters the
    window, read back as it leaves); dx as in the formula above."""
    N, C, L = x.shape
    lo_off = (size - 1) // 2                # channels c' whose window holds c: [c - lo_off, c + hi_off]
    hi_off = size // 2
    coef = 2.0 * alpha * beta / size
    for n in prange(N):
        acc = np.zeros(L, dtype=np.float64)     # sum of t over those channels
        for c in range(-hi_off - 1, C):
            enter, leave = c + hi_off, c - lo_off - 1
            if enter >= 0 and enter < C:
                for l in range(L):
                    v = dy[n, enter, l] * y[n, enter, l] / scale[n, enter, l]
                    t[n, enter, l] = v
                    acc[l] += v
            if leave >= 0:
                for l in range(L):
                    acc[l] -= t[n, leave, l]
            if c < 0:
                continue
            for l in range(L):
                dx[n, c, l] = dy[n, c, l] * spow[n, c, l] - coef * x[n, c, l] * acc[l]


def forward(x, size, alpha, beta, k):
    """x (N, C, H, W) -> y, and the saved (scale, scale^-beta) for backward."""
    N, C = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(N, C, -1)
    y, scale, spow = np.empty_like(x3), np.empty_like(x3), np.empty_like(x3)
    _forward(x3, size, alpha, beta, k, y, scale, spow)
    return y.reshape(x.shape), (scale, spow)


def backward(x, y, saved, g, size, alpha, beta):
    scale, spow = saved
    shp = scale.shape
    g3 = np.ascontiguousarray(g).reshape(shp).astype(scale.dtype, copy=False)
    t = workspace.get("lrn_t", shp, scale.dtype)       # scratch: each channel's g * y / scale
    dx = np.empty(shp, dtype=scale.dtype)
    _backward(np.ascontiguousarray(x).reshape(shp), np.ascontiguousarray(y).reshape(shp), scale, spow, g3,
              size, alpha, beta, t, dx)
    return dx.reshape(x.shape)
