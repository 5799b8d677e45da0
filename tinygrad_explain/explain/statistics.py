"""Statistics of maps and pictures, the bottom of ``explain/``: rank and Pearson correlations, the
[0, 1] normalisation of a map, SSIM, HOG features, and the four similarities of two explanations that
the sanity checks report (Adebayo et al. 2018).  Imports nothing from the explainers, so the sanity
checks (``sanity.py``), the visualisation quality measures (``quality.py``) and the exemplar ranking
(``exemplar.py``) all share it."""
from __future__ import annotations

import cv2
import numpy as np

from ._common import ExplainError


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the values of ``a`` (flattened), ties given their average rank."""
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]        # first index of each run of equal values
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0                                # mean of ranks starts+1 .. ends
    ranks = np.empty(len(a))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flattened arrays; NaN if either is constant."""
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of the tie-averaged ranks);
    NaN if either map is constant."""
    return pearson(rankdata(a), rankdata(b))


def normalize(m: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """A map >= 0 scaled to [0, 1]: divided by its ``percentile``-th percentile and
    clipped (Adebayo et al.'s visualisation); an all-zero map stays zero."""
    m = np.asarray(m, np.float64)
    top = np.percentile(m, percentile)
    if not top > 0:
        top = m.max()
    return np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Structural similarity of two (H, W) images (Wang, Bovik, Sheikh & Simoncelli 2004):
    the mean over pixels of

        (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)),

    local means, variances and covariance under a Gaussian window (``sigma`` 1.5,
    11 x 11, mirrored borders), C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = ``data_range``;
    the mean leaves out the 5-pixel border where the window leaves the image.
    (scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.)"""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ExplainError(f"ssim needs two (H, W) maps of one shape, got {a.shape} and {b.shape}")
    r = int(3.5 * sigma + 0.5)

    def blur(m):
        return cv2.GaussianBlur(m, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s[r:-r, r:-r].mean())


def hog(m: np.ndarray, orientations: int = 9, cell: int = 8, block: int = 2) -> np.ndarray:
    """Histogram-of-oriented-gradients features of an (H, W) map (Dalal & Triggs 2005):

    1. gradients by central differences (0 on the border rows/columns),
       magnitude and unsigned orientation in [0, 180) degrees;
    2. per ``cell`` x ``cell`` cell, the mean magnitude per orientation bin
       (each pixel votes into the bin of its orientation);
    3. per ``block`` x ``block`` cells (sliding by one cell), L2-Hys
       normalisation: v / ||v||, clipped at 0.2, renormalised.

    Returns the flat feature vector (scikit-image's ``hog`` with the same settings)."""
    m = np.asarray(m, np.float64)
    gr, gc = np.zeros_like(m), np.zeros_like(m)
    gr[1:-1] = m[2:] - m[:-2]
    gc[:, 1:-1] = m[:, 2:] - m[:, :-2]
    mag = np.hypot(gr, gc)
    ori = np.rad2deg(np.arctan2(gr, gc)) % 180
    bins = np.minimum((ori / (180 / orientations)).astype(int), orientations - 1)
    cy, cx = m.shape[0] // cell, m.shape[1] // cell
    mag, bins = mag[:cy * cell, :cx * cell], bins[:cy * cell, :cx * cell]
    cell_of = (np.arange(cy * cell)[:, None] // cell) * cx + np.arange(cx * cell)[None, :] // cell
    hist = np.zeros((cy * cx, orientations))
    np.add.at(hist, (cell_of.ravel(), bins.ravel()), mag.ravel())
    hist = hist.reshape(cy, cx, orientations) / (cell * cell)
    eps = 1e-5
    out = []
    for i in range(cy - block + 1):
        for j in range(cx - block + 1):
            v = hist[i:i + block, j:j + block]
            v = v / np.sqrt((v * v).sum() + eps ** 2)
            v = np.minimum(v, 0.2)
            out.append(v / np.sqrt((v * v).sum() + eps ** 2))
    return np.stack(out).ravel()


#: the similarity measures, in the order of the tables
MEASURES = ("spearman_abs", "spearman", "ssim", "hog")


def similarity(signed_a: np.ndarray, abs_a: np.ndarray, signed_b: np.ndarray,
               abs_b: np.ndarray) -> dict[str, float]:
    """The four similarities of two explanations of one image ((H, W) maps):
    ``spearman_abs`` (absolute maps), ``spearman`` (signed maps), ``ssim`` and
    ``hog`` (Pearson correlation of HOG features) of the absolute maps, each
    normalised to [0, 1] (:func:`normalize`).  NaN where a map is constant."""
    na, nb = normalize(abs_a), normalize(abs_b)
    return {"spearman_abs": spearman(abs_a, abs_b), "spearman": spearman(signed_a, signed_b),
            "ssim": ssim(na, nb), "hog": pearson(hog(na), hog(nb))}
