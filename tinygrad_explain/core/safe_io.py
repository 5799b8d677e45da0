"""The one way this project writes a file: :func:`atomic_write`.

Every file the package and its scripts write (model files, checkpoints,
PNGs, the gallery's index.html, JSON results) goes through it, so each
write has the same guarantees:

* **All or nothing.**  The data goes to a temporary file in the target's
  own folder (same file system, so the final ``os.replace`` is atomic);
  the target appears complete or not at all, and the old file stays
  intact until then.
* **No redirection.**  The temporary name is unpredictable and created with
  ``O_CREAT | O_EXCL`` (``tempfile.mkstemp``), which never follows a symlink
  planted at that path -- unlike a fixed ``<out>.tmp``.  The data is written
  through the descriptor that created it, never by reopening the name.
* **Cleaned up on any failure** (an exception, Ctrl-C): the temporary file
  is removed, so a failed 244 MB conversion leaves nothing behind.
* **Normal permissions**: a new file gets ``0666 & ~umask`` like any file
  the user creates (``mkstemp`` alone would give 0600); replacing a file
  keeps that file's permission bits.
* Reading: :func:`regular_file_problem` tells the readers (model files,
  checkpoints, caffemodels, images) to refuse a FIFO or device before
  opening it; :func:`load_npz` is the one reader of ``.npz`` archives
  (checkpoints, the exemplar bank, the scene sample, benchmark results):
  a regular file, no pickles, and every member's size -- the zip
  directory's declared size and the ``.npy`` header's shape x itemsize --
  checked against a limit before a byte of it is read (a 1.5 MB zip bomb
  or a header claiming 1 TiB is a one-line :class:`NpzError`).
* **Checked before the work**: :func:`check_output` refuses an output that
  is a directory, sits in a folder that does not exist, or is the same file
  as one of the inputs (``convert a.pth a.pth`` must not destroy the
  checkpoint).  Call it early -- before minutes of computation -- and
  :func:`atomic_write` calls it again when it starts.

>>> with atomic_write("out.png") as f:            # doctest: +SKIP
...     Image.fromarray(img).save(f, format="PNG")
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path

__all__ = ["OutputPathError", "check_output", "atomic_write", "write_text", "regular_file_problem",
           "NpzError", "load_npz", "MAX_NPZ_BYTES"]


class OutputPathError(ValueError):
    """An output path that cannot or must not be written (directory, missing folder, an input file)."""


def check_output(path, inputs=(), need_folder: bool = True) -> Path:
    """Refuse an unusable output path before any work is done; return it as a Path.

    Raises :class:`OutputPathError` when ``path`` is a directory, when its
    folder does not exist (unless ``need_folder=False``: the caller will
    create it) or is not a folder, or when it is the same file as any of
    ``inputs`` (also through symlinks or hard links).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {str(path)!r}: it is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"cannot write {str(path)!r}: {str(parent)!r} is not a folder")
    if need_folder and not parent.is_dir():
        raise OutputPathError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    if path.exists():
        for inp in inputs:
            try:
                same = inp is not None and os.path.samefile(path, inp)
            except OSError:
                same = False
            if same:
                raise OutputPathError(f"output {str(path)!r} is the input file {os.fspath(inp)!r}; "
                                      "refusing to overwrite it -- choose another output name")
    return path


def regular_file_problem(path):
    """Why ``path`` cannot be read as a file -- "a FIFO", "a directory", "a device or socket" --
    or None for a regular file.  Checked before opening: reading a FIFO blocks forever.
    A missing path raises FileNotFoundError."""
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode):
        return None
    return ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
            else "a device or socket")


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (reading it means setting it; the lock keeps that atomic here)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, inputs=(), mode: str = "wb"):
    """Open a temporary file beside ``path``; on success it replaces ``path``.

    Yields a file object (binary and readable, as h5py needs, unless
    ``mode="w"``: then UTF-8 text).  On any exception the temporary file is
    removed and ``path`` is untouched.
    ``inputs``: files that ``path`` must not be (see :func:`check_output`).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = check_output(path, inputs)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputPathError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    try:
        try:
            old = os.stat(path)
            perm = stat.S_IMODE(old.st_mode) if stat.S_ISREG(old.st_mode) else 0o666 & ~_umask()
        except FileNotFoundError:
            perm = 0o666 & ~_umask()
        os.fchmod(fd, perm)
        with (os.fdopen(fd, "w", encoding="utf-8") if mode == "w" else os.fdopen(fd, "w+b")) as f:
            fd = None                              # the file object owns it now
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_text(path, text: str, inputs=()) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, inputs, mode="w") as f:
        f.write(text)
    return Path(path)


# ---------------------------------------------------------------------------
# .npz archives
# ---------------------------------------------------------------------------
#: Default bound on the decoded size of one ``.npz`` archive (all members together).
#: The shipped bank is 25 MB decoded, the scene sample 8 MB, a checkpoint of the
#: embedded model ~20 MB (checkpoints of larger models get a bound from the model);
#: override per call (``max_bytes=``) or with the environment variable TGE_MAX_NPZ_BYTES.
MAX_NPZ_BYTES = 256 << 20
_MAX_NPZ_MEMBERS = 10_000
_NPY_HEADER_MAX = 10_000          # bytes; numpy's own default limit for a .npy header


class NpzError(ValueError):
    """An ``.npz`` file that cannot or must not be read (the message names the file and member)."""


def limit_from_env(value, env: str, default: int) -> int:
    """A size limit: ``value`` when given, else the integer in the environment variable
    ``env`` when set, else ``default`` (a clear error for a non-integer setting)."""
    if value is not None:
        return int(value)
    setting = os.environ.get(env)
    if setting:
        try:
            return int(setting)
        except ValueError:
            raise ValueError(f"{env} must be an integer, got {setting!r}") from None
    return default


def npz_limit(max_bytes):
    return limit_from_env(max_bytes, "TGE_MAX_NPZ_BYTES", MAX_NPZ_BYTES)


def load_npz(path, what: str = "file", keys=None, max_bytes: int | None = None) -> dict:
    """Read the arrays of an ``.npz`` archive into a dict ``{name: ndarray}``, safely.

    * ``path`` must be a regular file (a FIFO or device is refused without
      opening it for reading: it would block or never end);
    * no pickles (object arrays are refused);
    * before any member is decompressed, the zip directory's declared
      uncompressed sizes are summed and checked against ``max_bytes``
      (default :data:`MAX_NPZ_BYTES`), and each member's ``.npy`` header
      (shape x itemsize) is checked against the bytes the directory declares
      and against ``max_bytes`` -- so neither a zip bomb nor a header claiming
      1 TiB allocates anything;
    * ``keys``: read only these members (names without ``.npy``; absent ones
      are simply missing from the result).

    Every problem is an :class:`NpzError` (a ValueError) naming ``what`` and the file,
    and the member where there is one.  A missing file raises FileNotFoundError."""
    import lzma
    import tokenize
    import zipfile
    import zlib

    import numpy as np
    from numpy.lib import format as npy

    label = f"{what} {os.fspath(path)}"
    problem = regular_file_problem(path)          # FileNotFoundError for a missing path
    if problem:
        raise NpzError(f"{label}: not a regular file ({problem})")
    limit = npz_limit(max_bytes)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, OverflowError) as e:
        raise NpzError(f"{label}: not a readable .npz archive ({' '.join(str(e).split())[:200]})") from None
    out = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_NPZ_MEMBERS:
            raise NpzError(f"{label}: {len(infos)} members, more than {_MAX_NPZ_MEMBERS}")
        wanted = []
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if keys is None or name in keys:
                wanted.append((name, info))
        declared = sum(info.file_size for _, info in wanted)
        if declared > limit:
            raise NpzError(f"{label}: its members declare {declared:,} bytes, more than the limit of {limit:,} "
                           "(TGE_MAX_NPZ_BYTES raises it)")
        for name, info in wanted:
            member = f"{label}: member {name!r}"
            try:
                with zf.open(info) as f:
                    version = npy.read_magic(f)
                    if version not in ((1, 0), (2, 0), (3, 0)):
                        raise NpzError(f"{member}: unknown .npy version {version}")
                    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                    shape, fortran, dtype = read_header(f, max_header_size=_NPY_HEADER_MAX)
                    if dtype.hasobject:
                        raise NpzError(f"{member}: holds Python objects (a pickle); refusing to load it")
                    count = 1
                    for d in shape:
                        count *= int(d)
                    nbytes = count * dtype.itemsize
                    if nbytes > limit:
                        raise NpzError(f"{member}: its header claims shape {shape} of {dtype} = {nbytes:,} bytes, "
                                       f"more than the limit of {limit:,}")
                    if nbytes > info.file_size:
                        raise NpzError(f"{member}: its header claims {nbytes:,} bytes but the archive holds "
                                       f"{info.file_size:,}; the file is damaged")
                    data = bytearray(nbytes)          # read in place: one copy of the array, writeable
                    view, got = memoryview(data), 0
                    while got < nbytes:
                        n = f.readinto(view[got:])
                        if not n:
                            raise NpzError(f"{member}: truncated ({got:,} of {nbytes:,} bytes)")
                        got += n
                    a = np.frombuffer(data, dtype=dtype)
                    out[name] = a.reshape(shape[::-1]).transpose() if fortran else a.reshape(shape)
            except NpzError:
                raise
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, TypeError, SyntaxError, zlib.error,
                    lzma.LZMAError, tokenize.TokenError, NotImplementedError, OverflowError, RecursionError,
                    MemoryError) as e:
                # zlib errors, CRC mismatches, malformed headers, an unsupported compression method
                why = " ".join(str(e).split())              # numpy's messages span lines
                raise NpzError(f"{member}: unreadable ({type(e).__name__}: {why[:200]})") from None
    return out
