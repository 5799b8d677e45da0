"""Quality targets of the explainers on the embedded model (skipped without
weights/fashion_scenes_alexnet.h5).  The full-size versions are printed by
scripts/reproduce_figures.py (class models, inversion) and
scripts/bench_explainers.py (500 scenes).

The recipes' targets are checked on seeds and scenes that no recipe was chosen on
(tests/_heldout.py; docs/explainers.md, "Tuning and held-out data"): class models at
seed 3 (the recipes were tuned at seeds 0-2), inversions of the sample's scenes
300..399 (tuning used scenes among the first 60)."""
from __future__ import annotations

import numpy as np
import pytest
from _heldout import HELD_OUT_SEED, held_out_scenes

import tinygrad_explain as te
from tinygrad_explain.data import scenes
from tinygrad_explain.explain import benchmark as B
from tinygrad_explain.modelfiles.modelfile import DEFAULT_WEIGHTS

pytestmark = [pytest.mark.slow, pytest.mark.needs(DEFAULT_WEIGHTS.exists(), f"{DEFAULT_WEIGHTS} is absent"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def model():
    return te.load_model()


@pytest.fixture(scope="module")
def sample():
    return scenes.load_sample()


def test_class_models_are_confident_for_every_class(model):
    """The paper's objective S_c - lambda |I|^2 from the zero image, with Adam steps (the
    settings that were the default before the natural-image priors), drives the network's
    own softmax to >= 0.99 for every class.  That number cannot tell a picture from an
    adversarial pattern (test_quality.py judges the pictures with an independent network)."""
    v = te.explain.class_model(model, recipe="simonyan2014", optimizer="adam", lr=0.1, steps=300,
                               seed=HELD_OUT_SEED, progress=False)          # every class at once
    assert v.labels == list(model.class_names)
    bad = {lb: round(float(p), 4) for lb, p in zip(v.labels, v.probability) if p < 0.99}
    assert not bad, f"class-model softmax below 0.99: {bad}"


@pytest.fixture(scope="module")
def natural_class_models(model):
    """The default class models of every class (recipe "natural") at a seed it was not tuned on, made once."""
    return te.explain.class_model(model, seed=HELD_OUT_SEED, progress=False)


def test_natural_class_models_still_convince_the_network(natural_class_models):
    """The default natural-image priors trade some of the network's own confidence for
    pictures a person (and another network) recognises.  At held-out seed 3, 9 of 10 classes
    reach softmax >= 0.9 (Coat stays at 0.14: one class that does not converge in 600 steps;
    seeds 4 and 5: min 0.61 and 0.19): at least 8 of 10 must.  Issue #14's floor (every class
    >= 0.9) is met at the tuning seeds only: test_issue_14_class_model_target_at_a_held_out_seed."""
    v = natural_class_models
    low = {lb: round(float(p), 4) for lb, p in zip(v.labels, v.probability) if p < 0.9}
    assert len(low) <= 2, f"natural class-model softmax below 0.9: {low}"


def test_natural_class_models_are_recognised_by_the_judge(model, natural_class_models):
    """The independent judge (another architecture, trained separately; it never enters the
    optimisation) recognises the default class models at a seed the recipe was not tuned on:
    measured at seed 3 7/10, mean p(target) 0.585 (seeds 4 and 5: 9/10 0.781, 7/10 0.619; at
    the tuning seed 0: 10/10 0.793; docs/explainers.md): at least 6/10 and p >= 0.5.  The
    paper's recipe at its own 300 steps must stay far behind (mean p at most half; 2/10, 0.19
    at seed 3)."""
    from tinygrad_explain.explain import quality as q
    judge = te.load_model("judge")
    classes = list(range(10))
    nat = q.recognised(judge, natural_class_models.display, classes)
    paper = q.recognised(judge, te.explain.class_model(model, recipe="simonyan2014", seed=HELD_OUT_SEED,
                                                       progress=False).display, classes)
    k, p = int(nat["top1"].sum()), float(nat["p_target"].mean())
    assert k >= 6 and p >= 0.50, (k, p, nat["predicted"])
    assert p >= 2 * float(paper["p_target"].mean()), (p, paper["p_target"].mean(), int(paper["top1"].sum()))


@pytest.mark.xfail(strict=True, reason="issue #14's class-model target is met at tuning seed 0 (10/10, p 0.793), "
                                       "not at held-out seed 3 (7/10, p 0.585, Coat's softmax 0.14)")
def test_issue_14_class_model_target_at_a_held_out_seed(model, natural_class_models):
    """Issue #14's target -- the judge recognises >= 9/10 with mean p(target) >= 0.7, and the
    network's own softmax is >= 0.9 for every class -- at a seed the recipe was not tuned on.
    Not met today (strict: when a recipe meets it, this fails as XPASS and the docs must say so)."""
    from tinygrad_explain.explain import quality as q
    nat = q.recognised(te.load_model("judge"), natural_class_models.display, list(range(10)))
    assert int(nat["top1"].sum()) >= 9 and float(nat["p_target"].mean()) >= 0.7
    assert float(np.min(natural_class_models.probability)) >= 0.9


# the inversion defaults before the natural-image priors: pixel steps from smooth colour noise
PIXEL_INVERSION = dict(param="pixel", colour=None, jitter=0, init_std=0.3, init_smooth=0.06)


def test_fc7_inversion_is_accurate_and_diverse(model, sample):
    """Adam on the paper's objective from smooth random starts reaches normalised fc7 errors
    <= 0.10 from five different starts -- a number the network being inverted gives, which
    says the optimisation works, not that the pictures resemble the scene (the next test)."""
    i = held_out_scenes(sample, [0])[0]
    inv = te.explain.invert(model, te.image.load(sample["images"][i], model), layer="fc7", inits=5,
                            progress=False, **PIXEL_INVERSION)
    assert np.all(inv.errors <= 0.10), inv.errors
    off = inv.pairwise_mad[np.triu_indices(5, 1)]
    assert off.min() > 0.05, off                                # no two reconstructions alike (model space)


def test_natural_inversion_of_middle_layers_resembles_the_scene(model, sample):
    """Issue #14's targets for the default recipe, on a held-out scene, reduced steps: the
    blurred grey reconstruction from pool2 correlates >= 0.9 with the original, from conv4
    >= 0.6, each clearly more than with an unrelated scene.  (Measured at 500 steps on held-out
    scenes 304 (this one) and 310: pool2 0.98 / 0.91, conv4 0.94 / 0.92, unrelated -0.66 / -0.09;
    on tuning scenes 0 and 3: pool2 0.93 / 0.98, conv4 0.90 / 0.95; docs/explainers.md.)"""
    from tinygrad_explain.explain import quality as Q
    i, u = held_out_scenes(sample, [0, 3])                      # a T-shirt; a dress as the unrelated scene
    x = te.image.load(sample["images"][i], model)
    res = te.explain.invert_layers(model, x, ["pool2", "conv4"], steps=500, progress=False)
    r = [Q.reconstruction_correlation(d, sample["images"][i], sample["images"][u]) for d in res.display]
    assert r[0]["original"] >= 0.9 and r[1]["original"] >= 0.6, r
    assert all(c["original"] > c["unrelated"] + 0.3 for c in r), r


def test_decoder_inversion_of_deep_layers_resembles_the_scene(model, sample):
    """Issue #14's deep layers with the learned decoder's start (recipe "decoder", 100 steps) on
    five held-out scenes of five classes (the first held-out scene of classes 0, 2, 4, 6, 8: 304,
    306, 313, 302, 303; the recipe's 100 steps were chosen on the bench's 20 scenes): the
    blurred grey pool5 reconstructions correlate with their scene >= 0.6 on average, the fc6
    ones >= 0.45, each more than 0.3 above an unrelated scene.  (Measured: pool5 0.898 against
    -0.047 unrelated, fc6 0.787 against -0.050; on the bench's scenes 19, 1, 6, 4, 18 before:
    pool5 0.750 against 0.101, fc6 0.607 against 0.207; the natural recipe from a random start:
    0.165 and 0.008 over 20 scenes.)"""
    from tinygrad_explain.explain import quality as Q
    chosen = held_out_scenes(sample, [0, 2, 4, 6, 8])
    unrelated = chosen[2:] + chosen[:2]                      # another class each
    r = {"pool5": [], "fc6": []}
    for i, u in zip(chosen, unrelated):
        x = te.image.load(sample["images"][i], model)
        res = te.explain.invert_layers(model, x, ["pool5", "fc6"], recipe="decoder", progress=False)
        for d, layer in zip(res.display, res.layers):
            r[layer].append(Q.reconstruction_correlation(d, sample["images"][i], sample["images"][u]))
    mean = {l: (np.mean([c["original"] for c in v]), np.mean([c["unrelated"] for c in v])) for l, v in r.items()}
    assert mean["pool5"][0] >= 0.6 and mean["fc6"][0] >= 0.45, mean
    assert all(o > u + 0.3 for o, u in mean.values()), mean


def test_localisation_beats_baselines_on_100_scenes(model):
    """Saliency -> GrabCut boxes (Simonyan et al.) right on >= 80% of 100 scenes, better than
    the saliency map thresholded without GrabCut and than one centred box of the average
    size.  (A centred *map* through the same GrabCut step does about as well on these
    scenes -- GrabCut segments the contrasting object from any central seed: see
    docs/explainers.md -- but saliency points at the object more often on the hard scenes.)"""
    from tinygrad_explain.explain import metrics as M
    d = scenes.load_sample()
    n = 100
    res = B.evaluate(model, d["images"][:n], d["masks"][:n], d["boxes"][:n], d["labels"][:n],
                     ["saliency", "centre"], steps=1, batch_size=50, progress=False)
    rows = B.summarize(res)
    grab = rows["saliency"]["box_accuracy"]
    x = np.concatenate([te.image.load(im, model) for im in d["images"][:n]])
    sal = te.explain.saliency(model, x, d["labels"][:n])
    thresh = np.mean([M.box_iou(M.threshold_mask(s)[1], b) >= 0.5 for s, b in zip(sal, d["boxes"][:n])])
    cbox = M.centre_box(d["boxes"][:n], sal.shape[1:])
    centre = np.mean([M.box_iou(cbox, b) >= 0.5 for b in d["boxes"][:n]])
    assert grab >= 0.80 and grab > thresh and grab > centre, (grab, thresh, centre)
    assert rows["saliency"]["pointing_hard"] > rows["centre"]["pointing_hard"], B.format_table(rows)
