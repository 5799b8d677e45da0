"""im2col / col2im: convolution as a matrix product (the Caffe way).

Forward of a convolution with weight W (O, C*kh*kw) is

    col[(c, ki, kj), (n, i, j)] = x[n, c, i*sh - ph + ki, j*sw - pw + kj]   (0 outside)
    y_rows = W @ col                                            (O, N*OH*OW)

and its backward to the input is the transpose of that data movement:

    dcol = W.T @ dy_rows
    dx[n, c, h, w] = sum over (ki, kj, i, j) with i*sh - ph + ki = h, j*sw - pw + kj = w
                     of dcol[(c, ki, kj), (n, i, j)]                      (col2im)

Rows of ``col`` are ordered (c, ki, kj) -- the same order as a weight
(O, C, kh, kw) flattened to (O, C*kh*kw) -- so groups are row blocks.
"""
import numpy as np

from ._numba import kernel, njit, prange


def out_size(size, k, s, p):
    """Output length of a window of size k, stride s, padding p (floor mode)."""
    return (size + 2 * p - k) // s + 1


@njit(cache=True, inline="always")
def _valid(n_out, stride, offset, size):
    """The range [lo, hi) of output positions j whose input position
    j*stride + offset lies inside [0, size): the others read padding."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = 0 if size - offset <= 0 else (size - offset + stride - 1) // stride
    hi = min(max(hi, lo), n_out)
    return min(lo, hi), hi


@kernel
def _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    N, C, H, W = x.shape
    L = oh * ow
    for r in prange(C * kh * kw):
        c = r // (kh * kw)
        ki = (r // kw) % kh
        kj = r % kw
        j0, j1 = _valid(ow, sw, kj - pw, W)     # padding columns: j < j0 and j >= j1
        for n in range(N):
            base = n * L
            for i in range(oh):
                h = i * sh - ph + ki
                out = col[r, base + i * ow:base + (i + 1) * ow]
                if h < 0 or h >= H:
                    out[:] = 0
                    continue
                src = x[n, c, h]
                off = kj - pw
                for j in range(j0):
                    out[j] = 0
                for j in range(j0, j1):             # no bounds test: a plain (strided) copy
                    out[j] = src[j * sw + off]
                for j in range(j1, ow):
                    out[j] = 0


@kernel
def _col2im(col, kh, kw, sh, sw, ph, pw, oh, ow, dx):
    N, C, H, W = dx.shape
    L = oh * ow
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for ki in range(kh):
            for kj in range(kw):
                r = (c * kh + ki) * kw + kj
                off = kj - pw
                j0, j1 = _valid(ow, sw, off, W)
                for i in range(oh):
                    h = i * sh - ph + ki
                    if h < 0 or h >= H:
                        continue
                    src = col[r, n * L + i * ow:n * L + (i + 1) * ow]
                    dst = dx[n, c, h]
                    for j in range(j0, j1):
                        dst[j * sw + off] += src[j]


def im2col(x, kh, kw, stride, padding, out=None):
    """x (N, C, H, W) -> col (C*kh*kw, N*OH*OW)."""
    N, C, H, W = x.shape
    oh, ow = out_size(H, kh, stride[0], padding[0]), out_size(W, kw, stride[1], padding[1])
    if out is None:
        out = np.empty((C * kh * kw, N * oh * ow), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow, out)
    return out


def col2im(col, x_shape, kh, kw, stride, padding, out=None):
    """col (C*kh*kw, N*OH*OW) -> dx (N, C, H, W), summing overlapping windows.
    ``out``, if given, must be zero-filled; the sums are added into it."""
    N, C, H, W = x_shape
    oh, ow = out_size(H, kh, stride[0], padding[0]), out_size(W, kw, stride[1], padding[1])
    dx = np.zeros(x_shape, dtype=col.dtype) if out is None else out
    _col2im(np.ascontiguousarray(col), kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow, dx)
    return dx
