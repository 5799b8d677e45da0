"""Argument checking shared by the explainers: images, targets, layers, units.

Every explainer takes images *in model space*: float arrays (N, C, H, W)
exactly as the network consumes them, i.e. after the model file's
preprocessing (``te.image.load`` produces them; ``te.image.to_display``
turns them back into uint8 pictures).  A single image (C, H, W) is
accepted and treated as a batch of one.

Devices.  Explainers take images on the host (NumPy) or, for a model on the
GPU, also as CuPy arrays; a host image is copied to the model's device once,
here, at the API boundary.  What they return is always on the host (NumPy).
"""
from __future__ import annotations

import difflib

import numpy as np

from .. import device as _device
from ..engine import Tensor, _xp


class ExplainError(ValueError):
    """A bad argument to an explainer (unknown class, layer or unit, wrong shape, ...)."""


class OptimizationError(FloatingPointError):
    """An optimisation diverged (NaN or Inf appeared)."""


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------
def model_device(model) -> str:
    return getattr(model, "device", "cpu")


def to_host(a):
    """A NumPy array (``a`` itself, or its copy from the GPU)."""
    return _device.move(a, "cpu")


def as_batch(model, x):
    """``x`` (N, C, H, W) or (C, H, W), ndarray or Tensor -> float array (N, C, H, W)
    on the model's device (NumPy for a CPU model, CuPy for a GPU model: a host
    image is copied there once), checked against ``model.input_shape`` (clear
    message on a mismatch)."""
    data = x.data if isinstance(x, Tensor) else x
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    if getattr(data, "ndim", 0) == 3:
        data = data[None]
    if data.dtype.kind != "f":
        raise ExplainError(f"images must be float arrays in model space (N, C, H, W), got dtype {data.dtype}; "
                           "use te.image.load(path_or_array, model) to prepare them")
    data = _device.move(data, model_device(model))
    try:
        model.check_input(data)
    except (TypeError, ValueError) as e:
        raise ExplainError(str(e)) from None
    return _xp(data).ascontiguousarray(data)


def pixel_bounds(model):
    """(lo, hi), each (C, 1, 1) float32: the model-space values of pixel 0 and pixel 255
    per channel (in the model's channel order)."""
    mean, std, scale = _recipe(model)
    lo = (0.0 - mean) / std
    hi = (scale - mean) / std
    return (np.minimum(lo, hi).astype(np.float32)[:, None, None],
            np.maximum(lo, hi).astype(np.float32)[:, None, None])


def data_scale(model) -> float:
    """B: the largest magnitude a real image can have in model space (the half-range of
    the pixel values around the mean).  Mahendran & Vedaldi normalise their
    regularisers by it, so that the same weights work for [0,1]/std and [0,255]-mean inputs."""
    lo, hi = pixel_bounds(model)
    return float(max(np.abs(lo).max(), np.abs(hi).max()))


def _recipe(model):
    C = int(model.input_shape[0])
    pre = dict(getattr(model, "preprocessing", None) or {})
    mean = np.asarray(pre.get("mean") if pre.get("mean") is not None else [0.0] * C, np.float64).reshape(-1)
    std = np.asarray(pre.get("std") if pre.get("std") is not None else [1.0] * C, np.float64).reshape(-1)
    if mean.size == 1:
        mean = np.repeat(mean, C)
    if std.size == 1:
        std = np.repeat(std, C)
    scale = float(np.asarray(pre.get("pixel_scale", 1.0) or 1.0).reshape(-1)[0])
    return mean, std, scale


# --------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------
def class_names(model):
    names = getattr(model, "class_names", None)
    return list(names) if names is not None else [str(i) for i in range(model.num_classes)]


def resolve_class(model, target) -> int:
    """A class index from an int, a numeric string or a class name (case-insensitive).
    Unknown names list the nearest matches; out-of-range indices give the valid range."""
    K = model.num_classes
    names = getattr(model, "class_names", None)
    if isinstance(target, (bool, np.bool_)):
        raise ExplainError(f"target must be a class index or name, got {target!r}")
    if isinstance(target, (int, np.integer)):
        idx = int(target)
    elif isinstance(target, str):
        s = target.strip()
        if s.lstrip("-").isdigit():
            idx = int(s)
        else:
            if names is None:
                raise ExplainError(f"this model has no class names; give the target as an index 0..{K - 1}")
            exact = [i for i, n in enumerate(names) if n == s]
            if not exact:
                exact = [i for i, n in enumerate(names) if n.lower() == s.lower()]
            if exact:
                return exact[0]
            lowered = {n.lower(): n for n in names}
            near = [lowered[m] for m in difflib.get_close_matches(s.lower(), list(lowered), n=5, cutoff=0.5)]
            near += [n for n in names if s.lower() in n.lower() and n not in near][:5 - len(near)]
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            listing = "" if len(names) > 30 else f" (classes: {', '.join(names)})"
            raise ExplainError(f"unknown class name {target!r}{hint}{listing}")
    else:
        raise ExplainError(f"target must be a class index or name, got {type(target).__name__} {target!r}")
    if not 0 <= idx < K:
        raise ExplainError(f"class index {idx} is out of range: the model has {K} classes (0..{K - 1})")
    return idx


def resolve_targets(model, target, n: int) -> np.ndarray:
    """One class index per image: a single target (int / name) is used for all ``n``
    images; a list/array must have exactly ``n`` entries."""
    if isinstance(target, (str, int, np.integer)) and not isinstance(target, (bool, np.bool_)):
        return np.full(n, resolve_class(model, target), dtype=np.int64)
    if isinstance(target, np.ndarray) and target.ndim == 0:
        return np.full(n, resolve_class(model, target.item()), dtype=np.int64)
    try:
        seq = list(target)
    except TypeError:
        raise ExplainError(f"target must be a class index, a class name, or one of those per image; "
                           f"got {type(target).__name__}") from None
    if len(seq) != n:
        raise ExplainError(f"{len(seq)} targets for {n} images: give one target, or one per image")
    return np.array([resolve_class(model, t) for t in seq], dtype=np.int64)


# --------------------------------------------------------------------------
# layers and units
# --------------------------------------------------------------------------
def resolve_layer(model, layer) -> str:
    names = model.layer_names
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not -len(names) <= int(layer) < len(names):
            raise ExplainError(f"layer index {layer} out of range: the model has {len(names)} layers")
        return names[int(layer)]
    if layer in names:
        return layer
    near = difflib.get_close_matches(str(layer), names, n=3)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    raise ExplainError(f"unknown layer {layer!r}{hint} (layers: {', '.join(names)})")


def resolve_unit(model, layer: str, unit):
    """Index into one image's activation of ``layer`` (shape ``model.shapes[layer]``).

    * an int ``c``: the whole channel ``c`` of a conv map (its spatial mean is
      maximised) or neuron ``c`` of a vector layer;
    * a tuple ``(c, i, j)``: the single neuron at row i, column j of channel c.
    Returns a tuple index (without the batch axis).
    """
    shape = model.shapes[layer]
    if isinstance(unit, (bool, np.bool_)):
        raise ExplainError(f"unit must be an int or a tuple of ints, got {unit!r}")
    if isinstance(unit, (int, np.integer)):
        idx = (int(unit),)
    elif isinstance(unit, str) and unit.strip().lstrip("-").isdigit():
        idx = (int(unit),)
    elif isinstance(unit, str) and "," in unit:
        try:
            idx = tuple(int(v) for v in unit.split(","))
        except ValueError:
            raise ExplainError(f"unit {unit!r} is not 'c' or 'c,i,j' with integers") from None
    else:
        try:
            idx = tuple(int(v) for v in unit)
        except (TypeError, ValueError):
            raise ExplainError(f"unit must be an int (channel / neuron) or a tuple (c, i, j), got {unit!r}") from None
    if len(idx) not in (1, len(shape)):
        raise ExplainError(f"unit {unit!r} has {len(idx)} indices; layer {layer!r} has shape {shape}: "
                           f"give a channel (1 index) or a full position ({len(shape)} indices)")
    for k, (i, n) in enumerate(zip(idx, shape)):
        if not 0 <= i < n:
            what = ("channel", "row", "column")[k] if len(shape) == 3 else "unit"
            raise ExplainError(f"{what} {i} out of range for layer {layer!r} of shape {shape} (0..{n - 1})")
    return idx
