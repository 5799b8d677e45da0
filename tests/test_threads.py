"""Thread safety: several Python threads using one model at once get exactly
the results they would get alone (engine state per thread, scratch buffers
per thread, one parallel Numba kernel at a time -- see kernels/_numba.py).

The work runs in a subprocess because Numba's thread count must be fixed
before it is imported (NUMBA_NUM_THREADS), and because the failure this
guards against (two threads in Numba's thread pool) aborts the process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import _need as need
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each job: (rule or "no_grad", image index, class).  Run once sequentially,
# then all at once from several threads, several rounds; every result must be
# bit-identical to the sequential one.
SCRIPT = textwrap.dedent(r"""
    import sys, threading
    import numpy as np
    import numba
    import tinygrad_explain as te
    from tinygrad_explain.kernels import _numba
    assert numba.get_num_threads() == int(sys.argv[1]), numba.get_num_threads()
    _numba.PARALLEL_MIN = 1                 # every kernel is eligible to run in parallel: most contention
    rng = np.random.default_rng(0)
    te.manual_seed(0)
    model = te.models.scene_alexnet(num_classes=10)     # random weights: plenty of negative pre-activations
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)

    def job(kind, i, c):
        xb = x[i:i + 2]
        if kind == "no_grad":
            with te.no_grad():
                return model(xb).numpy().copy()
        xt = te.Tensor(xb, requires_grad=True)
        with te.relu_backward(kind):
            model(xt)[:, c].sum().backward()
        return xt.grad.copy()

    jobs = [(k, i, c) for i, (k, c) in enumerate([("backprop", 1), ("deconvnet", 2), ("guided", 3),
                                                 ("no_grad", 0), ("guided", 5), ("backprop", 7)])]
    jobs = [(k, i % 3, c) for k, i, c in jobs]
    want = [job(*j) for j in jobs]
    # the rules must differ here, or the test could not see one leaking into another
    assert not np.array_equal(want[0], want[2]) and not np.array_equal(want[0], want[1])
    bad = []
    for rnd in range(int(sys.argv[2])):
        got = [None] * len(jobs)
        barrier = threading.Barrier(len(jobs))
        def run(n):
            barrier.wait()
            for _ in range(2):
                got[n] = job(*jobs[n])
        ts = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
        for t in ts: t.start()
        for t in ts: t.join()
        bad += [(rnd, jobs[n]) for n in range(len(jobs)) if not np.array_equal(got[n], want[n])]
    print("MISMATCH", bad) if bad else print("OK")
""")


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_bit_identical_to_sequential(threads, tmp_path):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    script = tmp_path / "threads.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(threads), "3"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"subprocess died (rc {r.returncode}):\n{r.stderr[-3000:]}"
    assert r.stdout.strip().endswith("OK"), r.stdout[-2000:]


def test_engine_switches_are_per_thread():
    """no_grad / relu_backward in one thread do not leak into another (direct check)."""
    import threading

    import tinygrad_explain as te
    from tinygrad_explain.core import engine
    inside, release, seen = threading.Event(), threading.Event(), {}

    def other():
        with te.no_grad(), te.relu_backward("guided"):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(10)
    seen["grad"], seen["rule"] = engine.is_grad_enabled(), engine.current_relu_rule()
    release.set()
    t.join()
    assert seen == {"grad": True, "rule": "backprop"}


def test_workspace_is_per_thread():
    import threading

    import numpy as np

    from tinygrad_explain.kernels import workspace
    mine = workspace.get("t", (4,), np.float32)
    mine[:] = 1
    def other():
        workspace.get("t", (4,), np.float32)[:] = 2
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert (mine == 1).all()


# --------------------------------------------------------------------------
# kernels.threads.over_batch: a batch split over the threads
# --------------------------------------------------------------------------
def _all_threads():
    """Numba with all its threads (an earlier test in the process -- the CLI's main, a
    one-thread fixture -- may have left it at one); skip where it has a single one."""
    numba = need.module("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return numba


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_over_batch_gives_each_image_once(n):
    """Each image in exactly one call (one image per call, or the one image); inside,
    the kernels' lock is held (their serial versions run) and the BLAS runs on one
    thread; after, both are as before."""
    import threading

    from threadpoolctl import threadpool_info

    from tinygrad_explain.kernels import _numba, threads
    numba = _all_threads()
    blas = lambda: [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]   # noqa: E731
    before, seen, mutex = blas(), [], threading.Lock()

    def fn(a, z):
        with mutex:
            seen.append((a, z, threading.get_ident(), _numba._PARALLEL_LOCK.locked(), blas()))
    threads.over_batch(fn, n)
    assert sorted(s[:2] for s in seen) == [(i, i + 1) for i in range(n)]
    assert len({s[2] for s in seen}) <= min(numba.get_num_threads(), n)
    if n > 1:
        assert all(locked and set(b) <= {1} for *_, locked, b in seen)
    assert not _numba._PARALLEL_LOCK.locked() and blas() == before


def test_over_batch_shares_the_images_between_threads():
    """A thread that is held up takes fewer images: the others carry on."""
    import threading
    import time

    from tinygrad_explain.kernels import threads
    _all_threads()
    main, seen = threading.get_ident(), []
    took, done = threading.Event(), threading.Event()

    def fn(a, z):
        seen.append((a, threading.get_ident()))
        if len(seen) == 6:
            done.set()
        if threading.get_ident() == main:       # the calling thread takes one image, then is held up
            took.set()                          # until the others have taken every other one (events,
            done.wait(timeout=60)               # not a fixed sleep: no race on a busy machine; if they
        else:                                   # never do, the wait ends and the checks below fail)
            took.wait(timeout=60)
    t0 = time.perf_counter()
    threads.over_batch(fn, 6)
    assert time.perf_counter() - t0 < 60
    assert sorted(a for a, _ in seen) == list(range(6))
    assert sum(t == main for _, t in seen) == 1     # the others took the remaining five


def test_over_batch_raises_an_image_error_and_nests_inline():
    from tinygrad_explain.kernels import _numba, threads
    _all_threads()
    inner = []

    def fn(a, z):
        threads.over_batch(lambda b, y: inner.append((b, y)), 3)   # a split inside a split: whole, here
        if a > 0:
            raise ValueError(f"image {a}")
    with pytest.raises(ValueError, match="image"):
        threads.over_batch(fn, 4)
    assert len(inner) >= 2 and set(inner) == {(0, 3)}
    assert not _numba._PARALLEL_LOCK.locked()


def test_over_batch_in_a_forked_child():
    """A child forked after the worker threads exist splits with threads of its own
    (the parent's pool has no threads there: without the at-fork reset it would hang)."""
    import multiprocessing as mp

    from tinygrad_explain.kernels import threads
    _all_threads()
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork here")
    threads.over_batch(lambda a, z: None, 4)            # the parent's pool exists now
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        seen, want = pool.apply_async(_split_in_child).get(timeout=60)
    assert seen == want


def _split_in_child():
    import threading

    import numba

    from tinygrad_explain.kernels import threads
    seen, mutex = [], threading.Lock()

    def fn(a, z):
        with mutex:
            seen.append((a, z))
    threads.over_batch(fn, 4)
    return sorted(seen), [(i, i + 1) for i in range(4)] if numba.get_num_threads() > 1 else [(0, 4)]


def test_over_batch_one_image_small_products_on_one_blas_thread():
    """One image: the BLAS keeps its threads for large products, one thread for small ones."""
    from threadpoolctl import threadpool_info

    from tinygrad_explain.kernels import threads
    blas = lambda: {d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}   # noqa: E731
    before, seen = blas(), {}
    threads.over_batch(lambda a, z: seen.setdefault("small", blas()), 1, work=1000)
    threads.over_batch(lambda a, z: seen.setdefault("large", blas()), 1, work=threads.BLAS_PARALLEL_MIN)
    assert seen == {"small": {1}, "large": before} and blas() == before


def test_fully_connected_small_products_on_one_blas_thread(monkeypatch, request):
    """A fully connected layer's BLAS products -- the backward to the input on a frozen
    weight (held as Wt), the forward and backward above the skinny kernel's rows, the weight
    gradient -- run on one BLAS thread when small (a second one only spins on the core the
    next kernels need: kernels/threads.py) and on the BLAS's threads when large; the values
    are those of the same products made directly."""
    import contextlib

    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    import tinygrad_explain as te
    from tinygrad_explain.core import nn
    from tinygrad_explain.kernels import threads
    blas = lambda: {d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}   # noqa: E731
    limits = threadpool_limits(2, user_api="blas")          # an earlier test may have left one thread
    request.addfinalizer(limits.restore_original_limits)
    before, seen = blas(), []
    assert before == {2}
    inner = threads.blas_threads_for

    @contextlib.contextmanager
    def recording(work):
        with inner(work):
            seen.append((work, blas()))
            yield
    monkeypatch.setattr(threads, "blas_threads_for", recording)
    rng = np.random.default_rng(0)
    layer = nn.Linear(64, 32)                               # frozen: held in the forward layout
    x = rng.standard_normal((4, 64)).astype(np.float32)
    g = rng.standard_normal((4, 32)).astype(np.float32)
    t = te.Tensor(x, requires_grad=True)
    layer(t).backward(g)
    np.testing.assert_allclose(t.grad, g @ layer.weight.data, rtol=1e-6)
    # the backward to the input, on one thread: BLAS products of kernels.linear.BLAS_ROWS rows each
    # (4 rows padded to one block of 8; the same shape in any batch, so the same bits)
    from tinygrad_explain.kernels.linear import BLAS_ROWS
    assert seen == [(BLAS_ROWS * 64 * 32, {1})]
    seen.clear()
    big = nn.Linear(1024, 1024)                             # trainable, 40 rows: BLAS for all three products
    big.weight.requires_grad = True
    big.arrange_weight()
    xb = rng.standard_normal((40, 1024)).astype(np.float32)
    tb = te.Tensor(xb, requires_grad=True)
    y = big(tb)
    y.backward(np.ones(y.shape, np.float32))
    work = 40 * 1024 * 1024
    assert work >= threads.BLAS_PARALLEL_MIN
    assert seen == [(work, before)] * 3 and blas() == before
    np.testing.assert_allclose(big.weight.grad, np.ones((1024, 40), np.float32) @ xb, rtol=1e-5)
