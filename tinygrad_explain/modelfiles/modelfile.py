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

from .shipped import weights_file

if TYPE_CHECKING:
    from ..core.models import Network

FORMAT = "tinygrad-explain-model"
#: The newest format version: 1 is a chain of layers, 2 adds graph networks (entries with
#: "inputs").  A chain is still written as version 1 (files older readers read).
VERSION = 2
VERSIONS = (1, 2)
DEFAULT_WEIGHTS = weights_file("fashion_scenes_alexnet.h5")     # where: tinygrad_explain.modelfiles.shipped
#: Largest parameter count load_model accepts unless told otherwise (AlexNet has 61 M;
#: 300 M float32 weights are 1.2 GB).  Override per call or with TGE_MAX_PARAMETERS.
MAX_PARAMETERS = 300_000_000
#: Largest number of values of one layer's output for one image (input included).
MAX_ACTIVATIONS = 100_000_000
_MAX_OBJECTS = 10_000            # groups + datasets walked when checking a file
# model files shipped in weights/, loadable by name: te.load_model("random_labels")
MODEL_NAMES = {
    "embedded": DEFAULT_WEIGHTS,
    # the same architecture trained on randomly permuted labels (scripts/train_random_labels.py),
    # the data-randomisation test of Adebayo et al. 2018 (te.explain.sanity)
    "random_labels": DEFAULT_WEIGHTS.with_name("fashion_scenes_alexnet_random_labels.h5"),
    # the independent judge of visualisations (scripts/train_judge.py): a VGG-style classifier of the
    # same scenes, a measuring instrument only (te.explain.quality)
    "judge": DEFAULT_WEIGHTS.with_name("judge_vgg.h5"),
    # the embedded model fine-tuned with PGD adversarial training (scripts/train_robust.py,
    # Madry et al. 2018): its input gradients look like the object (Tsipras et al. 2019)
    "robust": DEFAULT_WEIGHTS.with_name("fashion_scenes_alexnet_robust.h5"),
    # a small ResNet on the same scenes, trained by PyTorch and brought in through ONNX
    # (scripts/train_resnet.py, docs/resnet.md): a graph network with residual blocks
    "resnet": DEFAULT_WEIGHTS.with_name("fashion_scenes_resnet.h5"),
}
#: the script that makes each shipped model file (named when the file is missing)
MADE_BY = {"embedded": "train_embedded.py", "random_labels": "train_random_labels.py", "judge": "train_judge.py",
           "robust": "train_robust.py", "resnet": "train_resnet.py"}


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or does not match its own description."""


def save_model(model: Network, path: str | os.PathLike, class_names: Sequence[str] | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               channel_order: str | None = None, pixel_scale: float | None = None,
               resize: int | None = None, crop: int | None = None) -> Path:
    """Write ``model`` (a Network) to ``path`` as a self-describing HDF5 file.

    Preprocessing arguments left as None are taken from ``model.preprocessing``
    (defaults: mean 0, std 1, RGB, pixels in [0, 1], no resize/crop).
    The file is written to a temporary name and renamed, so a crash never
    leaves a half-written model behind.
    """
    import h5py
    pre = dict(model.preprocessing)
    for k, v in (("mean", mean), ("std", std), ("channel_order", channel_order),
                 ("pixel_scale", pixel_scale), ("resize", resize), ("crop", crop)):
        if v is not None:
            pre[k] = v
    C = model.input_shape[0]
    pre = {"mean": np.asarray(pre.get("mean", [0.0] * C), np.float64).reshape(-1),
           "std": np.asarray(pre.get("std", [1.0] * C), np.float64).reshape(-1),
           "channel_order": str(pre.get("channel_order", "RGB")),
           "pixel_scale": float(pre.get("pixel_scale", 1.0)),
           "resize": int(pre.get("resize") or 0), "crop": int(pre.get("crop") or 0)}
    if pre["mean"].shape != (C,) or pre["std"].shape != (C,):
        raise ValueError(f"mean and std must have {C} values (one per input channel)")
    names = class_names if class_names is not None else model.class_names
    if names is not None and len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class names for {model.num_classes} outputs")
    from ..core.safe_io import atomic_write
    with atomic_write(path) as fobj, h5py.File(fobj, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 2 if any("inputs" in spec for spec in model.architecture()) else 1
        f.attrs["architecture"] = json.dumps(model.architecture())
        f.attrs["input_shape"] = np.asarray(model.input_shape, np.int64)
        w = f.create_group("weights")
        for key, arr in model.state_dict().items():
            layer, p = key.rsplit(".", 1)
            w.require_group(layer).create_dataset(p, data=np.asarray(arr, np.float32))
        g = f.create_group("preprocessing")
        for k, v in pre.items():
            g.attrs[k] = v
        if names is not None:
            f.create_dataset("class_names", data=[str(n) for n in names], dtype=h5py.string_dtype("utf-8"))
    return Path(path)


def _check_regular_file(path):
    """Refuse a path that is not a regular file (a FIFO, a device, a folder) before opening it."""
    from ..core.safe_io import regular_file_problem
    try:
        problem = regular_file_problem(path)
    except FileNotFoundError:
        script = next((MADE_BY.get(n) for n, p in MODEL_NAMES.items() if Path(path) == p), None)
        raise FileNotFoundError(f"model file {path} does not exist"
                                + (f" (made by scripts/{script})" if script else "")) from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if problem:
        raise ModelFileError(f"{path}: not a regular file ({problem})")


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
    from ..core.nn import _positive
    total = 0
    for spec in arch:
        name = spec.get("name")
        t = spec.get("type")
        try:
            if t == "conv":
                i, o, k, g = _positive("conv", in_channels=spec.get("in_channels"),
                                       out_channels=spec.get("out_channels"),
                                       kernel_size=spec.get("kernel_size"), groups=spec.get("groups", 1))
                total += o * (i // g) * k * k + o
            elif t == "linear":
                i, o = _positive("linear", in_features=spec.get("in_features"), out_features=spec.get("out_features"))
                total += o * i + o
            elif t == "batchnorm":
                (c,) = _positive("batchnorm", num_features=spec.get("num_features"))
                total += 4 * c                  # weight, bias, running mean and variance
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
    return total


def _max_parameters(limit):
    from ..core.safe_io import limit_from_env
    return limit_from_env(limit, "TGE_MAX_PARAMETERS", MAX_PARAMETERS)


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

    from ..core.models import from_architecture
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
    limit = _max_parameters(max_parameters)
    _check_regular_file(path)
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
