"""Adaptive average pooling (torchvision's AlexNet pools to 6x6).

Output cell (i, j) averages the input window
    rows [floor(i*H/OH), ceil((i+1)*H/OH)),  cols [floor(j*W/OW), ceil((j+1)*W/OW))
Backward spreads dy[i, j] / (window area) evenly over that window (windows
may overlap when H is not a multiple of OH: contributions add up).
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _forward(x, y):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for i in range(OH):
            h0 = (i * H) // OH
            h1 = -((-(i + 1) * H) // OH)
            for j in range(OW):
                w0 = (j * W) // OW
                w1 = -((-(j + 1) * W) // OW)
                s = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        s += x[n, c, h, w]
                y[n, c, i, j] = s / ((h1 - h0) * (w1 - w0))


@kernel
def _backward(dy, dx):
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for i in range(OH):
            h0 = (i * H) // OH
            h1 = -((-(i + 1) * H) // OH)
            for j in range(OW):
                w0 = (j * W) // OW
                w1 = -((-(j + 1) * W) // OW)
                g = dy[n, c, i, j] / ((h1 - h0) * (w1 - w0))
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        dx[n, c, h, w] += g


def forward(x, out_hw):
    N, C = x.shape[:2]
    y = np.empty((N, C) + tuple(out_hw), dtype=x.dtype)
    _forward(np.ascontiguousarray(x), y)
    return y


def backward(dy, x_shape):
    dx = np.zeros(x_shape, dtype=dy.dtype)
    _backward(np.ascontiguousarray(dy), dx)
    return dx
