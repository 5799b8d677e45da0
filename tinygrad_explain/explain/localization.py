"""Weakly supervised localisation (Simonyan et al. 2014, section 6) measured on scenes
whose object masks are known (``te.scenes``).

For each image: the saliency map of the *predicted* class -> GrabCut -> mask and
box, compared with the ground truth by intersection over union.  Two
baselines put the numbers in context:

* ``threshold``: the saliency map alone (smoothed as for GrabCut), thresholded at its
  80% quantile -- about the average object area, and the best of 0.5..0.95 --
  largest connected component;
* ``centre``: the same centred box for every image, of the average ground-truth size.

A localisation is correct when its box IoU is >= 0.5 (the PASCAL criterion).
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from .gradients import saliency, predict
from .grabcut import grabcut_mask, largest_component, mask_box

THRESHOLD_QUANTILE = 0.80


def box_iou(a, b) -> float:
    """IoU of two boxes (x0, y0, x1, y1), inclusive-exclusive."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: max(0, r[2] - r[0]) * max(0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def mask_iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def box_mask(box, shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


def threshold_mask(sal, quantile=THRESHOLD_QUANTILE, smooth=None):
    """Baseline (b): the saliency, smoothed as for GrabCut, above a quantile; largest component."""
    sal = np.asarray(sal, np.float64)
    smooth = max(sal.shape) / 64.0 if smooth is None else smooth
    s = cv2.GaussianBlur(sal, (0, 0), smooth, borderType=cv2.BORDER_REFLECT) if smooth > 0 else sal
    mask = largest_component(s >= np.quantile(s, quantile))
    return mask, mask_box(mask)


def evaluate(model, images_uint8, masks, boxes, *, batch_size=50, fg_quantile=0.95, bg_quantile=0.30,
             threshold_quantile=THRESHOLD_QUANTILE, progress=True):
    """Run the three localisers on a set of scenes; returns a dict of per-method results:
    ``{"grabcut"|"threshold"|"centre": {"mask_iou": (N,), "box_iou": (N,)}}`` plus
    "accuracy" (classification), "seconds"."""
    from tqdm.auto import tqdm
    from .. import image as te_image
    t0 = time.perf_counter()
    N = len(images_uint8)
    x = np.concatenate([te_image.load(im, model) for im in images_uint8])
    _, probs = predict(model, x)
    pred = probs.argmax(1)
    H, W = masks.shape[1:]
    bw = np.mean(boxes[:, 2] - boxes[:, 0])
    bh = np.mean(boxes[:, 3] - boxes[:, 1])
    cbox = np.array([round((W - bw) / 2), round((H - bh) / 2), round((W + bw) / 2), round((H + bh) / 2)], np.int64)
    cmask = box_mask(cbox, (H, W))
    out = {k: {"mask_iou": np.zeros(N), "box_iou": np.zeros(N)} for k in ("grabcut", "threshold", "centre")}
    bar = tqdm(total=N, desc="localise", disable=not progress, leave=False)
    for s in range(0, N, batch_size):
        sl = slice(s, min(N, s + batch_size))
        sal = saliency(model, x[sl], pred[sl])
        for j, i in enumerate(range(sl.start, sl.stop)):
            for key, (m, b) in (("grabcut", grabcut_mask(images_uint8[i], sal[j], fg_quantile, bg_quantile)),
                                ("threshold", threshold_mask(sal[j], threshold_quantile)),
                                ("centre", (cmask, cbox))):
                out[key]["mask_iou"][i] = mask_iou(m, masks[i])
                out[key]["box_iou"][i] = box_iou(b, boxes[i])
            bar.update(1)
    bar.close()
    out["classification_accuracy"] = None
    out["predicted"] = pred
    out["seconds"] = time.perf_counter() - t0
    return out


def summarize(result, labels=None):
    """Rows (method, mean mask IoU, mean box IoU, localisation accuracy = box IoU >= 0.5)."""
    rows = []
    for key, title in (("grabcut", "saliency + GrabCut"), ("threshold", "thresholded saliency"),
                       ("centre", "centred box of average size")):
        r = result[key]
        rows.append((title, float(r["mask_iou"].mean()), float(r["box_iou"].mean()),
                     float((r["box_iou"] >= 0.5).mean())))
    return rows


def format_table(rows) -> str:
    lines = [f"{'method':<30} {'mask IoU':>9} {'box IoU':>8} {'loc. acc.':>10}"]
    for t, m, b, a in rows:
        lines.append(f"{t:<30} {m:>9.3f} {b:>8.3f} {a:>10.3f}")
    return "\n".join(lines)
