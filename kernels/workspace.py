"""Reusable scratch buffers for the hot path, one set per thread.

Convolution needs large temporary matrices (the im2col ``col``, its gradient
``dcol``, the GEMM output ``rows``).  Allocating them afresh on every call
costs page faults and zero-filling by the OS for every pass; instead each
named buffer is kept and grown when a larger one is needed.  A buffer is
only valid until the next call *in the same thread* that asks for the same
name.  Each thread has its own buffers (``threading.local``), so two threads
running the same model at once never write into each other's scratch space.
"""
import math
import threading

import numpy as np

_local = threading.local()


def _buffers() -> dict:
    bufs = getattr(_local, "buffers", None)
    if bufs is None:
        bufs = _local.buffers = {}
    return bufs


def get(name, shape, dtype):
    """An uninitialised array of ``shape``/``dtype`` backed by this thread's named buffer."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    bufs = _buffers()
    buf = bufs.get(name)
    if buf is None or buf.size < n:
        buf = bufs[name] = np.empty(max(n, 1), dtype=np.uint8)
    return buf[:n].view(dtype).reshape(shape)


def clear():
    """Free this thread's scratch buffers."""
    _buffers().clear()
