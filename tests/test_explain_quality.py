"""Quality targets of the explainers on the embedded model (skipped without
weights/fashion_scenes_alexnet.h5).  The full-size versions are printed by
scripts/reproduce_figures.py (class models, inversion) and
scripts/bench_localization.py (500 scenes)."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain import figures, scenes
from tinygrad_explain.explain import localization as L
from tinygrad_explain.modelfile import DEFAULT_WEIGHTS

pytestmark = [pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason=f"{DEFAULT_WEIGHTS} is absent"),
              pytest.mark.usefixtures("one_thread")]




@pytest.fixture(scope="module")
def model():
    return te.load_model()


def test_class_models_are_confident_for_every_class(model):
    v = te.explain.class_model(model, progress=False)          # the defaults, every class at once
    assert v.labels == list(model.class_names)
    bad = {lb: round(float(p), 4) for lb, p in zip(v.labels, v.probability) if p < 0.99}
    assert not bad, f"class-model softmax below 0.99: {bad}"


def test_fc7_inversion_is_accurate_and_diverse(model):
    inputs = figures.embedded_inputs(model)                     # the figure's image
    inv = te.explain.invert(model, inputs.x[0], layer="fc7", inits=5, progress=False)
    assert np.all(inv.errors <= 0.10), inv.errors
    off = inv.pairwise_mad[np.triu_indices(5, 1)]
    assert off.min() > 0.05, off                                # no two reconstructions alike (model space)


def test_localisation_beats_baselines_on_100_scenes(model):
    d = scenes.load_sample()
    res = L.evaluate(model, d["images"][:100], d["masks"][:100], d["boxes"][:100], progress=False)
    (_, _, _, grab), (_, _, _, thresh), (_, _, _, centre) = L.summarize(res)
    assert grab >= 0.80 and grab > thresh and grab > centre, L.format_table(L.summarize(res))
