"""Every explainer on scenes with known masks: the pointing game, localisation after
GrabCut, deletion / insertion (``metrics``) and time per image, for one set of scenes.
``scripts/bench_explainers.py`` runs it and prints the table.

Each method (``te.explain.methods``) is reduced to one (H, W) map per image, larger =
more important (``metrics.to_map``):

    gradient        sum_c dS/dx_c                       (the raw, signed gradient)
    saliency        max_c |dS/dx_c|                     (Simonyan et al. 2014)
    deconvnet       max_c |deconvnet "gradient"|        (Zeiler & Fergus 2014)
    guided          max_c |guided backprop|             (Springenberg et al. 2015)
    smoothgrad      te.explain.smoothgrad               (Smilkov et al. 2017)
    gradcam         te.explain.gradcam                  (Selvaraju et al. 2017)
    guided-gradcam  max_c |guided Grad-CAM|
    occlusion       te.explain.occlusion                (Zeiler & Fergus 2014)
    grad-x-input    sum_c x_c dS/dx_c                   (Shrikumar et al. 2016)
    centre          -distance to the image centre       (baseline)
    random          uniform noise, seeded per scene     (baseline)

The class explained is the ground truth (as in TorchRay's pointing game) unless
``target="predicted"`` (Simonyan et al.'s localisation explains the top class).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..models import Network
from . import metrics as M
from .grabcut import grabcut_mask
from .gradients import predict
from .methods import get as get_method

METHODS = ("gradient", "saliency", "deconvnet", "guided", "smoothgrad", "gradcam", "guided-gradcam",
           "occlusion", "grad-x-input", "centre", "random")
BASELINES = ("centre", "random")
SIGNED = ("gradient", "grad-x-input")      # summed over channels; the other (N, C, H, W) maps: max_c |.|


def map_functions(smoothgrad_samples: int = 25, occlusion_patch: int = 10, occlusion_stride: int = 6,
                  cam_layer: str | None = None) -> dict[str, Callable[..., np.ndarray]]:
    """{method: f(model, x, targets, scene_indices, seed) -> (N, H, W)} for METHODS: the
    explainers of ``te.explain.methods`` with these options, and the two baselines."""
    options = {"smoothgrad": dict(samples=smoothgrad_samples), "gradcam": dict(layer=cam_layer),
               "guided-gradcam": dict(layer=cam_layer),
               "occlusion": dict(patch=occlusion_patch, stride=occlusion_stride)}

    def explainer(name):
        method = get_method(name)

        def f(m, x, t, idx, seed):
            opts = dict(options.get(name, {}), **({"seed": seed} if "seed" in method.options else {}))
            return M.to_map(method.fn(m, x, t, **opts), "sum" if name in SIGNED else "absmax")
        return f

    def shape(x):
        return x.shape[2:]
    return {
        **{name: explainer(name) for name in METHODS if name not in BASELINES},
        "centre": lambda m, x, t, idx, seed: np.broadcast_to(M.centre_map(shape(x)), (len(x),) + shape(x)),
        "random": lambda m, x, t, idx, seed: np.stack([M.random_map(shape(x), np.random.default_rng([seed, i]))
                                                       for i in idx]),
    }


def evaluate(model: Network, images: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
             methods: Sequence[str] = METHODS, *, indices: np.ndarray | None = None, target: str = "truth",
             steps: int = 8, blur_sigma: float | None = None, batch_size: int = 25, seed: int = 0,
             progress: bool = True, **settings) -> dict:
    """Run ``methods`` on the scenes (images uint8 (N, H, W, 3), masks bool (N, H, W), boxes
    (N, 4), labels (N,)).  ``indices``: the scenes' ids (default 0..N-1; seeds the random
    baseline, so a subset scores as in the full run).  ``steps``: deletion / insertion
    steps; ``blur_sigma``: the deletion / insertion baseline's blur (default 1/8 of
    the image side).  ``settings`` go to ``map_functions``.

    Returns {"methods": {method: {"pointing", "mask_iou", "box_iou", "deletion_auc",
    "insertion_auc": (N,), "seconds": map time in all}}, "hard": (N,) bool,
    "predicted": (N,), "targets": (N,), "tolerance", "steps", "blur_sigma"}."""
    from tqdm.auto import tqdm

    from .. import image as te_image
    N = len(images)
    indices = np.arange(N) if indices is None else np.asarray(indices)
    fns = map_functions(**settings)
    unknown = [m for m in methods if m not in fns]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {', '.join(METHODS)}")
    x = np.concatenate([te_image.load(im, model) for im in images])
    H, W = x.shape[2:]
    pred = predict(model, x)[1].argmax(1)
    if target not in ("truth", "predicted"):
        raise ValueError(f"target must be 'truth' or 'predicted', got {target!r}")
    targets = np.asarray(labels, np.int64) if target == "truth" else pred
    tol = M.pointing_tolerance(min(H, W))
    sigma = min(H, W) / 8 if blur_sigma is None else blur_sigma
    out = {k: {"pointing": np.zeros(N), "mask_iou": np.zeros(N), "box_iou": np.zeros(N),
               "deletion_auc": np.zeros(N), "insertion_auc": np.zeros(N), "seconds": 0.0} for k in methods}
    bar = tqdm(total=N * len(methods), desc="explainers", unit="map", disable=not progress)
    for s in range(0, N, batch_size):
        sl = slice(s, min(N, s + batch_size))
        xb, tb = x[sl], targets[sl]
        base = M.blur(xb, sigma)
        probs = predict(model, np.concatenate([xb, base]))[1]
        ends = probs[np.arange(len(xb)), tb], probs[len(xb) + np.arange(len(xb)), tb]
        for k in methods:
            t0 = time.perf_counter()
            maps = np.asarray(fns[k](model, xb, tb, indices[sl], seed), np.float64)
            out[k]["seconds"] += time.perf_counter() - t0
            di = M.deletion_insertion(model, xb, tb, maps, base, steps, ends)
            r = out[k]
            r["deletion_auc"][sl], r["insertion_auc"][sl] = di["deletion_auc"], di["insertion_auc"]
            for j, i in enumerate(range(sl.start, sl.stop)):
                r["pointing"][i] = M.pointing_hit(maps[j], masks[i], tol)
                mask, box = grabcut_mask(images[i], maps[j])
                r["mask_iou"][i] = M.mask_iou(mask, masks[i])
                r["box_iou"][i] = M.box_iou(box, boxes[i])
            bar.update(sl.stop - sl.start)
    bar.close()
    return {"methods": out, "hard": M.hard_scenes(images, masks), "predicted": pred, "targets": targets,
            "indices": indices, "tolerance": tol, "steps": steps, "blur_sigma": sigma}


SCENE_KEYS = ("pointing", "mask_iou", "box_iou", "deletion_auc", "insertion_auc")


def concat(results: Sequence[dict]) -> dict:
    """One result from ``evaluate`` results on disjoint sets of scenes (same methods and settings)."""
    first = results[0]
    out = {k: first[k] for k in ("tolerance", "steps", "blur_sigma")}
    for k in ("hard", "predicted", "targets", "indices"):
        out[k] = np.concatenate([r[k] for r in results])
    out["methods"] = {m: {**{k: np.concatenate([r["methods"][m][k] for r in results]) for k in SCENE_KEYS},
                          "seconds": sum(r["methods"][m]["seconds"] for r in results)} for m in first["methods"]}
    return out


def save(result: dict, path: str | os.PathLike) -> None:
    """Write a result (per-scene scores) to an .npz file, to ``concat`` runs on parts of the scenes."""
    arrays = {k: np.asarray(result[k]) for k in ("tolerance", "steps", "blur_sigma", "hard", "predicted", "targets",
                                                 "indices")}
    for m, r in result["methods"].items():
        arrays.update({f"{m}/{k}": r[k] for k in SCENE_KEYS})
        arrays[f"{m}/seconds"] = np.asarray(r["seconds"])
    from ..safe_io import atomic_write
    path = str(path) if str(path).endswith(".npz") else f"{path}.npz"     # np.savez's own naming rule
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load(path: str | os.PathLike) -> dict:
    """A result written by :func:`save`."""
    from ..safe_io import load_npz
    z = load_npz(path, "benchmark result")          # regular file, no pickles, sizes checked before reading
    try:
        out = {k: v for k, v in z.items() if "/" not in k}
        for k in ("tolerance", "steps", "blur_sigma"):
            out[k] = out[k].item()
        methods = dict.fromkeys(k.split("/")[0] for k in z if "/" in k)
        out["methods"] = {m: {**{k: z[f"{m}/{k}"] for k in SCENE_KEYS}, "seconds": float(z[f"{m}/seconds"])}
                          for m in methods}
    except KeyError as e:
        raise ValueError(f"benchmark result {path}: no array {e.args[0]!r}; not a file written by save()") from None
    except (ValueError, TypeError) as e:                # a setting that is not one number, ...
        raise ValueError(f"benchmark result {path}: not a file written by save() ({e})") from None
    return out


COLUMNS = (("pointing", "pointing"), ("pointing_hard", "pointing hard"), ("mask_iou", "mask IoU"),
           ("box_accuracy", "box acc."), ("deletion_auc", "deletion"), ("insertion_auc", "insertion"),
           ("ms_per_image", "ms/image"))


def summarize(result: dict) -> dict[str, dict[str, float]]:
    """{method: {column: value}}: means over the scenes ("pointing_hard" over the hard
    subset; "box_accuracy" = fraction with box IoU >= 0.5)."""
    hard = result["hard"]
    rows = {}
    for k, r in result["methods"].items():
        n = len(r["pointing"])
        rows[k] = {"pointing": float(r["pointing"].mean()),
                   "pointing_hard": float(r["pointing"][hard].mean()) if hard.any() else float("nan"),
                   "mask_iou": float(r["mask_iou"].mean()), "box_accuracy": float((r["box_iou"] >= 0.5).mean()),
                   "deletion_auc": float(r["deletion_auc"].mean()), "insertion_auc": float(r["insertion_auc"].mean()),
                   "ms_per_image": 1000 * r["seconds"] / n}
    return rows


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """The methods x metrics table as Markdown (deletion: lower is better; the others higher)."""
    head = "| method | " + " | ".join(t for _, t in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for k, r in rows.items():
        cells = [f"{r[c]:.0f}" if c == "ms_per_image" else f"{r[c]:.3f}" for c, _ in COLUMNS]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
