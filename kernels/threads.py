"""A batch split over threads: whole images per thread.

``over_batch(fn, n)`` runs ``fn(i, i + 1)`` for each image i of a batch of
``n >= 2``, the images handed out one at a time to whichever of the threads
(Numba's thread count, which ``te.set_num_threads`` sets together with the
BLAS's) is free -- so a thread that waits for a time slice on a busy machine
simply takes fewer images -- and returns when all are done.  While it runs,
the BLAS runs on one thread and every kernel runs its serial version: the
threads are busy with their own images.  ``fn(n0, n1)`` must write only
images [n0, n1), and do the same arithmetic for an image whatever call
holds it (the convolution goes image by image: one im2col and one matrix
product per image).  One image (``n == 1``): ``fn(0, 1)``, with the BLAS's
and the kernels' own threads -- unless its products are small (``work``
below ``BLAS_PARALLEL_MIN`` multiply-adds, e.g. the embedded 64x64 model's
layers, 5-17 M each): those run on one BLAS thread, like the kernels' size
rule (``_numba.PARALLEL_MIN``).  The embedded model's batch-1 forward took a
median 200 ms with 2 BLAS threads and 5-16 ms with one on the loaded
machine; AlexNet's layers (70-224 M) keep the BLAS's threads.

Why.  A convolution is im2col + a matrix product.  OpenBLAS splits one
product over its threads and makes them meet after every block of the inner
dimension (a conv layer's C*kh*kw: 1600 for AlexNet's conv2, ~7 meetings); a
thread waiting for a time slice on a busy machine holds the others up at
each meeting.  Measured on the shared 2-core machine (load ~9, min of 9 runs
side by side, 2 threads each): conv2's forward at batch 8 took 5.2x
PyTorch's time as one 2-thread product per image, and 0.9x split over the
batch.  A split over the batch needs one meeting, at the end -- as PyTorch's
oneDNN does, whose threads take whole images.

The same bits on any thread count.  OpenBLAS's float32 results depend (in
the last bits) on its thread count and on the number of columns of the
product; here neither changes: every image is one product of the same shape
on one BLAS thread, whichever thread takes it, or here because Numba has
one thread, or because another Python thread holds the kernels' lock
(``_PARALLEL_LOCK``, the one-parallel-region-at-a-time rule of
:mod:`._numba`: then this thread does its whole batch itself, rather than
wait).  The BLAS thread count is process-wide: it is set to 1 while any
split runs (counted, so that overlapping splits in several Python threads
restore it once, after the last), and a BLAS call from an unrelated Python
thread in that time runs on one thread too.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba

from ._numba import _PARALLEL_LOCK

BLAS_PARALLEL_MIN = 1 << 25            # multiply-adds from which one image's products use the BLAS's threads
_pool, _pool_size = None, 0             # the worker threads; only the holder of _PARALLEL_LOCK uses them
_blas = None                            # threadpoolctl's controllers of the loaded BLAS libraries
_blas_modules = -1                      # len(sys.modules) when _blas was made: an import may load another BLAS
_blas_lock = threading.Lock()
_blas_users, _blas_saved = 0, []        # splits running now; the thread counts to restore after the last


def _after_fork_in_child():
    """A forked child has none of the parent's worker threads (its pool would never
    run a task) and may inherit a held lock: it starts afresh."""
    global _pool, _pool_size, _blas_lock, _blas_users
    _pool, _pool_size = None, 0
    _blas_lock, _blas_users = threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _executor(workers):
    """The process's worker threads (made once; remade larger if more are asked for)."""
    global _pool, _pool_size
    if _pool_size < workers:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="te-batch"), workers
    return _pool


def _blas_one_thread(enter):
    """Enter (True) or leave (False) a stretch with every loaded BLAS on one thread."""
    global _blas, _blas_users, _blas_saved, _blas_modules
    with _blas_lock:
        if _blas is None or (_blas_users == 0 and len(sys.modules) != _blas_modules):
            _blas_modules = len(sys.modules)
            try:
                from threadpoolctl import ThreadpoolController
                _blas = ThreadpoolController().select(user_api="blas").lib_controllers
            except ImportError:             # a dependency; without it the BLAS keeps its threads
                _blas = []
        if enter:
            if _blas_users == 0:
                _blas_saved = [lc.num_threads for lc in _blas]
                for lc in _blas:
                    lc.set_num_threads(1)
            _blas_users += 1
        else:
            _blas_users -= 1
            if _blas_users == 0:
                for lc, t in zip(_blas, _blas_saved):
                    lc.set_num_threads(t)


@contextlib.contextmanager
def blas_threads_for(work):
    """Inside: the BLAS on one thread if ``work`` (the multiply-adds of the products
    made inside) is below ``BLAS_PARALLEL_MIN``, else on its threads as they are.

    A small product gains nothing from a second BLAS thread, and costs more than
    its own time: after a call on two threads OpenBLAS's worker keeps spinning for
    a while, on the core that Numba's threads and ``over_batch`` need next.  The
    embedded model's forward + gradient at batch 10 on 2 threads took 77-100 ms
    with its fully connected backward (5.9 M multiply-adds) on 2 BLAS threads and
    49-64 ms with it on one (4 alternating runs; on one thread throughout 63-85 ms)."""
    if work >= BLAS_PARALLEL_MIN:
        yield
        return
    _blas_one_thread(True)
    try:
        yield
    finally:
        _blas_one_thread(False)


def over_batch(fn, n, work=0):
    """fn(i, i + 1) for every image i of ``range(n)``, the images handed out one at a
    time to whichever thread is free (the calling thread and the pool's), on one BLAS
    thread; ``fn(0, n)`` alone when Numba has one thread or another thread holds the
    kernels' lock.  One image: ``fn(0, 1)``, on one BLAS thread if ``work`` (the
    multiply-adds of its products) is below ``BLAS_PARALLEL_MIN``, else on the BLAS's
    threads (module docstring)."""
    if n < 2:
        with blas_threads_for(work):
            fn(0, n)
        return
    parts = min(numba.get_num_threads(), n)
    _blas_one_thread(True)
    try:
        if parts < 2 or not _PARALLEL_LOCK.acquire(blocking=False):
            fn(0, n)
            return
        try:
            images = itertools.count()      # next(images) is atomic (one C call under the GIL)

            def take():
                i = next(images)
                while i < n:
                    fn(i, i + 1)
                    i = next(images)
            futures = [_executor(parts - 1).submit(take) for _ in range(parts - 1)]
            try:
                take()
            finally:
                wait(futures)               # all images done before the lock and the BLAS go back
        finally:
            _PARALLEL_LOCK.release()
        for f in futures:
            f.result()                      # a worker's error is raised here
    finally:
        _blas_one_thread(False)
