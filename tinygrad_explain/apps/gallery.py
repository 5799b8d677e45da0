"""The gallery: a folder of figures (PNG) with an ``index.html`` that shows them with
their captions, written so that an interrupted run leaves nothing half done.

The figures themselves (what is drawn, from which model and images) are recipes in
:mod:`.figures`, which also runs them; this module collects what they drew and handles
the folder:

    prepare_out   check the output folder and make the private work folder inside it
    build         collect the figures made in the work folder (in any order: they may
                  come from worker processes), write summary.json and index.html in the
                  gallery's order, then move every file into the output folder (``finish``)
    finish        the move: each file replaces only its namesake, index.html last
    write_index   the HTML page

Everything is drawn into a private temporary folder (inside the output folder,
or beside it when it does not exist yet); only when every figure is done are the
files moved into the output folder (``index.html`` last), each replacing just its
namesake.  So an interrupted run leaves the old gallery as it was, and nothing
else in the folder -- notes, other figures, figures left out by ``--only``,
subfolders -- is ever removed (``--out .`` is safe).
"""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.safe_io import write_text


def say(text: object) -> None:
    """Print a line of progress above the progress bars (tqdm.write keeps the bars and the text apart)."""
    from tqdm.auto import tqdm
    tqdm.write(str(text))


@dataclass
class Figure:
    """One picture of the gallery: its anchor ``name``, its ``file`` (a PNG in the folder),
    its ``caption`` (HTML), the ``seconds`` it took and HTML shown after the caption."""
    name: str
    file: str
    caption: str
    seconds: float = 0.0
    extra_html: str = ""


#: what making one figure gives: (its name, its Figures (PNGs in the work folder), the entries it
#: adds to summary.json, the seconds it took, what it printed that is still to be shown)
Made = tuple[str, list[Figure], dict, float, str]


def prepare_out(out: str | os.PathLike) -> Path:
    """Check ``out`` and make the private folder the figures are drawn into.

    ``out`` may be missing (it is created), empty, or hold anything else
    (``--out .``): only the files this run writes are replaced there, when
    the run is complete.  The work folder lies inside ``out`` when it exists
    (same file system, so each file is moved atomically), else beside it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} exists and is not a folder")
    where = out if out.is_dir() else out.resolve().parent
    try:
        if not out.exists():
            where.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name or 'figures'}.partial-", dir=where))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)                # mkdtemp's 0700 would hide a new gallery from others
    except OSError as e:
        raise PermissionError(f"cannot write to the output folder {out} ({e.strerror or e})") from None
    return tmp


def finish(tmp: Path, out: str | os.PathLike, written: Sequence[str]) -> None:
    """Move the files of this run (``written``, index.html last) from ``tmp`` into ``out``.

    A missing ``out`` is the work folder renamed.  In an existing folder each
    file replaces only its namesake; every other file or folder there is kept."""
    out = Path(out)
    if not out.exists():
        os.replace(tmp, out)
        return
    for name in written:
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def write_index(out: Path, figures: Sequence[Figure], title: str, info: str) -> None:
    """``out``/index.html: the ``title``, the ``info`` line (HTML) and every figure with its caption."""
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
             "figure{margin:2em 0}img{max-width:100%;image-rendering:pixelated}"
             "figcaption{max-width:60em;margin-top:.5em}table.m td,table.toy table td{border:1px solid #999;"
             "padding:2px 6px;text-align:right}table.toy>tbody>tr>td{vertical-align:top;padding-right:1.5em}"
             "</style>", f"<h1>{html.escape(title)}</h1>", f"<p>{info}</p>"]
    for f in figures:
        parts.append(f"<figure id={f.name}><img src=\"{f.file}\" alt=\"{html.escape(f.name)}\">"
                     f"<figcaption>{f.caption} <i>({f.seconds:.1f} s)</i>{f.extra_html}</figcaption></figure>")
    write_text(out / "index.html", "\n".join(parts) + "\n")


def build(out: str | os.PathLike, names: Sequence[str], make: Callable[[Path], Iterable[Made]], title: str,
          info: str, log: Callable[[str], None], extra_summary: dict | None = None) -> tuple[list[Figure], dict, float]:
    """Make the gallery of the figures ``names`` in ``out``.  ``make(folder)`` draws them into a
    private work folder and yields one :data:`Made` per figure, in any order; the page and
    summary.json list them in the order of ``names`` (``extra_summary`` added at the end).  Then
    the files are moved into ``out`` (index.html last), replacing only the files this run wrote;
    on any error (or an interrupt) the work folder is removed and ``out`` is left as it was.
    Returns (figures, summary dict, seconds)."""
    out = Path(out)
    tmp = prepare_out(out)
    t0 = time.perf_counter()
    made, summary, times = {}, {}, {}
    try:
        for name, res, part, dt, printed in make(tmp):
            if printed.strip():
                log(printed.rstrip("\n"))
            for r in res:
                r.seconds = dt / len(res)
            made[name] = res
            summary.update(part)
            times[name] = dt
            log(f"[{name}] {dt:.1f} s")
        figures = [f for name in names for f in made[name]]
        summary["seconds"] = {name: times[name] for name in names}
        summary["total_seconds"] = time.perf_counter() - t0
        summary.update(extra_summary or {})
        write_text(tmp / "summary.json", json.dumps(summary, indent=1))
        write_index(tmp, figures, title, info)
        files = sorted(p.name for p in tmp.iterdir() if p.name != "index.html") + ["index.html"]
        finish(tmp, out, files)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return figures, summary, time.perf_counter() - t0
