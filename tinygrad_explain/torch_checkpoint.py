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

Public API: :func:`load_torch_state_dict` (and :func:`load_torch_checkpoint`
for the raw unpickled object).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np

__all__ = [
    "UnsafeCheckpointError",
    "load_torch_checkpoint",
    "load_torch_state_dict",
]


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle asked for a global that is not on the allow-list."""


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
    """A resolved persistent id: the flat 1-D array of one ``data/<key>`` entry."""

    __slots__ = ("key", "type", "array")

    def __init__(self, key, stype, array):
        self.key, self.type, self.array = key, stype, array


def _as_int_tuple(x, what):
    try:
        return tuple(int(v) for v in x)
    except TypeError:
        raise ValueError(f"tensor {what} must be a tuple of ints, got {x!r}") from None


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Build the numpy array that ``torch._utils._rebuild_tensor_v2`` would.

    ``as_strided`` views the flat storage with the tensor's strides (in
    elements; numpy wants bytes), then ``copy`` gives a compact C-ordered
    array that no longer aliases the storage -- two tensors may share one
    storage (e.g. a view and its base), and the caller may mutate either.
    """
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is not a checkpoint storage: {storage!r}")
    offset = int(storage_offset)
    size = _as_int_tuple(size, "size")
    stride = _as_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length "
                         f"(storage {storage.key!r})")
    flat = storage.array
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise ValueError(f"negative size/stride/offset in tensor over storage {storage.key!r}")
    if 0 in size:
        out = np.empty(size, dtype=flat.dtype)
    else:
        # Highest element index touched must lie inside the storage.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise ValueError(
                f"tensor (offset {offset}, size {size}, stride {stride}) reads past the end "
                f"of storage {storage.key!r} ({flat.size} elements): file truncated or corrupt")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
        out = np.array(view, copy=True, order="C")
    if storage.type.name == "BFloat16Storage":
        out = _bf16_to_f32(out)
    return out


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
        self._names = set(zf.namelist())

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
        if entry not in self._names:
            raise ValueError(f"{self._path}: storage {entry!r} is missing from the archive "
                             "(truncated or corrupt checkpoint)")
        try:
            raw = self._zf.read(entry)
        except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
            raise ValueError(f"{self._path}: cannot read storage {entry!r}: {e}") from None
        dt = stype.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        if len(raw) % dt.itemsize:
            raise ValueError(f"{self._path}: storage {entry!r} has {len(raw)} bytes, not a "
                             f"multiple of {dt.itemsize} ({stype.name})")
        arr = np.frombuffer(raw, dtype=dt)
        if int(numel) > arr.size:
            raise ValueError(f"{self._path}: storage {entry!r} should hold {int(numel)} "
                             f"elements but has {arr.size} (truncated?)")
        if not dt.isnative:
            arr = arr.astype(dt.newbyteorder("="))
        st = _Storage(key, stype, arr)
        self._storages[key] = st
        return st


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_HINT = ("re-save it with torch >= 1.6 (which writes the zip format): "
                "torch.save(torch.load(OLD, map_location='cpu'), NEW)")


def load_torch_checkpoint(path) -> object:
    """Unpickle a zip-format ``torch.save`` file with tensors as numpy arrays.

    Returns whatever object was saved (typically an ``OrderedDict`` of
    arrays), with every tensor/Parameter replaced by a C-contiguous
    ``np.ndarray`` of the same shape and dtype (bfloat16 becomes float32).

    Raises
    ------
    UnsafeCheckpointError
        the pickle references any global other than tensor rebuilding.
    ValueError
        not a zip checkpoint (legacy pre-1.6 format, or not a checkpoint at
        all), truncated/corrupt archive, missing ``data.pkl`` or storage.
    FileNotFoundError
        ``path`` does not exist.
    """
    path = os.fspath(path)
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
    except (zipfile.BadZipFile, EOFError, OSError) as e:
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
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder {byteorder!r}")
        try:
            pkl = zf.read(pkl_name)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise ValueError(f"{path}: cannot read {pkl_name!r}: {e}") from None
        up = _RestrictedUnpickler(io.BytesIO(pkl), zf, prefix, byteorder, path)
        try:
            return up.load()
        except UnsafeCheckpointError as e:
            if path in str(e):
                raise
            raise UnsafeCheckpointError(f"{path}: {e}") from None
        except ValueError as e:
            if path in str(e):
                raise
            raise ValueError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, OverflowError) as e:
            raise ValueError(f"{path}: malformed checkpoint pickle ({type(e).__name__}: {e})") \
                from None


def _looks_like_tar(path) -> bool:
    """Pre-1.0 torch.save wrote a tar file; its header has 'ustar' at byte 257."""
    try:
        with open(path, "rb") as f:
            f.seek(257)
            return f.read(5) == b"ustar"
    except OSError:
        return False


def _find_state_dict(obj, path):
    """Return the dict of arrays inside a checkpoint.

    Accepts a bare state dict, or a training checkpoint that nests one under
    ``"state_dict"`` / ``"model_state_dict"`` / ``"model"``.
    """
    if isinstance(obj, dict):
        if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(
                    isinstance(v, np.ndarray) for v in inner.values()):
                return inner
    raise ValueError(f"{path}: checkpoint does not contain a state dict (a mapping of "
                     f"parameter names to tensors); found {type(obj).__name__}")


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Load ``{name: ndarray}`` from a zip-format ``.pth`` without torch.

    A ``"module."`` prefix on every key (left by ``nn.DataParallel``) is
    removed.  See :func:`load_torch_checkpoint` for the errors raised.

    >>> sd = load_torch_state_dict("alexnet-owt-7be5be79.pth")   # doctest: +SKIP
    >>> sd["features.0.weight"].shape                              # doctest: +SKIP
    (64, 3, 11, 11)
    """
    path = os.fspath(path)
    sd = _find_state_dict(load_torch_checkpoint(path), path)
    out = {str(k): v for k, v in sd.items()}
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out
