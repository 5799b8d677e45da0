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
of one channel, of any layer.  The paper used neither jitter, nor blur, nor
clipping: they are available (off by default) because they make pictures
that look more natural (Yosinski et al. 2015; Mordvintsev et al. 2015).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._common import (ExplainError, class_names, data_scale, pixel_bounds, resolve_class, resolve_layer,
                      resolve_unit)
from .optimize import optimize

CLASS_MODEL_DEFAULTS = dict(steps=300, lr=0.1, l2=3e-3, init_noise=0.01, optimizer="adam")
# a single unit's activation is far smaller than a class score (0.1-10 against 10-100), so the
# same lambda would pin the image to zero: neuron maximisation uses a 10x weaker L2 prior
MAXIMIZE_DEFAULTS = dict(CLASS_MODEL_DEFAULTS, l2=3e-4)


@dataclass
class Visualization:
    """``image`` (N, C, H, W) model space; ``display`` list of N uint8 (H, W, 3) pictures
    (mean added back); ``history`` per-step arrays (steps, N): "objective" (the score or
    activation), "l2", ..., and for class models "probability" (softmax of the target);
    ``final`` the objective of the returned images; ``labels`` one caption per image.
    Unpacks as ``image, history``."""
    image: np.ndarray
    history: dict
    final: np.ndarray
    labels: list
    display: list = field(default_factory=list)
    probability: np.ndarray | None = None
    seconds: float = 0.0

    def __iter__(self):
        return iter((self.image, self.history))


def _display(model, x, stretch=False):
    """uint8 pictures of model-space images: the mean added back (te.image.to_display);
    with ``stretch``, the pixel values are then spread linearly over 0..255 (0.5% clipped
    at each end), as the papers show their visualisations."""
    from .. import image as te_image
    out = []
    for i in range(x.shape[0]):
        if stretch:
            from ._common import _recipe
            mean, std, scale = _recipe(model)
            px = (x[i] * std[:, None, None] + mean[:, None, None]) * (255.0 / scale)     # pixel units, mean back
            if str((model.preprocessing or {}).get("channel_order", "RGB")).upper() == "BGR" and px.shape[0] == 3:
                px = px[::-1]
            out.append(te_image.normalize_display(px, mode="minmax", percentile=99.5))
        else:
            out.append(te_image.to_display(x[i], model))
    return out


def _run(model, objective, n, *, steps, lr, l2, seed, jitter, blur_every, blur_sigma, clip, optimizer,
         momentum, init_noise, progress, desc, **extra):
    C, H, W = model.input_shape
    if not init_noise >= 0:
        raise ExplainError(f"init_noise must be >= 0, got {init_noise}")
    x0 = np.zeros((n, C, H, W), np.float32)
    if init_noise:
        x0 += (init_noise * data_scale(model) * np.random.default_rng(seed).standard_normal(x0.shape)).astype(np.float32)
    bounds = pixel_bounds(model) if clip else None
    B = data_scale(model)          # lr and l2 are in units of the image divided by B (see class_model)
    rate = lr * B if optimizer == "adam" else lr * B * B
    res = optimize(objective, x0, steps=steps, lr=rate, maximize=True, optimizer=optimizer, momentum=momentum,
                   l2=l2 / (B * B), jitter=jitter, blur_every=blur_every, blur_sigma=blur_sigma, bounds=bounds,
                   seed=seed, progress=progress, desc=desc, device=getattr(model, "device", "cpu"), **extra)
    stuck = [i for i in range(n) if np.array_equal(res.x[i], x0[i])]
    if stuck and steps > 0:
        warnings.warn(f"{desc}: the gradient was exactly zero for image(s) {stuck} -- the start image is a dead "
                      "point of the network (no ReLU fires); use init_noise > 0", RuntimeWarning, stacklevel=3)
    return res


def class_model(model, target=None, steps: int = CLASS_MODEL_DEFAULTS["steps"], lr: float = CLASS_MODEL_DEFAULTS["lr"],
                l2: float = CLASS_MODEL_DEFAULTS["l2"], seed: int = 0, *, jitter: int = 0, blur_every: int = 0,
                blur_sigma: float = 0.0, clip: bool = False, optimizer: str = CLASS_MODEL_DEFAULTS["optimizer"],
                momentum: float = 0.0,
                init_noise: float = CLASS_MODEL_DEFAULTS["init_noise"], objective: str = "score",
                progress: bool = True) -> Visualization:
    """Class model visualisation by gradient ascent on S_c(I) - l2 ||I||^2 from the zero image.

    target   a class index or name, a list of them (one image each, optimised as
             one batch), or None for every class of the model.
    steps, lr, l2   iterations, step size and Simonyan's lambda.  Both are in units of
             the image divided by B (the range of natural images in model space), so
             the defaults suit [0,1]/std and [0,255]-mean models alike: the model-space
             step is lr*B (Adam) or lr*B^2 (SGD), the model-space weight l2/B^2.
    optimizer  "adam" (default) or "sgd" (plain gradient ascent as in the paper; with
             ``momentum`` > 0, momentum SGD).  The step direction is the gradient of
             the same objective either way; Adam's per-pixel step sizes matter because
             the gradient at the near-zero start is tiny for some classes (plain ascent
             with a step that suits one class leaves another stuck for hundreds of steps).
    jitter, blur_every/blur_sigma, clip (to the valid pixel range): optional
             regularisers, off by default as in the paper.
    init_noise  std of the faint noise added to the zero start image, in units of B
             (see the module docstring; 0 = exactly the zero image).
    seed     seeds the start noise and the jitter.
    objective  "score" (the paper: the unnormalised score S_c) or "log_softmax" (the log
             class posterior log P_c, which Simonyan et al. tried and set aside: it can
             also grow by lowering the other classes' scores).
    Returns a Visualization: ``image`` (N, C, H, W) in model space, ``display``
    (uint8 pictures, mean added back), ``history["objective"]`` (score per step),
    ``history["probability"]`` (softmax of the target per step), ``probability``
    (final softmax of the target).
    """
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
    from ..ops import log_softmax, softmax

    def fn(x):
        s = model(x)
        sd = s.numpy().astype(np.float64)
        p = softmax(sd).numpy()
        f = s if objective == "score" else log_softmax(s)
        return f[(rows, idx)], {"probability": p[rows, idx], "score": sd[rows, idx]}

    res = _run(model, fn, n, steps=steps, lr=lr, l2=l2, seed=seed, jitter=jitter, blur_every=blur_every,
               blur_sigma=blur_sigma, clip=clip, optimizer=optimizer, momentum=momentum, init_noise=init_noise,
               progress=progress, desc="class model")
    from .gradients import predict
    scores, probs = predict(model, res.x)
    names = class_names(model)
    return Visualization(image=res.x, history=res.history, final=scores[rows, idx], probability=probs[rows, idx],
                         labels=[names[i] for i in idx], display=_display(model, res.x, stretch=True),
                         seconds=res.seconds)


def _unit_list(unit):
    if isinstance(unit, (int, np.integer, str)) and not isinstance(unit, bool):
        return [unit], False
    if isinstance(unit, tuple):
        return [unit], False
    try:
        return list(unit), True
    except TypeError:
        raise ExplainError(f"unit must be an int, a tuple (c, i, j), or a list of those; got {unit!r}") from None


def maximize(model, layer, unit, steps: int = MAXIMIZE_DEFAULTS["steps"], lr: float = MAXIMIZE_DEFAULTS["lr"],
             l2: float = MAXIMIZE_DEFAULTS["l2"], seed: int = 0, *,
             jitter: int = 0, blur_every: int = 0, blur_sigma: float = 0.0, clip: bool = False,
             optimizer: str = CLASS_MODEL_DEFAULTS["optimizer"], momentum: float = 0.0, init_noise: float = CLASS_MODEL_DEFAULTS["init_noise"],
             progress: bool = True) -> Visualization:
    """Gradient ascent on one unit of any layer: a_u(I) - l2 ||I||^2 from the zero image.

    layer  a layer name (``model.layer_names``) or index
    unit   an int -- a channel of a conv map (its spatial *mean* is maximised) or a
           neuron of a vector layer -- or a tuple (c, i, j) for a single conv neuron,
           or a *list* of those (one image each, optimised as one batch).
    Other arguments and the result as in :func:`class_model` (no "probability").
    If the layer is a ReLU output and the unit is inactive at the start, its
    gradient is zero: use the layer before the ReLU, or a larger ``init_noise``.
    """
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

    res = _run(model, objective, n, steps=steps, lr=lr, l2=l2, seed=seed, jitter=jitter, blur_every=blur_every,
               blur_sigma=blur_sigma, clip=clip, optimizer=optimizer, momentum=momentum, init_noise=init_noise,
               progress=progress, desc=f"maximise {name}")
    from ..engine import Tensor, no_grad
    with no_grad():
        final = objective(Tensor(res.x).to(getattr(model, "device", "cpu"))).numpy()
    labels = [f"{name}[{','.join(map(str, i))}]" for i in idxs]
    return Visualization(image=res.x, history=res.history, final=final, labels=labels,
                         display=_display(model, res.x, stretch=True), seconds=res.seconds)
