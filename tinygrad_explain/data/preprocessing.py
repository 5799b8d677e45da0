"""A model's preprocessing recipe (``model.preprocessing``, stored in the model file), read and
checked: :func:`preprocessing_of` fills in the defaults and refuses a bad value with a one-line
error naming the key (the keys: the table in :mod:`tinygrad_explain.data.image`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..core.models import Network

#: Bounds on the recipe's sizes (pixels per side) and on the standard deviation.
MAX_SIDE = 8192
MIN_STD = 1e-6


def _as_str(v, default, key):
    if v is None:
        return default
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(-1)[0]
    if isinstance(v, np.str_):
        v = str(v)
    if isinstance(v, (bytes, np.bytes_)):
        try:
            v = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"preprocessing {key} is not UTF-8 text: {v!r}") from None
    if not isinstance(v, str):
        raise ValueError(f"preprocessing {key} must be a string, got {v!r}")
    try:
        v.encode("utf-8")                      # h5py hands bad UTF-8 over as lone surrogates
    except UnicodeEncodeError:
        raise ValueError(f"preprocessing {key} is not UTF-8 text: {v!r}") from None
    return v


def _numbers(v, key) -> np.ndarray:
    """A flat float64 array of finite numbers (not strings, not booleans)."""
    a = np.asarray(v)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"preprocessing {key} must be numbers, got {v!r}")
    a = a.astype(np.float64).reshape(-1)
    if not np.isfinite(a).all():
        raise ValueError(f"preprocessing {key} must be finite, got {v!r}")
    return a


def _as_size(v, key="size"):
    """``resize``/``crop`` value -> None (absent or 0), an int, or an (h, w) pair, each in 1..MAX_SIDE."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all()):
        raise ValueError(f"preprocessing {key} must be a whole number of pixels or (h, w), got {v!r}")
    a = a.reshape(-1)
    if a.size == 0:
        return None
    if a.size > 2:
        raise ValueError(f"preprocessing {key} must be an int or (h, w), got {v!r}")
    if (a < 0).any() or (a > MAX_SIDE).any():
        raise ValueError(f"preprocessing {key} must be between 0 and {MAX_SIDE} pixels, got {v!r}")
    if a.size == 1:
        n = int(a[0])
        return n if n > 0 else None
    h, w = (int(a[0]), int(a[1]))
    if (h > 0) != (w > 0):
        raise ValueError(f"preprocessing {key} must have both sides positive (or both 0), got {v!r}")
    return (h, w) if h > 0 and w > 0 else None


def preprocessing_of(model: Network) -> dict:
    """The model's recipe with defaults filled in and types normalised.

    Returns ``dict(mean=ndarray[C], std=ndarray[C], channel_order=str,
    pixel_scale=float, resize=None|int|(h, w), crop=None|int|(h, w))``.
    Only ``model.preprocessing`` and ``model.input_shape`` are read, so any
    object with those two attributes works (handy in tests).  Every value is
    checked -- numbers where numbers belong, finite, ``std >= MIN_STD``,
    sizes whole and in 1..MAX_SIDE -- and a bad one raises ``ValueError``
    naming the key and the value.
    """
    C = int(model.input_shape[0])
    pre = dict(getattr(model, "preprocessing", None) or {})
    mean = _numbers(pre.get("mean") if pre.get("mean") is not None else [0.0] * C, "mean")
    std = _numbers(pre.get("std") if pre.get("std") is not None else [1.0] * C, "std")
    if mean.size == 1:
        mean = np.repeat(mean, C)
    if std.size == 1:
        std = np.repeat(std, C)
    for key, a in (("mean", mean), ("std", std)):
        if a.shape != (C,):
            raise ValueError(f"preprocessing {key} must have {C} values (one per input channel), got {a.size}")
    if not (std >= MIN_STD).all():
        raise ValueError(f"preprocessing std must be at least {MIN_STD} (it divides the image), got {std.tolist()}")
    order = _as_str(pre.get("channel_order"), "RGB", "channel_order").upper()
    if C == 3 and order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR' for a 3-channel model, got {order!r}")
    scale = pre.get("pixel_scale")
    scale = 1.0 if scale is None else _numbers(scale, "pixel_scale")
    if not isinstance(scale, float):
        if scale.size != 1:
            raise ValueError(f"preprocessing pixel_scale must be one number, got {pre.get('pixel_scale')!r}")
        scale = float(scale[0])
    if not 0 < scale <= 65535:
        raise ValueError(f"pixel_scale must be positive (at most 65535), got {scale}")
    return dict(mean=mean, std=std, channel_order=order, pixel_scale=scale,
                resize=_as_size(pre.get("resize"), "resize"), crop=_as_size(pre.get("crop"), "crop"))
