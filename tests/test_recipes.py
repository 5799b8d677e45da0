"""The recipes (explain/recipes.py) reach the optimiser, and give what they gave before.

For every recipe of every optimisation explainer (class_model, maximize, invert) on the
embedded model, a few steps:

* spies on ``optimize`` and on its named steps (parametrise, priors_of, update) record
  what they receive; each value is checked against the recipe table, translated to model
  space *here*, by hand (the units the docstrings promise: lr x B for Adam and x B^2 for
  SGD, l2 / B^2, milestones -> a step schedule, clip -> the pixel range, "natural" colour ->
  the square root of the sample scenes' colour covariance), not by the code under test;
* a keyword of the caller overrides the table, and the table is left as it was;
* the settings are derived from optimize's signature: a new optimize keyword is a setting;
* the outputs match fingerprints (sums and sample pixels) written by the code *before*
  the recipes moved into one table (``tests/recipes_reference.json``; the before/after
  comparison of the full arrays was bit-identical, np.array_equal, on 43 arrays).

``python tests/test_recipes.py`` rewrites the fingerprints from the checked-out code (only
when a change of output is intended; say so in the commit).
"""
import copy
import importlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_explain as te

REFERENCE = Path(__file__).with_name("recipes_reference.json")
EXPLAINERS = {"class_model": ("simonyan2014", "mahendran2015", "natural-opaque", "natural"),
              "maximize": ("simonyan2014", "mahendran2015", "natural-opaque", "natural"),
              "invert": ("mahendran2015", "natural", "simonyan2014", "decoder", "exemplar")}
STEPS, SEED = 3, 2
CASES = [(e, n) for e, names in EXPLAINERS.items() for n in names]


def _scene(model):
    return te.image.load(te.scenes.load_sample()["images"][0], model)


def run(model, explainer, name, **kw):
    """One short run of ``explainer`` with recipe ``name``; its output arrays (public API only,
    so that the code before the recipes moved can write the reference)."""
    X = te.explain
    if explainer == "class_model":
        v = X.class_model(model, [1, 7], steps=STEPS, seed=SEED, recipe=name, progress=False, **kw)
        return {"image": v.image, "objective": v.history["objective"]}
    if explainer == "maximize":
        v = X.maximize(model, "conv3", [5], steps=STEPS, seed=SEED, recipe=name, progress=False, **kw)
        return {"image": v.image, "objective": v.history["objective"]}
    inv = X.invert(model, _scene(model), layer="fc7", inits=2, steps=STEPS, seed=SEED, recipe=name,
                   progress=False, **kw)
    return {"image": inv.images, "errors": inv.errors}


def fingerprint(a):
    """Sum, sum of squares and 8 fixed samples of an array (float64)."""
    f = np.asarray(a, np.float64).reshape(-1)
    idx = np.linspace(0, f.size - 1, 8).astype(int)
    return [float(f.sum()), float((f * f).sum())] + [float(v) for v in f[idx]]


@pytest.fixture(scope="module")
def model():
    return te.load_model()


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


def _expected(model, explainer, table):
    """optimize()'s keyword arguments for a recipe, translated by hand from the documented units."""
    B = te.image.data_scale(model)
    adam = table.get("optimizer", "adam") == "adam"
    exp = dict(steps=STEPS, lr=table["lr"] * (B if adam else B * B), l2=table.get("l2", 0.0) / (B * B),
               optimizer=table.get("optimizer", "adam"), scale=B, maximize=explainer != "invert", seed=SEED)
    for k in ("momentum", "alpha_norm", "alpha", "tv", "beta", "jitter", "scales", "angles", "blur_every",
              "blur_sigma", "param", "decay", "octaves", "backgrounds", "opacity"):
        if k in table:
            exp[k] = table[k]
    return exp


def _natural_colour(model):
    """The colour covariance's square root of the first 100 sample scenes, computed here."""
    x = np.concatenate([te.image.load(im, model) for im in te.scenes.load_sample()["images"][:100]])
    flat = np.moveaxis(x.astype(np.float64), 1, 0).reshape(x.shape[1], -1)
    vals, vecs = np.linalg.eigh(np.cov(flat))
    M = vecs @ np.diag(np.sqrt(vals)) @ vecs.T
    return M / np.linalg.norm(M, axis=0).max()


class Spy:
    """Wraps a function: records each call's arguments (bound to its signature), then calls it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []
        self.__signature__ = inspect.signature(fn)       # what recipes.settings_of reads

    def __call__(self, *args, **kwargs):
        self.calls.append(self.__signature__.bind(*args, **kwargs).arguments)
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("explainer, name", CASES)
def test_each_recipe_reaches_the_optimiser(model, reference, monkeypatch, explainer, name):
    from tinygrad_explain.explain import inversion, recipes
    opt_module = importlib.import_module("tinygrad_explain.explain.optimize")    # the module, not the function
    table = recipes.RECIPES[explainer][name]
    before = copy.deepcopy(table)
    spies = {"optimize": Spy(recipes.optimize), "parametrise": Spy(opt_module.parametrise),
             "priors_of": Spy(opt_module.priors_of), "update": Spy(opt_module.update),
             "exemplar_starts": Spy(inversion.exemplar_starts)}
    monkeypatch.setattr(recipes, "optimize", spies["optimize"])
    for k in ("parametrise", "priors_of", "update"):
        monkeypatch.setattr(opt_module, k, spies[k])
    monkeypatch.setattr(inversion, "exemplar_starts", spies["exemplar_starts"])
    out = run(model, explainer, name)

    # optimize() got the table's values, in model-space units
    (kw,) = spies["optimize"].calls
    for k, v in _expected(model, explainer, table).items():     # (floats: B * B * lr or lr * B * B)
        assert kw[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), (k, kw[k], v)
    B = te.image.data_scale(model)
    lo, hi = te.image.pixel_bounds(model)
    if table.get("clip"):
        np.testing.assert_array_equal(kw["bounds"][0], lo)
        np.testing.assert_array_equal(kw["bounds"][1], hi)
    else:
        assert kw.get("bounds") is None
    if table.get("colour") == "natural":
        np.testing.assert_allclose(kw["colour"], _natural_colour(model), rtol=1e-6, atol=1e-9)
    else:
        assert kw.get("colour") is None
    # the start: class models and neurons the zero image plus init_noise * B noise; inversion
    # init_std * B noise on top of the decoder's / the retrieved scene's image
    x0 = kw["x0"]
    noise = np.random.default_rng(SEED).standard_normal(x0.shape)
    if explainer != "invert":
        np.testing.assert_allclose(x0, table["init_noise"] * B * noise, rtol=1e-6, atol=1e-7)
    else:
        base = 0.0
        if table.get("init") == "decoder":
            base = te.explain.decode(model, te.explain.feature_code(model, _scene(model), "fc7"), "fc7")
        if table.get("init") == "exemplar":
            (ex,) = spies["exemplar_starts"].calls
            assert ex["candidates"] == table["candidates"]
            base = te.explain.exemplar.exemplar_starts(model, ex["codes"], 2, table["candidates"])["fc7"]
        np.testing.assert_allclose(x0, base + table["init_std"] * B * noise.astype(np.float32), rtol=1e-5,
                                   atol=1e-5 * B)

    # ... and its steps got them: the parameterisation and update rule, the priors, the schedule
    (par,) = spies["parametrise"].calls
    assert par["param"] == table.get("param", "pixel") and par["decay"] == table.get("decay", 1.0)
    assert par["optimizer"] == table.get("optimizer", "adam") and par["momentum"] == table.get("momentum", 0.0)
    assert (par["colour"] is None) == (table.get("colour") is None)
    (pri,) = spies["priors_of"].calls
    assert pri["l2"] == pytest.approx(table.get("l2", 0.0) / (B * B), rel=1e-12) and pri["scale"] == B
    for k, default in (("alpha_norm", 0.0), ("alpha", 6.0), ("tv", 0.0), ("beta", 2.0), ("opacity", 0.0)):
        assert pri.get(k, default) == table.get(k, default), k
    rates = [c["lr"] * (c["schedule"](c["step"], c["steps"]) if c["schedule"] else 1.0)
             for c in spies["update"].calls]
    assert len(rates) == STEPS and rates == [kw["lr"]] * STEPS       # 3 steps: before the first milestone
    if table.get("milestones"):
        sched = kw["schedule"]
        m1, m2 = table["milestones"]
        assert [sched(int(f * 1000), 1000) for f in (0, m1, m2)] == pytest.approx([1.0, 0.1, 0.01])
        assert sched(int(m1 * 1000) - 1, 1000) == 1.0
    else:
        assert kw.get("schedule") is None
    assert table == before

    # and the outputs are those of the code before the move, to float32 round-off
    for k, a in out.items():
        np.testing.assert_allclose(fingerprint(a), reference[f"{explainer}/{name}/{k}"], rtol=1e-4, atol=1e-4)


def test_a_keyword_overrides_the_table_and_leaves_it_alone(model, monkeypatch):
    from tinygrad_explain.explain import recipes
    table = recipes.RECIPES["class_model"]["natural"]
    before = copy.deepcopy(table)
    spy = Spy(recipes.optimize)
    monkeypatch.setattr(recipes, "optimize", spy)
    B = te.image.data_scale(model)
    te.explain.class_model(model, 1, steps=2, lr=0.05, jitter=0, opacity=1.5, clip=False, progress=False)
    (kw,) = spy.calls
    assert kw["lr"] == pytest.approx(0.05 * B, rel=1e-12)
    assert kw["jitter"] == 0 and kw["opacity"] == 1.5 and kw["bounds"] is None
    assert kw["steps"] == 2 and kw["backgrounds"] == "dark" and kw["scales"] == table["scales"]
    assert table == before
    # None means "the recipe's"
    te.explain.class_model(model, 1, steps=1, lr=None, progress=False)
    assert spy.calls[-1]["lr"] == pytest.approx(table["lr"] * B, rel=1e-12)


def test_the_settings_are_optimize_s_arguments(monkeypatch):
    """A keyword added to optimize() is a setting of every explainer, with no list to edit."""
    from tinygrad_explain.explain import recipes
    X = te.explain
    assert "backgrounds" in X.visualize.SETTINGS and "backgrounds" not in X.inversion.SETTINGS
    assert "init_noise" in X.visualize.SETTINGS and "init_std" in X.inversion.SETTINGS
    assert "schedule" not in X.visualize.SETTINGS and "milestones" in X.visualize.SETTINGS
    real = recipes.optimize

    def optimize(objective, x0, *, steps=100, lr=1.0, sparkle=0.0, seed=0, progress=True, desc="", device=None):
        return real(objective, x0, steps=steps, lr=lr, seed=seed, progress=progress, desc=desc, device=device)
    monkeypatch.setattr(recipes, "optimize", optimize)
    assert "sparkle" in recipes.settings_of("class_model") and "sparkle" in recipes.settings_of("invert")
    assert "tv" not in recipes.settings_of("maximize")
    with pytest.raises(te.explain.ExplainError, match="unknown setting.*tv.*a recipe holds steps, lr, sparkle"):
        recipes.resolve("maximize", "simonyan2014", {"tv": 1.0})


def test_invert_refuses_transparency_and_unknown_recipes(model):
    X = te.explain
    with pytest.raises(X.ExplainError, match="unknown setting.*backgrounds"):
        X.invert(model, _scene(model), recipe="natural", backgrounds="dark", progress=False)
    with pytest.raises(X.ExplainError, match="unknown recipe 'fancy'.*'decoder', 'exemplar'"):
        X.invert(model, _scene(model), recipe="fancy", progress=False)
    with pytest.raises(X.ExplainError, match="colour must be 'natural'"):
        X.class_model(model, 1, steps=1, colour="vivid", progress=False)


if __name__ == "__main__":        # write the fingerprints from the checked-out code
    m = te.load_model()
    ref = {f"{e}/{n}/{k}": fingerprint(a) for e, n in CASES for k, a in run(m, e, n).items()}
    REFERENCE.write_text(json.dumps(ref, indent=1) + "\n")
    print(f"{len(ref)} fingerprints -> {REFERENCE}", file=sys.stderr)
