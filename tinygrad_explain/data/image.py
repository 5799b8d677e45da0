"""Turn a photo into the exact input a model expects -- and back again.

A network's weights only make sense for inputs prepared the way its
training data was.  The model file records that recipe in
``model.preprocessing``; :func:`load` applies it, :func:`to_display` undoes
it, and both read nothing else from the model but ``model.input_shape``::

    key            meaning                                   torchvision   caffe
    -------------  ----------------------------------------  ------------  -----------
    resize         shorter image side is scaled to this      256           256
    crop           then the centre crop x crop is kept       224           227
    pixel_scale    pixel values span [0, pixel_scale]        1.0           255.0
    channel_order  order of colour planes in the tensor      "RGB"         "BGR"
    mean, std      per channel (in channel_order):           ImageNet      BGR mean,
                   x = (x - mean) / std                      mean/std      std = 1

The steps of :func:`load`, in order:

1. **Decode** (file path, PIL image or uint8 array) and apply the EXIF
   orientation tag, so a phone photo is upright as in a viewer.
2. **Colour**: convert to RGB -- greyscale is replicated into three equal
   channels, an alpha channel is dropped (as ``PIL.Image.convert("RGB")``
   and torchvision do), palette/CMYK images are expanded.  A one-channel
   model gets luminance ("L") instead.
3. **Geometry**: scale so the *shorter* side equals ``resize`` (keeping
   the aspect ratio, bilinear with antialiasing = torchvision's
   ``Resize(256)`` on PIL images), then cut the central ``crop x crop``
   square (``CenterCrop``).  The same is done for Caffe models; note the
   original Caffe pipeline instead *warped* every image to 256x256
   (ignoring the aspect ratio) before the centre crop -- for photos that are
   not extremely elongated the difference in the scores is small, and
   keeping the aspect ratio leaves objects undistorted.  If the model file
   has no resize/crop (both 0), the image is warped directly to the input
   size ``H x W``.
4. **Values**: ``x = pixels / 255 * pixel_scale``, reorder channels to
   ``channel_order``, then ``x = (x - mean) / std``; layout (1, C, H, W),
   float32.

:func:`normalize_display` maps an arbitrary real array -- typically
``x.grad``, the gradient of a class score with respect to the input -- to a
viewable uint8 image.

This module reads image files (decoding with its limits, geometry, :func:`load`).
The other concerns have modules of their own beside it, and every name is also
here (``te.image.*``): the recipe's checks in ``preprocessing.py``
(:func:`preprocessing_of`), the pixel <-> model-space maths in ``pixels.py``, and
the pictures in ``display.py`` (:func:`to_display`, :func:`to_pictures`,
:func:`normalize_display`).
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from struct import error as struct_error
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .display import normalize_display, to_display, to_pictures  # noqa: F401  (te.image.to_display, ...)
from .pixels import (  # noqa: F401  (te.image.to_model, ...)
    channel_stats,
    data_scale,
    model_grad_to_pixels,
    model_to_pixels,
    pixel_bounds,
    pixels_to_model,
    to_model,
    to_numpy,
)
from .preprocessing import MAX_SIDE, MIN_STD, preprocessing_of  # noqa: F401  (te.image.preprocessing_of, ...)

if TYPE_CHECKING:                    # hints only: image.py reads nothing but two attributes of a model
    from ..core.models import Network

#: what :func:`load` reads: a file path, a PIL image or a uint8 (H, W[, C]) array
ImageSource = Union[str, bytes, os.PathLike, Image.Image, np.ndarray]

__all__ = ["load", "load_pil", "to_display", "to_pictures", "normalize_display", "preprocessing_of", "pixels_to_model",
           "to_model", "model_grad_to_pixels", "model_to_pixels", "pixel_bounds", "data_scale", "channel_stats"]

_RESAMPLE = Image.Resampling.BILINEAR if hasattr(Image, "Resampling") else Image.BILINEAR


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------
#: Bounds on a decoded image: pixel count and the ratio of its longer to its shorter
#: side (a 2 x 20000 strip resized to a shorter side of 256 would be 256 x 2.56 M).
MAX_PIXELS = 100_000_000
MAX_ASPECT = 50


@dataclass(frozen=True)
class DecodeLimits:
    """A stricter decoding budget for untrusted files (the explorer's uploads), decided
    before a pixel is decoded:

    * ``formats``: the Pillow formats tried at all -- anything else (EPS, which Pillow
      hands to Ghostscript; PSD, ICNS, ...) is :class:`UnsupportedImageError`;
    * ``modes``: the pixel layouts accepted (sane depths: 1/8/16-bit integer, 32-bit
      integer or float greyscale, 8-bit colour);
    * ``max_pixels``: the decoded raster's pixel count.  A JPEG larger than that is
      decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``: the DCT is scaled, the full
      raster never exists) when that brings it under the cap; any other format is
      refused from its header.  At most 4 bytes a pixel in Pillow, so the raster is at
      most ``4 * max_pixels`` bytes, and the conversions after it (:func:`_to_8bit`)
      work in row blocks.

    The default :data:`UPLOAD_LIMITS` keeps 16 M pixels -- a 64x64 or 224x224 model
    needs a tiny fraction of that -- i.e. a raster of at most 64 MiB."""
    max_pixels: int = 16_000_000
    formats: tuple = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
    modes: tuple = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr",
                    "I;16", "I;16B", "I;16L", "I;16N", "I", "F")


UPLOAD_LIMITS = DecodeLimits()


class UnsupportedImageError(ValueError):
    """A file that is not one of the accepted image formats or pixel layouts (HTTP 415 in the explorer)."""


def _describe(src):
    if isinstance(src, (str, bytes, os.PathLike)):
        return repr(os.fsdecode(src))
    return type(src).__name__


def _check_size(w: int, h: int, what: str):
    """Refuse empty, huge or extremely elongated images before decoding / resizing them."""
    if w <= 0 or h <= 0:
        raise ValueError(f"cannot read image {what}: it is empty ({w}x{h} pixels)")
    if w * h > MAX_PIXELS:
        raise ValueError(f"cannot read image {what}: {w}x{h} is {w * h:,} pixels, more than "
                         f"te.image.MAX_PIXELS = {MAX_PIXELS:,}")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ValueError(f"cannot read image {what}: {w}x{h} is more elongated than "
                         f"te.image.MAX_ASPECT = {MAX_ASPECT}:1")


def _open(src, limits: DecodeLimits | None = None) -> Image.Image:
    """File path / in-memory file (``io.BytesIO``) / PIL image / uint8 array -> a loaded
    PIL image (any mode).

    Size limits (:func:`_check_size`, and ``limits`` if given: see
    :class:`DecodeLimits`) are applied before the pixels are decoded; a path that
    is not a regular file (a FIFO would block) is refused before it is opened."""
    if isinstance(src, Image.Image):
        _check_size(*src.size, what=type(src).__name__)
        return src
    if isinstance(src, np.ndarray):
        if src.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 (0..255), got {src.dtype}; "
                             "scale and cast first, e.g. (x * 255).round().astype(np.uint8)")
        a = src
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
            raise ValueError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                             f"got shape {a.shape}")
        _check_size(a.shape[1], a.shape[0], what=f"array of shape {src.shape}")
        if a.ndim == 2:
            return Image.fromarray(np.ascontiguousarray(a), "L")
        return Image.fromarray(np.ascontiguousarray(a), "RGB" if a.shape[2] == 3 else "RGBA")
    if isinstance(src, io.BytesIO):
        fp, what = src, "(uploaded data)"
    elif isinstance(src, (str, bytes, os.PathLike)):
        from ..core.safe_io import regular_file_problem
        fp = os.fsdecode(os.fspath(src))
        what = repr(fp)
    else:
        raise TypeError(f"expected a file path, PIL image or uint8 array, got {type(src).__name__}")
    try:
        if not isinstance(fp, io.BytesIO):
            problem = regular_file_problem(fp)
            if problem:
                raise ValueError(f"cannot read image {what}: not a regular file ({problem})")
        with warnings.catch_warnings():
            if limits is not None:             # our cap is far stricter than Pillow's warning (89 M pixels)
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=None if limits is None else list(limits.formats))
        with im:
            if limits is not None:
                _check_limits(im, limits, what)     # from the header, before decoding
            _check_size(*im.size, what=what)       # from the header, before decoding
            im.load()                     # decode now: truncated files fail here
            upright = ImageOps.exif_transpose(im)
            return upright if upright is not None else im
    except FileNotFoundError:
        raise ValueError(f"cannot read image {what}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"cannot read image {what}: it is a directory") from None
    except UnidentifiedImageError:
        if limits is not None:
            raise UnsupportedImageError(f"cannot read image {what}: not a {', '.join(limits.formats)} image "
                                        "(other formats are refused)") from None
        raise ValueError(f"cannot read image {what}: not an image file "
                         "(or a format Pillow cannot decode)") from None
    except MemoryError:
        raise ValueError(f"cannot read image {what}: not enough memory to decode it") from None
    except (OSError, SyntaxError, Image.DecompressionBombError, EOFError, struct_error, ZeroDivisionError,
            IndexError, KeyError, TypeError, OverflowError) as e:
        # Pillow's plugins raise more than OSError on a damaged header (struct.error, EOFError, ...)
        raise ValueError(f"cannot read image {what}: {e or type(e).__name__}") from None
    except ValueError as e:                    # ours already name the file; Pillow's do not
        if str(e).startswith("cannot read image"):
            raise
        raise ValueError(f"cannot read image {what}: {e}") from None


def _check_limits(im: Image.Image, limits: DecodeLimits, what: str):
    """``limits`` against an opened, not yet decoded image; a JPEG over the pixel cap is set
    to decode at the smallest reduction (1/2, 1/4, 1/8) that fits under it."""
    if im.format not in limits.formats:
        raise UnsupportedImageError(f"cannot read image {what}: format {im.format} is not accepted "
                                    f"({', '.join(limits.formats)} are)")
    if im.mode not in limits.modes:
        raise UnsupportedImageError(f"cannot read image {what}: pixel mode {im.mode!r} is not accepted "
                                    "(8-bit colour, or 1/8/16/32-bit greyscale)")
    w, h = im.size
    if w * h > limits.max_pixels and im.format == "JPEG":
        for k in (2, 4, 8):
            sw, sh = -(-w // k), -(-h // k)
            if sw * sh <= limits.max_pixels:
                im.draft(im.mode, (sw, sh))
                break
        w, h = im.size
    if w * h > limits.max_pixels:
        raise ValueError(f"cannot read image {what}: {w}x{h} is {w * h:,} pixels, more than this decoder's "
                         f"limit of {limits.max_pixels:,} (the model needs far fewer; scale it down first)")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and 32-bit float greyscale -> "L", scaled rather than clipped.

    PIL's own ``convert`` clips: a float image in [0, 1] would come out black,
    a 16-bit one saturated.  Integers are read on the smallest of the
    scales 0..255, 0..65535, 0..2^31-1 that holds their maximum; floats
    in [0, 1] are taken as such, otherwise on the same integer scales.
    Negative values clip to 0.  Worked in blocks of rows (float64 scratch of
    at most ``_BLOCK`` values), so the memory beyond the raster is one byte a pixel."""
    w, h = im.size
    step = max(1, _BLOCK // max(1, w))
    def blocks():                 # (first row, the rows' values), one block of rows at a time
        for r in range(0, h, step):
            yield r, np.asarray(im.crop((0, r, w, min(h, r + step))))
    top = 0.0
    for _, part in blocks():
        if part.dtype.kind == "f" and not np.isfinite(part).all():
            raise ValueError("image contains NaN or Inf pixel values")
        if part.size:
            top = max(top, float(part.max()))
    if im.mode == "F" and top <= 1.0:
        hi = 1.0
    else:
        hi = next(v for v in (255.0, 65535.0, 2147483647.0, np.inf) if top <= v)
        if hi == np.inf:
            hi = top
    out = np.empty((h, w), np.uint8)
    for r, part in blocks():
        part = part.astype(np.float64)
        part /= hi
        part *= 255.0
        part += 0.5
        np.clip(part, 0, 255, out=part)
        out[r:r + step] = part
    return Image.fromarray(out, "L")


_BLOCK = 1 << 20          # values per block of _to_8bit's float64 scratch (8 MiB)


def load_pil(src: ImageSource, channels: int = 3, limits: DecodeLimits | None = None) -> Image.Image:
    """Decode ``src`` to an ``"RGB"`` (or ``"L"`` for ``channels == 1``) PIL image
    (``limits``: a stricter budget for untrusted files, :class:`DecodeLimits`)."""
    im = _open(src, limits)
    mode = "L" if channels == 1 else "RGB"
    if im.mode == mode:
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        try:
            im = _to_8bit(im)
        except ValueError as e:
            raise ValueError(f"cannot read image {_describe(src)}: {e}") from None
        if im.mode == mode:
            return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Drop transparency the way .convert("RGB") does (colour under alpha kept).
        im = im.convert("RGBA")
    return im.convert(mode)


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------
def _resize_shorter(im: Image.Image, size) -> Image.Image:
    """torchvision ``Resize(size)``: shorter side -> size, aspect kept (int) or warp (pair)."""
    w, h = im.size
    if isinstance(size, tuple):
        nh, nw = size
    elif w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nh, nw = size, int(size * w / h)
    if (nw, nh) == (w, h):
        return im
    if nw * nh > MAX_PIXELS:
        raise ValueError(f"resizing the {w}x{h} image to {nw}x{nh} would make {nw * nh:,} pixels, more than "
                         f"te.image.MAX_PIXELS = {MAX_PIXELS:,}")
    return im.resize((nw, nh), _RESAMPLE)


def _center_crop(im: Image.Image, size) -> Image.Image:
    """torchvision ``CenterCrop``: same rounding of the top-left corner."""
    ch, cw = size if isinstance(size, tuple) else (size, size)
    w, h = im.size
    if cw > w or ch > h:
        # Pad with black (as torchvision does) so tiny images still work.
        canvas = Image.new(im.mode, (max(w, cw), max(h, ch)))
        canvas.paste(im, ((max(w, cw) - w) // 2, (max(h, ch) - h) // 2))
        im, (w, h) = canvas, canvas.size
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return im.crop((left, top, left + cw, top + ch))


def _fit(im: Image.Image, pre: dict, H: int, W: int) -> Image.Image:
    resize, crop = pre["resize"], pre["crop"]
    if resize is None and crop is None:
        return im if im.size == (W, H) else im.resize((W, H), _RESAMPLE)
    if resize is not None:
        im = _resize_shorter(im, resize)
    else:
        # crop without resize: scale the shorter side to the crop first.
        im = _resize_shorter(im, crop)
    im = _center_crop(im, crop if crop is not None else (H, W))
    if im.size != (W, H):
        raise ValueError(f"preprocessing (resize={resize}, crop={crop}) gives "
                         f"{im.size[1]}x{im.size[0]} images but the model's input is {H}x{W}")
    return im


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def load(src: ImageSource, model: Network, limits: DecodeLimits | None = None) -> np.ndarray:
    """Image (path, PIL image or uint8 array) -> float32 ``(1, C, H, W)`` model input.

    See the module docstring for the exact steps.  Raises ``ValueError``
    naming the file if it is missing or not a decodable image.  ``limits``
    (e.g. :data:`UPLOAD_LIMITS`): a stricter decoding budget for untrusted
    files -- formats, pixel modes and a pixel cap checked from the header
    (:class:`DecodeLimits`); ``src`` may then also be an ``io.BytesIO``.

    >>> x = load("cat.jpg", model)                  # doctest: +SKIP
    >>> scores = model(x)                           # doctest: +SKIP
    """
    C, H, W = (int(v) for v in model.input_shape)
    if C not in (1, 3):
        raise ValueError(f"image models must have 1 or 3 input channels, got {C}")
    pre = preprocessing_of(model)
    im = _fit(load_pil(src, channels=C, limits=limits), pre, H, W)
    a = np.asarray(im, dtype=np.float32)                   # (H, W, 3) or (H, W), 0..255
    if a.ndim == 2:
        a = a[:, :, None]
    return pixels_to_model(a, pre["mean"], pre["std"], pre["pixel_scale"], pre["channel_order"])
