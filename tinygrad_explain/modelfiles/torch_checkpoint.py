"""Read a PyTorch ``torch.save`` checkpoint without importing torch -- safely.

What is inside a ``.pth`` file
------------------------------
Since PyTorch 1.6, ``torch.save`` writes a (store-only) **zip archive**::

    <name>/data.pkl          a pickle of the saved object (e.g. an OrderedDict)
    <name>/data/0            raw bytes of storage "0"
    <name>/data/1            raw bytes of storage "1"  ...
    <name>/byteorder         b"little" (absent in very old files = little)
    <name>/version           the serialization format version
    (<name> is the archive's stem, e.g. "archive"; it does not matter)

The pickle does not contain the numbers.  Each tensor is pickled as a call::

    torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                    requires_grad, backward_hooks)

where ``storage`` is a *persistent id* -- a tuple
``("storage", torch.FloatStorage, "0", "cpu", numel)`` -- that the loader
resolves to the bytes in ``data/0``.  The tensor is then the strided view
``storage[offset + sum(i_k * stride_k)]`` of that flat buffer.

Why a restricted unpickler
--------------------------
A pickle is a small program.  Its ``GLOBAL``/``STACK_GLOBAL`` opcodes import
*any* callable by name and ``REDUCE`` calls it with pickled arguments, so a
malicious ``.pth`` can run ``os.system("...")`` the moment it is loaded with
plain ``pickle.load`` (or ``torch.load(..., weights_only=False)``).  Every
global goes through :meth:`pickle.Unpickler.find_class`, so overriding it is
the one choke point: :class:`_RestrictedUnpickler` answers only the handful of
names that tensor rebuilding needs, and returns **our own stand-in
functions** for them -- never the real torch objects.  Everything else raises
:class:`UnsafeCheckpointError` before anything is called.

Bounded before anything is decompressed
---------------------------------------
The pickle is small; the storages are not.  So unpickling only *describes*
each tensor (:class:`TensorRef`: storage entry, dtype, offset, size,
stride) and checks it against the archive's own directory -- the declared
storage length must equal the entry's size, a tensor must lie inside its
storage and must not overlap itself (a stride-0 tensor of a few bytes would
expand to gigabytes), an entry may not be compressed more than
:data:`MAX_COMPRESSION` to 1 (a zip bomb), and all tensors together must fit
``max_bytes``.  A caller that knows what it expects (the AlexNet converter)
checks the names and shapes next; only then are the bytes read, and only
the bytes each tensor spans.

Public API: :func:`load_torch_state_dict` (and :func:`load_torch_checkpoint`
for the raw unpickled object).
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import zipfile
import zlib

import numpy as np

from ..core.safe_io import regular_file_problem

__all__ = [
    "TensorRef",
    "UnsafeCheckpointError",
    "load_torch_checkpoint",
    "load_torch_state_dict",
]


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle asked for a global that is not on the allow-list."""


#: Default bound on the bytes of all tensors of one checkpoint (AlexNet: 244 MB).
MAX_BYTES = 4 << 30
#: Largest ratio of an entry's size to its compressed size (torch.save stores, 1:1).
MAX_COMPRESSION = 100
_MAX_PICKLE_BYTES = 64 << 20
# what zipfile raises on a damaged archive: bad headers, unsupported versions or
# compression methods, encrypted entries, corrupt deflate streams
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
               RuntimeError, ValueError, zlib.error)


# ---------------------------------------------------------------------------
# Storage types -> numpy dtypes
# ---------------------------------------------------------------------------
class _NoBuild:
    """Mixin: refuse pickle's BUILD opcode (``obj.__setstate__(state)``).

    BUILD sets attributes on an object that is already on the pickle stack.
    Without this guard a crafted pickle could BUILD onto our stand-ins (which
    are module-level singletons) and change them for every later load in the
    process.  Nothing legitimate in a checkpoint BUILDs onto them.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeCheckpointError(
            f"checkpoint pickle tried to modify {self!r} (BUILD opcode); refusing")


class _StorageType(_NoBuild):
    """Stand-in for ``torch.FloatStorage`` & co.: it only remembers a dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype):
        self.name = name
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"<storage type torch.{self.name} -> {self.dtype}>"


class _Callable(_NoBuild):
    """Wrap a stand-in function so pickle can call it but not BUILD onto it."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn, name):
        self._fn, self._name = fn, name

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __repr__(self):
        return f"<stand-in for {self._name}>"


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    # bfloat16 has no numpy dtype: read the raw 16 bits, widened later.
    "BFloat16Storage": np.uint16,
}
_STORAGE_TYPES = {name: _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()}


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift the bits back into place."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------------------
# Stand-ins for torch._utils rebuild functions
# ---------------------------------------------------------------------------
class _Storage(_NoBuild):
    """A resolved persistent id: one ``data/<key>`` entry of the archive, not read yet."""

    __slots__ = ("key", "type", "entry", "numel", "dtype", "reader")

    def __init__(self, key, stype, entry, numel, dtype, reader):
        self.key, self.type, self.entry, self.numel, self.dtype, self.reader = \
            key, stype, entry, numel, dtype, reader


def _as_int_tuple(x, what):
    try:
        return tuple(int(v) for v in x)
    except TypeError:
        raise ValueError(f"tensor {what} must be a tuple of ints, got {x!r}") from None


class TensorRef(_NoBuild):
    """A tensor described by the checkpoint, its bytes not read yet.

    ``shape`` and ``dtype`` (bfloat16 is reported as float32, what
    :meth:`read` returns) are known from the pickle alone; :meth:`read`
    (or ``np.asarray(ref)``) reads just the bytes the tensor spans and
    returns a C-contiguous array that aliases nothing.
    """

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    @property
    def dtype(self):
        if self.storage.type.name == "BFloat16Storage":
            return np.dtype(np.float32)
        return self.storage.dtype.newbyteorder("=")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.storage.dtype.itemsize

    def read(self) -> np.ndarray:
        st = self.storage
        if 0 in self.shape:
            out = np.empty(self.shape, dtype=st.dtype.newbyteorder("="))
        else:
            span = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1
            flat = st.reader(st.entry, span * st.dtype.itemsize, st.dtype)
            view = np.lib.stride_tricks.as_strided(
                flat[self.offset:], shape=self.shape, strides=tuple(s * flat.itemsize for s in self.stride),
                writeable=False)
            out = np.array(view, copy=True, order="C")
        if not out.dtype.isnative:
            out = out.astype(out.dtype.newbyteorder("="))
        if st.type.name == "BFloat16Storage":
            out = _bf16_to_f32(out)
        return out

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self):
        return f"<tensor {self.shape} {self.dtype} in storage {self.storage.key!r}>"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Describe the tensor that ``torch._utils._rebuild_tensor_v2`` would build.

    The tensor is the strided view ``storage[offset + sum(i_k * stride_k)]``.
    Checked here, before any byte is read: it lies inside the storage, and
    no two of its elements share a storage element (no stride-0 or
    overlapping view: a state dict never needs one, and a tiny file could
    otherwise expand to gigabytes).
    """
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is not a checkpoint storage: {storage!r}")
    offset = int(storage_offset)
    size = _as_int_tuple(size, "size")
    stride = _as_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length "
                         f"(storage {storage.key!r})")
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise ValueError(f"negative size/stride/offset in tensor over storage {storage.key!r}")
    if 0 not in size:
        # Highest element index touched must lie inside the storage.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise ValueError(
                f"tensor (offset {offset}, size {size}, stride {stride}) reads past the end "
                f"of storage {storage.key!r} ({storage.numel} elements): file truncated or corrupt")
        # Each stride (smallest first) must step past every offset the smaller ones reach:
        # true for every view made by slicing, transposing or permuting, false for stride 0.
        reach = 0
        for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
            if s <= reach:
                raise ValueError(f"tensor (size {size}, stride {stride}) over storage {storage.key!r} "
                                 "can repeat storage elements (a stride-0 or overlapping view); refusing it")
            reach += (n - 1) * s
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """``nn.Parameter`` is pickled as a Parameter wrapping a tensor: unwrap it."""
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _ordered_dict(*args, **kwargs):
    return collections.OrderedDict(*args, **kwargs)


# (module, name) -> the stand-in returned by find_class.  Nothing else is importable.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _Callable(_ordered_dict, "collections.OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"):
        _Callable(_rebuild_tensor_v2, "torch._utils._rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"):
        _Callable(_rebuild_parameter, "torch._utils._rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"):
        _Callable(_rebuild_parameter_with_state, "torch._utils._rebuild_parameter_with_state"),
}
_ALLOWED_GLOBALS.update({("torch", name): st for name, st in _STORAGE_TYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that can only build dicts, lists, numbers, strings and tensors.

    ``find_class`` is consulted for every GLOBAL/STACK_GLOBAL/INST/OBJ opcode;
    anything off the allow-list raises before it could be called.
    ``persistent_load`` turns ``("storage", type, key, location, numel)`` into
    a flat numpy array read from ``<prefix>/data/<key>`` in the zip.
    """

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self._zf = zf
        self._prefix = prefix
        self._byteorder = byteorder
        self._path = path
        self._storages: dict[str, _Storage] = {}
        self._infos = {i.filename: i for i in zf.infolist()}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load global '{module}.{name}' -- it is not needed "
                "to rebuild tensors and could execute code (only tensors, "
                "OrderedDicts and plain Python containers are allowed)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._path}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise UnsafeCheckpointError(f"{self._path}: storage type {stype!r} is not supported")
        key = str(key)
        if key in self._storages:
            return self._storages[key]
        entry = f"{self._prefix}data/{key}"
        info = self._infos.get(entry)
        if info is None:
            raise ValueError(f"{self._path}: storage {entry!r} is missing from the archive "
                             "(truncated or corrupt checkpoint)")
        dt = stype.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        try:
            numel = int(numel)
        except (TypeError, ValueError):
            raise ValueError(f"{self._path}: storage {entry!r} has a non-integer length {numel!r}") from None
        if info.file_size % dt.itemsize:
            raise ValueError(f"{self._path}: storage {entry!r} has {info.file_size} bytes, not a "
                             f"multiple of {dt.itemsize} ({stype.name})")
        if numel < 0 or numel * dt.itemsize != info.file_size:
            raise ValueError(f"{self._path}: storage {entry!r} should hold {numel} elements "
                             f"({numel * dt.itemsize} bytes) but the archive entry has {info.file_size} bytes "
                             "(truncated or corrupt checkpoint)")
        _check_compression(info, self._path)
        st = _Storage(key, stype, entry, numel, dt, self._read_entry)
        self._storages[key] = st
        return st

    def _read_entry(self, entry, nbytes, dtype):
        """The first ``nbytes`` of an archive entry as a flat array (only those are decompressed)."""
        try:
            with self._zf.open(entry) as fh:
                raw = fh.read(nbytes)
        except _ZIP_ERRORS as e:
            raise ValueError(f"{self._path}: cannot read storage {entry!r}: {e}") from None
        if len(raw) != nbytes:
            raise ValueError(f"{self._path}: storage {entry!r} ends after {len(raw)} of {nbytes} bytes "
                             "(truncated?)")
        return np.frombuffer(raw, dtype=dtype)


def _check_compression(info: zipfile.ZipInfo, path):
    """Refuse an entry that decompresses to more than MAX_COMPRESSION times its stored size."""
    if info.file_size > MAX_COMPRESSION * max(info.compress_size, 1) and info.file_size > 1 << 20:
        raise ValueError(f"{path}: archive entry {info.filename!r} would expand {info.compress_size} bytes to "
                         f"{info.file_size} (more than {MAX_COMPRESSION}:1; a zip bomb?); torch.save stores "
                         "entries uncompressed")


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_HINT = ("re-save it with torch >= 1.6 (which writes the zip format): "
                "torch.save(torch.load(OLD, map_location='cpu'), NEW)")


@contextlib.contextmanager
def _open_checkpoint(path, max_bytes):
    """Yield the unpickled object with every tensor as an unread :class:`TensorRef`;
    the archive stays open (for :meth:`TensorRef.read`) until the block ends."""
    path = os.fspath(path)
    problem = regular_file_problem(path)                 # FileNotFoundError names the path
    if problem:
        raise ValueError(f"{path}: not a regular file ({problem})")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"{path}: empty file, not a PyTorch checkpoint")
    if not head.startswith(_ZIP_MAGIC):
        if head[:1] == b"\x80" or head.startswith(b"\x1f\x8b") or _looks_like_tar(path):
            raise ValueError(f"{path}: legacy (pre-1.6, non-zip) torch.save format is not "
                             f"supported; {_LEGACY_HINT}")
        raise ValueError(f"{path}: not a PyTorch checkpoint (expected a zip archive written "
                         "by torch.save)")
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise ValueError(f"{path}: truncated or corrupt checkpoint archive ({e})") from None
    with zf:
        names = zf.namelist()
        pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        # The top-level pickle lives at "<prefix>/data.pkl" (one directory deep).
        pkls = [n for n in pkls if n.count("/") <= 1]
        if not pkls:
            raise ValueError(f"{path}: no data.pkl in the archive -- not a torch.save checkpoint "
                             "or truncated")
        pkl_name = pkls[0]
        prefix = pkl_name[: -len("data.pkl")]
        try:
            byteorder = "little"
            if prefix + "byteorder" in names:
                info = zf.getinfo(prefix + "byteorder")
                if info.file_size > 16:
                    raise ValueError(f"{path}: byteorder entry has {info.file_size} bytes")
                byteorder = zf.read(info).decode("ascii", "replace").strip()
                if byteorder not in ("little", "big"):
                    raise ValueError(f"{path}: unknown byteorder {byteorder!r}")
            info = zf.getinfo(pkl_name)
            if info.file_size > _MAX_PICKLE_BYTES:
                raise ValueError(f"{path}: {pkl_name!r} is {info.file_size} bytes; a state dict's pickle is "
                                 f"far smaller (limit {_MAX_PICKLE_BYTES})")
            _check_compression(info, path)
            pkl = zf.read(info)
        except ValueError as e:
            if path in str(e):
                raise
            raise ValueError(f"{path}: cannot read {pkl_name!r}: {e}") from None
        except _ZIP_ERRORS as e:
            raise ValueError(f"{path}: cannot read {pkl_name!r}: {e}") from None
        up = _RestrictedUnpickler(io.BytesIO(pkl), zf, prefix, byteorder, path)
        try:
            obj = up.load()
        except UnsafeCheckpointError as e:
            if path in str(e):
                raise
            raise UnsafeCheckpointError(f"{path}: {e}") from None
        except ValueError as e:
            if path in str(e):
                raise
            raise ValueError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, OverflowError, RecursionError) as e:
            raise ValueError(f"{path}: malformed checkpoint pickle ({type(e).__name__}: {e})") \
                from None
        total = sum(t.nbytes for t in _tensors(obj))
        if total > max_bytes:
            raise ValueError(f"{path}: the checkpoint's tensors hold {total:,} bytes, more than the limit "
                             f"{max_bytes:,} (max_bytes)")
        try:
            yield obj
        except ValueError:
            raise
        except _ZIP_ERRORS as e:
            raise ValueError(f"{path}: corrupt storage ({type(e).__name__}: {e})") from None


def _tensors(obj, depth=0):
    """Every TensorRef in a nest of dicts / lists / tuples."""
    if depth > 100:
        return
    if isinstance(obj, TensorRef):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, depth + 1)


def _materialize(obj, depth=0):
    if isinstance(obj, TensorRef):
        return obj.read()
    if depth > 100:
        return obj
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v, depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, depth + 1) for v in obj)
    return obj


def load_torch_checkpoint(path, max_bytes: int = MAX_BYTES) -> object:
    """Unpickle a zip-format ``torch.save`` file with tensors as numpy arrays.

    Returns whatever object was saved (typically an ``OrderedDict`` of
    arrays), with every tensor/Parameter replaced by a C-contiguous
    ``np.ndarray`` of the same shape and dtype (bfloat16 becomes float32).
    ``max_bytes`` bounds the tensors' total size, checked before any
    storage is read.

    Raises
    ------
    UnsafeCheckpointError
        the pickle references any global other than tensor rebuilding.
    ValueError
        not a zip checkpoint (legacy pre-1.6 format, or not a checkpoint at
        all), truncated/corrupt archive, missing ``data.pkl`` or storage,
        a storage or tensor that does not fit its archive entry, a zip bomb,
        more than ``max_bytes`` of tensors.
    FileNotFoundError
        ``path`` does not exist.
    """
    with _open_checkpoint(path, max_bytes) as obj:
        return _materialize(obj)


def _looks_like_tar(path) -> bool:
    """Pre-1.0 torch.save wrote a tar file; its header has 'ustar' at byte 257."""
    try:
        with open(path, "rb") as f:
            f.seek(257)
            return f.read(5) == b"ustar"
    except OSError:
        return False


def _find_state_dict(obj, path):
    """Return the dict of tensors inside a checkpoint.

    Accepts a bare state dict, or a training checkpoint that nests one under
    ``"state_dict"`` / ``"model_state_dict"`` / ``"model"``.
    """
    def is_sd(d):
        return isinstance(d, dict) and d and all(isinstance(v, (TensorRef, np.ndarray)) for v in d.values())
    if isinstance(obj, dict):
        if is_sd(obj):
            return obj
        for key in ("state_dict", "model_state_dict", "model"):
            if is_sd(obj.get(key)):
                return obj[key]
    raise ValueError(f"{path}: checkpoint does not contain a state dict (a mapping of "
                     f"parameter names to tensors); found {type(obj).__name__}")


def load_torch_state_dict(path, check=None, max_bytes: int = MAX_BYTES) -> dict[str, np.ndarray]:
    """Load ``{name: ndarray}`` from a zip-format ``.pth`` without torch.

    A ``"module."`` prefix on every key (left by ``nn.DataParallel``) is
    removed.  ``check``, if given, is called with ``{name: TensorRef}``
    (names, shapes and dtypes known, no data read yet) and may raise to
    refuse the checkpoint before any storage is decompressed.  See
    :func:`load_torch_checkpoint` for the errors raised.

    >>> sd = load_torch_state_dict("alexnet-owt-7be5be79.pth")   # doctest: +SKIP
    >>> sd["features.0.weight"].shape                              # doctest: +SKIP
    (64, 3, 11, 11)
    """
    path = os.fspath(path)
    with _open_checkpoint(path, max_bytes) as obj:
        sd = _find_state_dict(obj, path)
        out = {str(k): v for k, v in sd.items()}
        if out and all(k.startswith("module.") for k in out):
            out = {k[len("module."):]: v for k, v in out.items()}
        if check is not None:
            check(out)
        return {k: _materialize(v) for k, v in out.items()}
