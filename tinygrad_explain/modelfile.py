"""The self-describing HDF5 model file (schema in README.md, "Model file").

    /                       attrs: format = "tinygrad-explain-model", format_version = 1,
                                   architecture = JSON list of layer specs (each with "name", "type", ...),
                                   input_shape = [C, H, W]
    /weights/<layer>/weight float32 dataset (conv: O, I/groups, kH, kW; linear: out, in)
    /weights/<layer>/bias   float32 dataset (O,)
    /preprocessing          attrs: mean [C], std [C], channel_order "RGB"|"BGR",
                                   pixel_scale (1.0: pixels in [0,1]; 255.0: in [0,255]),
                                   resize (int, 0 = none), crop (int, 0 = none)
    /class_names            UTF-8 strings, one per output unit (optional)

No pickle anywhere: only numeric datasets, strings and JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FORMAT = "tinygrad-explain-model"
VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "fashion_scenes_alexnet.h5"
# model files shipped in weights/, loadable by name: te.load_model("random_labels")
MODEL_NAMES = {
    "embedded": DEFAULT_WEIGHTS,
    # the same architecture trained on randomly permuted labels (scripts/train_random_labels.py),
    # the data-randomisation test of Adebayo et al. 2018 (te.explain.sanity)
    "random_labels": DEFAULT_WEIGHTS.with_name("fashion_scenes_alexnet_random_labels.h5"),
}


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or does not match its own description."""


def save_model(model, path, class_names=None, mean=None, std=None, channel_order=None,
               pixel_scale=None, resize=None, crop=None):
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = VERSION
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
    os.replace(tmp, path)
    return path


def load_model(path=None, device="cpu"):
    """Read a model file written by :func:`save_model` (or by hand, following the schema).

    ``path=None`` loads the embedded default model shipped in ``weights/``
    (override with the environment variable ``TGE_WEIGHTS``); a name of
    ``MODEL_NAMES`` (``"embedded"``, ``"random_labels"``) loads that shipped file.  Everything is
    checked -- format, version, architecture, every weight's shape, dtype and
    finiteness -- and a problem raises :class:`ModelFileError` naming the
    file and the layer.  ``device="gpu"`` puts the weights on the GPU (a clear
    error first if CuPy or a CUDA device is missing); inputs must then be CuPy
    arrays (``model.check_input``).
    """
    import h5py
    from .models import from_architecture
    if device != "cpu":
        from . import device as dev
        dev.require(device)
    if path is None:
        path = os.environ.get("TGE_WEIGHTS") or DEFAULT_WEIGHTS
    elif isinstance(path, str) and path in MODEL_NAMES:
        path = MODEL_NAMES[path]
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist"
                                + (" (the embedded model is made by scripts/train_embedded.py)"
                                   if path == DEFAULT_WEIGHTS else
                                   " (made by scripts/train_random_labels.py)" if path == MODEL_NAMES["random_labels"]
                                   else ""))
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelFileError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        def need(cond, msg):
            if not cond:
                raise ModelFileError(f"{path}: {msg}")
        try:
            need(f.attrs.get("format") == FORMAT, f"not a {FORMAT} file (attribute 'format' is {f.attrs.get('format')!r})")
            try:
                version = int(f.attrs.get("format_version", -1))
            except (TypeError, ValueError):
                raise ModelFileError(f"{path}: attribute 'format_version' is not an integer: "
                                     f"{f.attrs.get('format_version')!r}") from None
            need(version == VERSION, f"format_version {version} is not supported (this reader knows {VERSION})")
            need("architecture" in f.attrs and "input_shape" in f.attrs, "missing 'architecture' or 'input_shape' attribute")
            try:
                arch = json.loads(f.attrs["architecture"])
            except (TypeError, ValueError) as e:
                raise ModelFileError(f"{path}: 'architecture' is not valid JSON ({e})") from None
            need(isinstance(arch, list) and all(isinstance(a, dict) for a in arch), "'architecture' must be a list of layer objects")
            try:
                input_shape = tuple(int(v) for v in np.asarray(f.attrs["input_shape"]).reshape(-1))
            except (TypeError, ValueError):
                raise ModelFileError(f"{path}: attribute 'input_shape' must be three integers [C, H, W], "
                                     f"got {f.attrs['input_shape']!r}") from None
            need(all(v > 0 for v in input_shape), f"input_shape must be positive, got {list(input_shape)}")
            need(len(input_shape) == 3, f"input_shape must be [C, H, W], got {list(input_shape)}")
            pre = {}
            if "preprocessing" in f:
                for k, v in f["preprocessing"].attrs.items():
                    pre[k] = v.tolist() if isinstance(v, np.ndarray) else (v.item() if isinstance(v, np.generic) else v)
            names = None
            if "class_names" in f:
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["class_names"][()]]
            try:
                model = from_architecture(arch, input_shape, class_names=names, preprocessing=pre)
            except ValueError as e:
                raise ModelFileError(f"{path}: {e}") from None
            need(names is None or len(names) == model.num_classes,
                 f"{len(names or [])} class names for {model.num_classes} outputs")
            for k in ("mean", "std"):
                if k in pre:
                    need(np.asarray(pre[k]).shape == (input_shape[0],), f"preprocessing {k} must have {input_shape[0]} values")
            need("weights" in f, "no 'weights' group")
            state = {}
            for key, own in model.state_dict().items():
                layer, p = key.rsplit(".", 1)
                need(layer in f["weights"] and p in f["weights"][layer], f"layer {layer!r}: missing weights/{layer}/{p}")
                ds = f["weights"][layer][p]
                need(ds.shape == own.shape, f"layer {layer!r}: {p} has shape {ds.shape}, architecture needs {own.shape}")
                need(ds.dtype.kind == "f", f"layer {layer!r}: {p} has dtype {ds.dtype}, expected float")
                arr = ds[()]
                need(np.isfinite(arr).all(), f"layer {layer!r}: {p} contains NaN or Inf")
                state[key] = arr
            extra = [l for l in f["weights"] if l not in model.layers]
            need(not extra, f"weights for layers not in the architecture: {extra}")
            for l in f["weights"]:
                params = getattr(model.layers[l], "params", ())
                unknown = [p for p in f["weights"][l] if p not in params]
                need(not unknown, f"layer {l!r}: unexpected weights {unknown} (this layer has {list(params)})")
        except ModelFileError:
            raise
        except (OSError, KeyError, RuntimeError) as e:   # truncated or damaged datasets
            raise ModelFileError(f"{path}: damaged file ({e})") from None
    model.load_state_dict(state)
    model.path = str(path)
    return model.to(device) if device != "cpu" else model
