"""Every figure of the lecture "Explaining CNNs: Early Methods", as PNGs plus an HTML gallery.

``main`` is ``scripts/reproduce_figures.py``; ``reproduce(out_dir, inputs)`` makes
the gallery.  Figures (file names in the gallery order):

    toy_relu_rules.png     the slide's 4x4 example: ReLU forward, then the gradient
                           passed back by backprop / deconvnet / guided backprop
    class_models.png       a class model image per class (Simonyan et al. 2014, fig. 1): the
                           paper's recipe beside the default natural-image priors
    neurons_<layer>.png    images maximising units of a conv layer and of fc7
    saliency.png           image-specific class saliency maps (Simonyan fig. 2)
    grabcut.png            image / saliency / GrabCut mask / box (Simonyan fig. 3)
    inversion_fc7.png      an image and five reconstructions from its fc7 code
                           (Mahendran & Vedaldi 2015)
    inversion_layers.png   the same image reconstructed from each layer, conv1 ... fc8
    inversion_decoder.png  pool5, fc6, fc7 inverted from a learned decoder's start
    inversion_exemplar.png pool5 ... fc8 inverted by retrieval: the bank scene nearest in code,
                           and fc7's five nearest (embedded model, or any 64x64 RGB model)
    rules.png              backprop vs deconvnet vs guided backprop, same image and class
    methods.png            the methods that came next, beside the lecture's, on the same images:
                           SmoothGrad, Grad-CAM, guided Grad-CAM, occlusion, gradient x input
    explainer_benchmark.png  every method scored on the 500 shipped scenes (plotted from
                           docs/bench_explainers.json, written by scripts/bench_explainers.py;
                           embedded model only)
    sanity_cascade.png     every method's map as the weights are randomised from fc8 down
                           (Adebayo et al. 2018's cascading randomisation)
    zeiler_fergus.png      conv1..conv5 units: the 9 strongest patches (receptive fields) of the
                           shipped scenes, each activation projected back by deconvnet and guided
                           backprop (Zeiler & Fergus 2014, fig. 2)

This module holds the recipes (``fig_*``: what each figure draws, from which
model and images, with which settings), the inputs they are made from
(:class:`Inputs`), how they are run (one after another, or side by side in
worker processes) and the command line; :mod:`.gallery` collects them into a
folder with an HTML page, so that an interrupted run leaves the old gallery as
it was and nothing else in ``out_dir`` is ever removed (``--out .`` is safe).
"""
from __future__ import annotations

import html
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from . import explain as X
from . import gallery
from .core.device import set_num_threads
from .core.safe_io import atomic_write
from .data import image as te_image
from .draw import (
    as_rgb,
    cam_overlay,
    grad_picture,
    grid,
    heat,
    overlay,
    pil_font,
    save_png,
    signed_heat,
    table_image,
    upscale,
)
from .figures_resnet import RESNET_SETTINGS
from .figures_robust import ROBUST_SETTINGS
from .gallery import Figure
from .modelfiles.modelfile import DEFAULT_WEIGHTS
from .modelfiles.shipped import MEASURED_DIR


# the classes on the lecture's class-model slide (Simonyan et al. 2014, fig. 1), for ImageNet models
def _say(text):
    """Print above the progress bars (tqdm.write keeps the bars and the text apart)."""
    from tqdm.auto import tqdm
    tqdm.write(str(text))


# --------------------------------------------------------------------------
# measured numbers in captions: read from the JSON files the benchmark scripts write in docs/
# --------------------------------------------------------------------------
DOCS = MEASURED_DIR           # docs/*.json of the checkout, or their copies inside an installed wheel


def bench_json(name: str) -> dict | None:
    """docs/``name``, a JSON file that a benchmark script wrote (scripts/bench_visualizations.py
    ...; shipped inside the wheel too: tinygrad_explain/modelfiles/shipped.py), or None where it is
    absent: captions quote measured numbers from these files only, never typed in."""
    p = DOCS / name
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None


def _r(v: float) -> str:
    """A correlation as a caption quotes it: two decimals, no minus sign on a rounded zero."""
    t = f"{v:.2f}"
    return "0.00" if t == "-0.00" else t


def _judged(bench: dict, recipe: str, layer: str) -> int:
    """How many of a bench's scenes the judge names the original's class for, from ``layer``'s inversion."""
    n = len(bench["config"]["chosen"])
    return int(round(bench["results"][recipe]["inversion"][layer]["judge_agreement"] * n))


def decoder_caption_numbers() -> str:
    """The decoder figure's measured sentence, from docs/bench_visualizations_learned20.json (recipe
    "decoder"), ..._natural20.json (the random-start recipe) and ..._decoder20_steps0.json (D(code) alone)."""
    learned, natural, alone = (bench_json(f"bench_visualizations_{n}.json")
                               for n in ("learned20", "natural20", "decoder20_steps0"))
    if learned is None or natural is None or alone is None:
        return " Measured numbers: docs/explainers.md."
    dec = learned["results"]["decoder"]["inversion"]
    nat = natural["results"]["natural"]["inversion"]
    n = len(learned["config"]["chosen"])
    k5, k6 = _judged(learned, "decoder", "pool5"), _judged(learned, "decoder", "fc6")
    return (f" On {n} held-out scenes (docs/explainers.md) the refined pool5 and "
            f"fc6 reconstructions correlate {_r(dec['pool5']['corr_original_mean'])} and "
            f"{_r(dec['fc6']['corr_original_mean'])} with their scene (the random-start recipe's: "
            f"{_r(nat['pool5']['corr_original_mean'])} and {_r(nat['fc6']['corr_original_mean'])}) and the judge "
            f"names the scene's class for {f'{k5} of {n} each' if k5 == k6 else f'{k5} and {k6} of {n}'}; fc7's "
            f"only weakly ({_r(dec['fc7']['corr_original_mean'])}, the decoder's image alone "
            f"{_r(alone['results']['decoder']['inversion']['fc7']['corr_original_mean'])}; the judge agrees for "
            f"{_judged(learned, 'decoder', 'fc7')} of {n}), and fc8 (ten class scores) has "
            "no useful linear decoder.")


def layers_caption_numbers() -> str:
    """The per-layer figure's measured range, from docs/bench_visualizations_natural20.json (the default
    recipe's reconstructions of the bench's scenes)."""
    natural = bench_json("bench_visualizations_natural20.json")
    if natural is None:
        return " (docs/explainers.md)"
    inv = natural["results"]["natural"]["inversion"]
    conv = [inv[l]["corr_original_mean"] for l in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4") if l in inv]
    return (f" (on {len(natural['config']['chosen'])} held-out scenes at {natural['config']['invert_steps']} steps, "
            f"the blurred grey correlation with the original is {_r(min(conv))}-{_r(max(conv))} up to conv4 and "
            f"{_r(inv['conv5']['corr_original_mean'])} at conv5)")


def exemplar_caption_numbers(fc7_errors) -> str:
    """The retrieval figure's measured numbers: this figure's own fc7 errors (``fc7_errors``), then
    docs/bench_visualizations_learned20.json (recipe "exemplar") against ..._natural20.json."""
    out = (f"fc7 errors (about {min(fc7_errors):.2f}-{max(fc7_errors):.2f}) are a little above the "
           "optimiser's.")
    learned, natural = (bench_json(f"bench_visualizations_{n}.json") for n in ("learned20", "natural20"))
    if learned is None or natural is None:
        return out + " Measured numbers: docs/explainers.md."
    n = len(learned["config"]["chosen"])
    ks = [_judged(learned, "exemplar", l) for l in ("fc6", "fc7", "fc8")]
    opt = [_judged(natural, "natural", l) for l in ("fc6", "fc7", "fc8")]
    return out + (f" On {n} held-out scenes "
                  "(docs/explainers.md) the independent judge names the original's class from the fc6, fc7 and "
                  f"fc8 retrievals for {ks[0]}, {ks[1]} and {ks[2]} of {n}, against {min(opt)}-{max(opt)} for the "
                  "optimised pictures; r (the "
                  "blurred grey correlation with the original) stays near 0 at fc8, whose ten class scores say "
                  "nothing of the scene's layout.")


LECTURE_IMAGENET_CLASSES = ["washer", "goose", "ostrich", "limousine", "computer keyboard", "dalmatian"]


# --------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------
@dataclass
class Inputs:
    """What the figures are made from: the model, sample images in model space
    (N, C, H, W), their display pictures, names, and optional ground truth."""
    model: object
    x: np.ndarray
    pictures: list
    names: list
    truth_boxes: list | None = None
    classes: list | None = None           # class-model targets
    conv_layer: str = "conv3"
    conv_units: list = field(default_factory=lambda: list(range(8)))
    fc_units: list = field(default_factory=lambda: list(range(8)))
    settings: dict = field(default_factory=dict)
    pool_x: np.ndarray | None = None      # images to search for the strongest activations (Zeiler & Fergus)
    pool_pictures: list | None = None
    zf_units: int = 2                     # channels per conv layer in the Zeiler & Fergus figure
    _saliency: tuple | None = field(default=None, repr=False, compare=False)

    def saliency(self):
        """(class probabilities (N, K), predicted classes (N,), saliency maps (N, H, W)) of the
        sample images, computed once and shared by the saliency and GrabCut figures."""
        if self._saliency is None:
            _, probs = X.predict(self.model, self.x)
            pred = probs.argmax(1)
            self._saliency = (probs, pred, X.saliency(self.model, self.x, pred))
        return self._saliency


def _cls(model, i):
    return X.class_names(model)[i]


def fig_toy(inp, out, summary):
    t = X.relu_toy_example()
    tables = [("input x", t["input"]), ("ReLU(x)", t["relu"]), ("gradient from above", t["grad_out"]),
              ("backprop", t["backprop"]), ("deconvnet", t["deconvnet"]), ("guided backprop", t["guided"])]
    save_png(table_image(tables, "ReLU forward, then three ways to pass the gradient back"),
             out / "toy_relu_rules.png")
    text = "\n\n".join(f"{n}\n" + "\n".join(" ".join(f"{v:4g}" for v in row) for row in a) for n, a in tables)
    _say(text)
    rows = "".join("<td><b>{}</b><table class=m>{}</table></td>".format(
        html.escape(n), "".join("<tr>" + "".join(f"<td>{v:g}</td>" for v in row) + "</tr>" for row in a))
        for n, a in tables)
    summary["toy"] = {n: np.asarray(a).tolist() for n, a in tables}
    return Figure("toy", "toy_relu_rules.png",
                  "The slide's toy example. A 4x4 feature map x goes through ReLU (negatives become 0). "
                  "A gradient arrives from above. <b>Backprop</b> passes it where x &gt; 0 (the true gradient, "
                  "negative values included); <b>deconvnet</b> passes it where the gradient is positive, "
                  "ignoring x; <b>guided backprop</b> passes it only where both x &gt; 0 and the gradient &gt; 0.",
                  extra_html=f"<table class=toy><tr>{rows}</tr></table>")


def fig_class_models(inp, out, summary):
    """The paper's recipe (Simonyan et al. 2014) beside the default natural-image priors, same classes;
    under each picture the network's own softmax and, on the embedded model, the independent
    judge's verdict (a measuring instrument only: it never enters the optimisation)."""
    m, s = inp.model, dict(inp.settings.get("class_model", {}))
    recipes = X.visualize.CLASS_MODEL_RECIPES
    tiles, labels = [], []
    runs, verdicts = {}, {}
    judge = _load_judge() if inp.settings.get("judge") else None
    for recipe in ("simonyan2014", X.visualize.DEFAULT_RECIPE):
        r = dict(s)
        if "steps" in r:              # each recipe its own step count, scaled as the default's is
            default_steps = X.visualize.CLASS_MODEL_DEFAULTS["steps"]
            r["steps"] = max(1, round(r["steps"] * recipes[recipe]["steps"] / default_steps))
        v = X.class_model(m, inp.classes, recipe=recipe, **r)
        runs[recipe] = v
        tiles += v.display
        if judge is not None:
            verdicts[recipe] = X.quality.recognised(judge, v.display, list(inp.classes))
            names = X.class_names(judge)
            labels += [f"{lb}\n{recipe} p {p:.3f}\njudge: {names[k]} {pk:.2f}" for lb, p, k, pk in
                       zip(v.labels, v.probability, verdicts[recipe]["predicted"],
                           verdicts[recipe]["probabilities"].max(1))]
        else:
            labels += [f"{lb}\n{recipe} p {p:.3f}" for lb, p in zip(v.labels, v.probability)]
    n = len(runs["simonyan2014"].labels)
    save_png(grid(tiles, labels, ncol=min(n, 10) if n <= 10 else 5,
                  title="Class models argmax_I S_c(I) - priors(I): the paper's recipe (top) and natural-image "
                        "priors (bottom)"), out / "class_models.png")
    v = runs[X.visualize.DEFAULT_RECIPE]
    summary["class_models"] = {lb: float(p) for lb, p in zip(v.labels, v.probability)}
    summary["class_models_simonyan2014"] = {lb: float(p) for lb, p in
                                            zip(runs["simonyan2014"].labels, runs["simonyan2014"].probability)}
    summary["class_model_settings"] = {k: v_ for k, v_ in s.items() if k != "progress"}
    _say("class-model softmax per class (simonyan2014 / natural):")
    for lb, p0, p, sc in zip(v.labels, runs["simonyan2014"].probability, v.probability, v.final):
        _say(f"  {lb:<20} softmax {p0:.4f} / {p:.4f}   score (natural) {sc:.2f}")
    judged = ""
    if verdicts:
        for recipe, r in verdicts.items():
            k, n_ = int(r["top1"].sum()), len(r["top1"])
            summary[f"class_models_judge_{recipe}"] = {"recognised": k, "of": n_,
                                                      "mean_p_target": float(r["p_target"].mean())}
            _say(f"class models recognised by the judge ({recipe}): {k}/{n_}, mean p(target) "
                 f"{r['p_target'].mean():.3f}")
        judged = (" Last line under each image: what the <b>independent judge</b> (te.load_model(\"judge\"), "
                  "another architecture trained separately; it never enters the optimisation) sees in the "
                  "picture, with its probability -- it recognises " +
                  " and ".join(f"{int(r['top1'].sum())}/{len(r['top1'])} of the {recipe} pictures"
                               for recipe, r in verdicts.items()) + ".")
    return Figure("class_models", "class_models.png",
                  "Class model visualisation (Simonyan et al. 2014): gradient ascent on the unnormalised class "
                  "score S<sub>c</sub>(I) from the zero (mean) image plus faint noise (the exact zero image is a "
                  "dead point of this network). <b>Top: the paper's recipe</b> -- plain gradient ascent with an "
                  "L2 prior &minus;&lambda;&Vert;I&Vert;<sup>2</sup>: the network's score rises just as well, but "
                  "through high-frequency patterns. <b>Bottom: natural-image priors</b> (the default) -- the image "
                  "made from a decorrelated-colour Fourier spectrum, randomly shifted, scaled and rotated at every "
                  "step, kept in the valid pixel range (Olah et al. 2017; Yosinski et al. 2015), Adam steps -- "
                  "with <b>transparency</b>: the image has an opacity channel and the network sees it over a new "
                  "random dark background at every step, so only what the object itself shows can raise the "
                  "score, and a small prior on the mean opacity keeps the rest clear (Mordvintsev et al. 2018); "
                  "shown over black. Top row: the mean is added back and the contrast stretched for display. "
                  "Under each image: the softmax probability the network gives it for that class." + judged)


def fig_neurons(inp, out, summary):
    m, s = inp.model, inp.settings.get("maximize", {})
    figs = []
    for layer, units in ((inp.conv_layer, inp.conv_units), ("fc7", inp.fc_units)):
        v = X.maximize(m, layer, units, **s)
        labels = [f"{lb}\nact {a:.2f}" for lb, a in zip(v.labels, v.final)]
        what = "channel (mean activation)" if len(m.shapes[layer]) == 3 else "neuron"
        save_png(grid(v.display, labels, ncol=min(8, len(labels)),
                      title=f"Images maximising {layer} units (one {what} each)"), out / f"neurons_{layer}.png")
        summary[f"neurons_{layer}"] = {lb: float(a) for lb, a in zip(v.labels, v.final)}
        figs.append(Figure(f"neurons_{layer}", f"neurons_{layer}.png",
                           f"Neuron maximisation for {len(units)} units of <b>{layer}</b> (those most active on "
                           f"the sample images): the same gradient ascent as for class models, with the class "
                           f"score replaced by one {what} -- and an opaque image (no transparency; the priors "
                           f"10x weaker, recipe natural-opaque)."))
    return figs


def fig_saliency(inp, out, summary):
    m = inp.model
    probs, pred, sal = inp.saliency()
    tiles, labels = [], []
    for i in range(len(inp.x)):
        tiles += [inp.pictures[i], heat(sal[i])]
        labels += [f"{inp.names[i]}", f"saliency: {_cls(m, pred[i])}\n(p={probs[i, pred[i]]:.2f})"]
    save_png(grid(tiles, labels, ncol=min(len(tiles), 8), title="Image-specific class saliency: max_c |dS_c/dI|"),
             out / "saliency.png")
    return Figure("saliency", "saliency.png",
                  "Saliency maps (Simonyan et al. 2014): the magnitude of the gradient of the predicted class's "
                  "score with respect to the input, maximum over colour channels -- one backward pass per image.")


def fig_grabcut(inp, out, summary):
    m = inp.model
    _, pred, sal = inp.saliency()
    tiles, labels = [], []
    for i in range(len(inp.x)):
        mask, box = X.grabcut_mask(inp.pictures[i], sal[i])
        tb = inp.truth_boxes[i] if inp.truth_boxes is not None else None
        iou = f"\nbox IoU {X.metrics.box_iou(box, tb):.2f}" if tb is not None else ""
        tiles += [inp.pictures[i], heat(sal[i]), (mask * 255).astype(np.uint8), overlay(inp.pictures[i], mask, box, tb)]
        labels += [inp.names[i], f"saliency ({_cls(m, pred[i])})", "GrabCut mask", "box" + iou]
    save_png(grid(tiles, labels, ncol=4, title="Saliency -> GrabCut -> object mask and box"), out / "grabcut.png")
    gt = " (blue: ground-truth box)" if inp.truth_boxes is not None else ""
    return Figure("grabcut", "grabcut.png",
                  "Weakly supervised segmentation (Simonyan et al. 2014, section 6): pixels above the 95% "
                  "saliency quantile seed the foreground, those below the 30% quantile the background, "
                  "OpenCV's GrabCut segments the rest; the largest connected component is the mask, its "
                  f"bounding box (green) the localisation{gt}.")


def fig_inversion(inp, out, summary):
    m, s = inp.model, dict(inp.settings.get("invert", {}))
    i = int(inp.settings.get("invert_image", 0))
    inv = X.invert(m, inp.x[i], layer="fc7", inits=5, **s)
    labels = [f"original\n{inp.names[i]}"] + [f"init {k + 1}\nerror {e:.3f}" for k, e in enumerate(inv.errors)]
    save_png(grid([inp.pictures[i]] + inv.display, labels, ncol=6, title="Reconstructions from the fc7 code"),
             out / "inversion_fc7.png")
    pair = inv.pairwise_mad
    summary["inversion"] = {"errors": inv.errors.tolist(), "pairwise_mean_abs_diff": pair.tolist(),
                            "mean_pairwise_mean_abs_diff": inv.mean_pairwise_mad,
                            "settings": {k: v for k, v in s.items() if k != "progress"}}
    _say("fc7 inversion, normalised errors: " + " ".join(f"{e:.4f}" for e in inv.errors))
    _say(f"fc7 inversion, mean pairwise mean |difference| (model space): {inv.mean_pairwise_mad:.4f}")
    rows = "".join("<tr>" + "".join(f"<td>{v:.3f}</td>" for v in r) + "</tr>" for r in pair)
    return Figure("inversion", "inversion_fc7.png",
                  "Inverting the fc7 representation (Mahendran &amp; Vedaldi 2015): five random initialisations, "
                  "each optimised to match the original's fc7 code (normalised error "
                  "&Vert;&phi;(x)&minus;&phi;<sub>0</sub>&Vert;/&Vert;&phi;<sub>0</sub>&Vert; under each) with "
                  "&alpha;-norm (&alpha;=6) and TV (&beta;=2) priors and the paper's step schedule, the image made "
                  "from a decorrelated-colour Fourier spectrum and jittered at every step, Adam steps from "
                  "faint random starts (the default recipe; see docs/explainers.md). Different starts give "
                  "different images with the same code: what they share is what fc7 keeps. On this model they do "
                  "<b>not</b> show the scene (the blurred grey correlation with the original is no better than "
                  "with an unrelated scene): its fc7 code hardly encodes brightness, see the figure below and "
                  "docs/explainers.md.",
                  extra_html="<p>Pairwise mean absolute difference between reconstructions (model space):</p>"
                             f"<table class=m>{rows}</table>")


def fig_inversion_layers(inp, out, summary):
    m, s = inp.model, dict(inp.settings.get("invert_layers", {}))
    i = int(inp.settings.get("invert_image", 0))
    res = X.invert_layers(m, inp.x[i], **s)
    labels = [f"original\n{inp.names[i]}"] + [f"{l}\nerror {e:.3f}" for l, e in zip(res.layers, res.errors)]
    save_png(grid([inp.pictures[i]] + res.display, labels, ncol=min(6, len(labels)),
                  title="Reconstructions of one image from each layer's code"), out / "inversion_layers.png")
    summary["inversion_layers"] = {l: float(e) for l, e in zip(res.layers, res.errors)}
    _say("inversion per layer, normalised errors: " + " ".join(f"{l} {e:.3f}" for l, e in zip(res.layers, res.errors)))
    return Figure("inversion_layers", "inversion_layers.png",
                  "Inverting each layer's code of the same image (Mahendran &amp; Vedaldi 2015, their figure of "
                  "reconstructions layer by layer): one reconstruction per layer, all optimised as one batch "
                  "with the same priors as the fc7 figure; the normalised error "
                  "&Vert;&phi;<sub>l</sub>(x)&minus;&phi;<sub>l,0</sub>&Vert;/&Vert;&phi;<sub>l,0</sub>&Vert; "
                  "under each. Up to conv5 the reconstructions show the scene" + layers_caption_numbers() +
                  "; pool5 and fc6 keep at most the object's rough place, often "
                  "with its brightness inverted; fc7 does not show the scene, and fc8 (ten class scores) at most a "
                  "class-like outline, not this scene -- this network was "
                  "trained on randomly tinted items, and its deep codes hardly change when the object turns "
                  "from light to dark "
                  "(scripts/measure_invariances.py; docs/explainers.md). A learned decoder's start does better "
                  "for pool5 and fc6: the next figure.")


def fig_inversion_decoder(inp, out, summary):
    """Deep layers inverted from a learned decoder's start (explain/decoder.py): the decoder's
    image D(phi0) alone and refined by the Mahendran & Vedaldi objective; nothing for a model
    without shipped decoders."""
    from .explain import quality
    from .explain.decoder import DECODER_LAYERS, decode, decoder_path
    m = inp.model
    if getattr(m, "path", None) is None:
        return []
    layers = [l for l in DECODER_LAYERS if l in m.layer_names and decoder_path(m, l).exists()]
    if not layers:
        return []
    s = dict(inp.settings.get("invert_decoder", {}))
    i = int(inp.settings.get("invert_image", 0))
    res = X.invert_layers(m, inp.x[i], layers, recipe="decoder", **s)
    tiles, labels, rows = [], [], {}
    for k, l in enumerate(layers):
        code = X.feature_code(m, inp.x[i], l)
        alone = decode(m, code, l)
        e0 = float(np.sqrt(quality.normalised_error(X.feature_code(m, alone, l), code)[0]))
        pic0 = te_image.to_display(alone, m)
        r0 = quality.reconstruction_correlation(pic0, inp.pictures[i])["original"]
        r1 = quality.reconstruction_correlation(res.display[k], inp.pictures[i])["original"]
        tiles += [inp.pictures[i], pic0, res.display[k]]
        labels += [f"original\n{inp.names[i]}" if k == 0 else "original",
                   f"{l}: decoder D(code)\nerror {e0:.3f}  r {r0:.2f}",
                   f"{l}: D(code) refined\nerror {res.errors[k]:.3f}  r {r1:.2f}"]
        rows[l] = {"decoder_error": e0, "decoder_r": r0, "refined_error": float(res.errors[k]), "refined_r": r1}
    save_png(grid(tiles, labels, ncol=3, title="Deep layers inverted from a learned decoder's start"),
             out / "inversion_decoder.png")
    summary["inversion_decoder"] = rows
    _say("decoder inversion: " + " ".join(f"{l} r {v['decoder_r']:.2f}->{v['refined_r']:.2f}" for l, v in rows.items()))
    return Figure("inversion_decoder", "inversion_decoder.png",
                  "Learned inversion (Dosovitskiy &amp; Brox 2016) for the deep layers, where the hand-made "
                  "priors above fail: a decoder fitted on 20,000 training scenes maps the code back to an image "
                  "(middle column: the linear read-out D(code) of a 32&times;32 picture, fitted in closed form by "
                  "scripts/train_decoder.py -- the expected scene given the code, so what the code leaves open is "
                  "averaged to grey); right: that image refined by the same objective and priors as the figure "
                  f"above ({s.get('steps', X.inversion.INVERT_RECIPES['decoder']['steps'])} steps, recipe "
                  "\"decoder\"), which adds the contrast and detail the code asks for. r: the blurred grey "
                  "correlation with the original." + decoder_caption_numbers() +
                  " Retrieval, the next figure, is what the judge names best.")


EXEMPLAR_LAYERS = ("pool5", "fc6", "fc7", "fc8")


def fig_inversion_exemplar(inp, out, summary):
    """Deep layers inverted by retrieval (explain/exemplar.py): for each of pool5 ... fc8 the
    bank scene whose code is nearest (re-ranked by the decoder's image where there is one),
    and the five for fc7; nothing for a model that does not take the bank's 64x64 scenes."""
    from .explain import quality
    from .explain.exemplar import bank_fits
    m = inp.model
    layers = [l for l in EXEMPLAR_LAYERS if l in m.layer_names]
    if not layers or not bank_fits(m):
        return []
    i = int(inp.settings.get("invert_image", 0))
    res = X.invert_layers(m, inp.x[i], layers, recipe="exemplar", progress=False)
    five = X.invert(m, inp.x[i], "fc7" if "fc7" in layers else layers[-1], inits=5, recipe="exemplar",
                    progress=False)
    tiles, labels, rows = [inp.pictures[i]], [f"original\n{inp.names[i]}"], {}
    for k, l in enumerate(layers):
        r = quality.reconstruction_correlation(res.display[k], inp.pictures[i])["original"]
        tiles.append(res.display[k])
        labels.append(f"{l}: nearest scene\nerror {res.errors[k]:.3f}  r {r:.2f}")
        rows[l] = {"error": float(res.errors[k]), "r": r}
    for k in range(len(five.display)):
        tiles.append(five.display[k])
        labels.append(f"{five.layer} #{k + 1}\nerror {five.errors[k]:.3f}")
    ncol = len(layers) + 1
    while len(tiles) % ncol:
        tiles.append(np.full_like(tiles[0], 255))
        labels.append("")
    save_png(grid(tiles, labels, ncol=ncol, title="Deep layers inverted by retrieval: the training scene "
                                                  "nearest in code"), out / "inversion_exemplar.png")
    summary["inversion_exemplar"] = {"layers": rows, five.layer: [float(e) for e in five.errors]}
    _say("exemplar inversion: " + " ".join(f"{l} error {v['error']:.3f} r {v['r']:.2f}" for l, v in rows.items()))
    return Figure("inversion_exemplar", "inversion_exemplar.png",
                  "Inversion by retrieval (recipe \"exemplar\", explain/exemplar.py; as Weinzaepfel et al. "
                  "2011 inverted SIFT from a database): of 2,000 shipped training scenes, the one whose code at "
                  "the layer is nearest the original's (normalised error under each; of the 5 nearest, the one "
                  "most like the decoder's image D(code) where the layer has a decoder). Top row: pool5 ... fc8; "
                  "bottom row: fc7's five nearest. These are other scenes that the network can hardly tell from "
                  "the original at that layer -- the invariance made visible, not the original recovered: their "
                  + exemplar_caption_numbers(five.errors))


def fig_rules(inp, out, summary):
    m = inp.model
    _, probs = X.predict(m, inp.x)
    pred = probs.argmax(1)
    k = min(len(inp.x), 3)
    tiles, labels = [], []
    for i in range(k):
        tiles.append(inp.pictures[i])
        labels.append(f"{inp.names[i]}\ntarget {_cls(m, pred[i])}")
        for rule in ("backprop", "deconvnet", "guided"):
            tiles.append(grad_picture(X.gradient(m, inp.x[i], int(pred[i]), rule=rule)[0]))
            labels.append({"backprop": "backprop (gradient)", "deconvnet": "deconvnet",
                           "guided": "guided backprop"}[rule])
    save_png(grid(tiles, labels, ncol=4, title="The same image and class under the three backward rules"),
             out / "rules.png")
    return Figure("rules", "rules.png",
                  "Data gradient, deconvnet (Zeiler &amp; Fergus 2014) and guided backpropagation "
                  "(Springenberg et al. 2015) for the same image and class: only what the ReLUs pass back "
                  "differs. Guided backprop, which blocks negative gradients as well as inactive units, "
                  "gives the cleanest picture.")


def fig_zeiler_fergus(inp, out, summary):
    """Zeiler & Fergus 2014, fig. 2: for units of conv1..conv5, the 9 images (of the pool:
    the shipped scenes, or the given images) with the strongest single activation, cropped to
    the neuron's receptive field, and that one activation projected back to pixels by the
    deconvnet (through the image's own pooling switches) and by guided backprop."""
    from .explain import features as ZF
    m = inp.model
    x = inp.pool_x if inp.pool_x is not None else inp.x
    pics = inp.pool_pictures if inp.pool_pictures is not None else inp.pictures
    layers = [n for n in ("conv1", "conv2", "conv3", "conv4", "conv5") if n in m.layers]
    k = min(9, len(x))
    side = int(np.ceil(np.sqrt(k)))
    tile, pad, font = 44, 2, pil_font(12)

    def block(tiles):
        """Up to 9 tiles (uint8 HxWx3, any size) resized to tile x tile, in a side x side square."""
        b = np.full((side * (tile + pad) - pad,) * 2 + (3,), 255, np.uint8)
        for n, t in enumerate(tiles):
            r, c = divmod(n, side)
            t = as_rgb(t)
            t = cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST if t.shape[0] < tile else cv2.INTER_AREA)
            b[r * (tile + pad):r * (tile + pad) + tile, c * (tile + pad):c * (tile + pad) + tile] = t
        return b

    rows, info = [], {}
    maps = ZF.activation_maps(m, x, layers)
    for layer in layers:
        mean = maps[layer].mean(axis=(0, 2, 3))              # the most active channels, as in fig_neurons
        chans = [int(c) for c in np.argsort(-mean, kind="stable")[:inp.zf_units]]
        picks = [ZF.top_activations(maps[layer][:, ch], k) for ch in chans]
        # every unit of the layer in one backward pass per rule: one target neuron per image
        flat = [(p, ch) for ch, ps in zip(chans, picks) for p in ps]
        targets = [(layer, ch, p[1], p[2]) for p, ch in flat]
        xs = x[[p[0] for p, _ in flat]]
        g_d = X.gradient(m, xs, targets, rule="deconvnet")
        g_g = X.gradient(m, xs, targets, rule="guided")
        for u, ch in enumerate(chans):
            crops, deconv, guided = [], [], []
            for n, (idx, i, j, _) in enumerate(picks[u]):
                y0, y1, x0, x1 = ZF.receptive_field(m, layer, i, j)
                crops.append(np.asarray(pics[idx])[y0:y1, x0:x1])
                deconv.append(grad_picture(g_d[u * k + n][:, y0:y1, x0:x1]))
                guided.append(grad_picture(g_g[u * k + n][:, y0:y1, x0:x1]))
            top = picks[u][0]
            rf = ZF.receptive_field(m, layer, top[1], top[2])
            rows.append((f"{layer}[{ch}]\nfield {rf[1] - rf[0]}x{rf[3] - rf[2]}\nmax {top[3]:.2f}",
                         [block(crops), block(deconv), block(guided)]))
            info[f"{layer}[{ch}]"] = [{"image": p[0], "i": p[1], "j": p[2], "activation": p[3]} for p in picks[u]]
    bw, lab_w, head = rows[0][1][0].shape[1], 110, 22
    W = lab_w + 3 * (bw + 12)
    H = head + len(rows) * (bw + 10)
    canvas = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(canvas)
    for c, title in enumerate(("top 9 patches", "deconvnet", "guided backprop")):
        d.text((lab_w + c * (bw + 12), 4), title, fill="black", font=font)
    for r, (label, blocks) in enumerate(rows):
        y = head + r * (bw + 10)
        d.multiline_text((4, y + 2), label, fill="black", font=font, spacing=2)
        for c, b in enumerate(blocks):
            canvas.paste(Image.fromarray(b), (lab_w + c * (bw + 12), y))
    save_png(canvas, out / "zeiler_fergus.png")
    summary["zeiler_fergus"] = info
    return Figure("zeiler_fergus", "zeiler_fergus.png",
                  "Feature visualisation after Zeiler &amp; Fergus (2014, fig. 2): for the most active channels of "
                  "conv1..conv5, the 9 images with the strongest single activation of that channel, each cropped to "
                  "the receptive field of the neuron at its strongest position (left; searched among the first "
                  f"{len(x)} shipped scenes); that one activation projected "
                  "back to pixel space with the deconvnet rule through the image's own max-pooling switches "
                  "(middle) and with guided backprop (right), cropped the same way. Deep units see most of the "
                  "64-pixel scene, so their patches are nearly whole scenes.")


def fig_methods(inp, out, summary):
    """Each method's map of the predicted class for the first four images, one row each."""
    m = inp.model
    x = inp.x[:4]
    pred = X.predict(m, x)[1].argmax(1)
    H = x.shape[2]
    patch = max(1, H // 8)
    maps = {"saliency": lambda: [heat(s) for s in X.saliency(m, x, pred)],
            "guided backprop": lambda: [grad_picture(g) for g in X.gradient(m, x, pred, rule="guided")],
            "SmoothGrad": lambda: [heat(s) for s in X.smoothgrad(m, x, pred)],
            f"Grad-CAM ({X.attribution.default_cam_layer(m)})":
                lambda: [cam_overlay(p, c) for p, c in zip(inp.pictures, X.gradcam(m, x, pred))],
            "guided Grad-CAM": lambda: [grad_picture(g) for g in X.guided_gradcam(m, x, pred)],
            f"occlusion ({patch} px, stride {patch})":
                lambda: [heat(np.maximum(o, 0)) for o in X.occlusion(m, x, pred, patch=patch, stride=patch)],
            "gradient x input": lambda: [signed_heat(g.sum(0)) for g in X.gradient_x_input(m, x, pred)]}
    columns = {name: f() for name, f in maps.items()}
    tiles, labels = [], []
    for i in range(len(x)):
        tiles.append(inp.pictures[i])
        labels.append(f"{inp.names[i]}\nexplained: {_cls(m, pred[i])}")
        for name, col in columns.items():
            tiles.append(col[i])
            labels.append(name)
    save_png(grid(tiles, labels, ncol=len(columns) + 1, title="The methods that came next, on the same images"),
             out / "methods.png")
    figs = [Figure("methods", "methods.png",
                   "After the lecture's methods: SmoothGrad (Smilkov et al. 2017, 25 noisy copies at 15% of the "
                   "image's range), Grad-CAM of the last conv layer and guided Grad-CAM (Selvaraju et al. 2017), "
                   "occlusion (Zeiler &amp; Fergus 2014: the drop of the class probability when a grey square "
                   "covers each pixel) and gradient x input (red: positive, blue: negative).  Which of them can "
                   "be trusted is measured below.")]
    bench = DOCS / "bench_explainers.json"
    if getattr(m, "path", None) and Path(m.path).resolve() == DEFAULT_WEIGHTS.resolve() and bench.exists():
        report = json.loads(bench.read_text(encoding="utf-8"))
        plot_benchmark(report, out / "explainer_benchmark.png")
        figs.append(Figure("explainer benchmark", "explainer_benchmark.png",
                           f"Every method on {report['n']} shipped scenes with known masks, measured by "
                           "<code>python scripts/bench_explainers.py --json docs/bench_explainers.json</code> "
                           f"({report['seconds'] / 60:.0f} min; numbers read from that file, not recomputed here): "
                           "the pointing game (all scenes and the hard ones: small objects on cluttered "
                           "backgrounds), mask IoU and box accuracy after GrabCut, deletion and insertion AUC "
                           "(Petsiuk et al. 2018) and time per image.  Grey: the centre and random baselines.  "
                           "The table and its reading are in docs/explainers.md."))
    return figs


def plot_benchmark(report: dict, path):
    """scripts/bench_explainers.py's table as one bar chart per metric (matplotlib, PNG):
    methods along x, baselines in grey, with the scenes and settings in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .explain.benchmark import BASELINES, COLUMNS
    rows = report["rows"]
    names = list(rows)
    cols = [c for c in COLUMNS if c[0] != "ms_per_image"] + [("ms_per_image", "ms / image (log)")]
    fig, axes = plt.subplots(2, 4, figsize=(13, 7), constrained_layout=True)
    axes = axes.reshape(-1)
    axes[-1].axis("off")
    colours = ["0.6" if n in BASELINES else "C0" for n in names]
    for ax, (key, title) in zip(axes, cols):
        vals = [max(rows[n][key], 1e-3) if key == "ms_per_image" else rows[n][key] for n in names]
        ax.bar(range(len(names)), vals, color=colours)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        better = " (lower better)" if key in ("deletion_auc", "ms_per_image") else ""
        ax.set_title(title + better, fontsize=9)
        if key == "ms_per_image":
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{report['n']} {report['scenes']} scenes ({report['hard']} hard), {report['target']} class; "
                 f"grey: baselines", fontsize=10)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


SANITY_LABELS = {"gradient": "gradient", "saliency": "saliency", "deconvnet": "deconvnet", "guided": "guided backprop",
                 "smoothgrad": "SmoothGrad", "gradcam": "Grad-CAM", "guided_gradcam": "guided Grad-CAM"}


def fig_sanity(inp, out, summary):
    """Adebayo et al. 2018, fig. 2: one scene's explanation by every method (rows) on
    the trained model, then with the weights re-initialised from fc8 down, one more
    layer per column (cascading randomisation), and -- for the embedded model -- on
    the twin trained on permuted labels.  Under each map: the Spearman rank
    correlation of its absolute values with the original's."""
    from .explain import sanity
    m = inp.model
    _, probs = X.predict(m, inp.x[:1])
    c = int(probs[0].argmax())
    columns = [("original", m)] + [(f"{layer} and above\nrandom", r) for layer, r in sanity.cascade(m, seed=0)]
    if inp.settings.get("sanity_twin"):
        from .modelfiles.modelfile import load_model
        columns.append(("trained on\nrandom labels", load_model("random_labels")))
    maps = [sanity.explain(r, inp.x[:1], c) for _, r in columns]
    tiles, labels, rho = [], [], {}
    for meth in sanity.METHODS:
        ref = maps[0][meth][1][0]
        for k, (name, _) in enumerate(columns):
            a = maps[k][meth][1][0]
            tiles.append(heat(a))
            if k == 0:
                labels.append(f"{SANITY_LABELS[meth]}\n{name}")
            else:
                r = sanity.spearman(ref, a)
                rho.setdefault(meth, {})[name.replace(chr(10), " ")] = r
                labels.append(f"{name}\nrank|.| {r:.2f}")
    tiles = [upscale(inp.pictures[0], 96)] + [np.full((96, 96, 3), 255, np.uint8)] * (len(columns) - 1) + tiles
    labels = [f"{inp.names[0]}\ntarget {_cls(m, c)}"] + [""] * (len(columns) - 1) + labels
    save_png(grid(tiles, labels, ncol=len(columns), min_side=96,
                  title="Cascading randomisation: explanations as the weights are re-initialised from the top"),
             out / "sanity_cascade.png")
    summary["sanity_cascade_spearman_abs"] = rho
    twin = (" The last column is the same architecture trained by this engine on randomly permuted labels "
            "(the data-randomisation test)." if inp.settings.get("sanity_twin") else "")
    return Figure("sanity", "sanity_cascade.png",
                  "Sanity checks for saliency maps (Adebayo et al. 2018): each row is one method's map (absolute "
                  "values) of the same scene and class; from the second column on, the layers from fc8 down to the "
                  "one named are re-initialised with their training initialisation (cascading randomisation). "
                  "An explanation of what the <i>trained</i> network does must change as its weights are "
                  "destroyed; under each map is the Spearman rank correlation of its absolute values with the "
                  "original's (1 = unchanged)." + twin + " Over 50 scenes: scripts/sanity_checks.py and "
                  "docs/explainers.md.")


def fig_robust_twin(inp, out, summary):
    """The standard model beside its adversarially trained twin (figures_robust.fig_robust), when the
    embedded model's twin is shipped; nothing for other models."""
    if not inp.settings.get("robust_twin"):
        return []
    from .figures_robust import fig_robust
    return fig_robust(inp, out, summary)


def fig_resnet_beside(inp, out, summary):
    """The embedded AlexNet beside the scene ResNet (figures_resnet.fig_resnet), when the
    ResNet is shipped; nothing for other models."""
    if not inp.settings.get("resnet_beside"):
        return []
    from .figures_resnet import fig_resnet
    return fig_resnet(inp, out, summary)


FIGURES = [("toy", fig_toy), ("class models", fig_class_models), ("neurons", fig_neurons),
           ("saliency", fig_saliency), ("grabcut", fig_grabcut), ("inversion", fig_inversion),
           ("inversion layers", fig_inversion_layers), ("inversion decoder", fig_inversion_decoder),
           ("inversion exemplar", fig_inversion_exemplar), ("rules", fig_rules), ("methods", fig_methods),
           ("sanity", fig_sanity), ("zeiler fergus", fig_zeiler_fergus), ("robust", fig_robust_twin),
           ("resnet", fig_resnet_beside)]


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------
ZF_POOL = 250     # shipped scenes searched for the Zeiler & Fergus figure's strongest activations


def embedded_inputs(model, n=6):
    """Sample scenes shipped with the package: the first correctly classified scene of
    ``n`` different classes, with their ground-truth boxes."""
    from .data import scenes
    data = scenes.load_sample()
    x_all = np.concatenate([te_image.load(im, model) for im in data["images"][:ZF_POOL]])
    _, probs = X.predict(model, x_all[:200])
    pred = probs.argmax(1)
    picked, seen = [], set()
    for want_correct in (True, False):          # prefer scenes the model gets right
        for i in range(len(probs)):
            c = int(data["labels"][i])
            if len(picked) < n and c not in seen and (pred[i] == c or not want_correct):
                picked.append(i)
                seen.add(c)
    names = X.class_names(model)
    return Inputs(model=model, x=x_all[picked], pictures=[data["images"][i] for i in picked],
                  names=[f"scene {i}: {names[int(data['labels'][i])]}" for i in picked],
                  truth_boxes=[data["boxes"][i] for i in picked], classes=None,
                  pool_x=x_all, pool_pictures=list(data["images"][:ZF_POOL]))


def most_active_units(model, x, layer, k):
    """The ``k`` units (channels of a conv map, by their spatial mean) of ``layer`` with the
    highest mean activation over the images ``x`` -- live units, not dead ones."""
    from .core.engine import no_grad
    with no_grad():
        a = model(x, until=layer).numpy()
    score = a.reshape(a.shape[0], a.shape[1], -1).mean(-1).mean(0)
    return [int(i) for i in np.argsort(-score, kind="stable")[:k]]


def _load_judge():
    from .modelfiles.modelfile import load_model
    return load_model("judge")


def _shipped_models():
    """Names of the model files of ``MODEL_NAMES`` that are present in weights/."""
    from .modelfiles.modelfile import MODEL_NAMES
    return [n for n, p in MODEL_NAMES.items() if p.exists()]


def file_inputs(model, paths):
    x = np.concatenate([te_image.load(p, model) for p in paths])
    return Inputs(model=model, x=x, pictures=[te_image.to_display(x[i], model) for i in range(len(x))],
                  names=[Path(p).name for p in paths])


# --------------------------------------------------------------------------
# making the figures (gallery.py collects them into a folder with index.html)
# --------------------------------------------------------------------------
#: rough share of the main job's time per figure (embedded model), longest first: the order in
#: which ``jobs > 1`` hands the figures to the worker processes, so that the long ones start first
COST_ORDER = ("inversion", "class models", "inversion layers", "neurons", "robust", "resnet", "sanity", "zeiler fergus",
              "methods", "grabcut", "saliency", "rules", "toy")


_BAR = re.compile(r"\d+/\d+ \[|\?it/s|it/s\]|s/it\]")


def _without_bars(text: str) -> str:
    """What a worker wrote to stderr, less its progress bars (the parent shows one bar of its own)."""
    keep = []
    for line in text.split("\n"):
        line = line.rsplit("\r", 1)[-1].replace("\x1b[A", "").rstrip()
        if line and not _BAR.search(line):
            keep.append(line)
    return "\n".join(keep)


def _make_figure(name, inputs, tmp, threads=None):
    """Make one figure into ``tmp``: (name, [Figure], the summary entries it wrote, seconds,
    what it printed to stdout).  Runs in the main process (``threads=None``: it prints as it goes) or in a
    worker process of :func:`reproduce` (its printing is returned for the parent to show)."""
    fn = dict(FIGURES)[name]
    summary = {}
    t = time.perf_counter()
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    if threads is None:
        res = fn(inputs, Path(tmp), summary)
    else:
        set_num_threads(threads)                 # a fresh worker process: its own thread settings
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                res = fn(inputs, Path(tmp), summary)
        finally:                                 # warnings and errors still reach the terminal
            rest = _without_bars(err.getvalue())
            if rest:
                sys.stderr.write(rest + "\n")
    return name, (res if isinstance(res, list) else [res]), summary, time.perf_counter() - t, out.getvalue()


def _make_all(todo, inputs, tmp, jobs, threads, log):
    """Yield _make_figure's results for the names in ``todo``: one after another in this
    process, or with ``jobs`` > 1 in that many worker processes (spawned, so each has its own
    Numba threads; the figures are independent and seeded, so the pictures are the same)."""
    from tqdm.auto import tqdm
    bar = tqdm(total=len(todo), desc="figures", unit="fig", dynamic_ncols=True)
    try:
        if jobs <= 1 or len(todo) <= 1:
            for name in todo:
                yield _make_figure(name, inputs, tmp)
                bar.update()
            return
        import concurrent.futures as cf
        import multiprocessing as mp
        order = sorted(todo, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER))
        log(f"making {len(todo)} figures in {min(jobs, len(todo))} worker processes")
        pool = cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn"))
        futures = [pool.submit(_make_figure, n, inputs, str(tmp), threads) for n in order]
        with pool:
            try:
                for f in cf.as_completed(futures):
                    yield f.result()
                    bar.update()
            except BaseException:       # Ctrl-C, SIGTERM (main turns it into SystemExit), a failed figure
                for f in futures:
                    f.cancel()
                # figures still running would hold the pool's shutdown for minutes: stop them now
                # (ProcessPoolExecutor has no public way before Python 3.14's terminate_workers)
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                raise
    finally:
        bar.close()


def reproduce(out, inputs: Inputs, title="Explaining CNNs: early methods", info="", only=None, log=None,
              jobs: int = 1, threads: int | None = 1):
    """Make every figure into ``out``: drawn in a private folder, then moved in file by file
    (index.html last), replacing only the files this run wrote.  ``jobs`` > 1 makes the
    figures in that many worker processes (each with ``threads`` Numba/BLAS threads); the
    gallery keeps the order of FIGURES.  Returns (figures, summary dict, seconds)."""
    log = log or _say
    todo = [n for n, _ in FIGURES if only is None or n in only]
    return gallery.build(out, todo, lambda tmp: _make_all(todo, inputs, tmp, jobs, threads, log), title, info,
                         log, {"jobs": jobs})


# --------------------------------------------------------------------------
# command line (scripts/reproduce_figures.py)
# --------------------------------------------------------------------------
EMBEDDED_SETTINGS = {                         # the library defaults, spelled out
    "class_model": dict(steps=X.visualize.CLASS_MODEL_DEFAULTS["steps"]),
    "maximize": dict(steps=X.visualize.MAXIMIZE_DEFAULTS["steps"]),
    "invert": dict(steps=X.inversion.INVERT_DEFAULTS["steps"]),
    "invert_layers": dict(steps=500),
    "invert_decoder": dict(steps=X.inversion.INVERT_RECIPES["decoder"]["steps"]),
    "robust": {k: v for k, v in ROBUST_SETTINGS.items() if k.endswith("steps")},
    "resnet": {k: v for k, v in RESNET_SETTINGS.items() if k.endswith("steps")},
}
IMAGENET_SETTINGS = {                         # fewer steps: a 224/227 AlexNet step costs ~25x more
    "class_model": dict(steps=100),
    "maximize": dict(steps=60),
    "invert": dict(steps=150),
    "invert_layers": dict(steps=100),
}


def main(argv=None, prog="tinygrad-explain figures") -> int:
    import argparse
    import sys
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Write every figure of the lecture 'Explaining CNNs: Early Methods' as PNG, plus index.html. "
                    "Default: the embedded Fashion-MNIST-scenes AlexNet and shipped sample scenes; "
                    "--weights FILE --images PHOTO... for real AlexNet (ImageNet preprocessing from the file).")
    ap.add_argument("--out", required=True, help="output folder (created if missing; when complete, the files of "
                                                 "this run replace their namesakes there, nothing else is touched)")
    ap.add_argument("--weights", help="model file (default: the embedded weights/fashion_scenes_alexnet.h5)")
    ap.add_argument("--images", nargs="+", help="image files (default: sample scenes; required with --weights)")
    ap.add_argument("--classes", nargs="+", help="class-model targets (default: every class of the embedded "
                                                 "model / the lecture's classes for ImageNet models)")
    ap.add_argument("--conv-layer", default="conv3",
                    help="conv layer for neuron maximisation (default conv3: in the embedded model most conv5 "
                         "channels cannot be driven above their negative bias from a near-zero start)")
    ap.add_argument("--units", type=int, default=8, help="units per layer for neuron maximisation (default 8)")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply every optimisation's number of steps (e.g. 0.1 for a quick look)")
    ap.add_argument("--only", nargs="+", choices=[n for n, _ in FIGURES], help="make only these figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="where the network runs (gpu: needs CuPy and a CUDA device; default cpu)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes making figures side by side (default: the number of CPU cores "
                         "this process may use; 1 = one after another in this process)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for Numba and BLAS (default 1, fastest for these small batches; 0 = library default)")
    args = ap.parse_args(argv)
    # Everything that can be checked before minutes of work is checked here.
    if args.units < 1:
        ap.error(f"--units must be at least 1, got {args.units}")
    if not (args.steps_scale > 0 and np.isfinite(args.steps_scale)):
        ap.error(f"--steps-scale must be a positive number, got {args.steps_scale}")
    from .explain.optimize import MAX_STEPS
    most = max(v for d in (EMBEDDED_SETTINGS, IMAGENET_SETTINGS) for s in d.values() for k, v in s.items()
               if k.endswith("steps"))
    if most * args.steps_scale > MAX_STEPS:
        ap.error(f"--steps-scale {args.steps_scale:g} makes {most * args.steps_scale:,.0f} steps; "
                 f"at most {MAX_STEPS:,}")
    if args.jobs is None:
        args.jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads < 0:
        ap.error(f"--threads must be 0 (library default) or a positive count, got {args.threads}")
    set_num_threads(args.threads)
    import signal
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # a kill still removes the partial folder

    from . import ModelFileError, load_model
    from .core.device import DeviceUnavailable
    t0 = time.perf_counter()
    try:
        gallery.prepare_out(args.out).rmdir()       # fail early on an unwritable folder
        model = load_model(args.weights, device=args.device)
        embedded = args.weights is None
        if args.images:
            inputs = file_inputs(model, args.images)
        elif embedded or tuple(model.input_shape) == (3, 64, 64):
            inputs = embedded_inputs(model)
        else:
            ap.error("--images is required with --weights (photos to explain)")
        if len(inputs.x) == 0:
            raise ValueError("no input images")
        names = X.class_names(model)
        if args.classes:
            inputs.classes = [X.resolve_class(model, c) for c in args.classes]
        elif model.num_classes <= 20:
            inputs.classes = list(range(model.num_classes))
        else:
            inputs.classes = [X.resolve_class(model, c) for c in LECTURE_IMAGENET_CLASSES if c in names] or [0]
        inputs.conv_layer = X.resolve_layer(model, args.conv_layer)
        if len(model.shapes[inputs.conv_layer]) != 3:
            raise X.ExplainError(f"--conv-layer {args.conv_layer!r} is not a convolutional map")
        nconv, nfc = model.shapes[inputs.conv_layer][0], int(np.prod(model.shapes[X.resolve_layer(model, 'fc7')]))
        inputs.conv_units = most_active_units(model, inputs.x, inputs.conv_layer, min(args.units, nconv))
        inputs.fc_units = most_active_units(model, inputs.x, "fc7", min(args.units, nfc))
        defaults = EMBEDDED_SETTINGS if model.num_classes <= 20 else IMAGENET_SETTINGS
        settings = {k: dict(v) for k, v in defaults.items()}
        for s in settings.values():              # every step count ("steps", "class_steps", ...) scaled
            s.update({k: max(1, int(round(v * args.steps_scale))) for k, v in s.items() if k.endswith("steps")})
            s["seed"] = args.seed
        settings["sanity_twin"] = embedded and "random_labels" in _shipped_models()
        settings["judge"] = embedded and "judge" in _shipped_models()
        settings["robust_twin"] = embedded and "robust" in _shipped_models()
        settings["resnet_beside"] = embedded and "resnet" in _shipped_models()
        inputs.settings = settings
        info = (f"Model: {html.escape(getattr(model, 'path', '?'))} (input {model.input_shape}, "
                f"{model.num_classes} classes). Images: {len(inputs.x)}.")
        print(f"model {getattr(model, 'path', '?')}: input {model.input_shape}, {model.num_classes} classes; "
              f"{len(inputs.x)} images; writing {args.out}")
        figures, summary, secs = reproduce(args.out, inputs, info=info, only=args.only, jobs=args.jobs,
                                           threads=args.threads)
    except (X.ExplainError, X.OptimizationError, ModelFileError, OSError, ValueError, DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(figures)} figures to {args.out}/index.html in {time.perf_counter() - t0:.1f} s "
          f"(figures {secs:.1f} s)")
    return 0
