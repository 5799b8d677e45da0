"""Reusable scratch buffers for the hot path.

Convolution needs large temporary matrices (the im2col ``col``, its gradient
``dcol``, the GEMM output ``rows``).  Allocating them afresh on every call
costs page faults and zero-filling by the OS for every pass; instead each
named buffer is kept and grown when a larger one is needed.  A buffer is
only valid until the next call that asks for the same name.
"""
import numpy as np

_buffers = {}


def get(name, shape, dtype):
    """An uninitialised array of ``shape``/``dtype`` backed by the named buffer."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = _buffers.get(name)
    if buf is None or buf.size < n:
        buf = _buffers[name] = np.empty(max(n, 1), dtype=np.uint8)
    return buf[:n].view(dtype).reshape(shape)


def clear():
    """Free every scratch buffer."""
    _buffers.clear()
