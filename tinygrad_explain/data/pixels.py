"""Pixels <-> model space, the one place this mapping is written: ``x = (pixel * pixel_scale / 255
- mean) / std`` per channel (after the channel reordering), its inverse, its chain rule for
gradients, and the model-space range of real pixels (:func:`pixel_bounds`, :func:`data_scale`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .preprocessing import preprocessing_of

if TYPE_CHECKING:
    from ..core.models import Network


def to_numpy(x: object) -> np.ndarray:
    """Accept ndarray, engine Tensor (``.numpy()``/``.data``) or CuPy arrays."""
    if hasattr(x, "numpy") and callable(x.numpy) and not isinstance(x, np.ndarray):
        x = x.numpy()
    elif hasattr(x, "data") and not isinstance(x, np.ndarray) and not isinstance(x, memoryview):
        x = x.data
    if hasattr(x, "get") and not isinstance(x, (np.ndarray, dict)):
        x = x.get()                                          # CuPy -> NumPy
    return np.asarray(x)


def pixels_to_model(pixels: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray,
                    pixel_scale: float = 1.0, channel_order: str = "RGB") -> np.ndarray:
    """RGB pixels 0..255, (N, H, W, C) or (H, W, C), uint8 or float -> float32
    (N, C, H, W) model space, for a single image or a batch:

        x = pixel * pixel_scale / 255;  channels to ``channel_order``;  x = (x - mean) / std

    (in float32, in that order).  ``mean``/``std`` per channel, in ``channel_order``."""
    x = np.asarray(pixels)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, H, W, C), got shape {x.shape}")
    out = x.transpose(0, 3, 1, 2).astype(np.float32)
    out *= np.float32(pixel_scale / 255.0)
    if out.shape[1] == 3 and str(channel_order).upper() == "BGR":
        out = out[:, ::-1]
    out -= np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    out /= np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out)


def to_model(pixels: np.ndarray, model: Network) -> np.ndarray:
    """:func:`pixels_to_model` with the model's recipe (:func:`preprocessing_of`):
    uint8 RGB (N, H, W, C) or (H, W, C) already at the input size -> float32
    (N, C, H, W).  :func:`load` adds decoding and geometry for files."""
    pre = preprocessing_of(model)
    return pixels_to_model(pixels, pre["mean"], pre["std"], pre["pixel_scale"], pre["channel_order"])


def model_grad_to_pixels(grad: np.ndarray, model: Network) -> np.ndarray:
    """The chain rule through :func:`to_model`: a gradient ``dL/dx`` in model space
    (N, C, H, W) -> ``dL/dpixel`` (N, H, W, C), RGB, pixels on the 0..255 scale.

    ``x = (pixel * pixel_scale / 255 - mean) / std`` per channel (after the
    channel reordering), so ``dL/dpixel = dL/dx * pixel_scale / (255 * std)``,
    channels back to RGB, channels last.  An adversarial attack that works on
    pixels (:mod:`tinygrad_explain.training.adversarial`) steps along this gradient."""
    g = to_numpy(grad).astype(np.float64)
    if g.ndim == 3:
        g = g[None]
    if g.ndim != 4:
        raise ValueError(f"expected a gradient (N, C, H, W), got shape {g.shape}")
    pre = preprocessing_of(model)
    if g.shape[1] != pre["std"].size:
        raise ValueError(f"gradient has {g.shape[1]} channels, model preprocessing has {pre['std'].size}")
    g = g * (pre["pixel_scale"] / 255.0) / pre["std"].reshape(1, -1, 1, 1)
    if g.shape[1] == 3 and pre["channel_order"] == "BGR":
        g = g[:, ::-1]
    return np.ascontiguousarray(g.transpose(0, 2, 3, 1))


def model_to_pixels(x: np.ndarray, model: Network) -> np.ndarray:
    """The inverse value mapping: model space (C, H, W) -> float64 pixels (C, H, W),
    RGB order, 0..255 scale, neither rounded nor clipped (an optimised image may leave
    the range): ``(x * std + mean) * 255 / pixel_scale``, channels back to RGB."""
    a = to_numpy(x).astype(np.float64)
    pre = preprocessing_of(model)
    C = a.shape[0]
    if C != pre["mean"].size:
        raise ValueError(f"input has {C} channels, model preprocessing has {pre['mean'].size}")
    a = a * pre["std"][:, None, None] + pre["mean"][:, None, None]
    a = a * (255.0 / pre["pixel_scale"])
    if C == 3 and pre["channel_order"] == "BGR":
        a = a[::-1]
    return a


def pixel_bounds(model: Network) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (C, 1, 1) float32: the model-space values of pixel 0 and pixel 255
    per channel (in the model's channel order)."""
    pre = preprocessing_of(model)
    mean, std, scale = pre["mean"], pre["std"], pre["pixel_scale"]
    lo = (0.0 - mean) / std
    hi = (scale - mean) / std
    return (np.minimum(lo, hi).astype(np.float32)[:, None, None],
            np.maximum(lo, hi).astype(np.float32)[:, None, None])


def data_scale(model: Network) -> float:
    """B: the largest magnitude a real image can have in model space (the half-range of
    the pixel values around the mean).  Mahendran & Vedaldi normalise their
    regularisers by it, so that the same weights work for [0,1]/std and [0,255]-mean inputs."""
    lo, hi = pixel_bounds(model)
    return float(max(np.abs(lo).max(), np.abs(hi).max()))


def channel_stats(images_uint8: np.ndarray, pixel_scale: float = 1.0,
                  max_images: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images, with pixels scaled to
    [0, ``pixel_scale``] (the values the model file's preprocessing stores)."""
    x = np.asarray(images_uint8[:max_images], np.float64) * (pixel_scale / 255.0)
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
