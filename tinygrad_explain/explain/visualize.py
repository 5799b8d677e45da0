"""Images that a class or a neuron likes best: gradient ascent on the input.

Class model visualisation (Simonyan, Vedaldi & Zisserman 2014, section 2):

    I* = argmax_I  S_c(I) - lambda ||I||_2^2

with S_c the *unnormalised* score of class c, started from the zero image.
The network's inputs are mean-subtracted, so the zero image is the mean
image; the result is returned in model space, and ``te.image.to_display``
adds the mean back (the ``display`` field holds those uint8 pictures).

One departure, on by default: the start is the zero image plus faint noise
(``init_noise``, std 0.01 B, B the range of natural images in model space).
Exactly zero is a dead point of a network whose first-layer biases are all
negative -- the embedded model's are, a common outcome of weight decay --
no conv1 unit fires, every gradient is exactly 0 and the ascent never
starts.  ``init_noise=0`` gives the paper's exact start (and a warning if
it is stuck).

Neuron maximisation is the same with S_c replaced by one neuron, or the mean
of one channel, of any layer.

Recipes (``recipe=``).  ``"simonyan2014"`` is the paper: plain gradient
ascent with the L2 prior.  It raises the network's score just as well as
anything else, through high-frequency patterns that neither a person nor
another network recognises.  The default, ``"natural"``, keeps the objective
and adds natural-image priors: the image is made from a decorrelated-colour
Fourier spectrum and shown to the network randomly shifted, scaled and
rotated at every step, clipped to the valid pixel range, with Adam steps
(Olah et al. 2017; Yosinski et al. 2015; Mordvintsev et al. 2015).
``"mahendran2015"`` uses alpha-norm and TV^beta priors with momentum and the
step schedule.  Any setting can be overridden by keyword (``SETTINGS``).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.models import Network
from ..data.image import to_pictures
from . import recipes as _recipes
from ._common import (
    ExplainError,
    LayerName,
    Unit,
    class_names,
    resolve_class,
    resolve_layer,
    resolve_unit,
)
from .recipes import natural_colour  # noqa: F401  (its home is recipes.py; kept here for one release)

# the recipes live in recipes.RECIPES, the one table; these are its class-model and neuron parts
CLASS_MODEL_RECIPES = _recipes.RECIPES["class_model"]
MAXIMIZE_RECIPES = _recipes.RECIPES["maximize"]
DEFAULT_RECIPE = _recipes.DEFAULT_RECIPE
CLASS_MODEL_DEFAULTS = CLASS_MODEL_RECIPES[DEFAULT_RECIPE]
MAXIMIZE_DEFAULTS = MAXIMIZE_RECIPES[DEFAULT_RECIPE]
# every setting a recipe may hold (and a caller may override by keyword): optimize's tunable
# arguments, by its signature, plus the start's init_noise (recipes.settings_of)
SETTINGS = _recipes.settings_of("class_model")


@dataclass
class Visualization:
    """``image`` (N, C, H, W) model space; ``display`` list of N uint8 (H, W, 3) pictures
    (mean added back); ``history`` per-step arrays (steps, N): "objective" (the score or
    activation), "l2", ..., and for class models "probability" (softmax of the target);
    ``final`` the objective of the returned images; ``labels`` one caption per image.
    Unpacks as ``image, history``."""
    image: np.ndarray
    history: dict[str, np.ndarray]
    final: np.ndarray
    labels: list[str]
    display: list[np.ndarray] = field(default_factory=list)
    probability: np.ndarray | None = None
    seconds: float = 0.0
    alpha: np.ndarray | None = None

    def __iter__(self):
        return iter((self.image, self.history))


def _run(model, objective, n, s, *, seed, progress, desc):
    """Gradient ascent with the resolved recipe ``s`` from the zero image plus faint noise
    (recipes.start_images / recipes.run); warns if the start is a dead point."""
    x0 = _recipes.start_images(model, n, s, seed)
    res = _recipes.run(model, objective, x0, s, maximize=True, seed=seed, progress=progress, desc=desc)
    if res.alpha is None:
        stuck = [i for i in range(n) if np.array_equal(res.x[i], x0[i])]
    else:       # shown over a backdrop, the image always changes: did the objective ever move?
        stuck = [i for i in range(n) if s["steps"] > 1 and np.ptp(res.history["objective"][:, i]) == 0]
    if stuck and s["steps"] > 0:
        warnings.warn(f"{desc}: the gradient was exactly zero for image(s) {stuck} -- the start image is a dead "
                      "point of the network (no ReLU fires); use init_noise > 0", RuntimeWarning, stacklevel=3)
    return res


def class_model(model: Network, target: int | str | Sequence[int | str] | None = None, steps: int | None = None,
                lr: float | None = None, l2: float | None = None, seed: int = 0, *, recipe: str = DEFAULT_RECIPE,
                objective: str = "score", progress: bool = True, **settings) -> Visualization:
    """Class model visualisation: gradient ascent on S_c(I) - priors(I) from the zero image.

    target   a class index or name, a list of them (one image each, optimised as
             one batch), or None for every class of the model.
    recipe   "natural" (default: decorrelated-colour Fourier image, jitter / scale /
             rotation robustness, Adam -- what the independent judge recognises best),
             "simonyan2014" (the paper: plain gradient ascent on S_c - lambda ||I||^2) or
             "mahendran2015" (alpha-norm + TV^beta priors, momentum, step schedule);
             CLASS_MODEL_RECIPES holds their settings.
    steps, lr, l2, **settings   override the recipe's settings (names in SETTINGS):
             lr and l2 are in units of the image divided by B (the range of natural
             images in model space), so they suit [0,1]/std and [0,255]-mean models
             alike: the model-space step is lr*B (Adam) or lr*B^2 (SGD), the model-space
             weight l2/B^2.  ``optimizer`` "adam" or "sgd" (with ``momentum``); ``jitter``,
             ``scales``, ``angles``, ``blur_every`` / ``blur_sigma``, ``clip`` (to the valid
             pixel range), ``alpha_norm`` / ``tv``, ``param`` ("pixel" / "fourier"), ``colour``
             ("natural" / matrix / None), ``octaves``, ``milestones``: see optimize.optimize.
             ``init_noise``: std of the faint noise added to the zero start image, in units
             of B (see the module docstring; 0 = exactly the zero image).
    seed     seeds the start noise and the random transformations.
    objective  "score" (the paper: the unnormalised score S_c) or "log_softmax" (the log
             class posterior log P_c, which Simonyan et al. tried and set aside: it can
             also grow by lowering the other classes' scores).
    Returns a Visualization: ``image`` (N, C, H, W) in model space, ``display``
    (uint8 pictures, mean added back), ``history["objective"]`` (score per step),
    ``history["probability"]`` (softmax of the target per step), ``probability``
    (final softmax of the target).
    """
    s = _recipes.resolve("class_model", recipe, dict(settings, steps=steps, lr=lr, l2=l2))
    K = model.num_classes
    targets = list(range(K)) if target is None else (
        [target] if isinstance(target, (str, int, np.integer)) else list(target))
    idx = np.array([resolve_class(model, t) for t in targets], dtype=np.int64)
    if idx.size == 0:
        raise ExplainError("no target classes given")
    n = idx.size
    rows = np.arange(n)

    if objective not in ("score", "log_softmax"):
        raise ExplainError(f"unknown objective {objective!r}; expected 'score' or 'log_softmax'")
    from ..core.ops import log_softmax, softmax

    def fn(x):
        s = model(x)
        sd = s.numpy().astype(np.float64)
        p = softmax(sd).numpy()
        f = s if objective == "score" else log_softmax(s)
        return f[(rows, idx)], {"probability": p[rows, idx], "score": sd[rows, idx]}

    res = _run(model, fn, n, s, seed=seed, progress=progress, desc="class model")
    from .gradients import predict
    scores, probs = predict(model, res.x)
    names = class_names(model)
    return Visualization(image=res.x, history=res.history, final=scores[rows, idx], probability=probs[rows, idx],
                         labels=[names[i] for i in idx], seconds=res.seconds, alpha=res.alpha,
                         display=to_pictures(res.x, model, stretch=res.alpha is None))


def _unit_list(unit):
    if isinstance(unit, (int, np.integer, str)) and not isinstance(unit, bool):
        return [unit], False
    if isinstance(unit, tuple):
        return [unit], False
    try:
        return list(unit), True
    except TypeError:
        raise ExplainError(f"unit must be an int, a tuple (c, i, j), or a list of those; got {unit!r}") from None


def maximize(model: Network, layer: LayerName, unit: Unit | Sequence[Unit], steps: int | None = None,
             lr: float | None = None, l2: float | None = None, seed: int = 0, *, recipe: str = DEFAULT_RECIPE,
             progress: bool = True, **settings) -> Visualization:
    """Gradient ascent on one unit of any layer: a_u(I) - priors(I) from the zero image.

    layer  a layer name (``model.layer_names``) or index
    unit   an int -- a channel of a conv map (its spatial *mean* is maximised) or a
           neuron of a vector layer -- or a tuple (c, i, j) for a single conv neuron,
           or a *list* of those (one image each, optimised as one batch).
    recipe, settings  as in :func:`class_model` (MAXIMIZE_RECIPES: the class-model
           recipes with 10x weaker priors); the result likewise (no "probability").
    If the layer is a ReLU output and the unit is inactive at the start, its
    gradient is zero: use the layer before the ReLU, or a larger ``init_noise``.
    """
    s = _recipes.resolve("maximize", recipe, dict(settings, steps=steps, lr=lr, l2=l2))
    name = resolve_layer(model, layer)
    units, _ = _unit_list(unit)
    if not units:
        raise ExplainError("no units given")
    idxs = [resolve_unit(model, name, u) for u in units]
    n = len(idxs)
    rows = np.arange(n)
    shape = model.shapes[name]
    spatial = len(shape) == 3
    chans = np.array([i[0] for i in idxs])
    full = all(len(i) == len(shape) for i in idxs)
    if not full and any(len(i) == len(shape) for i in idxs) and spatial:
        raise ExplainError("mix of whole channels and single neurons in one call: make two calls")

    def objective(x):
        a = model(x, until=name)
        if spatial and not full:
            return a[(rows, chans)].mean(axis=(1, 2))
        cols = tuple(np.array([i[k] for i in idxs]) for k in range(len(shape)))
        return a[(rows,) + cols]

    res = _run(model, objective, n, s, seed=seed, progress=progress, desc=f"maximise {name}")
    from ..core.engine import Tensor, no_grad
    with no_grad():
        final = objective(Tensor(res.x).to(getattr(model, "device", "cpu"))).numpy()
    labels = [f"{name}[{','.join(map(str, i))}]" for i in idxs]
    return Visualization(image=res.x, history=res.history, final=final, labels=labels,
                         display=to_pictures(res.x, model, stretch=True), seconds=res.seconds)
