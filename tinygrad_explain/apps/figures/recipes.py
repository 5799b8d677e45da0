"""The figure recipes: ``fig_*(inputs, out, summary)`` draws one figure (or a few) of the lecture
into the folder ``out`` from :class:`.inputs.Inputs` and returns its :class:`~..gallery.Figure` entries;
:data:`FIGURES` lists them in the gallery's order.  The captions' measured numbers come from
:mod:`.captions`."""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ... import explain as X
from ...core.safe_io import atomic_write
from ...data import image as te_image
from ...modelfiles.modelfile import DEFAULT_WEIGHTS
from ..draw import (
    as_rgb,
    grad_picture,
    grid,
    heat,
    method_picture,
    overlay,
    pil_font,
    save_png,
    table_image,
    upscale,
)
from ..gallery import Figure, say
from .captions import (
    bench_json,
    benchmark_caption,
    decoder_caption_numbers,
    defaults,
    exemplar_caption_numbers,
    layers_caption_numbers,
    percent,
)
from .inputs import load_judge


def _cls(model, i):
    return X.class_names(model)[i]


def fig_toy(inp, out, summary):
    t = X.relu_toy_example()
    tables = [("input x", t["input"]), ("ReLU(x)", t["relu"]), ("gradient from above", t["grad_out"]),
              ("backprop", t["backprop"]), ("deconvnet", t["deconvnet"]), ("guided backprop", t["guided"])]
    save_png(table_image(tables, "ReLU forward, then three ways to pass the gradient back"),
             out / "toy_relu_rules.png")
    text = "\n\n".join(f"{n}\n" + "\n".join(" ".join(f"{v:4g}" for v in row) for row in a) for n, a in tables)
    say(text)
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
    judge = load_judge() if inp.settings.get("judge") else None
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
    say("class-model softmax per class (simonyan2014 / natural):")
    for lb, p0, p, sc in zip(v.labels, runs["simonyan2014"].probability, v.probability, v.final):
        say(f"  {lb:<20} softmax {p0:.4f} / {p:.4f}   score (natural) {sc:.2f}")
    judged = ""
    if verdicts:
        for recipe, r in verdicts.items():
            k, n_ = int(r["top1"].sum()), len(r["top1"])
            summary[f"class_models_judge_{recipe}"] = {"recognised": k, "of": n_,
                                                      "mean_p_target": float(r["p_target"].mean())}
            say(f"class models recognised by the judge ({recipe}): {k}/{n_}, mean p(target) "
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
    for layer, units in ((inp.conv_layer, inp.conv_units), (inp.fc_layer, inp.fc_units)):
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
    cut = defaults(X.grabcut_mask)
    return Figure("grabcut", "grabcut.png",
                  "Weakly supervised segmentation (Simonyan et al. 2014, section 6): pixels above the "
                  f"{percent(cut['fg_quantile'])} saliency quantile seed the foreground, those below the "
                  f"{percent(cut['bg_quantile'])} quantile the background, "
                  "OpenCV's GrabCut segments the rest; the largest connected component is the mask, its "
                  f"bounding box (green) the localisation{gt}.")


def fig_inversion(inp, out, summary):
    m, s = inp.model, dict(inp.settings.get("invert", {}))
    i = int(inp.settings.get("invert_image", 0))
    code = inp.fc_layer
    inv = X.invert(m, inp.x[i], layer=code, inits=5, **s)
    labels = [f"original\n{inp.names[i]}"] + [f"init {k + 1}\nerror {e:.3f}" for k, e in enumerate(inv.errors)]
    save_png(grid([inp.pictures[i]] + inv.display, labels, ncol=6, title=f"Reconstructions from the {code} code"),
             out / f"inversion_{code}.png")
    pair = inv.pairwise_mad
    summary["inversion"] = {"errors": inv.errors.tolist(), "pairwise_mean_abs_diff": pair.tolist(),
                            "mean_pairwise_mean_abs_diff": inv.mean_pairwise_mad,
                            "settings": {k: v for k, v in s.items() if k != "progress"}}
    say(f"{code} inversion, normalised errors: " + " ".join(f"{e:.4f}" for e in inv.errors))
    say(f"{code} inversion, mean pairwise mean |difference| (model space): {inv.mean_pairwise_mad:.4f}")
    rows = "".join("<tr>" + "".join(f"<td>{v:.3f}</td>" for v in r) + "</tr>" for r in pair)
    return Figure("inversion", f"inversion_{code}.png",
                  f"Inverting the {code} representation (Mahendran &amp; Vedaldi 2015): five random initialisations, "
                  f"each optimised to match the original's {code} code (normalised error "
                  "&Vert;&phi;(x)&minus;&phi;<sub>0</sub>&Vert;/&Vert;&phi;<sub>0</sub>&Vert; under each) with "
                  "&alpha;-norm (&alpha;=6) and TV (&beta;=2) priors and the paper's step schedule, the image made "
                  "from a decorrelated-colour Fourier spectrum and jittered at every step, Adam steps from "
                  "faint random starts (the default recipe; see docs/explainers.md). Different starts give "
                  f"different images with the same code: what they share is what {code} keeps."
                  + (" On this model they do "
                     "<b>not</b> show the scene (the blurred grey correlation with the original is no better than "
                     "with an unrelated scene): its fc7 code hardly encodes brightness, see the figure below and "
                     "docs/explainers.md." if code == "fc7" else ""),
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
    say("inversion per layer, normalised errors: " + " ".join(f"{l} {e:.3f}" for l, e in zip(res.layers, res.errors)))
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
    from ...explain import quality
    from ...explain.decoder import DECODER_LAYERS, decode, decoder_path
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
    say("decoder inversion: " + " ".join(f"{l} r {v['decoder_r']:.2f}->{v['refined_r']:.2f}" for l, v in rows.items()))
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
    from ...explain import quality
    from ...explain.exemplar import CANDIDATES, bank_fits, load_bank
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
    say("exemplar inversion: " + " ".join(f"{l} error {v['error']:.3f} r {v['r']:.2f}" for l, v in rows.items()))
    return Figure("inversion_exemplar", "inversion_exemplar.png",
                  "Inversion by retrieval (recipe \"exemplar\", explain/exemplar.py; as Weinzaepfel et al. "
                  f"2011 inverted SIFT from a database): of {len(load_bank()['images']):,} shipped training scenes, "
                  "the one whose code at the layer is nearest the original's (normalised error under each; of the "
                  f"{CANDIDATES} nearest, the one "
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
    from ...explain import features as ZF
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
    """Each method's map of the predicted class for the first four images, one column per method
    that the registry (te.explain.methods) flags ``figure``, drawn as its entry says."""
    from ...explain.methods import METHODS, in_figure
    m = inp.model
    x = inp.x[:4]
    pred = X.predict(m, x)[1].argmax(1)
    H = x.shape[2]
    patch = max(1, H // 8)
    columns = {}
    for name in in_figure():
        method = METHODS[name]
        options, label = {}, method.label
        if "layer" in method.options:
            label += f" ({X.attribution.default_cam_layer(m)})"
        if "patch" in method.options:
            options = {"patch": patch, "stride": patch}
            label += f" ({patch} px, stride {patch})"
        columns[label] = [method_picture(name, v, p) for v, p in zip(method.fn(m, x, pred, **options), inp.pictures)]
    tiles, labels = [], []
    for i in range(len(x)):
        tiles.append(inp.pictures[i])
        labels.append(f"{inp.names[i]}\nexplained: {_cls(m, pred[i])}")
        for name, col in columns.items():
            tiles.append(col[i])
            labels.append(name)
    save_png(grid(tiles, labels, ncol=len(columns) + 1, title="The methods that came next, on the same images"),
             out / "methods.png")
    sg = defaults(X.smoothgrad)
    figs = [Figure("methods", "methods.png",
                   f"After the lecture's methods: SmoothGrad (Smilkov et al. 2017, {sg['samples']} noisy copies at "
                   f"{percent(sg['noise'])} of the image's range), Grad-CAM of the last conv layer and guided "
                   "Grad-CAM (Selvaraju et al. 2017), "
                   "occlusion (Zeiler &amp; Fergus 2014: the drop of the class probability when a grey square "
                   "covers each pixel) and gradient x input (red: positive, blue: negative).  Which of them can "
                   "be trusted is measured below.")]
    report = bench_json("bench_explainers.json")
    if getattr(m, "path", None) and Path(m.path).resolve() == DEFAULT_WEIGHTS.resolve() and report is not None:
        plot_benchmark(report, out / "explainer_benchmark.png")
        figs.append(Figure("explainer benchmark", "explainer_benchmark.png", benchmark_caption(report)))
    return figs


def plot_benchmark(report: dict, path):
    """scripts/bench_explainers.py's table as one bar chart per metric (matplotlib, PNG):
    methods along x, baselines in grey, with the scenes and settings in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...explain.benchmark import BASELINES, COLUMNS
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


def fig_sanity(inp, out, summary):
    """Adebayo et al. 2018, fig. 2: one scene's explanation by every method (rows) on
    the trained model, then with the weights re-initialised from fc8 down, one more
    layer per column (cascading randomisation), and -- for the embedded model -- on
    the twin trained on permuted labels.  Under each map: the Spearman rank
    correlation of its absolute values with the original's."""
    from ...explain import sanity
    from ...explain.methods import METHODS
    m = inp.model
    _, probs = X.predict(m, inp.x[:1])
    c = int(probs[0].argmax())
    columns = [("original", m)] + [(f"{layer} and above\nrandom", r) for layer, r in sanity.cascade(m, seed=0)]
    if inp.settings.get("sanity_twin"):
        from ...modelfiles.modelfile import load_model
        columns.append(("trained on\nrandom labels", load_model("random_labels")))
    maps = [sanity.explain(r, inp.x[:1], c) for _, r in columns]
    tiles, labels, rho = [], [], {}
    for meth in sanity.METHODS:
        ref = maps[0][meth][1][0]
        for k, (name, _) in enumerate(columns):
            a = maps[k][meth][1][0]
            tiles.append(heat(a))
            if k == 0:
                labels.append(f"{METHODS[meth].label}\n{name}")
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
                  "original's (1 = unchanged)." + twin + f" Over {sanity.SCENES} scenes: scripts/sanity_checks.py "
                  "and docs/explainers.md.")


def fig_robust_twin(inp, out, summary):
    """The standard model beside its adversarially trained twin (figures_robust.fig_robust), when the
    embedded model's twin is shipped; nothing for other models."""
    if not inp.settings.get("robust_twin"):
        return []
    from ..figures_robust import fig_robust
    return fig_robust(inp, out, summary)


def fig_resnet_beside(inp, out, summary):
    """The embedded AlexNet beside the scene ResNet (figures_resnet.fig_resnet), when the
    ResNet is shipped; nothing for other models."""
    if not inp.settings.get("resnet_beside"):
        return []
    from ..figures_resnet import fig_resnet
    return fig_resnet(inp, out, summary)


FIGURES = [("toy", fig_toy), ("class models", fig_class_models), ("neurons", fig_neurons),
           ("saliency", fig_saliency), ("grabcut", fig_grabcut), ("inversion", fig_inversion),
           ("inversion layers", fig_inversion_layers), ("inversion decoder", fig_inversion_decoder),
           ("inversion exemplar", fig_inversion_exemplar), ("rules", fig_rules), ("methods", fig_methods),
           ("sanity", fig_sanity), ("zeiler fergus", fig_zeiler_fergus), ("robust", fig_robust_twin),
           ("resnet", fig_resnet_beside)]
