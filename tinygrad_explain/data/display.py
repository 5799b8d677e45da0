"""Model inputs and real-valued maps as uint8 pictures: :func:`to_display` (one model input as the
network saw it), :func:`to_pictures` (a batch, optionally stretched), :func:`normalize_display`
(a gradient or saliency map: ``minmax``, ``signed`` or ``abs``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .pixels import model_to_pixels, to_numpy

if TYPE_CHECKING:
    from ..core.models import Network


def to_display(x: np.ndarray, model: Network) -> np.ndarray:
    """Invert :func:`load`'s value mapping: model input -> uint8 ``(H, W, 3)`` RGB.

    Accepts ``(1, C, H, W)`` or ``(C, H, W)``.  Geometry (resize/crop) is not
    undone -- the result is the image *as the network saw it*.  One-channel
    inputs are replicated to grey RGB.  Values are clipped to 0..255, so an
    input modified by gradient ascent still displays.
    """
    a = to_numpy(x).astype(np.float64)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"to_display takes one image, got a batch of {a.shape[0]}")
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected (1, C, H, W) or (C, H, W), got shape {a.shape}")
    a = model_to_pixels(a, model)
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    return np.clip(np.round(a), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def to_pictures(x: np.ndarray, model: Network, stretch: bool = False) -> list[np.ndarray]:
    """uint8 ``(H, W, 3)`` pictures of a batch of model-space images ``(N, C, H, W)``: the mean added
    back (:func:`to_display`); with ``stretch``, the pixel values are then spread linearly over 0..255
    (0.5% clipped at each end), as the papers show their visualisations."""
    out = []
    for i in range(x.shape[0]):
        if stretch:
            px = model_to_pixels(x[i], model)          # pixel units, RGB, mean back
            out.append(normalize_display(px, mode="minmax", percentile=99.5))
        else:
            out.append(to_display(x[i], model))
    return out


def _hwc(a: np.ndarray) -> np.ndarray:
    """(1,C,H,W) / (C,H,W) / (H,W,C) / (H,W) -> (H, W, C)."""
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"normalize_display takes one image, got a batch of {a.shape[0]}")
        a = a[0]
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected a 2-, 3- or 4-D array, got shape {a.shape}")
    # Gradients w.r.t. a model input are (C, H, W): channels-first wins ties.
    if a.shape[0] in (1, 3):
        return a.transpose(1, 2, 0)
    return a


def normalize_display(arr: np.ndarray, mode: str = "minmax", percentile: float | None = None) -> np.ndarray:
    """Map a real-valued map (e.g. an input gradient) to a uint8 image.

    ``arr`` may be ``(1, C, H, W)``, ``(C, H, W)``, ``(H, W, C)`` or ``(H, W)``;
    a 3-D array is taken as channels-first when its first axis is 1 or 3 (as
    the gradient of a model input is), else as channels-last.  Modes:

    ``"minmax"`` (default)
        linear map of ``[min, max]`` to ``[0, 255]``, colours kept -- the usual
        way to show a guided-backprop / deconvnet reconstruction.
    ``"signed"``
        zero maps to mid-grey 128 and ``max |arr|`` to 0 / 255, so the sign of
        the gradient stays visible (positive = brighter).
    ``"abs"``
        the saliency map of Simonyan et al. (2014): ``max_c |arr|`` per
        pixel, scaled so the largest value is 255; returns ``(H, W)`` grey.

    ``percentile`` (e.g. 99) clips the scale at that percentile of the
    magnitudes, so a few extreme pixels do not leave the rest black.  A
    constant input gives all zeros ("minmax", "abs") or all 128 ("signed").
    Returns ``(H, W, 3)`` uint8 for 3-channel input, ``(H, W)`` otherwise.
    """
    a = _hwc(to_numpy(arr).astype(np.float64))
    if not np.all(np.isfinite(a)):
        raise ValueError("normalize_display: array contains NaN or Inf")
    if mode == "abs":
        m = np.abs(a).max(axis=2)
        hi = np.percentile(m, percentile) if percentile is not None else m.max()
        out = np.clip(m / hi, 0, 1) * 255.0 if hi > 0 else np.zeros_like(m)
        return np.round(out).astype(np.uint8)
    if mode == "signed":
        mag = np.abs(a)
        hi = np.percentile(mag, percentile) if percentile is not None else mag.max()
        out = 128.0 + (np.clip(a / hi, -1, 1) * 127.0 if hi > 0 else 0.0 * a)
    elif mode == "minmax":
        if percentile is not None:
            lo, hi = np.percentile(a, [100.0 - percentile, percentile])
        else:
            lo, hi = a.min(), a.max()
        out = (np.clip((a - lo) / (hi - lo), 0, 1) * 255.0) if hi > lo else np.zeros_like(a)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected 'minmax', 'signed' or 'abs'")
    out = np.round(out).astype(np.uint8)
    if out.shape[2] == 1:
        return out[:, :, 0]
    if out.shape[2] == 4:
        out = out[:, :, :3]
    return out
