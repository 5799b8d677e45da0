"""Average pooling: adaptive (torchvision's AlexNet pools to 6x6, global pooling
to 1x1) and windowed (k x k, stride s, padding p, ``count_include_pad``,
``ceil_mode``), both as one kernel over precomputed windows.

Output cell (i, j) averages the input window rows [h0[i], h1[i]), columns
[w0[j], w1[j]) (clipped to the input) and divides by dh[i] * dw[j]:

    y[n, c, i, j] = sum_{h0[i] <= h < h1[i], w0[j] <= w < w1[j]} x[n, c, h, w] / (dh[i] * dw[j])

Backward spreads dy[i, j] / (dh[i] * dw[j]) evenly over that window (windows may
overlap: contributions add up, in (i, j) order).

The windows (``adaptive_windows``, ``pool_windows``):

* adaptive, output size OH:  rows [floor(i*H/OH), ceil((i+1)*H/OH)), dh = h1 - h0;
* windowed, PyTorch's ``avg_pool2d``:  a = i*s - p, b = min(a + k, H + p)
  (the window within the padded input), dh = b - a with ``count_include_pad``
  (padding counts as zeros in the mean), else the clipped length;  rows
  [max(a, 0), min(b, H)).  With ``ceil_mode`` the last window may hang off the
  end of the padded input: that part never counts, not even as padding.
"""
import numpy as np

from ._numba import kernel, prange
from .im2col import out_size


@kernel
def _forward(x, h0, h1, w0, w1, dh, dw, y):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for i in range(OH):
            for j in range(OW):
                s = 0.0
                for h in range(h0[i], h1[i]):
                    for w in range(w0[j], w1[j]):
                        s += x[n, c, h, w]
                y[n, c, i, j] = s / (dh[i] * dw[j])


@kernel
def _backward(dy, h0, h1, w0, w1, dh, dw, dx):
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for i in range(OH):
            for j in range(OW):
                g = dy[n, c, i, j] / (dh[i] * dw[j])
                for h in range(h0[i], h1[i]):
                    for w in range(w0[j], w1[j]):
                        dx[n, c, h, w] += g


def adaptive_windows(size, out):
    """(lo, hi, divisor) int64 arrays of the ``out`` adaptive windows over ``size`` inputs."""
    i = np.arange(out, dtype=np.int64)
    lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
    return lo, hi, hi - lo


def pool_windows(size, k, s, p, ceil_mode=False, count_include_pad=True):
    """(lo, hi, divisor) int64 arrays of the windows of a k-window, stride s, padding p
    pooling over ``size`` inputs (PyTorch's ``avg_pool2d`` semantics, see above)."""
    a = np.arange(out_size(size, k, s, p, ceil_mode), dtype=np.int64) * s - p
    b = np.minimum(a + k, size + p)
    lo, hi = np.maximum(a, 0), np.minimum(b, size)
    return lo, hi, (b - a) if count_include_pad else (hi - lo)


def _pool(x, rows, cols):
    (h0, h1, dh), (w0, w1, dw) = rows, cols
    y = np.empty(x.shape[:2] + (len(h0), len(w0)), dtype=x.dtype)
    _forward(np.ascontiguousarray(x), h0, h1, w0, w1, dh, dw, y)
    return y


def _spread(dy, x_shape, rows, cols):
    (h0, h1, dh), (w0, w1, dw) = rows, cols
    dx = np.zeros(x_shape, dtype=dy.dtype)
    _backward(np.ascontiguousarray(dy), h0, h1, w0, w1, dh, dw, dx)
    return dx


def adaptive_forward(x, out_hw):
    """Adaptive: x (N, C, H, W) -> y (N, C, *out_hw)."""
    return _pool(x, adaptive_windows(x.shape[2], out_hw[0]), adaptive_windows(x.shape[3], out_hw[1]))


def adaptive_backward(g, x_shape):
    """Adaptive: g (N, C, OH, OW) -> dx (x_shape)."""
    return _spread(g, x_shape, adaptive_windows(x_shape[2], g.shape[2]), adaptive_windows(x_shape[3], g.shape[3]))


def forward(x, k, s, p, ceil_mode=False, count_include_pad=True):
    """Windowed: x (N, C, H, W) -> y (N, C, OH, OW), OH = im2col.out_size(H, k, s, p, ceil_mode)."""
    H, W = x.shape[2:]
    return _pool(x, pool_windows(H, k, s, p, ceil_mode, count_include_pad),
                 pool_windows(W, k, s, p, ceil_mode, count_include_pad))


def backward(g, x_shape, k, s, p, ceil_mode=False, count_include_pad=True):
    """Windowed: g (N, C, OH, OW) -> dx (x_shape)."""
    H, W = x_shape[2:]
    return _spread(g, x_shape, pool_windows(H, k, s, p, ceil_mode, count_include_pad),
                   pool_windows(W, k, s, p, ceil_mode, count_include_pad))
