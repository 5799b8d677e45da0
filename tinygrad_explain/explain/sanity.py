"""Sanity checks for explanations (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018,
"Sanity Checks for Saliency Maps", NeurIPS).

An explanation that is meant to show what the *trained network* relies on must
change when the network's learnt weights are destroyed.  Two tests:

* **model-parameter randomisation** -- re-initialise weights (with the same
  random initialisation the model was trained from) and compare each method's
  explanation with the one on the trained model:
    - *cascading*: from the top layer (fc8) down, one more layer each step,
      until every layer down to conv1 is random (:func:`cascade`); in a graph
      network (a ResNet), the nodes with parameters in reversed topological
      order -- a node is randomised before every node that feeds it, the
      classifier first, and a residual block's convolutions (and its shortcut's)
      before the blocks below -- batch-norm nodes among them (reset to their
      initial state: gamma 1, beta 0, mean 0, variance 1);
    - *independent*: one layer at a time, all others trained (:func:`independent`);
* **data randomisation** -- the same architecture trained on randomly permuted
  labels (``te.load_model("random_labels")``, made by
  scripts/train_random_labels.py): it memorised noise, so an explanation that
  looks the same on both does not depend on the relation between images and labels.
  The twin must have the model's architecture (the shipped one is the embedded
  AlexNet's; another network needs its own twin, or leave this test out).

Similarity of two maps of one image (:func:`similarity`), as in the paper:
Spearman rank correlation of the absolute maps and of the signed maps, the
structural similarity index (SSIM, Wang et al. 2004) and the Pearson
correlation of histogram-of-gradients features (HOG, Dalal & Triggs 2005) of
the absolute maps, each normalised to [0, 1] by its 99th percentile.  A method
that passes the check has similarities that fall towards 0 as layers are
randomised; one whose similarity stays high is insensitive to the weights.

Maps per method (:data:`METHODS`): a method gives (N, C, H, W) (a gradient)
or (N, H, W) (a saliency-like map); the *signed* map sums a gradient over
colour channels, the *absolute* map sums |gradient| over colour channels (the
paper's visualisation); a map that is already >= 0 is both.

The loaded model is never modified: every randomised model is a copy.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..core import device as _device
from ..core.architecture import from_architecture
from ..core.models import WEIGHT_TYPES, Network, weight_layers  # noqa: F401  (sanity.weight_layers)
from ..core.nn import BatchNorm2d, Conv2d, Linear
from ._common import ExplainError, Images, Target, as_batch, resolve_targets, to_host
from .methods import get as get_method
from .methods import sanity_checked
from .statistics import (  # noqa: F401  (their home is statistics.py; te.explain.sanity.spearman, ...)
    MEASURES,
    hog,
    normalize,
    pearson,
    rankdata,
    similarity,
    spearman,
    ssim,
)

#: ``init(layer, rng, last)`` re-initialises one conv / linear / batch-norm layer in place (``last``: the top layer)
Init = Callable[[Union[Conv2d, Linear, BatchNorm2d], np.random.Generator, bool], None]

# --------------------------------------------------------------------------
# randomised copies of a model
# --------------------------------------------------------------------------


def copy_model(model: Network) -> Network:
    """An independent copy of ``model`` (architecture, weights, dtype, device,
    class names, preprocessing): changing the copy never touches ``model``."""
    arch = model.architecture()
    out = from_architecture(arch, model.input_shape, class_names=model.class_names,
                            preprocessing=dict(model.preprocessing))
    state = {k: to_host(v) for k, v in model.state_dict().items()}
    dtype = next(iter(state.values())).dtype
    if dtype != np.float32:
        out.astype(dtype)
    out.load_state_dict(state)             # copies every array
    out.eval()
    if getattr(model, "device", "cpu") != "cpu":
        out.to(model.device)
    return out


def he_reinit(layer: Conv2d | Linear | BatchNorm2d, rng: np.random.Generator, last: bool) -> None:
    """The initialisation every model of this project is trained from
    (``train.he_init``): He normal weights, N(0, 0.01) for the top layer, zero bias;
    a batch norm's initial state (gamma 1, beta 0, running mean 0, variance 1: PyTorch's)."""
    if isinstance(layer, BatchNorm2d):
        C = layer.num_features
        for p, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            getattr(layer, p).data = np.full(C, v, np.float32)
        return
    from ..training.train import he_init_layer
    he_init_layer(layer, rng, 0.01 if last else None, 0.0)


def randomize(model: Network, layers: str | Sequence[str], seed: int = 0, init: Init = he_reinit) -> Network:
    """A copy of ``model`` with the weights and biases of ``layers`` re-initialised.

    Layer ``L`` always gets the same random weights for the same ``seed``
    (generator ``default_rng([seed, index of L in weight_layers])``), whichever
    other layers are randomised with it: the cascade's fc8 at step "conv5" is
    the fc8 of step "fc8" and of the independent test.  ``init(layer, rng,
    last)`` re-initialises one layer in place (default :func:`he_reinit`).
    ``model`` itself is not modified."""
    names = weight_layers(model)
    layers = [layers] if isinstance(layers, str) else list(layers)
    for name in layers:
        if name not in names:
            raise ExplainError(f"cannot randomise {name!r}: the layers with weights are {', '.join(names)}")
    out = copy_model(model)
    device = getattr(out, "device", "cpu")
    for name in layers:
        i = names.index(name)
        layer = out.layers[name]
        dtype = layer.weight.data.dtype
        init(layer, np.random.default_rng([int(seed), i]), i == len(names) - 1)
        for p in layer.params:
            t = getattr(layer, p)
            t.data = _device.move(np.asarray(to_host(t.data), dtype), device)
    return out


def cascade(model: Network, seed: int = 0, init: Init = he_reinit) -> list[tuple[str, Network]]:
    """The cascading randomisation: ``[(layer, model with layer and every layer above
    it randomised), ...]`` from the top layer (fc8) down to the first (conv1); in a graph
    network, the nodes with parameters in reversed topological order (no node is
    randomised after a node it feeds)."""
    names = weight_layers(model)[::-1]
    return [(name, randomize(model, names[:k + 1], seed, init)) for k, name in enumerate(names)]


def independent(model: Network, seed: int = 0, init: Init = he_reinit) -> list[tuple[str, Network]]:
    """The independent randomisation: ``[(layer, model with only that layer
    randomised), ...]`` from the top layer down."""
    return [(name, randomize(model, [name], seed, init)) for name in weight_layers(model)[::-1]]


# --------------------------------------------------------------------------
# the methods compared
# --------------------------------------------------------------------------
def __getattr__(name):
    """``METHODS``: the methods checked -- the registry's entries flagged ``sanity``
    (te.explain.methods.sanity_checked(), read when asked), with their default options
    (SmoothGrad's noise drawn with seed 0, Grad-CAM of the last conv layer), in the
    order of the figure's rows."""
    if name == "METHODS":
        return sanity_checked()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def explain(model: Network, x: Images, target: Target, methods: Sequence[str] | None = None,
            indices: Sequence[int] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{method: (signed, absolute)}``, two (N, H, W) float64 maps per method
    for images ``x`` (model space) and ``target`` (one class, or one per image).
    SmoothGrad's noise is drawn with a fixed seed, the same for every model: seed 0
    for the batch, or, with ``indices`` (the images' ids), seed (0, index) per image --
    then an image's maps do not depend on the images explained with it."""
    known = sanity_checked()
    methods = known if methods is None else methods
    unknown = [m for m in methods if str(m).replace("_", "-") not in known]
    if unknown:
        raise ExplainError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    x = as_batch(model, x)
    targets = resolve_targets(model, target, x.shape[0])
    out = {}
    for m in methods:
        method = get_method(m)
        seeded = indices is not None and "seed" in method.options
        raw = np.asarray(method.fn(model, x, targets, **({"seed": [(0, int(i)) for i in indices]} if seeded else {})),
                         np.float64)
        if raw.ndim == 4:
            out[m] = (raw.sum(axis=1), np.abs(raw).sum(axis=1))
        else:
            out[m] = (raw, np.abs(raw))
    return out


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------
@dataclass
class SanityResult:
    """Per-image similarities: ``scores[test][step][method][measure]`` is an (N,) array
    (test "cascade" / "independent" with step = randomised layer name, or
    "data" with step "random_labels").  :meth:`summary` gives mean, std and the
    number of images where the measure is defined."""
    scores: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = field(default_factory=dict)
    methods: tuple[str, ...] = field(default_factory=lambda: sanity_checked())
    images: int = 0

    def add(self, test: str, step: str, method: str, sims: dict[str, float]) -> None:
        d = self.scores.setdefault(test, {}).setdefault(step, {}).setdefault(method, {})
        for k, v in sims.items():
            d.setdefault(k, []).append(v)

    def summary(self) -> dict[str, dict[str, dict[str, dict[str, dict]]]]:
        out = {}
        for test, steps in self.scores.items():
            for step, methods in steps.items():
                for method, measures in methods.items():
                    for measure, vals in measures.items():
                        v = np.asarray(vals, np.float64)
                        ok = v[np.isfinite(v)]
                        out.setdefault(test, {}).setdefault(step, {}).setdefault(method, {})[measure] = {
                            "mean": float(ok.mean()) if ok.size else None,
                            "std": float(ok.std()) if ok.size else None,
                            "n": int(ok.size)}
        return out


def compare(reference: dict[str, tuple[np.ndarray, np.ndarray]], other: dict[str, tuple[np.ndarray, np.ndarray]],
            result: SanityResult, test: str, step: str) -> None:
    """Add the similarities of every image's explanations ``other`` (from
    :func:`explain`) to those of ``reference`` to ``result``."""
    for m, (s_ref, a_ref) in reference.items():
        s_o, a_o = other[m]
        for i in range(len(s_ref)):
            result.add(test, step, m, similarity(s_ref[i], a_ref[i], s_o[i], a_o[i]))


def twin_fits(model: Network, twin: Network) -> bool:
    """Whether ``twin`` can be the data test's twin of ``model``: the same architecture and input."""
    return twin.architecture() == model.architecture() and tuple(twin.input_shape) == tuple(model.input_shape)


def check_twin(model: Network, twin: Network) -> None:
    """Refuse a data-randomisation twin of another architecture (its maps would differ for
    that reason alone, and the test would say nothing about the labels)."""
    if not twin_fits(model, twin):
        where = getattr(twin, "path", None)
        raise ExplainError(f"the data test's twin{f' {where}' if where else ''} has another architecture than "
                           "the model: it must be the same network trained on permuted labels (give one, or "
                           "leave out the 'data' test)")


#: the tests :func:`run` knows
TESTS = ("cascade", "independent", "data", "other_scene")
#: the shipped scenes that ``tinygrad-explain sanity`` checks by default (the sanity figure's caption quotes it)
SCENES = 50


def run(model: Network, x: Images, target: Target, methods: Sequence[str] | None = None, tests: Sequence[str] = TESTS,
        twin: Network | None = None, seed: int = 0, batch: int = 10, progress: bool = False,
        indices: Sequence[int] | None = None) -> SanityResult:
    """All sanity checks of Adebayo et al. 2018 on images ``x`` (model space, (N, C, H, W))
    and ``target`` (a class or one per image; the paper explains the predicted or the
    true class -- the script uses the true label).

    tests    any of "cascade", "independent" (model-parameter randomisation, weights
             re-initialised with ``seed``) and "data" (``twin``: the same architecture
             trained on permuted labels, default ``load_model("random_labels")``), and
             "other_scene", a floor to read the others against: the trained model's
             explanation of scene i compared with its explanation of scene i+1 (of the
             images given; the last with the first) -- what two explanations of unrelated
             images share (the architecture's spatial patterns, border effects, centred objects)
    batch    images explained together (memory: SmoothGrad runs 25 noisy copies each)
    indices  the images' ids: SmoothGrad's noise seeded per image (``explain``), so that a
             dataset job's chunks (``te.explain.dataset.run_sanity``) give the numbers of one run
    Returns a :class:`SanityResult` (per image, per test, step, method and measure).
    """
    from ..modelfiles.modelfile import load_model
    methods = sanity_checked() if methods is None else tuple(methods)
    unknown = [t for t in tests if t not in TESTS]
    if unknown:
        raise ExplainError(f"unknown test(s) {', '.join(map(repr, unknown))}; choose from {', '.join(TESTS)}")
    x = np.asarray(to_host(as_batch(model, x)))
    targets = resolve_targets(model, target, x.shape[0])
    models = []
    if "cascade" in tests:
        models += [("cascade", step, m) for step, m in cascade(model, seed)]
    if "independent" in tests:
        models += [("independent", step, m) for step, m in independent(model, seed)]
    if "data" in tests:
        twin = load_model("random_labels") if twin is None else twin
        check_twin(model, twin)
        models.append(("data", "random_labels", twin))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=x.shape[0] * (1 + len(models)), desc="sanity checks", unit="image x model")
    result = SanityResult(methods=tuple(methods), images=x.shape[0])
    refs = []
    for s in range(0, x.shape[0], batch):
        xb, tb = x[s:s + batch], targets[s:s + batch]
        ib = None if indices is None else list(indices)[s:s + batch]
        ref = explain(model, xb, tb, methods, ib)
        refs.append(ref)
        if bar is not None:
            bar.update(len(xb))
        for test, step, m in models:
            compare(ref, explain(m, xb, tb, methods, ib), result, test, step)
            if bar is not None:
                bar.update(len(xb))
    if bar is not None:
        bar.close()
    if "other_scene" in tests and x.shape[0] > 1:
        ref = {m: tuple(np.concatenate([r[m][k] for r in refs]) for k in (0, 1)) for m in methods}
        compare(ref, {m: tuple(np.roll(a, -1, axis=0) for a in ref[m]) for m in methods}, result,
                "other_scene", "next scene")
    return result
