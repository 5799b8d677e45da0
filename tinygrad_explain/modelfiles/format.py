"""The HDF5 model file's format (the schema: :mod:`tinygrad_explain.modelfiles.modelfile`): its name and
versions, the error every model reader raises, the size limits, the checks every reader shares (a
regular file, the parameter-count limit) and the writer, :func:`save_model`.  Below every reader
(``modelfile``'s ``load_model``, ``onnx_import``) and converter, so that they share it without
importing one another."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .shipped import MADE_BY, MODEL_NAMES

if TYPE_CHECKING:
    from ..core.models import Network

FORMAT = "tinygrad-explain-model"
#: The newest format version: 1 is a chain of layers, 2 adds graph networks (entries with
#: "inputs").  A chain is still written as version 1 (files older readers read).
VERSION = 2
VERSIONS = (1, 2)
#: Largest parameter count load_model accepts unless told otherwise (AlexNet has 61 M;
#: 300 M float32 weights are 1.2 GB).  Override per call or with TGE_MAX_PARAMETERS.
MAX_PARAMETERS = 300_000_000
#: Largest number of values of one layer's output for one image (input included).
MAX_ACTIVATIONS = 100_000_000


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


def check_regular_file(path: str | os.PathLike) -> None:
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


def parameter_limit(limit: int | None) -> int:
    """The parameter-count limit: ``limit``, else TGE_MAX_PARAMETERS, else :data:`MAX_PARAMETERS`."""
    from ..core.safe_io import limit_from_env
    return limit_from_env(limit, "TGE_MAX_PARAMETERS", MAX_PARAMETERS)
