"""Moving between the GEMM's row layout and NCHW, with the bias folded in.

    rows_to_nchw:  y[n, o, l] = rows[o, n*L + l] + b[o]         (forward: bias add)
    nchw_to_rows:  rows[o, n*L + l] = dy[n, o, l],
                   db[o] = sum over n, l of dy[n, o, l]          (backward: bias grad)
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
def _nchw_to_rows(dy, rows, db, want_db):
    N, O, L = dy.shape
    for o in prange(O):
        s = 0.0
        for n in range(N):
            for l in range(L):
                v = dy[n, o, l]
                rows[o, n * L + l] = v
                s += v
        if want_db:
            db[o] = s


def rows_to_nchw(rows, bias, n):
    """rows (O, N*L), bias (O,) or None -> (N, O, L)."""
    O, NL = rows.shape
    out = np.empty((n, O, NL // n), dtype=rows.dtype)
    b = bias if bias is not None else np.zeros(O, dtype=rows.dtype)
    _rows_to_nchw(rows, b.astype(rows.dtype, copy=False), out)
    return out


def nchw_to_rows(dy, want_db):
    """dy (N, O, L) -> rows (O, N*L) and db (O,) (or None)."""
    N, O, L = dy.shape
    rows = np.empty((O, N * L), dtype=dy.dtype)
    db = np.empty(O, dtype=np.float64)
    _nchw_to_rows(np.ascontiguousarray(dy), rows, db, want_db)
    return rows, (db.astype(dy.dtype) if want_db else None)
