"""The scene ResNet beside the embedded AlexNet: one figure, ``resnet.png``.

The same scenes explained the same way by two networks trained on the same
data: the embedded AlexNet (trained by this engine) and the scene ResNet
(``te.load_model("resnet")``: torchvision-style residual blocks with batch
norm and global average pooling, trained by PyTorch and brought in through
ONNX by ``scripts/train_resnet.py``; docs/resnet.md).  For a few shipped scenes:
the saliency map, guided backprop and Grad-CAM (each model at its default
layer: AlexNet's relu5, the ResNet's last block ``layer3.0.relu_1``) of the
class each model predicts; then the class models of every class
(``te.explain.class_model``, the default recipe), judged by the independent
judge where it is shipped.

Step counts (``RESNET_SETTINGS``; ``inputs.settings["resnet"]`` overrides
them): ``class_steps`` 200 of the default recipe's 600, one start.

:func:`judge_class_models` is the measurement quoted in docs/resnet.md: the
default recipe at its full step count on given seeds, judged by the shipped judge.
"""
from __future__ import annotations

import numpy as np

from .. import explain as X
from ..data import image as te_image
from .draw import cam_overlay, grad_picture, grid, heat, save_png
from .gallery import Figure, say

#: the figure's reduced step count for the class models (the default recipe uses 600), its seed,
#: and how many of the sample scenes it explains
RESNET_SETTINGS = {"class_steps": 200, "seed": 0, "scenes": 3}


def _panels(model, x, classes, s, judge=None):
    """One model's part of the figure: predictions on ``x`` (N, C, H, W), saliency, guided
    backprop and Grad-CAM (default layer) of each predicted class, class models of ``classes``."""
    _, probs = X.predict(model, x)
    pred = probs.argmax(1)
    layer = X.attribution.default_cam_layer(model)
    cm = X.class_model(model, classes, steps=s["class_steps"], seed=s["seed"], progress=False)
    verdict = X.quality.recognised(judge, cm.display, list(classes)) if judge is not None else None
    return {"pred": [int(c) for c in pred], "p": [float(probs[i, c]) for i, c in enumerate(pred)],
            "saliency": X.saliency(model, x, pred), "guided": X.gradient(model, x, pred, rule="guided"),
            "gradcam": X.gradcam(model, x, pred), "cam_layer": layer, "class_models": cm, "verdict": verdict}


def fig_resnet(inp, out, summary, resnet=None, judge=None):
    """The embedded AlexNet (``inp.model``) and the scene ResNet side by side; ``resnet``
    defaults to ``te.load_model("resnet")``, ``judge`` to the shipped judge when
    ``inp.settings["judge"]``.  Writes ``resnet.png``; returns a :class:`~.gallery.Figure`."""
    from ..modelfiles.modelfile import load_model
    s = dict(RESNET_SETTINGS, **inp.settings.get("resnet", {}))
    alex = inp.model
    res = load_model("resnet") if resnet is None else resnet
    if tuple(res.input_shape) != tuple(alex.input_shape) or X.class_names(res) != X.class_names(alex):
        raise X.ExplainError("fig_resnet compares two models of the same scenes: "
                             f"{getattr(res, 'path', '?')} takes other images or classes than "
                             f"{getattr(alex, 'path', '?')}")
    if judge is None and inp.settings.get("judge"):
        judge = load_model("judge")
    k = min(int(s["scenes"]), len(inp.pictures))
    pictures = inp.pictures[:k]
    classes = inp.classes if inp.classes is not None else list(range(alex.num_classes))
    names = X.class_names(alex)
    panels = {}
    for name, m in (("AlexNet", alex), ("ResNet", res)):
        x = np.concatenate([te_image.load(p, m) for p in pictures])      # each model's own preprocessing
        panels[name] = _panels(m, x, classes, s, judge)
    a, b = panels["AlexNet"], panels["ResNet"]
    ncol = max(len(classes), 1 + 2 * 3)
    blank = np.full_like(pictures[0], 255)
    tiles, labels = [], []
    for i in range(k):
        row, row_labels = [pictures[i]], [inp.names[i].replace(": ", ":\n", 1)]
        for key, what in (("saliency", "saliency"), ("guided", "guided backprop"), ("gradcam", "Grad-CAM")):
            for name, p in (("AlexNet", a), ("ResNet", b)):
                if key == "saliency":
                    tile = heat(p[key][i])
                elif key == "guided":
                    tile = grad_picture(p[key][i])
                else:
                    tile = cam_overlay(pictures[i], p[key][i])
                row.append(tile)
                extra = f" {p['cam_layer']}" if key == "gradcam" else ""
                row_labels.append(f"{name}\n{what}{extra}\n{names[p['pred'][i]]} p {p['p'][i]:.2f}")
        tiles += row + [blank] * (ncol - len(row))
        labels += row_labels + [""] * (ncol - len(row))
    for name, p in (("AlexNet", a), ("ResNet", b)):
        cm, v = p["class_models"], p["verdict"]
        tiles += list(cm.display) + [blank] * (ncol - len(cm.display))
        if v is not None:
            jn = X.class_names(judge)
            labels += [f"{lb}\n{name} p {pr:.2f}\njudge: {jn[c]} {pc:.2f}" for lb, pr, c, pc in
                       zip(cm.labels, cm.probability, v["predicted"], v["probabilities"].max(1))]
        else:
            labels += [f"{lb}\n{name} p {pr:.2f}" for lb, pr in zip(cm.labels, cm.probability)]
        labels += [""] * (ncol - len(cm.display))
    save_png(grid(tiles, labels, ncol=ncol, min_side=112,
                  title="The embedded AlexNet and the scene ResNet: same scenes, same methods, "
                        "then each one's class models"), out / "resnet.png")
    recognised = {n: (None if p["verdict"] is None else int(p["verdict"]["top1"].sum()))
                  for n, p in panels.items()}
    summary["resnet"] = {
        "settings": s, "resnet_model": getattr(res, "path", None),
        "cam_layers": {n: p["cam_layer"] for n, p in panels.items()},
        "predictions": {n: [names[c] for c in p["pred"]] for n, p in panels.items()},
        "class_model_softmax": {n: {lb: float(pr) for lb, pr in zip(p["class_models"].labels,
                                                                     p["class_models"].probability)}
                                for n, p in panels.items()},
        "judge_recognised": recognised}
    say("resnet: class models recognised by the judge (AlexNet / ResNet): "
         f"{recognised['AlexNet']} / {recognised['ResNet']} of {len(classes)}")
    judged = (f" The judge recognised {recognised['AlexNet']} of the AlexNet's {len(classes)} class models and "
              f"{recognised['ResNet']} of the ResNet's at these {s['class_steps']} steps."
              if recognised["ResNet"] is not None else "")
    return Figure("resnet", "resnet.png",
                  "The embedded AlexNet (trained by this engine) beside the scene ResNet "
                  "(<code>te.load_model(\"resnet\")</code>: residual blocks with batch norm and global average "
                  "pooling, trained by PyTorch, exported to ONNX and converted by this project's importer; "
                  "scripts/train_resnet.py, docs/resnet.md), explained the same way. Each row: a scene, then "
                  "for each method the AlexNet's picture beside the ResNet's -- saliency map, guided backprop "
                  f"and Grad-CAM (AlexNet at {a['cam_layer']}, ResNet at its last residual block "
                  f"{b['cam_layer']}) of the class each model predicts. Below: each model's class models "
                  f"(default recipe, {s['class_steps']} steps, softmax under each)." + judged)


def judge_class_models(model, seeds, judge=None, steps=None, progress=True):
    """The default recipe's class models of every class of ``model`` on each seed of ``seeds``
    (its full step count unless ``steps``), judged by ``judge`` (default: the shipped one).
    Returns {seed: {"recognised": k, "of": n, "judge_p_target_mean": p, "predicted": [...],
    "softmax": [...]}}."""
    from ..modelfiles.modelfile import load_model
    judge = load_model("judge") if judge is None else judge
    out = {}
    for seed in seeds:
        v = X.class_model(model, None, steps=steps, seed=seed, progress=progress)
        r = X.quality.recognised(judge, v.display, list(range(model.num_classes)))
        out[int(seed)] = {"recognised": int(r["top1"].sum()), "of": len(r["top1"]),
                          "judge_p_target_mean": float(r["p_target"].mean()),
                          "predicted": [judge.class_names[i] for i in r["predicted"]],
                          "softmax": [round(float(p), 4) for p in v.probability], "display": v.display}
    return out
