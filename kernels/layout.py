"""Moving between the GEMM's row layout and NCHW, with the bias folded in.

    rows_to_nchw:  y[n, o, l] = rows[o, n*L + l] + b[o]      (forward: bias add)
    nchw_to_rows:  rows[o, n*L + l] = dy[n, o, l]             (backward)
    bias_grad:     db[o] = sum over n, l of dy[n, o, l]        (backward: bias reduction)

For a single image (N = 1) the two layouts coincide: ``rows_to_nchw`` then
adds the bias in place and ``nchw_to_rows`` is a free reshape.
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _rows_to_nchw(rows, b, out):
    N, O, L = out.shape
    for o in prange(O):
        bo = b[o]
        for n in range(N):
            for l in range(L):
                out[n, o, l] = rows[o, n * L + l] + bo


@kernel
def _nchw_to_rows(dy, rows):
    N, O, L = dy.shape
    for o in prange(O):
        for n in range(N):
            for l in range(L):
                rows[o, n * L + l] = dy[n, o, l]


def rows_to_nchw(rows, bias, out):
    """rows (O, N*L) + bias (O,) -> out (N, O, L); ``out`` may be ``rows`` itself when N = 1."""
    O = rows.shape[0]
    b = bias.astype(rows.dtype, copy=False) if bias is not None else np.zeros(O, dtype=rows.dtype)
    _rows_to_nchw(rows, b, out)
    return out


def nchw_to_rows(dy, out=None):
    """dy (N, O, L) -> rows (O, N*L) (a view when N = 1)."""
    N, O, L = dy.shape
    if N == 1:
        return dy.reshape(O, L)
    if out is None:
        out = np.empty((O, N * L), dtype=dy.dtype)
    _nchw_to_rows(dy, out)
    return out


def bias_grad(dy):
    """dy (N, O, L) -> db (O,) = sum over n and l (NumPy's pairwise sum)."""
    return dy.sum(axis=(0, 2))
