"""Running the figure recipes into a gallery: one after another in this process, or side by
side in spawned worker processes (each with its own Numba threads; Ctrl-C and SIGTERM stop
them), with one progress bar; :mod:`..gallery` moves the finished files into place."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from ...core.device import set_num_threads
from .. import gallery
from ..gallery import say
from . import recipes
from .inputs import Inputs

#: rough share of the main job's time per figure (embedded model), longest first: the order in
#: which ``jobs > 1`` hands the figures to the worker processes, so that the long ones start first
COST_ORDER = ("inversion", "class models", "inversion layers", "neurons", "robust", "resnet", "sanity", "zeiler fergus",
              "methods", "grabcut", "saliency", "rules", "toy")


_BAR = re.compile(r"\d+/\d+ \[|\?it/s|it/s\]|s/it\]")


def _without_bars(text: str) -> str:
    """What a worker wrote to stderr, less its progress bars (the parent shows one bar of its own)."""
    keep = []
    for line in text.split("\n"):
        line = line.rsplit("\r", 1)[-1].replace("\x1b[A", "").rstrip()
        if line and not _BAR.search(line):
            keep.append(line)
    return "\n".join(keep)


def _make_figure(name, inputs, tmp, threads=None):
    """Make one figure into ``tmp``: (name, [Figure], the summary entries it wrote, seconds,
    what it printed to stdout).  Runs in the main process (``threads=None``: it prints as it goes) or in a
    worker process of :func:`reproduce` (its printing is returned for the parent to show)."""
    fn = dict(recipes.FIGURES)[name]
    summary = {}
    t = time.perf_counter()
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    if threads is None:
        res = fn(inputs, Path(tmp), summary)
    else:
        set_num_threads(threads)                 # a fresh worker process: its own thread settings
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                res = fn(inputs, Path(tmp), summary)
        finally:                                 # warnings and errors still reach the terminal
            rest = _without_bars(err.getvalue())
            if rest:
                sys.stderr.write(rest + "\n")
    return name, (res if isinstance(res, list) else [res]), summary, time.perf_counter() - t, out.getvalue()


def _make_all(todo, inputs, tmp, jobs, threads, log):
    """Yield _make_figure's results for the names in ``todo``: one after another in this
    process, or with ``jobs`` > 1 in that many worker processes (spawned, so each has its own
    Numba threads; the figures are independent and seeded, so the pictures are the same)."""
    from tqdm.auto import tqdm
    bar = tqdm(total=len(todo), desc="figures", unit="fig", dynamic_ncols=True)
    try:
        if jobs <= 1 or len(todo) <= 1:
            for name in todo:
                yield _make_figure(name, inputs, tmp)
                bar.update()
            return
        import concurrent.futures as cf
        import multiprocessing as mp
        order = sorted(todo, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER))
        log(f"making {len(todo)} figures in {min(jobs, len(todo))} worker processes")
        pool = cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn"))
        futures = [pool.submit(_make_figure, n, inputs, str(tmp), threads) for n in order]
        with pool:
            try:
                for f in cf.as_completed(futures):
                    yield f.result()
                    bar.update()
            except BaseException:       # Ctrl-C, SIGTERM (main turns it into SystemExit), a failed figure
                for f in futures:
                    f.cancel()
                # figures still running would hold the pool's shutdown for minutes: stop them now
                # (ProcessPoolExecutor has no public way before Python 3.14's terminate_workers)
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                raise
    finally:
        bar.close()


def reproduce(out, inputs: Inputs, title="Explaining CNNs: early methods", info="", only=None, log=None,
              jobs: int = 1, threads: int | None = 1):
    """Make every figure into ``out``: drawn in a private folder, then moved in file by file
    (index.html last), replacing only the files this run wrote.  ``jobs`` > 1 makes the
    figures in that many worker processes (each with ``threads`` Numba/BLAS threads); the
    gallery keeps the order of FIGURES.  Returns (figures, summary dict, seconds)."""
    log = log or say
    todo = [n for n, _ in recipes.FIGURES if only is None or n in only]
    return gallery.build(out, todo, lambda tmp: _make_all(todo, inputs, tmp, jobs, threads, log), title, info,
                         log, {"jobs": jobs})
