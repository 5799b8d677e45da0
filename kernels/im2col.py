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
from numba import uint64

from ._numba import kernel, njit, prange


def out_size(size, k, s, p, ceil_mode=False):
    """Output length of a window of size k, stride s, padding p: floor mode, or with
    ``ceil_mode`` (pooling) PyTorch's rule -- rounded up, except that the last window
    must start inside the input or its left padding (a window that would start in
    the right padding is dropped):

        floor:  (size + 2p - k) // s + 1
        ceil:   n = (size + 2p - k + s - 1) // s + 1,  minus 1 if (n - 1) * s >= size + p
    """
    if not ceil_mode:
        return (size + 2 * p - k) // s + 1
    n = (size + 2 * p - k + s - 1) // s + 1
    return n - 1 if (n - 1) * s >= size + p else n


@njit(cache=True, inline="always")
def valid_range(n_out, stride, offset, size):
    """The range [lo, hi) of output positions j whose input position
    j*stride + offset lies inside [0, size): the others read padding."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = 0 if size - offset <= 0 else (size - offset + stride - 1) // stride
    hi = min(max(hi, lo), n_out)
    return min(lo, hi), hi


# Index arithmetic in the two kernels is unsigned (``uint64``): Numba then
# skips the wraparound test that a signed index gets (a negative index counts
# from the end, as in Python), and the inner copies become plain vectorised
# loads and stores -- 2.5-4.5x faster than with signed indices (AlexNet's
# conv1/conv2/conv4 and the embedded model's layers, one image, one thread).
# Every unsigned index is a position inside the array: the valid range
# [j0, j1) of ``valid_range`` keeps the input positions in [0, W).
@kernel
def _im2col(x, kh, kw, sh, sw, ph, pw, i0, oh, ow, col):
    N, C, H, W = x.shape
    L = oh * ow
    xf = x.reshape(-1)
    for r in prange(C * kh * kw):
        c = r // (kh * kw)
        ki = (r // kw) % kh
        kj = r % kw
        off = kj - pw
        j0, j1 = valid_range(ow, sw, off, W)     # padding columns: j < j0 and j >= j1
        row = col[r]
        for n in range(N):
            for i in range(oh):
                h = (i0 + i) * sh - ph + ki
                o = uint64(n * L + i * ow)      # this output row's first column
                if h < 0 or h >= H:
                    for j in range(uint64(ow)):
                        row[o + j] = 0
                    continue
                for j in range(uint64(j0)):
                    row[o + j] = 0
                src = uint64(((n * C + c) * H + h) * W + j0 * sw + off)    # x[n, c, h, j0*sw + off]
                dst = o + uint64(j0)
                if sw == 1:                     # a contiguous copy
                    for j in range(uint64(j1 - j0)):
                        row[dst + j] = xf[src + j]
                else:                           # a strided gather
                    for j in range(uint64(j1 - j0)):
                        row[dst + j] = xf[src + j * uint64(sw)]
                for j in range(uint64(j1), uint64(ow)):
                    row[o + j] = 0


@kernel
def _col2im(col, kh, kw, sh, sw, ph, pw, i0, oh, ow, dx):
    N, C, H, W = dx.shape
    L = oh * ow
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = dx[n, c].reshape(-1)
        for ki in range(kh):
            for kj in range(kw):
                r = (c * kh + ki) * kw + kj
                off = kj - pw
                j0, j1 = valid_range(ow, sw, off, W)
                row = col[r]
                for i in range(oh):
                    h = (i0 + i) * sh - ph + ki
                    if h < 0 or h >= H:
                        continue
                    src = uint64(n * L + i * ow + j0)           # col[r, n*L + i*ow + j0]
                    dst = uint64(h * W + j0 * sw + off)         # dx[n, c, h, j0*sw + off]
                    if sw == 1:
                        for j in range(uint64(j1 - j0)):
                            plane[dst + j] += row[src + j]
                    else:
                        for j in range(uint64(j1 - j0)):
                            plane[dst + j * uint64(sw)] += row[src + j]


def _band(H, kh, stride, padding, rows):
    """(i0, number of output rows): the whole output, or the band rows = (i0, i1)."""
    oh = out_size(H, kh, stride[0], padding[0])
    return (0, oh) if rows is None else (int(rows[0]), int(rows[1]) - int(rows[0]))


def im2col(x, kh, kw, stride, padding, out=None, rows=None):
    """x (N, C, H, W) -> col (C*kh*kw, N*OH*OW); with ``rows`` = (i0, i1), only output rows
    i0 <= i < i1: col (C*kh*kw, N*(i1 - i0)*OW) (a band, to bound the scratch memory)."""
    N, C, H, W = x.shape
    i0, oh = _band(H, kh, stride, padding, rows)
    ow = out_size(W, kw, stride[1], padding[1])
    if out is None:
        out = np.empty((C * kh * kw, N * oh * ow), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), kh, kw, stride[0], stride[1], padding[0], padding[1], i0, oh, ow, out)
    return out


def col2im(col, x_shape, kh, kw, stride, padding, out=None, rows=None):
    """col (C*kh*kw, N*OH*OW) -> dx (N, C, H, W), summing overlapping windows; ``rows`` as in
    ``im2col`` (col then holds that band only).  ``out``, if given, must be zero-filled
    (or hold other bands' sums); the sums are added into it."""
    N, C, H, W = x_shape
    i0, oh = _band(H, kh, stride, padding, rows)
    ow = out_size(W, kw, stride[1], padding[1])
    dx = np.zeros(x_shape, dtype=col.dtype) if out is None else out
    if not dx.flags.c_contiguous:
        raise ValueError("col2im: out must be C-contiguous")
    _col2im(np.ascontiguousarray(col), kh, kw, stride[0], stride[1], padding[0], padding[1], i0, oh, ow, dx)
    return dx
