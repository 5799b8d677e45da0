"""Data-parallel training on one machine: :class:`DataParallel` splits every
batch between this process and helper processes (spawned, shared-memory
parameters and gradients), and :func:`reuse_freed_memory` keeps glibc from
returning the large activation blocks to the OS between steps.
"""
from __future__ import annotations

import numpy as np

from ..core import engine
from ..core.device import set_num_threads
from .train import batch_gradients, predict


def reuse_freed_memory():
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse rather
    than hand them back to the OS.

    A training step allocates and frees the same large activations every time.
    By default glibc serves each block over 128 kB with a fresh ``mmap`` and
    unmaps it on free, so every step pays a page fault and the kernel's
    zero-filling for every page it touches (the LRN forward at batch 64 ran 4x
    faster without that).  A no-op where the C library is not glibc."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def _worker_main(conn, model, threads, shared, k):
    """A data-parallel helper process (number ``k``).  Messages: ``("grads",
    seed, images, labels, smoothing, attack)`` -> ``(loss, correct)``, with the
    parameters read from row 0 of the shared buffer and the gradients written
    to row ``k``; ``("predict", images, batch)`` -> their class scores, with
    the parameters of row 0 (:meth:`DataParallel.predict`); ``("call", fn,
    list of argument tuples)`` -> the list of ``fn(*args)``
    (:meth:`DataParallel.map`); ``("model", fn, args)`` -> ``fn(model,
    *args)`` (:meth:`DataParallel.apply`); ``None`` ends it."""
    set_num_threads(threads)
    reuse_freed_memory()
    params = model.parameters()
    flat = np.frombuffer(shared, dtype=np.float32).reshape(-1, sum(p.data.size for p in params))
    model.requires_grad_(True).train()
    while True:
        msg = conn.recv()
        if msg is None:
            break
        if msg[0] == "call":
            _, fn, arglist = msg
            conn.send([fn(*a) for a in arglist])
            continue
        if msg[0] == "model":
            _, fn, args = msg
            conn.send(fn(model, *args))
            continue
        if msg[0] == "predict":
            _, xb, batch = msg
            _unflatten_into(flat[0], params)
            conn.send(predict(model, xb, batch))
            continue
        _, seed, xb, yb, smoothing, attack = msg
        _unflatten_into(flat[0], params)
        engine.manual_seed(seed)
        loss, correct = batch_gradients(model, xb, yb, smoothing, attack)
        _flatten([p.grad for p in params], flat[k])
        conn.send((loss, correct))
    conn.close()


def _flatten(arrays, out):
    """The arrays, as float32, one after the other in the vector ``out``."""
    o = 0
    for a in arrays:
        out[o:o + a.size] = np.asarray(a).reshape(-1)
        o += a.size
    return out


def _unflatten_into(flat, params):
    """Inverse of :func:`_flatten`: the vector's pieces into each parameter's ``.data``, in place."""
    o = 0
    for p in params:
        n = p.data.size
        p.data[...] = flat[o:o + n].reshape(p.data.shape)
        p.mark_changed()
        o += n


def add_arguments(ap, workers: int = 2) -> None:
    """The training scripts' shared options: ``--workers`` (data-parallel processes of
    :class:`DataParallel`), ``--threads`` (per process) and ``--no-progress``."""
    ap.add_argument("--workers", type=int, default=workers, help="data-parallel processes (parallel.DataParallel)")
    ap.add_argument("--threads", type=int, default=1, help="threads per process")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")


class DataParallel:
    """Split every batch between this process and ``workers - 1`` helper
    processes (spawned, each with its own copy of the model and ``threads``
    threads), average the gradients, step in this process.

    On a shared 2-core machine two single-threaded processes use both cores
    without the collapse of oversubscribed parallel kernels.  Dropout masks
    come from a generator seeded by (seed, step, part), so a run is exactly
    reproducible and resumable whatever the load.  The helpers are spawned,
    not forked (OpenMP does not survive a fork).  Use as a context manager;
    ``workers=1`` runs everything in-process.
    """

    def __init__(self, model, workers=2, threads=1, seed=0):
        import multiprocessing as mp
        self.model, self.workers, self.seed = model, int(workers), int(seed)
        self.conns, self.procs = [], []
        ctx = mp.get_context("spawn")
        # Parameters and gradients travel through shared memory, not the pipe:
        # row 0 holds the parameters (written here before every step), row k
        # helper k's gradient.  The pipe carries only the batch and two numbers.
        n = sum(p.data.size for p in model.parameters())
        shared = ctx.RawArray("f", n * self.workers) if self.workers > 1 else None
        self.flat = np.frombuffer(shared, dtype=np.float32).reshape(self.workers, n) if shared else None
        for k in range(1, self.workers):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(b, model, threads, shared, k), daemon=True)
            p.start()
            b.close()
            self.conns.append(a)
            self.procs.append(p)
        set_num_threads(threads)
        reuse_freed_memory()

    def _parts(self, n):
        """``n`` items as one contiguous slice per process (this one's first)."""
        cuts = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), self.workers)])
        return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]

    def grads(self, step, xb, yb, smoothing=0.0, attack=None):
        """Gradients of the mean loss over the whole batch into ``.grad``;
        returns (mean loss, #correct).  ``attack``: see :func:`batch_gradients`
        (each process attacks its part, its random start drawn from the
        generator seeded by (seed, step, part)).  Each part's gradient is weighted by
        its share of the batch and added into this process's ``.grad``
        arrays in place (``g0*w0 + g1*w1 + ...``, in that order)."""
        parts = self._parts(len(yb))
        params = self.model.parameters()
        if self.conns:
            _flatten([p.data for p in params], self.flat[0])
        for k, conn in enumerate(self.conns, start=1):
            conn.send(("grads", [self.seed, step, k], xb[parts[k]], yb[parts[k]], smoothing, attack))
        engine.manual_seed([self.seed, step, 0])
        loss, correct = batch_gradients(self.model, xb[parts[0]], yb[parts[0]], smoothing, attack)
        if not self.conns:
            return loss, correct
        n = len(yb)
        w0 = len(yb[parts[0]]) / n
        loss *= w0
        for k, conn in enumerate(self.conns, start=1):
            l, c = conn.recv()
            w = len(yb[parts[k]]) / n
            self.flat[k] *= np.float32(w)          # the helper rewrites its row next step
            loss += l * w
            correct += c
        o = 0
        for p in params:
            g = p.grad.astype(np.float32, copy=False)
            g *= np.float32(w0)
            for k in range(1, self.workers):
                g += self.flat[k, o:o + g.size].reshape(g.shape)
            p.grad = g
            o += g.size
        return loss, correct

    def predict(self, images_uint8, batch=256):
        """:func:`predict` with this process's current parameters, the images
        split into one contiguous part per process (this one takes the first)."""
        if not self.conns:
            return predict(self.model, images_uint8, batch)
        _flatten([p.data for p in self.model.parameters()], self.flat[0])
        parts = self._parts(len(images_uint8))
        for k, conn in enumerate(self.conns, start=1):
            conn.send(("predict", images_uint8[parts[k]], batch))
        out = [predict(self.model, images_uint8[parts[0]], batch)]
        out += [conn.recv() for conn in self.conns]
        return np.concatenate(out)

    def map(self, fn, arglist):
        """``[fn(*args) for args in arglist]``, the list split into one
        contiguous part per process and the parts computed side by side (this
        process takes the first).  ``fn`` must be a module-level function
        (it is pickled by name).  Used to render each epoch's scenes on all
        cores."""
        arglist = list(arglist)
        parts = self._parts(len(arglist))
        for k, conn in enumerate(self.conns, start=1):
            conn.send(("call", fn, arglist[parts[k]]))
        out = [fn(*a) for a in arglist[parts[0]]]
        for conn in self.conns:
            out += conn.recv()
        return out

    def apply(self, fn, *args):
        """``fn(model, *args)`` on the model of every process (this one's
        first), e.g. :func:`set_dropout` between epochs; returns this
        process's result."""
        for conn in self.conns:
            conn.send(("model", fn, args))
        out = fn(self.model, *args)
        for conn in self.conns:
            conn.recv()
        return out

    def close(self):
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
