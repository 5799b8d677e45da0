"""Shared Numba settings for every CPU kernel.

Every kernel is compiled twice from the same Python function: a parallel
version (``prange`` loops over independent rows / planes, spread over Numba's
threads) and a serial one (``prange`` runs as ``range``).  Each call picks by
the size of its largest array: a parallel region costs a thread-pool round
trip, which on small arrays (a 64x64 network at batch 1) costs far more than
the work -- and on a busy 2-core machine, where a worker thread may have to
wait for a time slice, hundreds of times more.  With one thread (the
data-parallel training processes) the serial version always runs: there a
parallel region is all overhead.  Both versions do the same arithmetic in the
same order, so the results are bit-identical.

Threads: Numba's thread pool runs one parallel region at a time -- two
Python threads entering parallel kernels at once abort the process (the
workqueue layer's "concurrent access" error).  The rule: **one parallel
kernel at a time in the process**, guarded by ``_PARALLEL_LOCK``; a thread
that finds it taken runs the serial version instead of waiting (the same
arithmetic in the same order, so the same bits).  So any number of Python
threads may call any kernel at any time, and each gets exactly the result
it would get alone.

All kernels: on-disk cache (a second process does not recompile), no
fastmath (reproducible, exactly IEEE results), NumPy's error model (a
division by zero gives inf/nan as in NumPy instead of raising): Python's
model puts a zero check before every division, which keeps loops such as
LRN's from being vectorised (4x slower).
"""
import functools
import os
import threading
import types

import numba
import numpy as np
from numba import njit, prange  # noqa: F401

# Numba's default OpenMP thread pool spin-waits after each parallel region,
# taking the cores that the next BLAS call (OpenBLAS's own threads) needs: on
# 2 cores AlexNet's forward pass ran 3x slower than on one thread.  The
# "workqueue" pool sleeps when idle (and is safe to fork).  An explicit
# NUMBA_THREADING_LAYER still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

PARALLEL_MIN = 1 << 18          # elements of the largest array from which a kernel runs in parallel
FLAGS_TAG = "npe"               # names the compile flags below (NumPy error model) in the cache keys
_PARALLEL_LOCK = threading.Lock()   # held while a parallel kernel runs (see the module docstring)


class kernel:
    """Decorator: the function compiled serial and parallel; calls dispatch by array size."""

    def __init__(self, fn):
        # Each version is compiled from a renamed twin of fn: Numba's on-disk
        # cache is keyed by the function's qualified name and line, not by the
        # compile flags, so a flag change must come with a new name
        # (``FLAGS_TAG``) or old cache entries would still be loaded.
        def twin(suffix):
            f = types.FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_{suffix}_{FLAGS_TAG}",
                                   fn.__defaults__, fn.__closure__)
            f.__qualname__ = f"{fn.__qualname__}_{suffix}_{FLAGS_TAG}"
            return f
        self.parallel = njit(parallel=True, cache=True, nogil=True, error_model="numpy")(twin("parallel"))
        self.serial = njit(cache=True, nogil=True, error_model="numpy")(twin("serial"))
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        work = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
        if work >= PARALLEL_MIN and numba.get_num_threads() > 1 and _PARALLEL_LOCK.acquire(blocking=False):
            try:
                return self.parallel(*args)
            finally:
                _PARALLEL_LOCK.release()
        return self.serial(*args)
