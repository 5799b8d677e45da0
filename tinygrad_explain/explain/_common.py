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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..core import device as _device
from ..core.engine import Tensor
from ..core.engine import array_module as _xp
from ..core.models import Network

# --------------------------------------------------------------------------
# the types of the explainers' arguments (hints only: nothing is checked by them)
# --------------------------------------------------------------------------
#: an array on the model's device: a NumPy array, or a CuPy array (same interface) on the GPU
Array = np.ndarray
#: images in model space: float (N, C, H, W) or one image (C, H, W) -- (N, F) / (F,) for a
#: network of vectors --, an ``Array`` or a ``Tensor``
Images = Union[np.ndarray, Tensor]
#: a layer: its name ("conv5") or its index in ``model.layer_names``
LayerName = Union[str, int]
#: a unit of a layer: a channel / neuron index ``c``, a position ``(c, i, j)``, or "c" / "c,i,j"
Unit = Union[int, str, Sequence[int]]
# (``Target``, what an explainer explains, is defined below ``Objective``, which it includes)


class ExplainError(ValueError):
    """A bad argument to an explainer (unknown class, layer or unit, wrong shape, ...)."""


class OptimizationError(FloatingPointError):
    """An optimisation diverged (NaN or Inf appeared)."""


def check_finite(a: Array, what: str) -> None:
    """Refuse NaN / Inf in scores or gradients: an explanation computed from them would be
    meaningless (a network that overflows must never give plausible maps)."""
    if not bool(_xp(a).isfinite(a).all()):
        raise ExplainError(f"{what} contains NaN or Inf: the network overflowed on this input (or has "
                           "extreme weights); no explanation can be computed from it")


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------
def model_device(model: Network) -> str:
    return getattr(model, "device", "cpu")


def to_host(a: Array) -> np.ndarray:
    """A NumPy array (``a`` itself, or its copy from the GPU)."""
    return _device.move(a, "cpu")


def as_batch(model: Network, x: Images) -> Array:
    """``x`` (N, C, H, W) or (C, H, W) -- (N, F) or (F,) for a network that takes
    vectors --, ndarray or Tensor -> float array (N, *model.input_shape) on the model's
    device (NumPy for a CPU model, CuPy for a GPU model: a host image is copied there
    once), checked against ``model.input_shape`` (clear message on a mismatch)."""
    data = x.data if isinstance(x, Tensor) else x
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    if getattr(data, "ndim", 0) == len(model.input_shape):
        data = data[None]
    if data.dtype.kind != "f":
        what = "images must be float arrays in model space (N, C, H, W)" if len(model.input_shape) == 3 else \
            f"inputs must be float arrays (N, {', '.join(map(str, model.input_shape))})"
        raise ExplainError(f"{what}, got dtype {data.dtype}; use te.image.load(path_or_array, model) to prepare images")
    data = _device.move(data, model_device(model))
    try:
        model.check_input(data)
    except (TypeError, ValueError) as e:
        raise ExplainError(str(e)) from None
    return _xp(data).ascontiguousarray(data)


# --------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------
def class_names(model: Network) -> list[str]:
    """The model's class names, or "0" .. "K-1" when it has none (public: te.explain.class_names)."""
    names = getattr(model, "class_names", None)
    return list(names) if names is not None else [str(i) for i in range(model.num_classes)]


def resolve_class(model: Network, target: int | str) -> int:
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
        if s.lstrip("-").isdecimal():
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


def resolve_targets(model: Network, target: Target, n: int) -> np.ndarray:
    """One class index per image: a single target (int / name) is used for all ``n``
    images; a list/array must have exactly ``n`` entries."""
    if isinstance(target, (str, int, np.integer)) and not isinstance(target, (bool, np.bool_)):
        return np.full(n, resolve_class(model, target), dtype=np.int64)
    if isinstance(target, np.ndarray) and target.ndim == 0:
        return np.full(n, resolve_class(model, target.item()), dtype=np.int64)
    seq = _one_per_image(target, n, "a class index, a class name")
    return np.array([resolve_class(model, t) for t in seq], dtype=np.int64)


def _one_per_image(target: Target, n: int, kinds: str) -> list:
    """``target`` as a list of exactly ``n`` targets (one per image); ``kinds`` names
    what a single target may be, for the error message."""
    try:
        seq = list(target)
    except TypeError:
        raise ExplainError(f"target must be {kinds}, or one of those per image; "
                           f"got {type(target).__name__}") from None
    if len(seq) != n:
        raise ExplainError(f"{len(seq)} targets for {n} images: give one target, or one per image")
    return seq


# --------------------------------------------------------------------------
# layers and units
# --------------------------------------------------------------------------
def resolve_layer(model: Network, layer: LayerName) -> str:
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


def resolve_unit(model: Network, layer: str, unit: Unit) -> tuple[int, ...]:
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
    elif isinstance(unit, str) and unit.strip().lstrip("-").isdecimal():
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


# --------------------------------------------------------------------------
# targets: a class, a channel or a neuron
# --------------------------------------------------------------------------
@dataclass
class Objective:
    """What a gradient explainer differentiates, one scalar per image n:

        S_n = sum_u seed[n, u] * a_layer(x_n)[u]        so  dS_n / d a_layer(x_n) = seed[n]

    ``layer``  the layer whose output holds the targets (the last layer for classes)
    ``seed``   float64 (N, *model.shapes[layer]): one-hot for a class or a neuron,
               1/(H*W) over the whole channel for a channel (its mean activation)
    ``labels`` one caption per image: the class name, or "conv5[12]" / "conv5[12,3,4]"
    ``classes`` the class index per image (None unless every target is a class)
    """
    layer: str
    seed: np.ndarray
    labels: list[str]
    classes: np.ndarray | None = None

    def seed_like(self, out: Tensor | Array) -> Array:
        """The seed as an array of ``out``'s dtype on its device (the gradient to pass
        to ``out.backward``, ``out`` the layer's output Tensor or array)."""
        data = out.data if isinstance(out, Tensor) else out
        return _xp(data).asarray(self.seed, dtype=data.dtype)

    def take(self, index: np.ndarray | slice) -> Objective:
        """The objective of the images ``index`` (an index array or slice): e.g.
        ``obj.take(np.repeat(np.arange(N), k))`` repeats each image's target k times."""
        return Objective(layer=self.layer, seed=self.seed[index], labels=list(np.asarray(self.labels, object)[index]),
                         classes=None if self.classes is None else self.classes[index])

    def value(self, out: Tensor) -> Tensor:
        """S (N,) from the layer's output Tensor, differentiable: sum of seed * out per image."""
        s = out * Tensor(self.seed_like(out))
        return s.sum(axis=tuple(range(1, out.ndim))) if out.ndim > 1 else s


#: what an explainer explains (``resolve_objective``): a class (index or name), a channel or
#: neuron (``("conv5", c[, i, j])`` or ``"conv5:c[:i:j]"``), one of those per image, or an Objective
Target = Union[int, str, tuple, Sequence, np.ndarray, Objective]


def _unit_target(model, t):
    """(layer name, unit index) if ``t`` names a unit -- a tuple (layer, c) / (layer, c, i, j)
    whose first item is a string and whose others are integers, or a string "layer:c" /
    "layer:c:i:j" that is not a class name -- else None (``t`` is a class)."""
    if isinstance(t, str):
        if ":" not in t or t.strip() in (getattr(model, "class_names", None) or ()):
            return None
        head, *rest = [v.strip() for v in t.split(":")]
        if not all(v.lstrip("-").isdecimal() for v in rest):
            return _bad_unit(t) if head in model.layer_names else None    # else a class name with a colon
        layer, unit = head, tuple(int(v) for v in rest)
    elif isinstance(t, tuple) and t and isinstance(t[0], str):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in t[1:]):
            _bad_unit(t)
        layer, unit = t[0], tuple(int(v) for v in t[1:])
    else:
        return None
    if not unit:
        _bad_unit(t)
    try:
        name = resolve_layer(model, layer)
    except ExplainError as e:
        raise ExplainError(f"target {t!r}: {e} (a tuple or 'layer:c' string whose first item is a string "
                           "is a channel/neuron target; give one class per image as a list)") from None
    return name, resolve_unit(model, name, unit[0] if len(unit) == 1 else unit)


def _bad_unit(t):
    raise ExplainError(f"target {t!r}: a channel or neuron target is (layer, c) or (layer, c, i, j) with integer "
                       "indices, or the string 'layer:c' / 'layer:c:i:j'")


def resolve_objective(model: Network, target: Target, n: int) -> Objective:
    """The one target resolver of the gradient explainers.  ``target`` is

    * a class: an index or a name (``resolve_class``) -- S is that class's score;
    * a channel: ``("conv5", c)`` or ``"conv5:c"`` -- S is the mean of channel c of
      conv5's output over its positions (for a vector layer such as fc7: neuron c);
    * a neuron: ``("conv5", c, i, j)`` or ``"conv5:c:i:j"`` -- S is that one activation;
    * or a list/array of those, one per image (all in the same layer).
    Unknown layers, out-of-range channels and positions raise an ExplainError naming them
    (``resolve_layer`` / ``resolve_unit``: the same checks as ``maximize``).
    An ``Objective`` passes through (its number of images must be ``n``)."""
    if isinstance(target, Objective):
        if len(target.seed) != n:
            raise ExplainError(f"an objective for {len(target.seed)} images given for {n} images")
        return target
    single = _unit_target(model, target) is not None or isinstance(target, (str, int, np.integer)) or (
        isinstance(target, np.ndarray) and target.ndim == 0)
    if single:
        items = [target.item() if isinstance(target, np.ndarray) else target] * n
    else:
        items = _one_per_image(target, n, "a class index, a class name, a channel or neuron (layer, c[, i, j])")
    last = model.layer_names[-1]
    resolved = []                      # (layer, unit index) or (None, class index)
    for t in items:
        u = _unit_target(model, t)
        resolved.append(u if u is not None else (None, resolve_class(model, t)))
    layers = {layer or last for layer, _ in resolved}
    if len(layers) > 1:
        raise ExplainError(f"targets in different layers ({', '.join(sorted(layers))}) in one call: "
                           "make one call per layer")
    layer = layers.pop()
    shape = model.shapes[layer]
    seed = np.zeros((n,) + tuple(shape), np.float64)
    names = class_names(model) if any(lay is None for lay, _ in resolved) else None
    labels = []
    for k, (lay, idx) in enumerate(resolved):
        if lay is None:                # a class score
            seed[k, idx] = 1.0
            labels.append(names[idx])
        else:
            if len(idx) < len(shape):  # a whole channel of a map: its mean activation
                seed[(k,) + idx] = 1.0 / int(np.prod(shape[len(idx):]))
            else:
                seed[(k,) + idx] = 1.0
            labels.append(f"{lay}[{','.join(map(str, idx))}]")
    classes = np.array([idx for _, idx in resolved], np.int64) if all(lay is None for lay, _ in resolved) else None
    return Objective(layer=layer, seed=seed, labels=labels, classes=classes)
