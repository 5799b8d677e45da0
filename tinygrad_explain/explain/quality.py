"""Measuring visualisations with something that did not make them.

A class model, a neuron visualisation or an inversion is made by gradient
steps on the embedded model, so the embedded model's own numbers (its softmax,
its feature error) say only that the optimisation worked -- an adversarial
pattern meets them as well as a picture does.  The measures here look at the
*pictures*:

* :func:`judge_probabilities` / :func:`recognised` -- what an independent
  classifier (the judge, ``te.load_model("judge")``, trained separately, of
  another architecture, robust to high-frequency patterns) sees in them;
* :func:`reconstruction_correlation` -- whether an inversion shows the scene
  it was made from: the Pearson correlation of the blurred grey
  reconstruction with the blurred grey original, beside the same with an
  unrelated scene (the baseline any picture of "some garment on some
  background" reaches);
* :func:`normalised_error` -- Mahendran & Vedaldi's (2015) squared
  normalised feature error ``||phi(x) - phi0||^2 / ||phi0||^2``;
* :func:`high_frequency_fraction` / :func:`high_frequency_ratio` -- how much
  of a picture's energy sits in fine detail, against real scenes.

The judge is a measuring instrument only: nothing here is, or may become, an
objective, a prior or a stopping rule of a visualisation.

Pictures are what a person sees: uint8 ``(H, W, 3)`` RGB arrays (a list, or
one ``(N, H, W, 3)`` array), e.g. ``Visualization.display`` or
``te.image.to_display(x, model)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from ..core.models import Network
from ._common import ExplainError, resolve_class
from .statistics import pearson

__all__ = ["as_pictures", "judge_probabilities", "recognised", "grey_blur",
           "reconstruction_correlation", "normalised_error", "high_frequency_fraction", "high_frequency_ratio",
           "BLUR_SIGMA", "HF_CUTOFF"]

#: Gaussian blur (std in pixels, for a 64 px picture) applied before correlating reconstructions:
#: it compares layout and shading, not the fine texture an inversion cannot be expected to recover.
BLUR_SIGMA = 2.0
#: Spatial frequency (cycles per pixel) above which energy counts as high-frequency: half of Nyquist.
HF_CUTOFF = 0.25

#: pictures: uint8 (N, H, W, 3) or one (H, W, 3), or a list of (H, W, 3)
Pictures = Union[np.ndarray, Sequence[np.ndarray]]


def as_pictures(pictures: Pictures) -> np.ndarray:
    """A list of uint8 (H, W, 3) pictures, or one (N, H, W, 3) / (H, W, 3) array -> uint8 (N, H, W, 3)."""
    if isinstance(pictures, (list, tuple)):
        if not pictures:
            raise ExplainError("no pictures given")
        pictures = np.stack([np.asarray(p) for p in pictures])
    a = np.asarray(pictures)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ExplainError(f"pictures must be uint8 (N, H, W, 3) RGB, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ExplainError(f"pictures must be uint8 (0..255), got dtype {a.dtype}; "
                           "te.image.to_display turns model-space images into pictures")
    return a


def judge_probabilities(judge: Network, pictures: Pictures) -> np.ndarray:
    """The judge's softmax over its classes for each picture: float64 (N, K).

    Each picture goes through ``te.image.load`` -- the judge file's own
    preprocessing (and resizing, if the picture is not the judge's size)."""
    from ..data import image as te_image
    from .gradients import predict
    pics = as_pictures(pictures)
    return predict(judge, np.concatenate([te_image.load(p, judge) for p in pics]))[1]


def recognised(judge: Network, pictures: Pictures, targets: int | str | Sequence[int | str]) -> dict[str, np.ndarray]:
    """Does the judge see the intended class?

    ``targets``: one class (index or name, in the *judge's* class names) per
    picture.  Returns a dict of arrays over the pictures: ``top1`` (bool: the
    judge's most probable class is the target), ``p_target`` (its probability
    of the target), ``predicted`` (its top class index) and ``probabilities``
    (N, K)."""
    p = judge_probabilities(judge, pictures)
    targets = [targets] if isinstance(targets, (int, np.integer, str)) else list(targets)
    if len(targets) != p.shape[0]:
        raise ExplainError(f"{len(targets)} targets for {p.shape[0]} pictures")
    idx = np.array([resolve_class(judge, t) for t in targets], dtype=np.int64)
    pred = p.argmax(1)
    rows = np.arange(len(idx))
    return {"top1": pred == idx, "p_target": p[rows, idx], "predicted": pred, "probabilities": p}


_LUMA = np.array([0.299, 0.587, 0.114])


def grey_blur(pictures: Pictures, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """uint8 pictures -> float64 (N, H, W) luminance in [0, 1] (Rec. 601), Gaussian-blurred with std ``sigma`` px."""
    from .regularizers import gaussian_blur
    g = as_pictures(pictures).astype(np.float64) @ _LUMA / 255.0
    return gaussian_blur(g[:, None], sigma)[:, 0] if sigma > 0 else g


def reconstruction_correlation(reconstruction: np.ndarray, original: np.ndarray, unrelated: np.ndarray | None = None,
                               sigma: float = BLUR_SIGMA) -> dict[str, float]:
    """Pearson correlation of the blurred grey ``reconstruction`` with the blurred grey
    ``original`` (``"original"``) and, if given, with an ``unrelated`` scene (``"unrelated"``)
    (``te.explain.statistics.pearson``: NaN if a blurred picture is constant).

    All three are uint8 (H, W, 3) pictures.  A reconstruction that shows its scene
    correlates clearly more with the original than with the unrelated scene."""
    g = grey_blur(np.stack([as_pictures(v)[0] for v in
                            ([reconstruction, original] + ([unrelated] if unrelated is not None else []))]), sigma)
    out = {"original": pearson(g[0], g[1])}
    if unrelated is not None:
        out["unrelated"] = pearson(g[0], g[2])
    return out


def normalised_error(phi: np.ndarray, phi0: np.ndarray) -> np.ndarray:
    """Mahendran & Vedaldi's (2015) normalised error, squared: ``||phi - phi0||^2 / ||phi0||^2``.

    ``phi`` (N, ...) or (...) codes of the reconstructions, ``phi0`` the target code
    (same size per image).  0 for a perfect reconstruction, 1 for the all-zero code.
    Returns float64 (N,)."""
    phi0 = np.asarray(phi0, np.float64).ravel()
    phi = np.asarray(phi, np.float64).reshape(-1, phi0.size)
    n0 = float(phi0 @ phi0)
    if n0 == 0:
        raise ExplainError("normalised_error: the target code is all zeros")
    d = phi - phi0
    return (d * d).sum(1) / n0


def high_frequency_fraction(pictures: Pictures, cutoff: float = HF_CUTOFF) -> np.ndarray:
    """Fraction of each picture's spectral energy above ``cutoff`` cycles/pixel.

    The luminance (mean removed, times a Hann window so that the jump between
    opposite borders does not count as detail) is Fourier-transformed; the energy |F|^2 at
    radial frequency ``sqrt(fx^2 + fy^2) > cutoff`` over the total.  White noise
    puts about the frequency-plane area beyond the cutoff there (~0.80 for
    0.25 c/px); a smooth picture almost nothing.  float64 (N,)."""
    g = grey_blur(pictures, sigma=0)
    g = g - g.mean(axis=(1, 2), keepdims=True)
    H, W = g.shape[1:]
    e = np.abs(np.fft.fft2(g * np.outer(np.hanning(H), np.hanning(W)))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(H), np.fft.fftfreq(W), indexing="ij")
    hi = np.sqrt(fx ** 2 + fy ** 2) > cutoff
    tot = e.sum(axis=(1, 2))
    flat = tot <= 1e-12 * H * W                 # no variation beyond rounding: no detail at all
    return np.where(flat, 0.0, (e * hi).sum(axis=(1, 2)) / np.maximum(tot, 1e-300))


def high_frequency_ratio(pictures: Pictures, reference: Pictures, cutoff: float = HF_CUTOFF) -> np.ndarray:
    """:func:`high_frequency_fraction` of each picture divided by the mean fraction of the
    ``reference`` pictures (real scenes): 1 = as much fine detail as real scenes, 5 = five times as much."""
    ref = float(high_frequency_fraction(reference, cutoff).mean())
    if ref <= 0:
        raise ExplainError("high_frequency_ratio: the reference pictures have no high-frequency energy")
    return high_frequency_fraction(pictures, cutoff) / ref
