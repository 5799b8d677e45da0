"""How good is an explanation?  Metrics that compare a map with ground truth, or with
what the network does when the pixels it ranks first are removed.

A *map* here is one (H, W) float array per image, larger = more important (every
explainer's output reduced to 2-D: ``to_map``).

* **Pointing game** (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff 2016, "Top-down
  Neural Attention by Excitation Backprop"; TorchRay's benchmark): a hit when the
  map's maximum lies on the object, or within ``tolerance`` pixels of it (TorchRay:
  15 px at 224 px, scaled here with the image side: ``pointing_tolerance``).
* **Localisation after GrabCut** (Simonyan, Vedaldi & Zisserman 2014, section 6): the
  map seeds ``grabcut_mask``; mask IoU with the true mask, box IoU with the true box,
  and box accuracy = box IoU >= 0.5 (the PASCAL criterion).
* **Deletion and insertion** (Petsiuk, Das & Saenko 2018, "RISE"): pixels are moved
  from the image to a blurred copy (deletion) or from the blurred copy to the image
  (insertion) in the map's order, most important first; the target's softmax
  probability is recorded after every step and the area under that curve (x from 0 to
  1 = the fraction of pixels moved) is the score.  Deletion: lower is better (the
  probability falls fast); insertion: higher is better.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..core.models import Network
from .grabcut import largest_component, mask_box

TORCHRAY_TOLERANCE = 15.0       # pixels, at TorchRay's 224-pixel input
TORCHRAY_SIZE = 224


# --------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------
def to_map(attribution: np.ndarray, reduce: str = "absmax") -> np.ndarray:
    """An explainer's output -> (N, H, W) map.  (N, H, W) passes through; (N, C, H, W)
    is reduced over channels: "absmax" max_c |a| (Simonyan's saliency), "sum" sum_c a
    (signed: gradient x input, the raw gradient)."""
    a = np.asarray(attribution, np.float64)
    if a.ndim == 3:
        return a
    if a.ndim != 4:
        raise ValueError(f"an attribution is (N, H, W) or (N, C, H, W), got shape {a.shape}")
    if reduce == "absmax":
        return np.abs(a).max(axis=1)
    if reduce == "sum":
        return a.sum(axis=1)
    raise ValueError(f"unknown reduce {reduce!r}; expected 'absmax' or 'sum'")


def centre_map(shape: tuple[int, int]) -> np.ndarray:
    """Baseline: -distance to the image centre (the maximum is the centre)."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    return -np.hypot(yy - (H - 1) / 2, xx - (W - 1) / 2)


def random_map(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Baseline: independent uniform values (a random maximum, a random order)."""
    return rng.random(shape)


# --------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------
def pointing_tolerance(size: int) -> float:
    """TorchRay's 15-pixel tolerance at 224 px, scaled to an image side of ``size``."""
    return TORCHRAY_TOLERANCE * size / TORCHRAY_SIZE


def pointing_hit(m: np.ndarray, mask: np.ndarray, tolerance: float) -> bool:
    """True when the map's maximum (the first, in row-major order, if several) lies within
    ``tolerance`` pixels (Euclidean) of a pixel of ``mask`` (bool (H, W))."""
    m, mask = np.asarray(m), np.asarray(mask, bool)
    if m.shape != mask.shape:
        raise ValueError(f"map {m.shape} and mask {mask.shape} differ in shape")
    i, j = np.unravel_index(int(np.argmax(m)), m.shape)
    ys, xs = np.nonzero(mask)
    return bool(ys.size) and float(np.min((ys - i) ** 2 + (xs - j) ** 2)) <= tolerance ** 2


# --------------------------------------------------------------------------
# localisation
# --------------------------------------------------------------------------
def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes (x0, y0, x1, y1), inclusive-exclusive."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: max(0, r[2] - r[0]) * max(0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def box_mask(box: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) mask, True inside the box (x0, y0, x1, y1), inclusive-exclusive."""
    m = np.zeros(shape, bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


def threshold_mask(m: np.ndarray, quantile: float = 0.80,
                   smooth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Baseline for GrabCut: the map alone, smoothed as for GrabCut, above a quantile (80%:
    about the average object area); its largest component.  Returns (mask, box)."""
    m = np.asarray(m, np.float64)
    smooth = max(m.shape) / 64.0 if smooth is None else smooth
    s = cv2.GaussianBlur(m, (0, 0), smooth, borderType=cv2.BORDER_REFLECT) if smooth > 0 else m
    mask = largest_component(s >= np.quantile(s, quantile))
    return mask, mask_box(mask)


def centre_box(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Baseline: one box of the boxes' average size, centred in an image of ``shape``."""
    H, W = shape
    boxes = np.asarray(boxes)
    bw, bh = np.mean(boxes[:, 2] - boxes[:, 0]), np.mean(boxes[:, 3] - boxes[:, 1])
    return np.array([round((W - bw) / 2), round((H - bh) / 2), round((W + bw) / 2), round((H + bh) / 2)], np.int64)


# --------------------------------------------------------------------------
# deletion and insertion
# --------------------------------------------------------------------------
def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of model-space images (N, C, H, W), each channel separately
    (the preprocessing is affine per channel, so this is the blurred picture)."""
    x = np.asarray(x)
    return np.stack([np.stack([cv2.GaussianBlur(c, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT)
                               for c in im]) for im in x]).astype(x.dtype)


def deletion_insertion_images(x: np.ndarray, baseline: np.ndarray, m: np.ndarray,
                              steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The images along the deletion and insertion paths of one image.

    x, baseline  (C, H, W); m (H, W) the map.  Pixels are ranked by m, largest first
    (ties in a stable order); after step k of ``steps`` the first round(k/steps * H*W)
    pixels are moved.  Returns (deletion, insertion), each (steps + 1, C, H, W):
    deletion[k] is x with those pixels from ``baseline`` (deletion[0] = x), insertion[k]
    is baseline with those pixels from x (insertion[0] = baseline)."""
    C, H, W = x.shape
    order = np.argsort(-np.asarray(m, np.float64).reshape(-1), kind="stable")
    rank = np.empty(H * W, np.int64)
    rank[order] = np.arange(H * W)
    counts = np.round(np.arange(steps + 1) / steps * H * W).astype(np.int64)
    moved = (rank[None, :] < counts[:, None]).reshape(steps + 1, 1, H, W)     # (steps+1, 1, H, W)
    deletion = np.where(moved, baseline[None], x[None])
    insertion = np.where(moved, x[None], baseline[None])
    return deletion, insertion


def auc(curve: Sequence[float] | np.ndarray) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoidal rule)."""
    c = np.asarray(curve, np.float64)
    return float((c[1:] + c[:-1]).sum() / (2 * (len(c) - 1)))


def deletion_insertion(model: Network, x: np.ndarray, target: int | np.ndarray, maps: np.ndarray,
                       baseline: np.ndarray, steps: int = 16, ends: tuple[np.ndarray, np.ndarray] | None = None,
                       batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Deletion and insertion curves and their AUCs for images x (N, C, H, W) in model
    space, one class index per image, one map per image (N, H, W), and the baseline
    images (N, C, H, W) (e.g. ``blur(x, sigma)``).  ``ends``: (p(x), p(baseline)), the
    target's probability on the images and on the baselines, (N,) each -- the curves'
    end points, the same for every map of these images (computed here when None).
    The 2 (steps - 1) inner images of each path go through the network ``batch_size``
    at a time (default ``default_batch_size(model)``), a group of images' paths at a
    time (memory-bounded); each image's curve is the same bit for bit whatever the batch.
    Returns a dict with "deletion" and "insertion" curves (N, steps + 1) of the target's
    softmax probability and "deletion_auc", "insertion_auc" (N,)."""
    from .gradients import batches, default_batch_size, predict
    x, baseline, maps = np.asarray(x), np.asarray(baseline), np.asarray(maps)
    N = len(x)
    bs = batch_size or default_batch_size(model)
    target = np.broadcast_to(np.asarray(target), (N,))
    if ends is None:
        probs = predict(model, np.concatenate([x, baseline]), bs)[1]
        ends = probs[np.arange(N), target], probs[N + np.arange(N), target]
    p_x, p_base = (np.asarray(e, np.float64) for e in ends)
    p = np.zeros((N, 2, max(0, steps - 1)))
    if steps > 1:
        for g in batches(N, max(1, bs // (2 * (steps - 1)))):      # a group of images' paths at a time
            inner = [np.concatenate([d[1:-1], i[1:-1]])
                     for d, i in (deletion_insertion_images(x[n], baseline[n], maps[n], steps)
                                  for n in range(g.start, g.stop))]
            probs = predict(model, np.concatenate(inner), bs)[1]
            p[g] = probs[np.arange(len(probs)), np.repeat(target[g], 2 * (steps - 1))].reshape(-1, 2, steps - 1)
    deletion = np.concatenate([p_x[:, None], p[:, 0], p_base[:, None]], axis=1)
    insertion = np.concatenate([p_base[:, None], p[:, 1], p_x[:, None]], axis=1)
    return {"deletion": deletion, "insertion": insertion,
            "deletion_auc": np.array([auc(c) for c in deletion]),
            "insertion_auc": np.array([auc(c) for c in insertion])}


# --------------------------------------------------------------------------
# the scenes' "hard" subset
# --------------------------------------------------------------------------
HARD_AREA = 0.20         # object covers less than 20% of the image ...
HARD_CLUTTER = 0.03      # ... and the background's mean gradient magnitude is above this


def background_clutter(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of the grey picture (values in [0, 1]) over the
    background, the object dilated by 2 pixels left out: stripes, shapes and noise score
    high, smooth gradients low."""
    g = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    bg = ~cv2.dilate(np.asarray(mask, np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return float(mag[bg].mean()) if bg.any() else 0.0


def hard_scenes(images: np.ndarray | Sequence[np.ndarray], masks: np.ndarray, area: float = HARD_AREA,
                clutter: float = HARD_CLUTTER) -> np.ndarray:
    """Boolean (N,): the scenes with a small object (mask < ``area`` of the image) on a
    cluttered background (``background_clutter`` > ``clutter``) -- our analogue of
    TorchRay's "difficult" subset (objects under 1/4 of the image with other objects
    around)."""
    masks = np.asarray(masks, bool)
    small = masks.mean(axis=(1, 2)) < area
    busy = np.array([background_clutter(im, mk) > clutter for im, mk in zip(images, masks)])
    return small & busy
