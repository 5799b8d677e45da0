"""Every explainer on scenes with known masks: the pointing game, localisation after
GrabCut, deletion / insertion (``metrics``) and time per image, for one set of scenes.
``scripts/bench_explainers.py`` runs it and prints the table.

Each method of the registry flagged ``benchmark`` (``te.explain.methods``; :data:`METHODS`
lists them and the baselines) is reduced to one (H, W) map per image, larger =
more important (``metrics.to_map``: the channel sum for the methods flagged ``signed``,
max_c |.| for the other (N, C, H, W) maps):

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

from ..core.models import Network
from . import metrics as M
from .grabcut import grabcut_mask
from .gradients import predict
from .methods import benchmarked
from .methods import get as get_method

BASELINES = ("centre", "random")


def __getattr__(name):
    """``METHODS``: the registry's methods flagged ``benchmark`` (te.explain.methods.benchmarked(),
    read when asked, so a method registered later is scored too), then the two baselines."""
    if name == "METHODS":
        return benchmarked() + BASELINES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def map_functions(smoothgrad_samples: int = 25, occlusion_patch: int = 10, occlusion_stride: int = 6,
                  cam_layer: str | None = None) -> dict[str, Callable[..., np.ndarray]]:
    """{method: f(model, x, targets, scene_indices, seed) -> (N, H, W)} for METHODS: the
    explainers of ``te.explain.methods`` with these options, and the two baselines.
    Every random draw is seeded per scene from (seed, scene index) -- SmoothGrad's noise
    and the random baseline -- so a scene's map does not depend on the scenes it is
    computed with (a batch, a chunk of a dataset job, a worker)."""
    settings = {"samples": smoothgrad_samples, "layer": cam_layer, "patch": occlusion_patch,
                "stride": occlusion_stride}          # given to every method that has the option

    def explainer(name):
        method = get_method(name)
        options = {k: v for k, v in settings.items() if k in method.options}

        def f(m, x, t, idx, seed):
            per_image = [(int(seed), int(i)) for i in idx]
            opts = dict(options, **({"seed": per_image} if "seed" in method.options else {}))
            return M.to_map(method.fn(m, x, t, **opts), "sum" if method.signed else "absmax")
        return f

    def shape(x):
        return x.shape[2:]
    return {
        **{name: explainer(name) for name in benchmarked()},
        "centre": lambda m, x, t, idx, seed: np.broadcast_to(M.centre_map(shape(x)), (len(x),) + shape(x)),
        "random": lambda m, x, t, idx, seed: np.stack([M.random_map(shape(x), np.random.default_rng([seed, i]))
                                                       for i in idx]),
    }


METRICS = ("pointing", "mask_iou", "box_iou", "deletion_auc", "insertion_auc")
GROUND_TRUTH = ("pointing", "mask_iou", "box_iou")      # the metrics that need the true mask and box


def score_batch(model: Network, x: np.ndarray, targets: np.ndarray, indices: np.ndarray, methods: Sequence[str],
                fns: dict[str, Callable[..., np.ndarray]], *, pictures: np.ndarray | None = None,
                masks: np.ndarray | None = None, boxes: np.ndarray | None = None, metrics: Sequence[str] = METRICS,
                steps: int = 8, blur_sigma: float | None = None, seed: int = 0,
                batch_size: int | None = None) -> tuple[dict, dict, dict]:
    """One batch of images: every method's maps and their scores -- the unit of work of
    :func:`evaluate` and of a dataset job's chunk (``te.explain.dataset``).

    x (n, C, H, W) model space, targets (n,) class indices, indices (n,) the images' ids
    (they seed the random draws); ``fns`` from :func:`map_functions`; ``pictures`` uint8
    (n, H, W, 3), ``masks`` (n, H, W), ``boxes`` (n, 4) for the ground-truth metrics
    (GROUND_TRUTH; GrabCut runs on the pictures).  ``batch_size``: the explainers' and
    the deletion / insertion passes' batch.  Returns (maps {method: (n, H, W) float64},
    scores {method: {metric: (n,)}}, seconds {method: the map's time})."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {', '.join(METRICS)}")
    if any(m in GROUND_TRUTH for m in metrics) and (masks is None or boxes is None or pictures is None):
        raise ValueError(f"metrics {', '.join(m for m in metrics if m in GROUND_TRUTH)} need the true masks "
                         "and boxes (scenes); deletion_auc and insertion_auc need none")
    H, W = x.shape[2:]
    tol = M.pointing_tolerance(min(H, W))
    sigma = min(H, W) / 8 if blur_sigma is None else blur_sigma
    deletion = any(m in ("deletion_auc", "insertion_auc") for m in metrics)
    if deletion:
        base = M.blur(x, sigma)
        probs = predict(model, np.concatenate([x, base]), batch_size)[1]
        ends = probs[np.arange(len(x)), targets], probs[len(x) + np.arange(len(x)), targets]
    maps, scores, seconds = {}, {}, {}
    for k in methods:
        t0 = time.perf_counter()
        maps[k] = np.asarray(fns[k](model, x, targets, indices, seed), np.float64)
        seconds[k] = time.perf_counter() - t0
        r = scores[k] = {}
        if deletion:
            di = M.deletion_insertion(model, x, targets, maps[k], base, steps, ends, batch_size)
            r.update({m: di[m] for m in ("deletion_auc", "insertion_auc") if m in metrics})
        if "pointing" in metrics:
            r["pointing"] = np.array([M.pointing_hit(maps[k][j], masks[j], tol) for j in range(len(x))], np.float64)
        if "mask_iou" in metrics or "box_iou" in metrics:
            cut = [grabcut_mask(pictures[j], maps[k][j]) for j in range(len(x))]
            if "mask_iou" in metrics:
                r["mask_iou"] = np.array([M.mask_iou(mask, masks[j]) for j, (mask, _) in enumerate(cut)])
            if "box_iou" in metrics:
                r["box_iou"] = np.array([M.box_iou(box, boxes[j]) for j, (_, box) in enumerate(cut)], np.float64)
        scores[k] = {m: r[m] for m in metrics}
    return maps, scores, seconds


def evaluate(model: Network, images: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
             methods: Sequence[str] | None = None, *, indices: np.ndarray | None = None, target: str = "truth",
             steps: int = 8, blur_sigma: float | None = None, batch_size: int = 25, seed: int = 0,
             progress: bool = True, **settings) -> dict:
    """Run ``methods`` on the scenes (images uint8 (N, H, W, 3), masks bool (N, H, W), boxes
    (N, 4), labels (N,)), ``batch_size`` scenes at a time (``score_batch``), in memory.
    ``indices``: the scenes' ids (default 0..N-1; they seed SmoothGrad's noise and the
    random baseline, so a subset scores as in the full run).  ``steps``: deletion /
    insertion steps; ``blur_sigma``: the deletion / insertion baseline's blur (default
    1/8 of the image side).  ``settings`` go to ``map_functions``.  The same job on
    disk, resumable and on several workers: ``te.explain.dataset.run_dataset``.

    Returns {"methods": {method: {"pointing", "mask_iou", "box_iou", "deletion_auc",
    "insertion_auc": (N,), "seconds": map time in all}}, "hard": (N,) bool,
    "predicted": (N,), "targets": (N,), "tolerance", "steps", "blur_sigma"}."""
    from tqdm.auto import tqdm

    from ..data import image as te_image
    N = len(images)
    indices = np.arange(N) if indices is None else np.asarray(indices)
    fns = map_functions(**settings)
    methods = tuple(fns) if methods is None else methods
    unknown = [m for m in methods if m not in fns]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {', '.join(fns)}")
    x = np.concatenate([te_image.load(im, model) for im in images])
    H, W = x.shape[2:]
    pred = predict(model, x)[1].argmax(1)
    if target not in ("truth", "predicted"):
        raise ValueError(f"target must be 'truth' or 'predicted', got {target!r}")
    targets = np.asarray(labels, np.int64) if target == "truth" else pred
    sigma = min(H, W) / 8 if blur_sigma is None else blur_sigma
    out = {k: {**{m: np.zeros(N) for m in METRICS}, "seconds": 0.0} for k in methods}
    bar = tqdm(total=N * len(methods), desc="explainers", unit="map", disable=not progress)
    for s in range(0, N, batch_size):
        sl = slice(s, min(N, s + batch_size))
        _, scores, seconds = score_batch(model, x[sl], targets[sl], indices[sl], methods, fns,
                                         pictures=images[sl], masks=masks[sl], boxes=boxes[sl], steps=steps,
                                         blur_sigma=sigma, seed=seed)
        for k in methods:
            out[k]["seconds"] += seconds[k]
            for m in METRICS:
                out[k][m][sl] = scores[k][m]
        bar.update((sl.stop - sl.start) * len(methods))
    bar.close()
    return {"methods": out, "hard": M.hard_scenes(images, masks), "predicted": pred, "targets": targets,
            "indices": indices, "tolerance": M.pointing_tolerance(min(H, W)), "steps": steps, "blur_sigma": sigma}


SCENE_KEYS = METRICS


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
    from ..core.safe_io import atomic_write
    path = str(path) if str(path).endswith(".npz") else f"{path}.npz"     # np.savez's own naming rule
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load(path: str | os.PathLike) -> dict:
    """A result written by :func:`save`."""
    from ..core.safe_io import load_npz
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


def subset(result: dict, keep: np.ndarray) -> dict:
    """The result restricted to the scenes ``keep`` (bool (N,)), e.g. ``result["hard"]``;
    map times scaled to the kept share."""
    keep = np.asarray(keep, bool)
    share = keep.mean() if keep.size else 0.0
    out = {k: v for k, v in result.items() if k not in ("methods", "hard", "predicted", "targets", "indices")}
    for k in ("hard", "predicted", "targets", "indices"):
        out[k] = np.asarray(result[k])[keep]
    out["methods"] = {m: {**{k: np.asarray(r[k])[keep] for k in METRICS if k in r}, "seconds": r["seconds"] * share}
                      for m, r in result["methods"].items()}
    return out


#: per-scene values whose mean is each column; deletion: lower is better
PER_SCENE = {"pointing": lambda r: r["pointing"], "mask_iou": lambda r: r["mask_iou"],
             "box_accuracy": lambda r: (r["box_iou"] >= 0.5).astype(np.float64),
             "deletion_auc": lambda r: r["deletion_auc"], "insertion_auc": lambda r: r["insertion_auc"]}
LOWER_IS_BETTER = ("deletion_auc",)


def versus_baseline(result: dict, baseline: str = "centre", resamples: int = 2000, level: float = 0.95,
                    seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """For every metric and method: how much better than ``baseline`` the method scores, the
    paired per-scene difference of means (sign flipped for deletion, so > 0 is better
    everywhere), with a percentile bootstrap confidence interval over scenes (``resamples``
    resamplings of the scenes, the same for every method).  ``beats``: the interval lies
    above 0.  Returns {metric: {method: {"better_by", "lo", "hi", "beats"}}}."""
    ms = result["methods"]
    if baseline not in ms:
        raise ValueError(f"the result has no {baseline!r} baseline")
    n = len(ms[baseline]["pointing"])
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n)) if n else np.zeros((resamples, 0), int)
    out = {}
    for metric, value in PER_SCENE.items():
        ref = value(ms[baseline])
        out[metric] = {}
        for m, r in ms.items():
            if m == baseline:
                continue
            d = (value(r) - ref) * (-1 if metric in LOWER_IS_BETTER else 1)
            boots = d[idx].mean(axis=1) if n else np.zeros(resamples)
            lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
            out[metric][m] = {"better_by": float(d.mean()) if n else float("nan"), "lo": float(lo), "hi": float(hi),
                              "beats": bool(lo > 0)}
    return out


def format_versus(vs: dict, baseline: str = "centre") -> str:
    """One line per metric: the methods that beat the baseline, by how much [95% CI]."""
    lines = []
    for metric, rows in vs.items():
        win = sorted(((r["better_by"], m, r) for m, r in rows.items() if r["beats"]), reverse=True)
        text = ", ".join(f"{m} +{b:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" for b, m, r in win) or "none"
        lines.append(f"  {metric}: beat {baseline}: {text}")
    return "\n".join(lines)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """The methods x metrics table as Markdown (deletion: lower is better; the others higher)."""
    head = "| method | " + " | ".join(t for _, t in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for k, r in rows.items():
        cells = [f"{r[c]:.0f}" if c == "ms_per_image" else f"{r[c]:.3f}" for c, _ in COLUMNS]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
