"""The self-describing HDF5 model file (schema in README.md, "Model file").

    /                       attrs: format = "tinygrad-explain-model", format_version = 1 or 2,
                                   architecture = JSON list of layer specs (each with "name", "type", ...;
                                   version 2: graph nodes, each with "inputs", the nodes it reads),
                                   input_shape = [C, H, W]
    /weights/<layer>/weight float32 dataset (conv: O, I/groups, kH, kW; linear: out, in)
    /weights/<layer>/bias   float32 dataset (O,)
    /preprocessing          attrs: mean [C], std [C], channel_order "RGB"|"BGR",
                                   pixel_scale (1.0: pixels in [0,1]; 255.0: in [0,255]),
                                   resize (int, 0 = none), crop (int, 0 = none)
    /class_names            UTF-8 strings, one per output unit (optional)

No pickle anywhere: only numeric datasets, strings and JSON.

A model file is *data*: :func:`load_model` refuses every HDF5 feature that
reaches outside the file (external storage, external links, virtual
datasets), a path that is not a regular file (a FIFO would hang), and an
architecture whose parameter count exceeds ``max_parameters`` (checked
before anything is allocated: a 10 kB file can ask for 10^9 channels).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .format import (  # noqa: F401  (te.save_model, ...)
    FORMAT,
    MAX_ACTIVATIONS,
    MAX_PARAMETERS,
    VERSION,
    VERSIONS,
    ModelFileError,
    check_regular_file,
    parameter_limit,
    save_model,
)
from .shipped import DEFAULT_WEIGHTS, MADE_BY, MODEL_NAMES  # noqa: F401  (the shipped models, loadable by name)

if TYPE_CHECKING:
    from ..core.models import Network

_MAX_OBJECTS = 10_000            # groups + datasets walked when checking a file
def _check_self_contained(f, path):
    """Walk every group and dataset without following links; refuse anything that
    makes HDF5 read outside this file (external links, external storage, virtual
    datasets).  Soft links inside the file are refused too: nothing here needs them."""
    import h5py
    todo, seen = [("", f)], 0
    while todo:
        prefix, group = todo.pop()
        for name in group:
            seen += 1
            if seen > _MAX_OBJECTS:
                raise ModelFileError(f"{path}: more than {_MAX_OBJECTS} objects; not a model file")
            where = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise ModelFileError(f"{path}: {where} is an external link to {link.filename!r}; "
                                     "model files must be self-contained")
            if isinstance(link, h5py.SoftLink):
                raise ModelFileError(f"{path}: {where} is a soft link to {link.path!r}; not allowed in a model file")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                todo.append((where, obj))
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise ModelFileError(f"{path}: dataset {where} is a virtual dataset (its data lives in other "
                                         "files); model files must be self-contained")
                if obj.external:
                    raise ModelFileError(f"{path}: dataset {where} has external storage "
                                         f"({obj.external[0][0]!r}); model files must be self-contained")


def _attr_str(f, key, path):
    """A string attribute (str or bytes, UTF-8), or None when absent; anything else is an error."""
    v = f.attrs.get(key)
    if v is None:
        return None
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(f"{path}: attribute {key!r} is not UTF-8 text") from None
    if isinstance(v, str):
        try:
            v.encode("utf-8")                  # h5py hands bad UTF-8 over as lone surrogates
        except UnicodeEncodeError:
            raise ModelFileError(f"{path}: attribute {key!r} is not UTF-8 text") from None
        return v
    raise ModelFileError(f"{path}: attribute {key!r} must be a string, got {type(v).__name__} {_short(v)}")


def _short(v, n=60):
    """A short readable form of a value from a file (NumPy scalars and arrays as plain Python)."""
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def parameter_count(arch: Sequence[dict]) -> int:
    """Number of weights the architecture asks for, computed from the specs alone
    (nothing allocated): conv O*(I/groups)*k*k + O, linear out*in + out, batch norm 4*C."""
    from ..core.nn import positive_ints
    total = 0
    for spec in arch:
        name = spec.get("name")
        t = spec.get("type")
        try:
            if t == "conv":
                i, o, k, g = positive_ints("conv", in_channels=spec.get("in_channels"),
                                       out_channels=spec.get("out_channels"),
                                       kernel_size=spec.get("kernel_size"), groups=spec.get("groups", 1))
                total += o * (i // g) * k * k + o
            elif t == "linear":
                i, o = positive_ints("linear", in_features=spec.get("in_features"),
                                     out_features=spec.get("out_features"))
                total += o * i + o
            elif t == "batchnorm":
                (c,) = positive_ints("batchnorm", num_features=spec.get("num_features"))
                total += 4 * c                  # weight, bias, running mean and variance
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
    return total


def load_model(path: str | os.PathLike | None = None, device: str = "cpu",
               max_parameters: int | None = None) -> Network:
    """Read a model file written by :func:`save_model` (or by hand, following the schema),
    or an ONNX file (a name ending in ``.onnx``: :func:`tinygrad_explain.modelfiles.onnx_import.load_onnx`,
    without preprocessing -- convert it with ``scripts/convert_onnx.py`` to store that).

    ``path=None`` loads the embedded default model shipped in ``weights/``
    (override with the environment variable ``TGE_WEIGHTS``); a name of
    ``MODEL_NAMES`` (``"embedded"``, ``"random_labels"``, ``"judge"``, ``"robust"``, ``"resnet"``) loads that
    shipped file.  Everything is
    checked -- format, version, architecture, every weight's shape, dtype and
    finiteness -- and a problem raises :class:`ModelFileError` naming the
    file and the layer.  ``device="gpu"`` puts the weights on the GPU (a clear
    error first if CuPy or a CUDA device is missing); inputs must then be CuPy
    arrays (``model.check_input``).

    ``max_parameters`` (default :data:`MAX_PARAMETERS`, or the environment
    variable ``TGE_MAX_PARAMETERS``) bounds the architecture's parameter
    count, checked before any weight is allocated or read.
    """
    import h5py

    from ..core.architecture import from_architecture
    from ..core.nn import weights_to_be_loaded
    if device != "cpu":
        from ..core import device as dev
        dev.require(device)
    if path is None:
        path = os.environ.get("TGE_WEIGHTS") or DEFAULT_WEIGHTS
    elif isinstance(path, str) and path in MODEL_NAMES:
        path = MODEL_NAMES[path]
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from .onnx_import import load_onnx
        return load_onnx(path, max_parameters=max_parameters, device=device)
    limit = parameter_limit(max_parameters)
    check_regular_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelFileError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        def need(cond, msg):
            if not cond:
                raise ModelFileError(f"{path}: {msg}")
        try:
            fmt = _attr_str(f, "format", path)
            need(fmt == FORMAT, f"not a {FORMAT} file (attribute 'format' is {fmt!r})")
            version = f.attrs.get("format_version")
            if not (isinstance(version, (int, np.integer)) and not isinstance(version, (bool, np.bool_))):
                raise ModelFileError(f"{path}: attribute 'format_version' must be an integer, got {_short(version)}")
            need(int(version) in VERSIONS,
                 f"format_version {int(version)} is not supported (this reader knows {', '.join(map(str, VERSIONS))})")
            _check_self_contained(f, path)
            need("architecture" in f.attrs and "input_shape" in f.attrs,
                 "missing 'architecture' or 'input_shape' attribute")
            try:
                arch = json.loads(_attr_str(f, "architecture", path))
            except (TypeError, ValueError, RecursionError) as e:
                if isinstance(e, ModelFileError):
                    raise
                raise ModelFileError(f"{path}: 'architecture' is not valid JSON ({e})") from None
            need(isinstance(arch, list) and all(isinstance(a, dict) for a in arch),
                 "'architecture' must be a list of layer objects")
            need(len(arch) > 0, "'architecture' is an empty list (a network needs at least one layer)")
            graph = [a.get("name") for a in arch if "inputs" in a]
            need(not graph or int(version) >= 2, f"layers {graph[:3]} name their 'inputs' (a graph network), "
                                                 "which needs format_version 2")
            try:
                raw_shape = np.asarray(f.attrs["input_shape"])
                need(raw_shape.dtype.kind in "iu", f"attribute 'input_shape' must be three integers [C, H, W], "
                                                   f"got {_short(f.attrs['input_shape'])}")
                input_shape = tuple(int(v) for v in raw_shape.reshape(-1))
            except (TypeError, ValueError) as e:
                if isinstance(e, ModelFileError):
                    raise
                raise ModelFileError(f"{path}: attribute 'input_shape' must be three integers [C, H, W], "
                                     f"got {_short(f.attrs['input_shape'])}") from None
            need(all(v > 0 for v in input_shape), f"input_shape must be positive, got {list(input_shape)}")
            need(len(input_shape) == 3, f"input_shape must be [C, H, W], got {list(input_shape)}")
            need(int(np.prod(input_shape, dtype=np.float64)) <= MAX_ACTIVATIONS,
                 f"input_shape {list(input_shape)} has more than {MAX_ACTIVATIONS} values per image")
            try:
                n_params = parameter_count(arch)
            except ValueError as e:
                raise ModelFileError(f"{path}: {e}") from None
            need(n_params <= limit, f"the architecture asks for {n_params:,} parameters, more than the limit "
                                    f"{limit:,} (pass max_parameters= to load_model or set TGE_MAX_PARAMETERS "
                                    "to allow it)")
            pre = _read_preprocessing(f, path, input_shape)
            names = _read_class_names(f, path)
            try:
                with weights_to_be_loaded():        # every weight is read from the file below
                    model = from_architecture(arch, input_shape, class_names=names, preprocessing=pre)
            except ValueError as e:
                raise ModelFileError(f"{path}: {e}") from None
            big = max(model.shapes.items(), key=lambda kv: int(np.prod(kv[1], dtype=np.float64)))
            need(int(np.prod(big[1], dtype=np.float64)) <= MAX_ACTIVATIONS,
                 f"layer {big[0]!r} would output {list(big[1])} ({int(np.prod(big[1], dtype=np.float64)):,} values "
                 f"per image, more than {MAX_ACTIVATIONS:,})")
            need(names is None or len(names) == model.num_classes,
                 f"{len(names or [])} class names for {model.num_classes} outputs")
            need("weights" in f and isinstance(f["weights"], h5py.Group), "no 'weights' group")
            state = {}
            for key, own in model.state_dict().items():
                layer, p = key.rsplit(".", 1)
                need(layer in f["weights"] and isinstance(f["weights"][layer], h5py.Group)
                     and p in f["weights"][layer], f"layer {layer!r}: missing weights/{layer}/{p}")
                ds = f["weights"][layer][p]
                need(isinstance(ds, h5py.Dataset),
                     f"layer {layer!r}: weights/{layer}/{p} is a group, expected a dataset")
                need(ds.shape == own.shape,
                     f"layer {layer!r}: {p} has shape {ds.shape}, architecture needs {own.shape}")
                need(ds.dtype.kind == "f", f"layer {layer!r}: {p} has dtype {ds.dtype}, expected float")
                with np.errstate(over="ignore", invalid="ignore"):
                    arr = np.asarray(ds[()]).astype(np.float32, copy=False)   # checked as the network will use it
                need(np.isfinite(arr).all(), f"layer {layer!r}: {p} contains NaN or Inf"
                     + ("" if ds.dtype == np.float32 else f" (after the cast from {ds.dtype} to float32)"))
                state[key] = arr
            extra = [l for l in f["weights"] if l not in model.layers]
            need(not extra, f"weights for layers not in the architecture: {extra}")
            for l in f["weights"]:
                params = getattr(model.layers[l], "params", ())
                need(isinstance(f["weights"][l], h5py.Group), f"weights/{l} is a dataset, expected a group of weights")
                unknown = [p for p in f["weights"][l] if p not in params]
                need(not unknown, f"layer {l!r}: unexpected weights {unknown} (this layer has {list(params)})")
        except ModelFileError:
            raise
        except (OSError, KeyError, RuntimeError) as e:   # truncated or damaged datasets
            raise ModelFileError(f"{path}: damaged file ({e})") from None
        except (TypeError, ValueError, IndexError, AttributeError, RecursionError, MemoryError) as e:
            raise ModelFileError(f"{path}: malformed model file ({type(e).__name__}: {e})") from None
    model.load_state_dict(state)
    model.path = str(path)
    return model.to(device) if device != "cpu" else model


def _read_preprocessing(f, path, input_shape) -> dict:
    """The /preprocessing attributes as plain Python values, checked by the one
    reader of the recipe (:func:`tinygrad_explain.data.image.preprocessing_of`)."""
    from types import SimpleNamespace

    import h5py

    from ..data.image import preprocessing_of
    pre = {}
    if "preprocessing" not in f:
        return pre
    g = f["preprocessing"]
    if not isinstance(g, h5py.Group):
        raise ModelFileError(f"{path}: 'preprocessing' must be a group (with attributes), got a dataset")
    for k, v in g.attrs.items():
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise ModelFileError(f"{path}: preprocessing {k} is not UTF-8 text") from None
        pre[k] = v.tolist() if isinstance(v, np.ndarray) else (v.item() if isinstance(v, np.generic) else v)
    try:
        preprocessing_of(SimpleNamespace(preprocessing=pre, input_shape=input_shape))
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: {e}") from None
    return pre


def _read_class_names(f, path):
    """/class_names: a 1-D dataset of UTF-8 strings, or None when absent."""
    import h5py
    if "class_names" not in f:
        return None
    ds = f["class_names"]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "OSU":
        raise ModelFileError(f"{path}: 'class_names' must be a 1-D dataset of strings"
                             + (f", got dtype {ds.dtype} shape {ds.shape}" if isinstance(ds, h5py.Dataset)
                                else ", got a group"))
    if ds.size > 1_000_000:
        raise ModelFileError(f"{path}: 'class_names' has {ds.size} entries")
    names = []
    for i, n in enumerate(ds[()]):
        if isinstance(n, bytes):
            try:
                n = n.decode("utf-8")
            except UnicodeDecodeError:
                raise ModelFileError(f"{path}: class name {i} is not UTF-8 text ({_short(n)})") from None
        elif not isinstance(n, str):
            raise ModelFileError(f"{path}: class name {i} is not a string ({_short(n)})")
        names.append(n)
    return names
