"""A NumPy-backed stand-in for CuPy (tests only; see ../README.md)."""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as _np

from . import cuda  # noqa: F401

__version__ = "0.0-fake"
FAKE = True

float32, float64, int32, int64, uint8, bool_ = (_np.float32, _np.float64, _np.int32, _np.int64, _np.uint8, _np.bool_)


class _Data:
    def __init__(self, a):
        self.ptr = a.__array_interface__["data"][0]


def _unwrap(v, what="operand"):
    """A Fake array -> its NumPy array; a NumPy array -> TypeError (CuPy copies nothing implicitly)."""
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, _np.ndarray):
        raise TypeError(f"fake cupy: unsupported type numpy.ndarray as {what} (an implicit host-to-device copy)")
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(i, what) for i in v)
    return v


def _wrap(r):
    if isinstance(r, _np.ndarray):
        return ndarray(r)
    if isinstance(r, _np.generic):
        return ndarray(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(i) for i in r)
    if isinstance(r, list):
        return [_wrap(i) for i in r]
    return r


class ndarray(_np.lib.mixins.NDArrayOperatorsMixin):
    """A device array (in host memory)."""

    __array_priority__ = 100

    def __init__(self, a):
        assert isinstance(a, _np.ndarray), type(a)
        self._a = a

    # --- the CuPy specifics -------------------------------------------------
    def get(self):
        return self._a.copy()

    def __array__(self, *a, **k):
        raise TypeError("fake cupy: implicit conversion to a NumPy array is not allowed (use .get())")

    @property
    def data(self):
        return _Data(self._a)

    # --- NumPy protocols: compute on the wrapped arrays -----------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [_unwrap(i) for i in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o, "out") for o in kwargs["out"])
        r = getattr(ufunc, method)(*inputs, **kwargs)
        if "out" in kwargs and method == "__call__":
            outs = kwargs["out"]
            return ndarray(outs[0]) if len(outs) == 1 else tuple(ndarray(o) for o in outs)
        return _wrap(r)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(list(args)), **{k: _unwrap(v) for k, v in kwargs.items()}))

    # --- attributes and methods ----------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    flags = property(lambda self: self._a.flags)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: ndarray(self._a.T))

    def __getattr__(self, name):
        if name.startswith("__"):            # no __array_interface__ etc.: NumPy must not see the buffer
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            def method(*args, **kwargs):
                return _wrap(attr(*_unwrap(list(args)), **{k: _unwrap(v) for k, v in kwargs.items()}))
            return method
        return _wrap(attr)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(self._a[i:i + 1].reshape(self._a.shape[1:])) for i in range(len(self._a)))

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return f"fake_cupy.{self._a!r}"

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    @staticmethod
    def _index(idx):
        return _unwrap(idx, "index")

    def __getitem__(self, idx):
        i = self._index(idx)
        r = self._a[i]
        if isinstance(r, _np.generic):          # CuPy: a 0-d array, a view of the element
            r = self._a[(i if isinstance(i, tuple) else (i,)) + (Ellipsis,)]
        return _wrap(r)

    def __setitem__(self, idx, value):
        self._a[self._index(idx)] = _unwrap(value, "value")


# --------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else ndarray(a._a.astype(dtype))
    return ndarray(_np.array(a, dtype=dtype, order=order or "K", copy=True))     # an explicit upload


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, ndarray):
        return ndarray(_np.array(a._a, dtype=dtype, copy=copy, order=order))
    return ndarray(_np.array(a, dtype=dtype, copy=True, order=order))


def ascontiguousarray(a, dtype=None):
    return ndarray(_np.ascontiguousarray(_unwrap(a), dtype=dtype))


class _Ufunc:
    def __init__(self, uf):
        self._uf = uf

    def __call__(self, *args, **kwargs):
        if "out" in kwargs and not isinstance(kwargs["out"], tuple):
            kwargs["out"] = (kwargs["out"],)
        first = next((a for a in args if isinstance(a, ndarray)), None)
        if first is None:
            raise TypeError(f"fake cupy: {self._uf.__name__} needs a device array operand")
        return first.__array_ufunc__(self._uf, "__call__", *args, **kwargs)

    def at(self, a, indices, b=None):
        self._uf.at(_unwrap(a), _unwrap(indices, "index"), _unwrap(b))


def __getattr__(name):
    f = getattr(_np, name)
    if isinstance(f, _np.ufunc):
        return _Ufunc(f)
    if isinstance(f, type):
        return f
    if callable(f):
        def fn(*args, **kwargs):
            return _wrap(f(*_unwrap(list(args)), **{k: _unwrap(v) for k, v in kwargs.items()}))
        fn.__name__ = name
        return fn
    return f


# --------------------------------------------------------------------------
# RawModule: the .cu source compiled for the host; every block of the launched
# grid runs in turn, with one thread per block (so __syncthreads reductions are
# trivial and grid-stride loops cover every element exactly as on the GPU)
# --------------------------------------------------------------------------
_PRELUDE = r"""
#include <cmath>
#include <algorithm>
struct te_dim3 { unsigned int x, y, z; };
static te_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads()
using std::max; using std::min; using std::sqrt; using std::pow;
"""
_KERNEL_RE = re.compile(r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)", re.S)
_CTYPES = {"float": _np.float32, "double": _np.float64, "int": _np.int32}
_BUILD = Path(tempfile.gettempdir()) / f"te_fake_cupy_{os.getuid()}"


def _params(text, ctype):
    """[(kind, dtype, const)] for a kernel's parameter list with T = ctype."""
    out = []
    for p in text.split(","):
        p = re.sub(r"\b__restrict__\b", "", re.sub(r"\bT\b", ctype, p)).strip()
        toks = p.replace("*", " * ").split()
        const = "const" in toks
        toks = [t for t in toks if t != "const"]
        if "*" in toks:
            out.append(("ptr", _np.dtype(_CTYPES[toks[0]]), const))
        else:
            base = " ".join(toks[:-1])
            out.append(("val", _np.dtype({"int": _np.int32, "long long": _np.int64, "double": _np.float64,
                                          "float": _np.float32}[base]), const))
    return out


class RawModule:
    def __init__(self, code, options=(), name_expressions=(), **kw):
        self.code, self.options = code, tuple(options)
        self.kernels = {m.group(1): m.group(2) for m in _KERNEL_RE.finditer(code)}
        shims = []
        self.sigs = {}
        for expr in name_expressions:
            name, ctype = re.fullmatch(r"(\w+)<(\w+)>", expr).groups()
            params = _params(self.kernels[name], ctype)
            self.sigs[expr] = params
            decl = ", ".join(re.sub(r"__restrict__", "", re.sub(r"\bT\b", ctype, p.strip()))
                             for p in self.kernels[name].split(","))
            args = ", ".join(p.strip().replace("*", " ").split()[-1] for p in self.kernels[name].split(","))
            shims.append(f'extern "C" void te_{name}_{ctype}(unsigned int grid, {decl}) {{\n'
                         f'  gridDim.x = grid; blockDim.x = 1; threadIdx.x = 0;\n'
                         f'  for (blockIdx.x = 0; blockIdx.x < grid; ++blockIdx.x) {name}<{ctype}>({args});\n}}')
        src = _PRELUDE + code + "\n" + "\n".join(shims) + "\n"
        key = hashlib.sha1(src.encode()).hexdigest()[:16]
        _BUILD.mkdir(exist_ok=True)
        lib = _BUILD / f"k_{key}.so"
        if not lib.exists():
            cu = _BUILD / f"k_{key}.cpp"
            cu.write_text(src)
            tmp = _BUILD / f"k_{key}.{os.getpid()}.so"
            subprocess.run(["g++", "-O2", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC", "-w",
                            "-o", str(tmp), str(cu)], check=True)
            os.replace(tmp, lib)
        self.lib = ctypes.CDLL(str(lib))

    def get_function(self, expr):
        if expr not in self.sigs:
            raise KeyError(f"{expr} is not among the name_expressions")
        name, ctype = re.fullmatch(r"(\w+)<(\w+)>", expr).groups()
        return _Function(expr, getattr(self.lib, f"te_{name}_{ctype}"), self.sigs[expr])


class _Function:
    def __init__(self, expr, fn, sig):
        self.expr, self.fn, self.sig = expr, fn, sig

    def __call__(self, grid, block, args, **kw):
        assert isinstance(grid, tuple) and isinstance(block, tuple), "grid and block must be tuples"
        assert all(isinstance(v, int) and v >= 1 for v in grid + block), (grid, block)
        if len(args) != len(self.sig):
            raise TypeError(f"{self.expr}: {len(args)} arguments for {len(self.sig)} parameters")
        cargs = []
        for i, (a, (kind, dt, const)) in enumerate(zip(args, self.sig)):
            if kind == "ptr":
                if not isinstance(a, ndarray):
                    raise TypeError(f"{self.expr} argument {i}: expected a device array, got {type(a)}")
                if a.dtype != dt or not a._a.flags.c_contiguous:
                    raise TypeError(f"{self.expr} argument {i}: expected a contiguous {dt} array, "
                                    f"got {a.dtype} (contiguous: {a._a.flags.c_contiguous})")
                cargs.append(ctypes.c_void_p(a._a.__array_interface__["data"][0]))
            else:
                if not isinstance(a, _np.generic) or a.dtype != dt:
                    raise TypeError(f"{self.expr} argument {i}: expected a numpy {dt} scalar, got {type(a).__name__}")
                cargs.append({"int32": ctypes.c_int32, "int64": ctypes.c_int64, "float64": ctypes.c_double,
                              "float32": ctypes.c_float}[dt.name](a.item()))
        self.fn(ctypes.c_uint(grid[0]), *cargs)
