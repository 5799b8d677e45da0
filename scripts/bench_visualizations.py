#!/usr/bin/env python3
"""Class models, neuron visualisations and inversions, measured by what did not make them.

Everything is made on the embedded model (or ``--model``) and judged by the independent judge
(``te.load_model("judge")``, scripts/train_judge.py) and by pixel comparisons
with the truth (te.explain.quality).  For each recipe:

* class models of the 10 classes: how many the judge recognises (its top class
  is the target; k/10), the judge's mean probability of the target, and the
  embedded model's own softmax of the target (mean and minimum) -- the judge
  looks at the pictures as the figures show them (``Visualization.display``);
* neuron visualisations (whole channels of conv1..conv5 and fc6, the two most
  active on real scenes): the activation reached, as a multiple of the
  largest activation of that unit over 100 real scenes, and the high-frequency
  energy ratio of the picture against real scenes (1 = as much fine detail as a
  scene);
* inversions from conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5, fc6,
  fc7, fc8 of held-out test scenes (the shipped sample, two per class by
  default): the judge's agreement with its own class of the original, the
  Pearson correlation of the blurred grey reconstruction with the original and
  with an unrelated scene of another class (the baseline), and Mahendran &
  Vedaldi's squared normalised error ||phi(x) - phi0||^2 / ||phi0||^2.

    python scripts/bench_visualizations.py --quick                 # a few minutes: 4 scenes, 4 layers, short runs
    python scripts/bench_visualizations.py --out bench.json        # the full table (hours on 2 cores)
    python scripts/bench_visualizations.py --recipes natural --layers fc7,pool5 --scenes 20
    python scripts/bench_visualizations.py --model robust --recipes natural   # the robust twin (train_robust.py)
    python scripts/bench_visualizations.py --recipes exemplar --scenes 40      # inversion by retrieval (~1 min)

Recipes are the explainers' ``recipe=`` presets; the inversion-only ones ("decoder",
"exemplar") make no class models or neurons.  Inversions from all layers of
one scene run as one batch (``te.explain.invert_layers``).  Step counts are the
recipe's own unless ``--class-steps`` / ``--neuron-steps`` /
``--invert-steps`` (or ``--quick``) reduce them; the JSON records what was used.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import tinygrad_explain as te  # noqa: E402
from tinygrad_explain.core.safe_io import atomic_write, write_text  # noqa: E402
from tinygrad_explain.data import scenes  # noqa: E402
from tinygrad_explain.explain import quality as q  # noqa: E402

RECIPES = ("simonyan2014", "mahendran2015", "natural", "decoder", "exemplar")
LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")
QUICK_LAYERS = ("conv1", "pool2", "pool5", "fc7")
NEURON_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6")


def recipe_kwargs(recipe, steps):
    """Keyword arguments selecting ``recipe`` (and, if given, a reduced step count)."""
    return {"recipe": recipe, **({"steps": steps} if steps is not None else {})}


def pick_scenes(sample, n):
    """``n`` held-out test scenes spread over the classes (round robin, lowest indices first),
    and for each an unrelated scene of another class (the one half the list away)."""
    labels = sample["labels"].astype(int)
    per = [list(np.flatnonzero(labels == c)) for c in range(10)]
    chosen = []
    k = 0
    while len(chosen) < n:
        c = k % 10
        chosen.append(per[c][k // 10])
        k += 1
    chosen = np.array(sorted(chosen, key=lambda i: (labels[i], i)))
    unrelated = chosen[(np.arange(n) + n // 2) % n]
    if n > 1:
        assert (labels[chosen] != labels[unrelated]).all() or n < 4
    return chosen, unrelated


# ----------------------------------------------------------------------------
# making the pictures (the model under study only -- the embedded one or --model; the judge plays no part)
# ----------------------------------------------------------------------------

def make_class_models(model, recipe, steps):
    vis = te.explain.class_model(model, None, progress=False, **recipe_kwargs(recipe, steps))
    return {"class_display": np.stack(vis.display), "class_probability": np.asarray(vis.probability, np.float64)}


def top_units(model, x_real, layer, k=2):
    """The ``k`` channels (or neurons) of ``layer`` with the largest mean activation over real scenes,
    and each one's largest (spatially averaged) activation over those scenes."""
    with te.no_grad():
        a = model(x_real, until=layer).numpy()
    a = a.mean(axis=(2, 3)) if a.ndim == 4 else a
    units = np.argsort(-a.mean(0), kind="stable")[:k]
    return [int(u) for u in units], [float(a[:, u].max()) for u in units]


def make_neurons(model, recipe, steps, x_real, progress):
    out = {}
    for layer in NEURON_LAYERS:
        units, real_max = top_units(model, x_real, layer)
        vis = te.explain.maximize(model, layer, units, progress=False, **recipe_kwargs(recipe, steps))
        out[f"neuron_display/{layer}"] = np.stack(vis.display)
        out[f"neuron_units/{layer}"] = np.asarray(units)
        out[f"neuron_activation/{layer}"] = np.asarray(vis.final, np.float64)
        out[f"neuron_real_max/{layer}"] = np.asarray(real_max)
        progress.update(1)
    return out


def make_inversions(model, recipe, steps, layers, sample, chosen, progress):
    """Every scene of ``chosen`` reconstructed from every layer (one batch per scene):
    pictures (scenes, layers, H, W, 3) and squared normalised errors (scenes, layers)."""
    pics, errs = [], []
    for i in chosen:
        x = te.image.load(sample["images"][i], model)
        inv = te.explain.invert_layers(model, x, layers, progress=False, **recipe_kwargs(recipe, steps))
        pics.append(np.stack(inv.display))
        errs.append([q.normalised_error(te.explain.feature_code(model, inv.images[n:n + 1], layer),
                                        te.explain.feature_code(model, x, layer))[0]
                     for n, layer in enumerate(inv.layers)])
        progress.update(1)
    return {"inversion_display": np.stack(pics), "inversion_error2": np.asarray(errs)}


# ----------------------------------------------------------------------------
# measuring them (the judge and pixel comparisons)
# ----------------------------------------------------------------------------

def measure_class_models(made, judge, real):
    r = q.recognised(judge, made["class_display"], list(range(len(made["class_display"]))))
    return {"recognised": int(r["top1"].sum()), "of": len(r["top1"]),
            "judge_p_target_mean": float(r["p_target"].mean()),
            "judge_p_target": [round(float(v), 4) for v in r["p_target"]],
            "judge_predicted": [judge.class_names[i] for i in r["predicted"]],
            "embedded_softmax_mean": float(made["class_probability"].mean()),
            "embedded_softmax_min": float(made["class_probability"].min()),
            "high_frequency_ratio_mean": float(q.high_frequency_ratio(made["class_display"], real).mean())}


def measure_neurons(made, real):
    out = {}
    for layer in NEURON_LAYERS:
        act, ref = made[f"neuron_activation/{layer}"], made[f"neuron_real_max/{layer}"]
        out[layer] = {"units": made[f"neuron_units/{layer}"].tolist(), "activation": act.tolist(),
                      "activation_over_real_max": [float(a / m) if m > 0 else None for a, m in zip(act, ref)],
                      "high_frequency_ratio": q.high_frequency_ratio(made[f"neuron_display/{layer}"], real).tolist()}
    return out


def measure_inversions(made, judge, layers, sample, chosen, unrelated):
    pics = sample["images"]
    judge_orig = q.judge_probabilities(judge, pics[chosen]).argmax(1)
    out = {}
    for n, layer in enumerate(layers):
        recon = made["inversion_display"][:, n]
        judged = q.judge_probabilities(judge, recon).argmax(1)
        rs = []
        for k, (i, u) in enumerate(zip(chosen, unrelated)):
            corr = q.reconstruction_correlation(recon[k], pics[i], pics[u])
            rs.append({"scene": int(sample["indices"][i]), "label": int(sample["labels"][i]),
                       "judge_original": int(judge_orig[k]), "judge_reconstruction": int(judged[k]),
                       "corr_original": corr["original"], "corr_unrelated": corr["unrelated"],
                       "normalised_error2": float(made["inversion_error2"][k, n])})
        out[layer] = {"judge_agreement": float(np.mean([r["judge_reconstruction"] == r["judge_original"] for r in rs])),
                      "corr_original_mean": float(np.mean([r["corr_original"] for r in rs])),
                      "corr_unrelated_mean": float(np.mean([r["corr_unrelated"] for r in rs])),
                      "normalised_error2_mean": float(np.mean([r["normalised_error2"] for r in rs])),
                      "normalised_error2_max": float(np.max([r["normalised_error2"] for r in rs])),
                      "scenes": rs}
    return out


def print_table(results):
    for recipe, r in results.items():
        print(f"\n== {recipe}")
        c = r.get("class_models")
        if c:
            print(f"class models: judge recognises {c['recognised']}/{c['of']}, judge mean p(target) "
                  f"{c['judge_p_target_mean']:.3f}, embedded softmax mean {c['embedded_softmax_mean']:.3f} "
                  f"(min {c['embedded_softmax_min']:.3f}), HF ratio {c['high_frequency_ratio_mean']:.2f}")
        if r.get("neurons"):
            print(f"{'neurons':8} {'units':>10} {'act/real max':>14} {'HF ratio':>10}")
        for layer, n in r.get("neurons", {}).items():
            act = "/".join(f"{v:.2f}" if v is not None else "-" for v in n["activation_over_real_max"])
            hf = "/".join(f"{v:.2f}" for v in n["high_frequency_ratio"])
            print(f"{layer:8} {str(n['units']):>10} {act:>14} {hf:>10}")
        if r.get("inversion"):
            print(f"{'invert':8} {'judge agr':>10} {'r(orig)':>8} {'r(unrel)':>9} {'err^2':>8} {'err^2 max':>10}")
        for layer, v in r.get("inversion", {}).items():
            print(f"{layer:8} {v['judge_agreement']:>10.2f} {v['corr_original_mean']:>8.3f} "
                  f"{v['corr_unrelated_mean']:>9.3f} {v['normalised_error2_mean']:>8.3f} "
                  f"{v['normalised_error2_max']:>10.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    ap.add_argument("--layers", default=None, help=f"inversion layers (default: {','.join(LAYERS)})")
    ap.add_argument("--scenes", type=int, default=None, help="held-out scenes to invert (default 20)")
    ap.add_argument("--class-steps", type=int, default=None, help="steps of each class model (default: the recipe's)")
    ap.add_argument("--neuron-steps", type=int, default=None)
    ap.add_argument("--invert-steps", type=int, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="4 scenes, layers conv1,pool2,pool5,fc7, 100/100/300 steps (a smoke run, not the table)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: class,neurons,invert")
    ap.add_argument("--model", default="embedded",
                    help="the model whose pictures are made: a name of te.load_model (embedded, robust, ...) or "
                         "a model file (default: the embedded model)")
    ap.add_argument("--judge", default="judge", help="the judge's model file (default: the shipped judge)")
    ap.add_argument("--pictures", default=None,
                    help="also save every picture made (and the embedded model's numbers) to this .npz")
    ap.add_argument("--from-pictures", nargs="+", default=None,
                    help="measure the pictures of .npz files written by --pictures (runs of the same scenes and "
                         "layers, e.g. one per recipe) instead of making them; --recipes etc. are ignored")
    ap.add_argument("--out", default="bench_visualizations.json")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1; 0 = library default)")
    args = ap.parse_args(argv)
    te.set_num_threads(args.threads)
    if args.quick:
        args.scenes = args.scenes or 4
        args.layers = args.layers or ",".join(QUICK_LAYERS)
        args.class_steps = args.class_steps or 100
        args.neuron_steps = args.neuron_steps or 100
        args.invert_steps = args.invert_steps or 300
    from tqdm import tqdm

    t0 = time.time()
    sample = scenes.load_sample()
    real = sample["images"][-100:]                       # not among the inverted scenes
    if args.from_pictures:
        made, config = {}, None
        for path in args.from_pictures:
            with np.load(path, allow_pickle=False) as z:
                saved = {k: z[k] for k in z.files}
            c = json.loads(str(saved.pop("config")))
            if config is None:
                config = c
            elif (c["layers"], c["chosen"]) != (config["layers"], config["chosen"]):
                raise SystemExit(f"{path}: other scenes or layers than {args.from_pictures[0]}")
            else:
                config["recipes"] += c["recipes"]
                config["make_seconds"].update(c["make_seconds"])
            for k, v in saved.items():
                recipe, key = k.split(":", 1)
                made.setdefault(recipe, {})[key] = v
    else:
        n_scenes = args.scenes or 20
        layers = args.layers.split(",") if args.layers else list(LAYERS)
        skip = set(filter(None, args.skip.split(",")))
        model = te.load_model(args.model)
        x_real = np.concatenate([te.image.load(p, model) for p in real])
        chosen, unrelated = pick_scenes(sample, n_scenes)
        recipes = args.recipes.split(",")
        config = {"recipes": recipes, "layers": layers, "chosen": chosen.tolist(), "unrelated": unrelated.tolist(),
                  "scenes": [int(sample["indices"][i]) for i in chosen],
                  "unrelated_scenes": [int(sample["indices"][i]) for i in unrelated],
                  "class_steps": args.class_steps, "neuron_steps": args.neuron_steps,
                  "invert_steps": args.invert_steps, "quick": args.quick, "model": model.path, "make_seconds": {},
                  "threads": args.threads}
        per = ((0 if "class" in skip else 1) + (0 if "neurons" in skip else len(NEURON_LAYERS))
               + (0 if "invert" in skip else n_scenes))
        bar = tqdm(total=per * len(recipes), desc="bench", unit="run", disable=args.no_progress)
        made = {}
        for recipe in recipes:
            t = time.time()
            m = {}
            # an inversion-only recipe ("decoder", "exemplar") has no class models or neurons
            if "class" not in skip:
                if recipe in te.explain.visualize.CLASS_MODEL_RECIPES:
                    m.update(make_class_models(model, recipe, args.class_steps))
                bar.update(1)
            if "neurons" not in skip:
                if recipe in te.explain.visualize.MAXIMIZE_RECIPES:
                    m.update(make_neurons(model, recipe, args.neuron_steps, x_real, bar))
                else:
                    bar.update(len(NEURON_LAYERS))
            if "invert" not in skip:
                m.update(make_inversions(model, recipe, args.invert_steps, layers, sample, chosen, bar))
            made[recipe] = m
            config["make_seconds"][recipe] = time.time() - t
        bar.close()
        if args.pictures:
            arrays = {f"{r}:{k}": v for r, m in made.items() for k, v in m.items()}
            pictures = str(args.pictures) if str(args.pictures).endswith(".npz") else f"{args.pictures}.npz"
            with atomic_write(pictures) as f:
                np.savez_compressed(f, config=np.asarray(json.dumps(config)), **arrays)
    judge = te.load_model(args.judge)
    chosen, unrelated = np.asarray(config["chosen"]), np.asarray(config["unrelated"])
    results = {}
    for recipe, m in made.items():
        res = {}
        if "class_display" in m:
            res["class_models"] = measure_class_models(m, judge, real)
        if any(k.startswith("neuron_display/") for k in m):
            res["neurons"] = measure_neurons(m, real)
        if "inversion_display" in m:
            res["inversion"] = measure_inversions(m, judge, config["layers"], sample, chosen, unrelated)
        res["make_seconds"] = config["make_seconds"].get(recipe)
        results[recipe] = res
    config.update(judge=judge.path, blur_sigma=q.BLUR_SIGMA, hf_cutoff=q.HF_CUTOFF)
    report = {"config": config, "results": results, "seconds": time.time() - t0}
    write_text(args.out, json.dumps(report, indent=1))
    print_table(results)
    print(f"\nwrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
