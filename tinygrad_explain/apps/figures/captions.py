"""The numbers in the figures' captions: the measured ones read from the JSON files that the benchmark
scripts write in docs/ (shipped inside the wheel as tinygrad_explain/measured/:
``shipped.MEASURED_DIR``), never typed in.  Each ``*_caption_numbers`` function returns the
sentence a caption quotes; where its JSON is absent it points to docs/explainers.md instead.
tests/test_captions.py checks that no caption source types a measured number in and that
the sentences follow the JSON when it changes.  The settings a caption quotes (SmoothGrad's
noise, GrabCut's quantiles) are read from the functions' defaults (:func:`defaults`).
"""
from __future__ import annotations

import inspect
import json

from ...modelfiles.shipped import MEASURED_DIR

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


def r2(v: float) -> str:
    """A correlation as a caption quotes it: two decimals, no minus sign on a rounded zero."""
    t = f"{v:.2f}"
    return "0.00" if t == "-0.00" else t


def judged(bench: dict, recipe: str, layer: str) -> int:
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
    k5, k6 = judged(learned, "decoder", "pool5"), judged(learned, "decoder", "fc6")
    return (f" On {n} held-out scenes (docs/explainers.md) the refined pool5 and "
            f"fc6 reconstructions correlate {r2(dec['pool5']['corr_original_mean'])} and "
            f"{r2(dec['fc6']['corr_original_mean'])} with their scene (the random-start recipe's: "
            f"{r2(nat['pool5']['corr_original_mean'])} and {r2(nat['fc6']['corr_original_mean'])}) and the judge "
            f"names the scene's class for {f'{k5} of {n} each' if k5 == k6 else f'{k5} and {k6} of {n}'}; fc7's "
            f"only weakly ({r2(dec['fc7']['corr_original_mean'])}, the decoder's image alone "
            f"{r2(alone['results']['decoder']['inversion']['fc7']['corr_original_mean'])}; the judge agrees for "
            f"{judged(learned, 'decoder', 'fc7')} of {n}), and fc8 (ten class scores) has "
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
            f"the blurred grey correlation with the original is {r2(min(conv))}-{r2(max(conv))} up to conv4 and "
            f"{r2(inv['conv5']['corr_original_mean'])} at conv5)")


def exemplar_caption_numbers(fc7_errors) -> str:
    """The retrieval figure's measured numbers: this figure's own fc7 errors (``fc7_errors``), then
    docs/bench_visualizations_learned20.json (recipe "exemplar") against ..._natural20.json."""
    out = (f"fc7 errors (about {min(fc7_errors):.2f}-{max(fc7_errors):.2f}) are a little above the "
           "optimiser's.")
    learned, natural = (bench_json(f"bench_visualizations_{n}.json") for n in ("learned20", "natural20"))
    if learned is None or natural is None:
        return out + " Measured numbers: docs/explainers.md."
    n = len(learned["config"]["chosen"])
    ks = [judged(learned, "exemplar", l) for l in ("fc6", "fc7", "fc8")]
    opt = [judged(natural, "natural", l) for l in ("fc6", "fc7", "fc8")]
    return out + (f" On {n} held-out scenes "
                  "(docs/explainers.md) the independent judge names the original's class from the fc6, fc7 and "
                  f"fc8 retrievals for {ks[0]}, {ks[1]} and {ks[2]} of {n}, against {min(opt)}-{max(opt)} for the "
                  "optimised pictures; r (the "
                  "blurred grey correlation with the original) stays near 0 at fc8, whose ten class scores say "
                  "nothing of the scene's layout.")


def judge_caption_numbers() -> str:
    """What the independent judge made of both models' class models, from the JSON that
    ``scripts/bench_visualizations.py --model embedded|robust --recipes natural,natural-opaque
    --skip neurons,invert`` writes: docs/bench_visualizations_class_embedded.json and
    ..._class_robust.json (the recipes at their own steps, seed 0)."""
    emb, rob = (bench_json(f"bench_visualizations_class_{m}.json") for m in ("embedded", "robust"))
    if emb is None or rob is None:
        return " (the independent judge's numbers: docs/explainers.md)"
    from ...explain.recipes import RECIPES

    def judged(bench, recipe):
        c = bench["results"][recipe]["class_models"]
        steps = bench["config"]["class_steps"] or RECIPES["class_model"][recipe]["steps"]
        return c["recognised"], c["of"], c["judge_p_target_mean"], steps
    (ro, n, _, so), (eo, _, _, _) = judged(rob, "natural-opaque"), judged(emb, "natural-opaque")
    (rn, n2, rp, sn), (en, _, ep, _) = judged(rob, "natural"), judged(emb, "natural")
    both = f"{rn}/{n2} each" if rn == en else f"{rn}/{n2} against {en}/{n2}"
    return (f" (the independent judge recognised {ro} of {n} of the twin's against {eo} of the "
            f"standard model's at {so} steps); with transparency, the default now, both are silhouettes "
            f"(at {sn} steps {both}, mean judge probability {rp:.3f} against {ep:.3f})")



def benchmark_caption(report: dict) -> str:
    """The explainer benchmark's caption: its scene count and run time from docs/bench_explainers.json."""
    return (f"Every method on {report['n']} shipped scenes with known masks, measured by "
            "<code>python scripts/bench_explainers.py --json docs/bench_explainers.json</code> "
            f"({report['seconds'] / 60:.0f} min; numbers read from that file, not recomputed here): "
            "the pointing game (all scenes and the hard ones: small objects on cluttered "
            "backgrounds), mask IoU and box accuracy after GrabCut, deletion and insertion AUC "
            "(Petsiuk et al. 2018) and time per image.  Grey: the centre and random baselines.  "
            "The table and its reading are in docs/explainers.md.")


def defaults(fn) -> dict:
    """The keyword defaults of ``fn``: the settings a caption quotes, read from the code that uses them."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def percent(v: float) -> str:
    """0.15 -> "15%"."""
    return f"{100 * v:g}%"
