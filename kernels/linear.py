"""Fully connected layers for a few rows: the weights streamed once for all rows.

A fully connected layer with weight W (O, K) is two products, forward and
backward to the input:

    y[n, o]  = sum_k x[n, k] * W[o, k]   (+ b[o])      y  = x @ W.T
    dx[n, k] = sum_o g[n, o] * W[o, k]                  dx = g @ W

For a batch of 1-32 rows both are limited by reading W (fc6: 151 MB), not by
arithmetic.  BLAS's GEMM copies ("packs") all of W into its own blocked layout
on every call, which for a few rows costs more than the product.  Here a
product is the loop ``out[n, :] += a[n, j] * M[j, :]`` over the rows j of a
matrix M, with the inner loop running along a row of M:

    forward          a = x, M = W.T = Wt (K, O)   -- the forward layout
    backward         a = g, M = W         (O, K)   -- needs W's rows contiguous

A frozen ``nn.Linear`` holds its weight in the forward layout only: the array
is Wt, C-contiguous, and ``weight.data`` is its view Wt.T (the values of W,
column-major; ``np.ascontiguousarray(w.T)`` is Wt itself, no copy).  Its
backward to the input then has Wt only, whose rows are W's columns; that
product, dx = g @ Wt.T, goes to BLAS (``backward``): a product over W's
columns cannot stream rows the way this loop does, and a gather of the
columns costs several times the read (scripts/bench_cpu.py --fc prints both
products against BLAS).  A weight that is C-contiguous (trainable layers,
functional ``te.linear``, the bfloat16 option's own copy) still gets this
loop for the backward.

Each output is a sum over j in increasing order, one multiply and one add per
term, exactly as the naive triple loop (``naive``) computes it -- no reordered
sums, so no fastmath, and the result does not depend on the block split or
the thread count.  The inner loop is vectorised across outputs; eight rows of
M are combined per pass over an output block (one load and store of each
partial sum per eight terms); every row of M is read once for all rows of the
batch.  Threads take column blocks of M (``_block``).

Reduced-precision storage (optional, never the default): M may be bfloat16
values stored as uint16 (``to_bfloat16``), the upper half of a float32; each
row piece is widened to float32 (a shift, exact) before the same loop, so the
arithmetic stays float32 and only the weights are rounded (to 8 significant
bits).  Half the bytes to read.  (float16 would keep 3 more bits, but Numba
has no float16 on the CPU.)

Terms whose a[n, j] is zero for every row n are skipped (``active``): after a
ReLU most of them are (half or more), and a batch-1 product then reads only
the rows of M it needs.  Skipping them changes no bit of the result for
finite M: a partial sum starts at +0, can never become -0, and s + (+-0) == s.
"""
import numba
import numpy as np
from numba import types
from numba.extending import overload

from . import threads as _threads
from ._numba import kernel, njit, prange

MIN_BLOCK = 256         # outputs per thread block at least (long contiguous runs of M for the prefetcher)


def _row(m, j, c0, c1, buf):
    """m[j, c0:c1] as floats: the row piece itself, or (bfloat16 in uint16) widened into ``buf``."""


@overload(_row, inline="always")
def _row_impl(m, j, c0, c1, buf):
    if m.dtype == types.uint16:
        def widen(m, j, c0, c1, buf):
            src = m[j, c0:c1]
            bits = buf.view(np.uint32)
            for c in range(c1 - c0):
                bits[c] = np.uint32(src[c]) << 16
            return buf[:c1 - c0]
        return widen
    return lambda m, j, c0, c1, buf: m[j, c0:c1]


@kernel
def _rows_times(a, m, rows, block, out):
    """out[n, c] = sum over j in ``rows`` (in order) of a[n, j] * m[j, c]."""
    N = a.shape[0]
    C = m.shape[1]
    J = rows.size
    for blk in prange((C + block - 1) // block):
        c0 = blk * block
        c1 = min(C, c0 + block)
        acc = np.zeros((N, c1 - c0), out.dtype)
        buf = np.empty((8, c1 - c0), out.dtype)     # widened rows (reduced-precision M only)
        i = 0
        while i + 8 <= J:
            j0, j1, j2, j3 = rows[i], rows[i + 1], rows[i + 2], rows[i + 3]
            j4, j5, j6, j7 = rows[i + 4], rows[i + 5], rows[i + 6], rows[i + 7]
            m0, m1 = _row(m, j0, c0, c1, buf[0]), _row(m, j1, c0, c1, buf[1])
            m2, m3 = _row(m, j2, c0, c1, buf[2]), _row(m, j3, c0, c1, buf[3])
            m4, m5 = _row(m, j4, c0, c1, buf[4]), _row(m, j5, c0, c1, buf[5])
            m6, m7 = _row(m, j6, c0, c1, buf[6]), _row(m, j7, c0, c1, buf[7])
            for n in range(N):
                a0, a1, a2, a3 = a[n, j0], a[n, j1], a[n, j2], a[n, j3]
                a4, a5, a6, a7 = a[n, j4], a[n, j5], a[n, j6], a[n, j7]
                s = acc[n]
                for c in range(c1 - c0):
                    v = s[c]
                    v += a0 * m0[c]
                    v += a1 * m1[c]
                    v += a2 * m2[c]
                    v += a3 * m3[c]
                    v += a4 * m4[c]
                    v += a5 * m5[c]
                    v += a6 * m6[c]
                    v += a7 * m7[c]
                    s[c] = v
            i += 8
        while i < J:
            j = rows[i]
            mj = _row(m, j, c0, c1, buf[0])
            for n in range(N):
                aj = a[n, j]
                s = acc[n]
                for c in range(c1 - c0):
                    s[c] += aj * mj[c]
            i += 1
        out[:, c0:c1] = acc


@njit(cache=True)
def naive(a, m, out):
    """The reference: out[n, c] = sum_j a[n, j] * m[j, c], j in increasing order
    (every term, one multiply and one add each, as the fast kernel)."""
    for n in range(a.shape[0]):
        for c in range(m.shape[1]):
            out[n, c] = 0
            for j in range(m.shape[0]):
                out[n, c] += a[n, j] * m[j, c]
    return out


def _block(C):
    """Column block of M per parallel iteration: the columns split evenly over
    the threads, in whole 16-float runs, at least ``MIN_BLOCK`` wide."""
    per = -(-C // max(1, numba.get_num_threads()))
    return max(MIN_BLOCK, -(-per // 16) * 16)


def active(a):
    """Indices j (int64, increasing) with a[n, j] != 0 for some row n."""
    return np.flatnonzero((a != 0).any(axis=0)) if a.shape[0] > 1 else np.flatnonzero(a[0])


def rows_times(a, m, out=None):
    """a (N, J) @ m (J, C) -> (N, C), each sum in the naive order (zero terms skipped).
    m float (a's dtype) or bfloat16 in uint16 (then a must be float32)."""
    a, m = np.ascontiguousarray(a), np.ascontiguousarray(m)
    if m.dtype == np.uint16 and a.dtype != np.float32:
        raise TypeError(f"bfloat16 weights need float32 inputs, got {a.dtype}")
    if out is None:
        out = np.empty((a.shape[0], m.shape[1]), dtype=a.dtype if m.dtype == np.uint16 else np.result_type(a, m))
    _rows_times(a, m, active(a), _block(m.shape[1]), out)
    return out


@kernel
def _transpose(src, dst):
    """dst[c, r] = src[r, c], in 16 x 16 tiles (NumPy's strided copy of a 151 MB
    transpose is ~4x slower); threads take column tiles (rows of dst)."""
    R, C = src.shape
    for t in prange((C + 15) // 16):
        c0 = t * 16
        c1 = min(C, c0 + 16)
        for r0 in range(0, R, 16):
            r1 = min(R, r0 + 16)
            for c in range(c0, c1):
                d = dst[c]
                for r in range(r0, r1):
                    d[r] = src[r, c]


def to_bfloat16(w):
    """float32 -> bfloat16 bits (uint16), rounded to nearest, ties to even (finite w)."""
    u = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)


def from_bfloat16(h):
    """bfloat16 bits (uint16) -> float32, exact."""
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


def in_forward_layout(w) -> bool:
    """Whether the 2-D weight W (O, K) is held as the view Wt.T of a C-contiguous Wt (K, O)."""
    return w.ndim == 2 and w.T.flags.c_contiguous


def pack(w, dtype=None, out=None):
    """The forward layout of a weight W (O, K): W.T (K, O), contiguous, in ``dtype``
    (default W's; "bfloat16" gives bfloat16 bits in uint16).  ``out``: a (K, O)
    array (or a column slice of one) to write into instead of a new one.  A W
    already in the forward layout is copied as it lies, without a transpose."""
    if dtype == "bfloat16":
        w = to_bfloat16(w.T).T if in_forward_layout(w) else to_bfloat16(w)
        dtype = None
    dtype = dtype or (out.dtype if out is not None else w.dtype)
    if out is None and in_forward_layout(w):
        return np.array(w.T, dtype=dtype, order="C")
    w = np.ascontiguousarray(w)
    if out is None:
        out = np.empty(w.shape[::-1], dtype=dtype)
    _transpose(w if w.dtype == out.dtype else w.astype(out.dtype), out)
    return out


def forward(x, wt, b=None):
    """y = x @ W.T + b from the packed weight ``wt`` = pack(W) (K, O); x (N, K) -> (N, O)."""
    y = rows_times(x, wt)
    if b is not None:
        y += b
    return y


BLAS_ROWS = 8       # rows per BLAS product in ``blas_rows``


def blas_rows(g, w):
    """g @ w as BLAS products of exactly BLAS_ROWS rows each (the last block padded with
    zero rows).  BLAS picks its kernel -- and with it the order of its sums -- by the
    product's shape (gemv for one row, small-matrix kernels for a few), so a row's result
    would depend on how many rows come with it; one shape for every block makes an
    image's dx the same bit for bit alone and in any batch (what batched explainers
    promise, tests/test_batching.py)."""
    n = g.shape[0]
    pad = -n % BLAS_ROWS
    if pad:
        g = np.concatenate([g, np.zeros((pad, g.shape[1]), g.dtype)])
    out = np.empty((g.shape[0], w.shape[1]), np.result_type(g, w))
    # A weight in the forward layout is the view Wt.T of a contiguous Wt: the block is
    # computed as its transpose, Wt @ g_block.T -- the same products, summed in the same
    # order by the same BLAS kernel (the same bits on the machines tried), but with the
    # large matrix as BLAS's contiguous left operand: VGG16's fc6 backward (25088 x 4096)
    # at batch 1 and 8 took 1.1-1.9x less time than g_block @ Wt.T (loaded 2-core machine).
    wt = w.T if w.T.flags.c_contiguous else None
    for s in range(0, g.shape[0], BLAS_ROWS):
        if wt is not None:
            out[s:s + BLAS_ROWS] = (wt @ g[s:s + BLAS_ROWS].T).T
        else:
            out[s:s + BLAS_ROWS] = g[s:s + BLAS_ROWS] @ w
    return out[:n]


def backward(g, w):
    """dx = g @ W; g (N, O) -> (N, K).  W (O, K) as it is (or its bfloat16 bits):
    C-contiguous, the streaming loop over its rows; held in the forward layout
    (``in_forward_layout``: the view Wt.T of the contiguous Wt), BLAS -- there
    W's rows are Wt's columns (see the module docstring)."""
    if w.dtype != np.uint16 and in_forward_layout(w) and not w.flags.c_contiguous:
        with _threads.blas_threads_for(BLAS_ROWS * w.size):    # a small product on one BLAS thread
            return blas_rows(g, w)
    return rows_times(g, w)
