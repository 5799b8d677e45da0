"""Differentiable linear image maps behind the natural-image priors.

Two kinds of prior change *which images the optimiser can reach easily*
rather than adding a penalty:

* **Transformation robustness** (Mordvintsev et al. 2015; Olah et al. 2017,
  "Feature Visualization"): at every step the network sees a randomly
  shifted (jitter), scaled and rotated copy ``T(x)`` of the image, so only
  patterns that survive small transformations are reinforced; the
  high-frequency patterns an unconstrained ascent finds do not.
* **Reparameterisation** (Olah et al. 2017): the image is made from a
  parameter ``p`` by a fixed linear map ``x = P(p)`` and the steps are taken
  on ``p``.  A Fourier-space parameter whose frequencies are scaled by
  1/f^decay, mixed through a colour matrix that decorrelates the channels,
  makes a gradient step change mostly low frequencies and natural colours;
  a coarse pixel grid upsampled to the full size (octaves, multi-scale
  optimisation) does the same for the first part of a run.

Every map here is linear, so its backward is its adjoint ``A^T``: for a
resampling ``y = A x`` with bilinear taps the backward scatters each output
gradient back to the four input pixels it was read from, with the same
weights (``te.gradcheck`` checks each, float64, in tests/test_priors.py).
The Functions themselves (``Roll``, ``Resample``, ``ColourMix``, ``FourierImage``)
live in :mod:`tinygrad_explain.core.ops` with every other differentiable operation;
this module builds the taps, the random transformations and the
parameterisations on them.
Shapes: images (N, C, H, W); the Fourier parameter (N, C, H, W//2+1, 2)
(real and imaginary parts of ``rfft2``).

Chain rule of a step: with L the objective and regularisers of the image,
dL/dp = P^T (dR/dx + T^T dL/d(T x)) -- the engine applies these adjoints.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.engine import Tensor
from ..core.engine import array_module as _xp

# the differentiable maps live in ops.py (every Function does); imported here for explain's callers
from ..core.ops import ColourMix, FourierImage, Resample, Roll, rfft_column_counts  # noqa: F401
from ._common import Array

#: bilinear taps ``(idx, w)``, each (4, Q): output pixel q reads input pixels idx[:, q] with weights w[:, q]
Taps = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------
# resampling: jitter, scale, rotation, octave upsampling
# --------------------------------------------------------------------------
def _bilinear(sy, sx, H, W, wrap):
    """Taps (idx, w), each (4, Q), for sampling an (H, W) grid at the float coordinates
    (sy, sx) (Q each): periodic (``wrap``) or clamped to the border."""
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = sy - y0, sx - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    idx, w = [], []
    for oy, ox, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + oy, x0 + ox
        if wrap:
            yy, xx = yy % H, xx % W
        else:
            yy, xx = np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)
        idx.append(yy * W + xx)
        w.append(wt)
    return np.stack(idx), np.stack(w)


def affine_taps(H: int, W: int, scale: float = 1.0, angle: float = 0.0, dy: float = 0.0, dx: float = 0.0) -> Taps:
    """Taps of y = the image scaled by ``scale`` and rotated clockwise (as displayed, rows
    downwards) by ``angle`` degrees about its
    centre, then shifted by (dy, dx) pixels; periodic borders (as the jitter's roll).
    An integer shift with scale 1 and angle 0 is exactly ``Roll``."""
    i, j = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    vy, vx = i.reshape(-1) - dy - cy, j.reshape(-1) - dx - cx
    if angle:
        t = np.deg2rad(angle)
        c, s = np.cos(t), np.sin(t)
        vy, vx = c * vy - s * vx, s * vy + c * vx                  # inverse rotation of the output position
    return _bilinear(vy / scale + cy, vx / scale + cx, H, W, wrap=True)


def resize_taps(h: int, w: int, H: int, W: int) -> Taps:
    """Taps of a bilinear resize (h, w) -> (H, W), pixel centres aligned, borders clamped."""
    sy = (np.arange(H, dtype=np.float64) + 0.5) * (h / H) - 0.5
    sx = (np.arange(W, dtype=np.float64) + 0.5) * (w / W) - 0.5
    yy, xx = np.meshgrid(sy, sx, indexing="ij")
    return _bilinear(yy.reshape(-1), xx.reshape(-1), h, w, wrap=False)


def resample(x: Tensor, taps: Taps, out_hw: tuple[int, int]) -> Tensor:
    """``Resample`` of the images x (N, C, H, W) with ``taps`` to (N, C, *out_hw), the taps
    copied to x's device."""
    xp = _xp(x.data)
    idx, w = taps
    if xp is not np:
        idx, w = xp.asarray(idx), xp.asarray(w)
    return Resample.apply(x, idx=idx, w=w, out_hw=tuple(out_hw))


class RandomTransform:
    """Transformation robustness: a random shift of up to ``jitter`` pixels, scale from
    ``scales`` and rotation from ``angles`` (degrees) per step, the same for the whole batch.
    Pure jitter is a ``Roll``; with a scale or angle other than 1 / 0 the image is
    bilinearly resampled (periodic borders).  ``rng`` is the optimiser's seeded generator."""

    def __init__(self, jitter: int = 0, scales: Sequence[float] = (1.0,), angles: Sequence[float] = (0.0,)) -> None:
        self.jitter = int(jitter)
        self.scales = tuple(float(s) for s in (scales or (1.0,)))
        self.angles = tuple(float(a) for a in (angles or (0.0,)))
        if self.jitter < 0 or any(s <= 0 for s in self.scales):
            raise ValueError(f"need jitter >= 0 and scales > 0, got jitter={jitter}, scales={scales}")

    @property
    def active(self) -> bool:
        return bool(self.jitter) or self.scales != (1.0,) or self.angles != (0.0,)

    def sample(self, rng: np.random.Generator) -> tuple[int, int, float, float]:
        """(dy, dx, scale, angle) for one step."""
        dy, dx = (int(v) for v in rng.integers(-self.jitter, self.jitter + 1, size=2)) if self.jitter else (0, 0)
        s = self.scales[int(rng.integers(len(self.scales)))] if len(self.scales) > 1 else self.scales[0]
        a = self.angles[int(rng.integers(len(self.angles)))] if len(self.angles) > 1 else self.angles[0]
        return dy, dx, s, a

    @staticmethod
    def apply(x: Tensor, dy: int, dx: int, s: float, a: float) -> Tensor:
        if s == 1.0 and a == 0.0:
            return Roll.apply(x, dy=dy, dx=dx) if (dy or dx) else x
        H, W = x.shape[2:]
        return resample(x, affine_taps(H, W, s, a, dy, dx), (H, W))


# --------------------------------------------------------------------------
# parameterisations: x = P(p)
# --------------------------------------------------------------------------
def frequency_scale(H: int, W: int, decay: float = 1.0) -> np.ndarray:
    """w(f) = 1 / max(f, 1/max(H, W))^decay over the rfft2 grid (H, W//2+1), f in cycles
    per pixel, normalised so that p ~ N(0, 1) gives an image with unit variance."""
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    w = 1.0 / np.maximum(f, 1.0 / max(H, W)) ** decay
    # variance of one pixel of irfft2(w * (a + ib), ortho) for a, b ~ N(0, 1): sum of c w^2 |z|^2 / (H W)
    var = (rfft_column_counts((H, W)) * w * w).sum() * 2.0 / (H * W)
    return w / np.sqrt(var)


class Parameterization:
    """The map from what the optimiser steps on to the image, and back.

    ``kind`` "pixel" (the image itself, optionally on a coarser grid ``size``
    bilinearly upsampled: an octave) or "fourier" (Olah et al. 2017: a spectrum
    scaled by 1/f^decay, mixed by ``colour``).  ``colour`` (C, C): the channel mix
    applied last (a decorrelating square root of the natural colour covariance,
    :func:`colour_sqrt`), or None.

    ``image(p)`` Tensor -> Tensor (differentiable); ``to_image(p)`` / ``from_image(x)``
    arrays, inverse of each other (``from_image`` is exact for images the map can
    make: ``to_image(from_image(x)) == x`` up to float rounding for every image at
    full size).
    """

    def __init__(self, kind: str = "pixel", image_hw: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None, decay: float = 1.0, colour: np.ndarray | None = None) -> None:
        if kind not in ("pixel", "fourier"):
            raise ValueError(f"unknown parameterisation {kind!r}; expected 'pixel' or 'fourier'")
        self.kind, self.hw = kind, tuple(image_hw)
        self.size = tuple(size) if size is not None else self.hw
        if kind == "fourier" and self.size != self.hw:
            raise ValueError("octaves (a coarser grid) are for the pixel parameterisation")
        self.colour = None if colour is None else np.asarray(colour, np.float64)
        self.colour_inv = None if colour is None else np.linalg.inv(self.colour)
        self.w = frequency_scale(*self.hw, decay) if kind == "fourier" else None
        self._dev = {}

    def _on(self, name, xp, dtype):
        key = (name, xp.__name__, np.dtype(dtype).str)
        if key not in self._dev:
            self._dev[key] = xp.asarray(np.asarray(getattr(self, name), dtype))
        return self._dev[key]

    @property
    def identity(self) -> bool:
        return self.kind == "pixel" and self.size == self.hw and self.colour is None

    def image(self, p: Tensor) -> Tensor:
        xp, dt = _xp(p.data), p.dtype
        if self.kind == "fourier":
            x = FourierImage.apply(p, w=self._on("w", xp, dt), hw=self.hw)
        elif self.size != self.hw:
            x = resample(p, resize_taps(*self.size, *self.hw), self.hw)
        else:
            x = p
        if self.colour is not None:
            x = ColourMix.apply(x, M=self._on("colour", xp, dt))
        return x

    def to_image(self, p: Array) -> Array:
        from ..core.engine import no_grad
        if self.identity:
            return p
        with no_grad():
            return self.image(Tensor(p)).data

    def from_image(self, x: Array) -> Array:
        """The parameter that makes image ``x`` (N, C, H, W) (downsampled by area
        averaging to a coarser octave grid)."""
        xp, dt = _xp(x), x.dtype
        if self.colour is not None:
            x = xp.einsum("ij,njhw->nihw", self._on("colour_inv", xp, dt), x)
        if self.kind == "fourier":
            z = xp.fft.rfft2(x, axes=(2, 3), norm="ortho") / self._on("w", xp, np.float64)
            return xp.ascontiguousarray(xp.stack([z.real, z.imag], axis=-1).astype(dt))
        if self.size != self.hw:
            return xp.asarray(area_resize(x if xp is np else x.get(), self.size)).astype(dt)
        return xp.array(x, dtype=dt, copy=True)


def area_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) -> (N, C, h, w) by OpenCV's area interpolation (host arrays)."""
    import cv2
    N, C, H, W = x.shape
    h, w = size
    if (h, w) == (H, W):
        return x.copy()
    planes = x.reshape(N * C, H, W)
    inter = cv2.INTER_AREA if h <= H else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(np.ascontiguousarray(pl), (w, h), interpolation=inter) for pl in planes])
    return out.reshape(N, C, h, w).astype(x.dtype, copy=False)


def colour_sqrt(images: np.ndarray) -> np.ndarray:
    """The symmetric square root of the channel covariance of ``images`` (N, C, H, W),
    scaled so that its largest column has unit norm (Olah et al. 2017): x = M y turns
    independent channels y into channels correlated as in the images."""
    C = images.shape[1]
    flat = np.moveaxis(np.asarray(images, np.float64), 1, 0).reshape(C, -1)
    cov = np.cov(flat)
    vals, vecs = np.linalg.eigh(cov)
    M = vecs @ np.diag(np.sqrt(np.maximum(vals, 1e-12 * vals.max()))) @ vecs.T
    return M / np.linalg.norm(M, axis=0).max()


# --------------------------------------------------------------------------
# transparency: an opacity channel composited over random backgrounds
# --------------------------------------------------------------------------
#: background kinds: the fraction of each channel's range the random backgrounds use
BACKGROUNDS = {"dark": (0.0, 0.45), "light": (0.55, 1.0), "any": (0.0, 1.0)}


def opacity(x: Tensor, scale: float) -> Tensor:
    """The opacity a in [0, 1] of an image with an opacity channel: ``x`` (N, C+1, H, W)
    holds it last, in model units, a = 1/2 + x[:, C] / (2 scale) (``scale`` = B, so that
    the opacity channel spans [-B, B] like the colours).  Returns (N, 1, H, W)."""
    C = x.shape[1] - 1
    return x[:, C:] * (0.5 / scale) + 0.5


def composite(x: Tensor, background: Tensor | np.ndarray, scale: float) -> Tensor:
    """Alpha compositing (Porter & Duff's "over"): the colours of ``x`` (N, C+1, H, W)
    over ``background`` (N, C, H, W) or (C, 1, 1) with the opacity a of :func:`opacity`:

        y = a * rgb + (1 - a) * background                     (N, C, H, W)

    Chain rule: d rgb = a * dy;  da = sum over channels of (rgb - background) * dy."""
    C = x.shape[1] - 1
    a = opacity(x, scale)
    bg = background if isinstance(background, Tensor) else Tensor(background)
    return x[:, :C] * a + bg * (1.0 - a)


def random_backgrounds(rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray, hw: tuple[int, int],
                       kind: str = "dark") -> np.ndarray:
    """``n`` random backgrounds (n, C, H, W) float32 between ``lo`` and ``hi`` (per-channel
    bounds, (C, 1, 1)), restricted to the part of the range that ``kind`` names
    (BACKGROUNDS: "dark" the lower 45%, "light" the upper 45%, "any" all of it).  Each is,
    with equal chance, a flat colour or smooth colour noise (a random 2x2 .. 6x6 grid,
    bicubically upsampled): the backgrounds of Mordvintsev et al. 2018 ("Differentiable
    Image Parameterizations"), which make only what the object itself shows count."""
    import cv2
    if kind not in BACKGROUNDS:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {', '.join(BACKGROUNDS)}")
    f0, f1 = BACKGROUNDS[kind]
    lo, hi = (np.asarray(b, np.float32).reshape(-1, 1, 1) for b in (lo, hi))
    C, (H, W) = lo.shape[0], hw
    out = np.empty((n, C, H, W), np.float32)
    for i in range(n):
        if rng.random() < 0.5:
            u = np.broadcast_to(rng.random((C, 1, 1)), (C, H, W))
        else:
            g = int(rng.integers(2, 7))
            grid = rng.random((g, g, C)).astype(np.float32)
            u = cv2.resize(grid, (W, H), interpolation=cv2.INTER_CUBIC).reshape(H, W, C).clip(0, 1).transpose(2, 0, 1)
        out[i] = lo + (hi - lo) * (f0 + (f1 - f0) * u)
    return out


def backdrop(lo: np.ndarray, hi: np.ndarray, kind: str = "dark") -> np.ndarray:
    """The plain background a transparent result is shown over (C, 1, 1): black for
    "dark", white for "light", the mean (model-space zero) for "any"."""
    lo, hi = (np.asarray(b, np.float32).reshape(-1, 1, 1) for b in (lo, hi))
    return {"dark": lo, "light": hi, "any": np.zeros_like(lo)}[kind]
