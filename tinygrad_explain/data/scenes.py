"""Fashion-MNIST scenes: a small RGB dataset with ground-truth object masks.

Why
---
To measure *weakly supervised localisation* (saliency map -> GrabCut ->
predicted object region) we need images whose object region is known exactly.
Plain Fashion-MNIST is useless for that: the object is the only non-black
thing in the picture.  A "scene" puts one Fashion-MNIST item, tinted and
rescaled, at a random place over a procedural background, and records which
pixels belong to the item.  The class label is unchanged, so a classifier
trained on scenes must find the garment among background clutter, and its
saliency can be scored against the mask.

How a scene is made (:func:`make_scene`)
----------------------------------------
1. **Scale and place.**  The 28x28 item is resized (bilinear, cv2) to an
   ``s x s`` square, ``s`` drawn uniformly in ``SCALE_RANGE * size`` (30..56 px
   in a 64 px frame), and placed at a uniform random position *fully inside*
   the frame.
2. **Alpha.**  The item's intensity ``v = pixel / 255`` becomes its opacity
   ``alpha = clip(ALPHA_GAIN * v, 0, 1)`` (gain 5: fully opaque from intensity
   51 up, soft anti-aliased edges below).  Fashion-MNIST stores light
   garments as *dim* pixels (the photos were negated), so ``alpha = v``
   literally would make a third of the garment pixels more than half
   transparent and leave the ground-truth mask full of holes; the gain keeps
   the silhouette solid while the shading (step 4) keeps the inner details.
3. **Background.**  One of four procedural kinds, picked uniformly at random
   and independent of the item: smooth colour noise (bicubic upsampling of a
   random 2..6 square grid), a linear gradient at a random angle, soft or hard
   stripes (period 6..18 px, random angle), or a few random filled
   circles/rectangles over a flat or gradient base.  It carries no information
   about the class.
4. **Tint with guaranteed contrast.**  Each scene picks a polarity: a light
   item on a dark background (background luminance within [0, 0.55]) or a dark
   item on a light one (within [0.45, 1]).  The item's colour is a *luminance
   ramp* ``L(v)`` plus a random chroma (hue) offset: the garment body
   (highest intensity) gets the most extreme luminance, faint details sit
   closer to the background.  The ramp starts ``CONTRAST_MARGIN`` (0.15)
   beyond the 2nd/98th percentile of the actual background luminance under
   the item, so every opaque item pixel differs from (almost) every
   background pixel it covers by at least that much in luminance
   (Rec. 601 weights 0.299, 0.587, 0.114).  The near end is capped at 0.75
   (floored at 0.25 for dark items), which only bites when the background
   strays out of its band; measured on 1,000 test scenes, 0.1% of mask pixels
   end up closer than 0.1 in luminance to the background they cover.  The
   ramp spans 0.25..0.55 in luminance, so the garment's texture stays visible.
5. **Composite** ``image = bg * (1 - alpha) + item_colour * alpha``, rounded
   to uint8.

Ground truth
------------
* ``mask``: ``alpha > MASK_THRESHOLD`` (0.5), i.e. item intensity > 25.5/255
  after resizing -- the pixels where the item dominates the colour.
  bool, shape ``(H, W)``.  Enclosed background (a bag's handle, the gap in a
  sandal) is *not* part of the mask.
* ``box``: ``(x0, y0, x1, y1)`` int64, tight around ``mask``, inclusive-
  exclusive: ``mask[y0:y1, x0:x1]`` holds every True pixel and each of its
  four border rows/columns holds at least one.  ``(0, 0, 0, 0)`` for an empty
  mask (only an all-black item gives one).

Determinism
-----------
Scene ``i`` of a split holds Fashion-MNIST item ``i`` of that split (same
label) and draws all its randomness from
``np.random.default_rng([seed, SPLIT_IDS[split], i])``.  Any single scene can
therefore be regenerated on its own, in any order; the bytes are identical
from run to run and machine to machine with the same numpy and OpenCV
versions (the shipped sample's test re-checks this).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .fashion_mnist import dataset_root, load_fashion_mnist

__all__ = [
    "ALPHA_GAIN",
    "MASK_THRESHOLD",
    "SCALE_RANGE",
    "CONTRAST_MARGIN",
    "SPLIT_IDS",
    "BACKGROUND_KINDS",
    "background",
    "SAMPLE_PATH",
    "make_scene",
    "scene_rng",
    "box_from_mask",
    "SceneDataset",
    "generate",
    "load_sample",
    "augment",
    "plain_scenes",
]

#: alpha = clip(ALPHA_GAIN * intensity/255, 0, 1).
ALPHA_GAIN = 5.0
#: mask = alpha > MASK_THRESHOLD.
MASK_THRESHOLD = 0.5
#: Item side as a fraction of the frame side (30..56 px for a 64 px frame).
SCALE_RANGE = (30 / 64, 56 / 64)
#: Minimum luminance gap (0..1) between the item's colour ramp and the
#: 2nd/98th percentile of the background luminance under the item.
CONTRAST_MARGIN = 0.15
#: Split name -> the integer mixed into each scene's seed.
SPLIT_IDS = {"train": 0, "test": 1}
#: The procedural background kinds, drawn uniformly.
BACKGROUND_KINDS = ("noise", "gradient", "stripes", "shapes")
#: The shipped sample: 500 test scenes, see :func:`load_sample`.
SAMPLE_PATH = Path(__file__).resolve().parent / "fashion_scenes_sample.npz"

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def scene_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The random generator of scene ``index`` of ``split``:
    ``np.random.default_rng([seed, SPLIT_IDS[split], index])``."""
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


# ----------------------------------------------------------------------------
# colours and backgrounds (float32 RGB in [0, 1])
# ----------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _grid(size: int):
    """Pixel-centre coordinates ``(xx, yy)``, float32 (size, size), read-only."""
    c = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = np.meshgrid(c, c)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _colour(rng, lum, chroma_max=0.8):
    """A random RGB colour (float32 (3,)) whose luminance is ``lum`` before clipping.

    Built as ``lum + c * (h - luma(h))`` with a random hue vector ``h`` in
    [0,1]^3 and chroma ``c`` in [0, chroma_max]; clipping to [0, 1] may shift
    the luminance slightly at the extremes.
    """
    h = rng.random(3, dtype=np.float32)
    c = rng.uniform(0.0, chroma_max)
    return np.clip(lum + c * (h - h @ _LUMA), 0.0, 1.0).astype(np.float32)


def _mix(a, b, f):
    """``a + (b - a) * f`` for colours a, b (3,) and a field f (H, W) or (H, W, 3)."""
    if f.ndim == 2:
        f = f[..., None]
    return a + (b - a) * f


def _ramp(rng, size):
    """A linear gradient field in [0, 1] along a random direction, float32 (size, size)."""
    xx, yy = _grid(size)
    th = rng.uniform(0.0, 2.0 * np.pi)
    t = xx * np.float32(np.cos(th)) + yy * np.float32(np.sin(th))
    lo, hi = t.min(), t.max()
    return (t - lo) / max(hi - lo, 1e-6)


def background(rng: np.random.Generator, size: int, lum_lo: float, lum_hi: float) -> np.ndarray:
    """A procedural background, float32 (size, size, 3) in [0, 1].

    ``lum_lo``/``lum_hi`` bound the luminance of the two palette colours; the
    pattern mixes between them, so the background stays roughly inside that
    luminance band (chroma clipping and per-channel noise can step a little
    outside; the item's contrast rule measures the real background anyway).
    """
    a = _colour(rng, lum_lo)
    b = _colour(rng, lum_hi)
    if rng.random() < 0.5:
        a, b = b, a
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    if kind == "noise":
        k = int(rng.integers(2, 7))
        low = rng.random((k, k, 3), dtype=np.float32)
        f = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        bg = _mix(a, b, np.clip(f, 0.0, 1.0))
    elif kind == "gradient":
        bg = _mix(a, b, _ramp(rng, size))
    elif kind == "stripes":
        xx, yy = _grid(size)
        th = rng.uniform(0.0, np.pi)
        period = rng.uniform(6.0, 18.0) * size / 64
        phase = rng.uniform(0.0, 2.0 * np.pi)
        sharp = rng.uniform(1.0, 4.0)  # 1: sinusoidal, 4: nearly square stripes
        t = xx * np.float32(np.cos(th)) + yy * np.float32(np.sin(th))
        f = np.sin(t * np.float32(2.0 * np.pi / period) + np.float32(phase))
        bg = _mix(a, b, np.clip(np.float32(0.5 * sharp) * f + 0.5, 0.0, 1.0))
    else:  # shapes
        if rng.random() < 0.5:
            bg = np.empty((size, size, 3), np.float32)
            bg[...] = a
        else:
            bg = _mix(a, _colour(rng, rng.uniform(lum_lo, lum_hi)), _ramp(rng, size))
        bg = np.ascontiguousarray(bg, dtype=np.float32)
        for _ in range(int(rng.integers(2, 7))):
            col = _colour(rng, rng.uniform(lum_lo, lum_hi))
            col = tuple(float(c) for c in col)
            cx, cy = (int(v) for v in rng.integers(0, size, 2))
            if rng.random() < 0.5:
                r = int(rng.integers(size // 16, size // 3 + 1))
                cv2.circle(bg, (cx, cy), r, col, -1)
            else:
                w, h = (int(v) for v in rng.integers(size // 10, size // 2 + 1, 2))
                cv2.rectangle(bg, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), col, -1)
    return bg.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------
# one scene
# ----------------------------------------------------------------------------

def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight box ``(x0, y0, x1, y1)`` (int64, inclusive-exclusive) around a bool mask.

    ``mask[y0:y1, x0:x1]`` contains every True pixel; ``(0, 0, 0, 0)`` if none.
    """
    rows = mask.any(axis=1)
    cols = mask.any(axis=0)
    if not rows.any():
        return np.zeros(4, dtype=np.int64)
    y0 = int(rows.argmax())
    y1 = len(rows) - int(rows[::-1].argmax())
    x0 = int(cols.argmax())
    x1 = len(cols) - int(cols[::-1].argmax())
    return np.array([x0, y0, x1, y1], dtype=np.int64)


def make_scene(item28: np.ndarray, rng: np.random.Generator, size: int = 64):
    """Render one scene around one Fashion-MNIST item (recipe in the module docstring).

    Parameters
    ----------
    item28 : np.ndarray, uint8, shape (28, 28)
        The item, 0 = empty, 255 = full intensity (any 2-D uint8 array works).
    rng : np.random.Generator
        Source of all randomness; use :func:`scene_rng` for dataset scenes.
    size : int
        Side of the square output frame in pixels (default 64).

    Returns
    -------
    image : np.ndarray, uint8, shape (size, size, 3), RGB
    mask : np.ndarray, bool, shape (size, size)
        ``alpha > MASK_THRESHOLD``: the pixels of the item.
    box : np.ndarray, int64, shape (4,)
        ``(x0, y0, x1, y1)``, tight around ``mask``, inclusive-exclusive.
    """
    item28 = np.asarray(item28)
    if item28.ndim != 2 or item28.dtype != np.uint8:
        raise ValueError(f"item must be a 2-D uint8 array, got {item28.dtype} {item28.shape}")
    size = int(size)
    lo_s = max(2, int(round(SCALE_RANGE[0] * size)))
    hi_s = max(lo_s, min(size, int(round(SCALE_RANGE[1] * size))))
    s = int(rng.integers(lo_s, hi_s + 1))
    x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, 2))

    # 1-2. item intensity and alpha in the s x s window
    v = cv2.resize(item28, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    v *= np.float32(1.0 / 255.0)
    a = np.minimum(v * np.float32(ALPHA_GAIN), np.float32(1.0))
    inside = a > MASK_THRESHOLD

    # 3. background: the polarity decides which luminance band it lives in
    light_item = rng.random() < 0.5
    spread = rng.uniform(0.08, 0.30)
    if light_item:
        lum_lo = rng.uniform(0.0, 0.30)
        lum_hi = min(lum_lo + spread, 0.55)
    else:
        lum_hi = rng.uniform(0.70, 1.0)
        lum_lo = max(lum_hi - spread, 0.45)
    bg = background(rng, size, lum_lo, lum_hi)

    # 4. item colour: luminance ramp beyond the background under the item
    win = bg[y0:y0 + s, x0:x0 + s]
    under = (win @ _LUMA)[inside] if inside.any() else (win @ _LUMA).ravel()
    p_lo, p_hi = np.percentile(under, [2.0, 98.0])
    width = rng.uniform(0.25, 0.55)
    if light_item:
        l_near = min(p_hi + CONTRAST_MARGIN, 0.75)
        l_far = min(l_near + width, 1.0)
    else:
        l_near = max(p_lo - CONTRAST_MARGIN, 0.25)
        l_far = max(l_near - width, 0.0)
    vmax = max(float(v.max()), 1e-6)
    shade = np.minimum(v * np.float32(1.0 / vmax), np.float32(1.0))  # 0..1, 1 = garment body
    lum = np.float32(l_near) + np.float32(l_far - l_near) * shade
    h = rng.random(3, dtype=np.float32)
    chroma = np.float32(rng.uniform(0.0, 0.7)) * (h - h @ _LUMA)
    colour = np.clip(lum[..., None] + chroma, 0.0, 1.0)

    # 5. composite (only the window changes) and quantise
    a3 = a[..., None]
    out = bg
    out[y0:y0 + s, x0:x0 + s] = win + (colour - win) * a3
    image = (out * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)

    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y0 + s, x0:x0 + s] = inside
    return image, mask, box_from_mask(mask)


# ----------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _load_cached(split: str, root: str):
    images, labels = load_fashion_mnist(split, root)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


class SceneDataset:
    """The scenes of one Fashion-MNIST split, rendered on demand.

    Scene ``i`` holds item ``i`` of the split and has its label.  Nothing is
    cached except the (read-only) Fashion-MNIST arrays, shared between
    datasets of the same split and root.

    Parameters
    ----------
    split : "train" (60,000 scenes) or "test" (10,000)
    seed : int
        Mixed into every scene's generator; different seeds give different
        backgrounds/tints/placements for the same items.
    size : int
        Frame side in pixels (default 64).
    root : path, optional
        Fashion-MNIST directory (see :func:`tinygrad_explain.data.fashion_mnist.dataset_root`).

    Attributes
    ----------
    items : uint8 (N, 28, 28) and labels : uint8 (N,), the underlying data.
    """

    def __init__(self, split: str = "train", seed: int = 0, size: int = 64, root=None):
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        self.split, self.seed, self.size = split, int(seed), int(size)
        self.items, self.labels = _load_cached(split, str(dataset_root(root)))

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"SceneDataset(split={self.split!r}, seed={self.seed}, size={self.size}, n={len(self)})"

    def scene(self, i: int):
        """Render scene ``i`` -> ``(image uint8 (H,W,3), mask bool (H,W), box int64 (4,), label int)``."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"scene index {i} out of range 0..{len(self) - 1}")
        image, mask, box = make_scene(self.items[i], scene_rng(self.split, i, self.seed), self.size)
        return image, mask, box, int(self.labels[i])

    __getitem__ = scene

    def batch(self, indices):
        """Render several scenes.

        Returns ``(images uint8 (B,H,W,3), masks bool (B,H,W), boxes int64 (B,4),
        labels uint8 (B,))`` in the order of ``indices``.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        b, n = len(indices), self.size
        images = np.empty((b, n, n, 3), np.uint8)
        masks = np.empty((b, n, n), bool)
        boxes = np.empty((b, 4), np.int64)
        labels = np.empty(b, np.uint8)
        for k, i in enumerate(indices):
            images[k], masks[k], boxes[k], labels[k] = self.scene(i)
        return images, masks, boxes, labels


def generate(split: str, n: int | None = None, seed: int = 0, size: int = 64,
             progress: bool = True, root=None) -> dict:
    """Render the first ``n`` scenes of a split (all of them if ``n`` is None).

    Returns a dict of numpy arrays:

    ``images`` uint8 (n, size, size, 3), ``masks`` bool (n, size, size),
    ``boxes`` int64 (n, 4) as ``(x0, y0, x1, y1)``, ``labels`` uint8 (n,),
    ``indices`` int64 (n,) = ``arange(n)``, ``seed`` int64 scalar array.

    Cost is ~0.2-0.3 ms per 64 px scene on one core: all 60,000 train scenes
    take well under a minute and ~1 GB (images 0.74 GB + masks 0.25 GB).
    """
    ds = SceneDataset(split, seed=seed, size=size, root=root)
    n = len(ds) if n is None else int(n)
    if not 0 <= n <= len(ds):
        raise ValueError(f"n={n} out of range 0..{len(ds)}")
    out = {
        "images": np.empty((n, size, size, 3), np.uint8),
        "masks": np.empty((n, size, size), bool),
        "boxes": np.empty((n, 4), np.int64),
        "labels": np.asarray(ds.labels[:n]).copy(),
        "indices": np.arange(n, dtype=np.int64),
        "seed": np.asarray(int(seed), dtype=np.int64),
    }
    rng_iter = range(n)
    if progress:
        from tqdm import tqdm
        rng_iter = tqdm(rng_iter, desc=f"{split} scenes", unit="scene")
    for i in rng_iter:
        out["images"][i], out["masks"][i], out["boxes"][i], _ = ds.scene(i)
    return out


def render_images(split: str, seed: int, start: int, stop: int, progress: bool = False, size: int = 64,
                  root=None) -> np.ndarray:
    """The images alone of scenes ``start..stop-1`` (uint8 (stop-start, size,
    size, 3)), identical to :func:`generate`'s; a module-level function, so
    ``parallel.DataParallel.map`` can render parts of a split in its helpers."""
    ds = SceneDataset(split, seed=seed, size=size, root=root)
    out = np.empty((stop - start, size, size, 3), np.uint8)
    it = range(start, stop)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"{split} scenes (seed {seed})", unit="scene")
    for k, i in enumerate(it):
        out[k] = ds.scene(i)[0]
    return out


def load_sample(path=None) -> dict:
    """Load the shipped sample of 500 test scenes (indices 0..499, seed 0, 64 px).

    Works without the Fashion-MNIST package.  Returns a dict: ``images`` uint8
    (500, 64, 64, 3), ``labels`` uint8 (500,), ``masks`` bool (500, 64, 64),
    ``boxes`` int64 (500, 4), ``indices`` int64 (500,) (test-split indices),
    ``seed`` int.  Regenerate with ``scripts/make_scene_sample.py``.
    """
    from ..core.safe_io import load_npz
    path = SAMPLE_PATH if path is None else Path(path)
    out = load_npz(path, "scene sample")           # regular file, no pickles, sizes checked before reading
    need = {"images": 4, "labels": 1, "masks": 3, "boxes": 2, "indices": 1, "seed": 0}
    for k, nd in need.items():
        a = out.get(k)
        if a is None or a.ndim != nd or (nd and len(a) != len(out["images"])):
            raise ValueError(f"scene sample {path}: needs {k!r} with {nd} dimensions"
                             + (" and one entry per image" if nd else "") + ", got "
                             + ("nothing" if a is None else f"shape {a.shape}"))
    im, seed = out["images"], out["seed"]
    if im.dtype != np.uint8 or im.shape[-1] != 3 or not np.issubdtype(seed.dtype, np.integer):
        raise ValueError(f"scene sample {path}: 'images' must be uint8 (n, H, W, 3) and 'seed' an integer")
    out["seed"] = int(out["seed"])
    return out


# ----------------------------------------------------------------------------
# for training: augmentation, and plain items as scenes
# ----------------------------------------------------------------------------
def augment(images_uint8, rng, flip=True, shift=4, jitter=0.0):
    """Random training augmentation of a uint8 (N, H, W, C) batch (returns a new array).

    flip    mirror left-right with probability 1/2
    shift   translate by up to ``shift`` px in x and y (edge pixels replicated),
            i.e. a random crop of the edge-padded image
    jitter  brightness/contrast jitter: each image x -> (x - m) * c + m + b with
            c in [1-jitter, 1+jitter], b in [-jitter, jitter]*255 (m = its mean)
    """
    x = np.asarray(images_uint8)
    n, h, w, _ = x.shape
    out = np.empty_like(x)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    dys = rng.integers(-shift, shift + 1, n) if shift else np.zeros(n, int)
    dxs = rng.integers(-shift, shift + 1, n) if shift else np.zeros(n, int)
    if shift:
        padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    for i in range(n):
        img = padded[i, shift + dys[i]:shift + dys[i] + h, shift + dxs[i]:shift + dxs[i] + w] if shift else x[i]
        out[i] = img[:, ::-1] if flips[i] else img
    if jitter:
        c = rng.uniform(1 - jitter, 1 + jitter, (n, 1, 1, 1)).astype(np.float32)
        b = rng.uniform(-jitter, jitter, (n, 1, 1, 1)).astype(np.float32) * 255
        f = out.astype(np.float32)
        m = f.mean(axis=(1, 2, 3), keepdims=True)
        out = np.clip((f - m) * c + m + b + 0.5, 0, 255).astype(np.uint8)
    return out


def plain_scenes(items28, size=64, item_size=48):
    """Plain Fashion-MNIST items as background-free "scenes": each grey 28x28
    item resized (bilinear, cv2) to ``item_size`` px, centred on a black
    ``size`` x ``size`` frame and replicated to RGB.  uint8 (N, size, size, 3)."""
    import cv2
    items28 = np.asarray(items28, np.uint8)
    out = np.zeros((len(items28), size, size, 3), np.uint8)
    o = (size - item_size) // 2
    for i, it in enumerate(items28):
        big = cv2.resize(it, (item_size, item_size), interpolation=cv2.INTER_LINEAR)
        out[i, o:o + item_size, o:o + item_size] = big[..., None]
    return out
