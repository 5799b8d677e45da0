"""The one optimiser behind every "optimise the image" explainer.

Class models, neuron maximisation and feature inversion all solve

    x* = argmax_x  sign * f(T(x)) - l2 ||x||^2 - lambda_alpha R_alpha(x) - lambda_V R_TV(x),   x = P(p)

over a batch of images in model space, by gradient steps on ``p`` (the
network's weights never change).  ``f`` is what the explainer cares about:
a class score, a neuron's activation, or minus a reconstruction error.  This
module owns everything else, and every piece is a switch:

==========================  ==========================================  =================================
prior / choice              argument                                    paper
==========================  ==========================================  =================================
L2 decay                    ``l2``                                      Simonyan et al. 2014
alpha-norm, TV^beta          ``alpha_norm, alpha, tv, beta, scale`` (B)   Mahendran & Vedaldi 2015 (their
                                                                        normalisation by B and V = B/6.5)
jitter                      ``jitter`` (pixels)                         Mordvintsev et al. 2015
random scaling / rotation   ``scales``, ``angles`` (degrees)             Olah et al. 2017 (transformation
                                                                        robustness)
blur schedule, clipping     ``blur_every, blur_sigma``, ``bounds``       Yosinski et al. 2015
multi-scale (octaves)       ``octaves`` (grid divisors, e.g. (4, 2, 1))  Mordvintsev et al. 2015;
                                                                        Mahendran & Vedaldi 2016
decorrelated colour,        ``param="fourier", decay, colour``           Olah et al. 2017
Fourier-space image
transparency: an opacity    ``backgrounds`` ("dark" / "light" / "any"),  Mordvintsev et al. 2018
channel over random         ``opacity`` (weight of the mean opacity)
backgrounds
update rule                 ``optimizer`` "sgd" (``momentum``) / "adam"  Simonyan (plain ascent),
                                                                        Mahendran & Vedaldi (momentum)
step schedule               ``schedule`` (see :func:`step_schedule`)     Mahendran & Vedaldi 2015
==========================  ==========================================  =================================

``T`` (jitter, scale, rotation) and ``P`` (octave upsampling, Fourier
spectrum, colour mix) are linear maps with exact adjoints
(:mod:`.transforms`); the regularisers act on the image ``x`` itself.  One
graph per step: ``p -> x -> T(x) -> f`` plus ``x -> R(x)``, one backward.
Blur and clipping act on the image between steps (for a Fourier parameter:
the image is made, blurred / clipped, and turned back into its parameter).

With ``backgrounds`` the image carries one more channel, its opacity a
(:func:`.transforms.opacity`), and what the objective sees every step is the
transformed image composited over a fresh random background of that kind
(:func:`.transforms.composite`): ``f(T(x) over B_t)``.  Nothing behind the object
can then help the objective, so the object has to be drawn opaque and whole
(Mordvintsev et al. 2018, "Differentiable Image Parameterizations"); ``opacity``
weighs the mean opacity as a prior, so that the rest turns transparent (the
opacity starts at 1: the start image as it is).  The
result is shown composited over a plain backdrop (:func:`.transforms.backdrop`:
black behind "dark" backgrounds), and its opacity is returned as ``alpha``.

The update rule is the training code's (:class:`tinygrad_explain.training.optim.SGD`
/ :class:`~tinygrad_explain.training.optim.Adam`, the image parameter being the one
"weight"): one optimiser in the project.  Also here: NaN detection, a tqdm
progress bar, a per-step history, and seeding.

On the GPU (``device="gpu"``, or ``x0`` a CuPy array) the parameter, the update
and the priors stay on the device for the whole run; per step only the
objective and regulariser values (N numbers each, for the history and the
NaN check) come back to the host.  Blur (off by default) is OpenCV's on the
host, a round trip every ``blur_every`` steps.  The result ``x`` is a host
(NumPy) array.

The steps of one run, each a function below that :func:`optimize` calls in turn:

1. parametrisation -- :func:`parametrise`: the parameter ``p`` of the current octave, its
   image ``x = P(p)`` and the update rule on ``p``;
2. transforms / priors -- :func:`priors_of` (the weighted regularisers) and :func:`view`
   (what the objective sees: ``T(x)``, over a random background);
3. objective -- :func:`evaluate`: ``sign * f(T(x)) + sum w R(x)``, one graph, one backward,
   and the NaN / Inf check;
4. update -- :func:`update`: the scheduled step size, one optimiser step;
5. projection -- :func:`project`: blur and clip the image, back into the parameter.

The named presets that the explainers take as ``recipe=`` ("simonyan2014",
"mahendran2015", "natural", ...) and their translation to this function's
arguments live beside it, in :mod:`.recipes`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..core import device as _device
from ..core.engine import Tensor, no_grad
from ..core.engine import array_module as _xp
from ..training.optim import Optimizer
from . import regularizers as R
from . import transforms as T
from ._common import Array, OptimizationError

#: The most steps one optimisation may take (the recipes use 100-2000; checked before any work).
MAX_STEPS = 1_000_000
#: ``schedule(step, steps) -> lr multiplier``
Schedule = Callable[[int, int], float]
#: a prior: the image (N, C, H, W) -> its per-image penalty (N,)
Prior = Callable[[Tensor], Tensor]
#: what ``optimize`` steps on: images (N, C, H, W) -> the per-image quantity f (N,), or (f, {name: (N,) values})
ObjectiveFn = Callable[[Tensor], Union[Tensor, tuple[Tensor, dict]]]


@dataclass
class OptimizeResult:
    """``x`` the optimised batch (N, C, H, W) in model space; ``history`` maps a
    name ("objective", "l2", "alpha_norm", "tv", "opacity", "total", "lr", plus whatever
    the objective reported) to an array (steps, N) or (steps,); ``seconds`` the wall time;
    ``alpha`` (N, 1, H, W) the opacity when optimised with ``backgrounds`` (``x`` is then
    the image composited over the backdrop), else None."""
    x: np.ndarray
    history: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    alpha: np.ndarray | None = None


def step_schedule(milestones: Sequence[float] = (0.5, 0.75), factor: float = 0.1) -> Schedule:
    """Learning-rate multiplier that drops by ``factor`` at each milestone
    (fractions of the run): the step schedule of Mahendran & Vedaldi."""
    milestones = tuple(sorted(float(m) for m in milestones))

    def schedule(step: int, steps: int) -> float:
        frac = step / max(steps, 1)
        return float(factor ** sum(frac >= m for m in milestones))
    return schedule


def _octave_plan(octaves, steps, hw):
    """[(first step, grid size)] for the octaves (grid divisors, coarse first): the
    steps split evenly, the remainder to the last (finest) octave."""
    if not octaves:
        return [(0, tuple(hw))]
    divs = [int(o) for o in octaves]
    if any(d < 1 for d in divs) or divs[-1] != 1:
        raise ValueError(f"octaves are grid divisors >= 1 ending with 1 (full size), got {octaves}")
    per = steps // len(divs)
    return [(k * per, (max(1, round(hw[0] / d)), max(1, round(hw[1] / d)))) for k, d in enumerate(divs)]


def _blur_sigma_at(blur_sigma, step, steps):
    """A constant sigma, or (start, end) interpolated linearly over the run (a blur schedule)."""
    if isinstance(blur_sigma, (tuple, list)):
        a, b = (float(v) for v in blur_sigma)
        return a + (b - a) * step / max(steps - 1, 1)
    return float(blur_sigma)


def _with_opacity(x, bounds, colour, scale, kind):
    """The image (N, C, H, W) with an opacity channel appended, fully opaque (+scale); the
    bounds and colour matrix extended to it (the opacity channel stays within +-scale,
    unmixed); and the per-channel colour bounds (C, 1, 1) the backgrounds are drawn in."""
    if kind not in T.BACKGROUNDS:
        raise ValueError(f"unknown backgrounds {kind!r}; expected one of {', '.join(T.BACKGROUNDS)}")
    xp, (N, C, H, W) = _xp(x), x.shape
    lo, hi = ((-scale, scale) if bounds is None else bounds)
    lo, hi = (np.broadcast_to(np.asarray(b, np.float32).reshape(-1, 1, 1), (C, 1, 1)) for b in (lo, hi))
    x = xp.concatenate([x, xp.full((N, 1, H, W), scale, dtype=x.dtype)], axis=1)
    clip = (np.concatenate([lo, [[[-scale]]]]).astype(np.float32), np.concatenate([hi, [[[scale]]]]).astype(np.float32))
    if colour is not None:
        colour = np.block([[np.asarray(colour, np.float64), np.zeros((C, 1))], [np.zeros((1, C)), np.ones((1, 1))]])
    return x, clip, colour, (lo, hi)


def optimize(objective: ObjectiveFn, x0: Array, *, steps: int = 100, lr: float = 1.0, maximize: bool = True,
             optimizer: str = "sgd", momentum: float = 0.0, schedule: Schedule | None = None,
             l2: float | np.ndarray = 0.0, alpha_norm: float | np.ndarray = 0.0, alpha: float = 6.0,
             tv: float | np.ndarray = 0.0, beta: float = 2.0, scale: float = 1.0,
             jitter: int | float = 0, scales: Sequence[float] = (1.0,), angles: Sequence[float] = (0.0,),
             blur_every: int = 0, blur_sigma: float | tuple[float, float] = 0.0,
             bounds: tuple[np.ndarray, np.ndarray] | None = None,
             param: str = "pixel", decay: float = 1.0, colour: np.ndarray | None = None,
             octaves: Sequence[int] | None = None, backgrounds: str | None = None,
             opacity: float | np.ndarray = 0.0, seed: int = 0, progress: bool = True, desc: str = "optimise",
             callback: Callable[[int, Array], None] | None = None, device: str | None = None) -> OptimizeResult:
    """Gradient steps on a batch of images.

    objective(x: Tensor (N, C, H, W)) -> Tensor (N,), or (Tensor (N,), {name: array (N,)})
        the per-image quantity to maximise (``maximize=True``) or minimise; extra
        metrics returned in the dict are recorded in the history.
    x0          starting images (N, C, H, W), model space (not modified).
    steps, lr   number of steps and base step size (on the parameter ``p``).
    optimizer   "sgd" (``momentum`` 0 = plain gradient ascent, as Simonyan et al.;
                0.9 = Mahendran & Vedaldi's momentum) or "adam"; optim.SGD / optim.Adam.
    schedule    None (constant) or ``f(step, steps) -> lr multiplier`` (see step_schedule).
    l2          weight of sum x^2 (Simonyan's lambda).
    alpha_norm, alpha   weight and exponent of R_alpha (normalised by ``scale`` = B).
    tv, beta    weight and exponent of R_TV (normalised by V = scale / 6.5).
                Each weight is a number or one per image (N,).
    jitter      shift the image by up to this many pixels (an int; a float < 1: that
                fraction of the image side) at random, per step, before the forward pass
                (Mordvintsev et al.); 0 = off.
    scales, angles  per step, a random scale factor from ``scales`` and a rotation (degrees)
                from ``angles`` (Olah et al. 2017); (1.0,) and (0.0,) = off.
    blur_every, blur_sigma  Gaussian-blur the image every k steps (Yosinski et al.);
                ``blur_sigma`` a constant or (start, end), linear over the run; 0 = off.
    bounds      (lo, hi) arrays broadcastable to x: clip after every step; None = off.
    param       "pixel" (step on the image) or "fourier" (step on a spectrum scaled by
                1/f^``decay``; Olah et al. 2017).
    colour      (C, C) matrix: the image is ``colour @`` the parameter's channels
                (decorrelated colour; see transforms.colour_sqrt); None = off.
    octaves     grid divisors, coarse to fine, ending in 1 (e.g. (4, 2, 1)): the pixel
                parameter lives on an H/d x W/d grid, bilinearly upsampled, for an equal
                share of the steps each, then is carried to the next grid (area-resized;
                the optimiser's momentum / moments start afresh); None = off.
    backgrounds None (an opaque image) or "dark" / "light" / "any": the image gets an
                opacity channel and is composited over a new random
                background of that kind (transforms.random_backgrounds, within ``bounds``, or
                +-``scale`` without) every step; the result is composited over the backdrop.
                The opacity starts at 1 (the start image as it is: a start half opaque lets
                some class models fade out before their score rises; docs/explainers.md).
    opacity     weight of the mean opacity (the prior that keeps the background clear).
    seed        seeds the random transformations (runs are reproducible).
    progress    show a tqdm bar named ``desc``.
    callback    f(step, x) called after every step (x the image, on the device).
    device      "cpu" or "gpu": where the optimisation runs (x0 is copied there once);
                None: where x0 is.  Returns ``x`` on the host either way.

    Raises OptimizationError if the objective, the gradient or the image stops
    being finite -- with the step and a hint, rather than returning garbage.
    """
    from tqdm.auto import tqdm
    x, hw = _first_image(x0, device, steps, lr, optimizer)
    bg_bounds = None
    if backgrounds is not None:
        x, bounds, colour, bg_bounds = _with_opacity(x, bounds, colour, scale, backgrounds)
    plan = _octave_plan(octaves, steps, hw)
    if param != "pixel" and len(plan) > 1:
        raise ValueError("octaves are for the pixel parameterisation (param='pixel')")
    if isinstance(jitter, float) and 0 < jitter < 1:      # a fraction of the image side
        jitter = max(1, int(round(jitter * max(hw))))
    transform = T.RandomTransform(jitter, scales, angles)
    rng = np.random.default_rng(seed)
    sign = -1.0 if maximize else 1.0                  # we minimise sign * f + regularisers
    xp = _xp(x)
    lo, hi = (None, None) if bounds is None else (_device.move(np.asarray(b, x.dtype), _device.of(x)) for b in bounds)
    priors = priors_of(x.shape[0], scale, l2=l2, alpha_norm=alpha_norm, alpha=alpha, tv=tv, beta=beta,
                       opacity=opacity if backgrounds else 0.0)
    rule = dict(optimizer=optimizer, lr=lr, momentum=momentum)
    hist: dict[str, list] = {}
    t0 = time.perf_counter()

    P, p, opt = parametrise(param, hw, plan[0][1], decay, colour, x, **rule)
    octave = 0
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        if octave + 1 < len(plan) and step == plan[octave + 1][0]:
            octave += 1
            P, p, opt = parametrise(param, hw, plan[octave][1], decay, colour, P.to_image(p.data), **rule)
        p.grad = None
        xt = P.image(p)                                                           # 1. parametrisation
        seen = view(xt, transform, rng, backgrounds, bg_bounds, scale)            # 2. transforms
        fval, reg, extra = evaluate(objective, seen, xt, priors, sign, p, hist)   # 3. objective + priors
        _check_finite(desc, step, steps, lr, sign, fval, reg, p.grad)
        rate = update(opt, lr, schedule, step, steps)                             # 4. update
        project(P, p, blur_every, blur_sigma, step, steps, lo, hi)                # 5. projection
        if not bool(xp.isfinite(p.data).all()):
            raise OptimizationError(f"{desc}: the image became NaN/Inf at step {step + 1}/{steps} "
                                    f"(lr={lr:g}); try a smaller learning rate")

        total = sign * fval + reg
        hist.setdefault("objective", []).append(fval)
        hist.setdefault("total", []).append(-total if maximize else total)
        hist.setdefault("lr", []).append(rate)
        for k2, v in extra.items():
            hist.setdefault(k2, []).append(np.asarray(v, np.float64))
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix_str(f"objective {np.mean(fval):.4g}")
        if callback is not None:
            callback(step, _shown(P.to_image(p.data), backgrounds, bg_bounds, scale))
    bar.close()
    x = P.to_image(p.data)
    alpha = None
    if backgrounds is not None:
        with no_grad():
            alpha = _device.move(T.opacity(Tensor(x), scale).data, "cpu")
    x = _shown(x, backgrounds, bg_bounds, scale)
    return OptimizeResult(x=_device.move(xp.array(x, copy=True) if x is p.data else x, "cpu"),
                          history={k: np.asarray(v) for k, v in hist.items()}, steps=steps,
                          seconds=time.perf_counter() - t0, alpha=alpha)


# --------------------------------------------------------------------------
# the steps of one run
# --------------------------------------------------------------------------
def _first_image(x0, device, steps, lr, optimizer):
    """A float copy of ``x0`` on ``device`` (None: where it is) after the argument checks; its (H, W)."""
    if device is not None:
        x0 = _device.move(x0 if hasattr(x0, "dtype") else np.asarray(x0), device)
    xp = _xp(x0)
    x = xp.array(x0, dtype=np.float32 if xp.asarray(x0).dtype != np.float64 else np.float64, copy=True)
    if x.ndim != 4:
        raise ValueError(f"x0 must be (N, C, H, W), got shape {x.shape}")
    if steps < 0 or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    if steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS:,} (the recipes use 100-2000), got {steps:,}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'sgd' or 'adam'")
    return x, x.shape[2:]


def parametrise(param: str, hw: tuple[int, int], size: tuple[int, int] | None, decay: float,
                colour: np.ndarray | None, image: Array, *, optimizer: str, lr: float,
                momentum: float) -> tuple[T.Parameterization, Tensor, Optimizer]:
    """Step 1, once per octave: the parameterisation ``P`` (pixel / Fourier, colour mix, an
    ``size`` grid upsampled to ``hw``), the parameter ``p`` with ``P(p) = image``, and the
    update rule on it (optim.Adam, or optim.SGD with ``momentum``; fresh moments)."""
    from ..training.optim import SGD, Adam
    P = T.Parameterization(param, hw, size=size, decay=decay, colour=colour)
    p = Tensor(P.from_image(image), requires_grad=True)
    opt = Adam([p], lr=lr) if optimizer == "adam" else SGD([p], lr=lr, momentum=momentum)
    return P, p, opt


def priors_of(n: int, scale: float, *, l2: float = 0.0, alpha_norm: float = 0.0, alpha: float = 6.0,
              tv: float = 0.0, beta: float = 2.0, opacity: float = 0.0) -> list[tuple[str, np.ndarray, Prior]]:
    """Step 2 (priors): [(name, weights (n,), R)] for the regularisers with a nonzero weight;
    each R maps the image (N, C, H, W) to (N,)."""
    weight = lambda w: np.broadcast_to(np.asarray(w, np.float64), (n,))          # noqa: E731
    return [(name, weight(w), fn) for name, w, fn in (
        ("l2", l2, lambda t: R.l2(t)),
        ("alpha_norm", alpha_norm, lambda t: R.alpha_norm(t, alpha, scale)),
        ("tv", tv, lambda t: R.total_variation(t, beta, scale / R.TV_RATIO)),
        ("opacity", opacity, lambda t: T.opacity(t, scale).mean(axis=(1, 2, 3))))
        if np.any(weight(w))]


def view(xt: Tensor, transform: T.RandomTransform, rng: np.random.Generator, backgrounds: str | None,
         bg_bounds: tuple[float, float] | None, scale: float) -> Tensor:
    """Step 2 (transforms): what the objective sees -- the image randomly shifted / scaled /
    rotated, then (with ``backgrounds``) composited over a new random background (the same
    draws on the CPU and GPU, in this order)."""
    seen = transform.apply(xt, *transform.sample(rng)) if transform.active else xt
    if backgrounds is not None:
        bg = T.random_backgrounds(rng, xt.shape[0], *bg_bounds, xt.shape[2:], backgrounds)
        seen = T.composite(seen, _xp(xt.data).asarray(bg, dtype=seen.dtype), scale)
    return seen


def evaluate(objective: ObjectiveFn, seen: Tensor, xt: Tensor, priors: list[tuple[str, np.ndarray, Prior]],
             sign: float, p: Tensor, hist: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Step 3: the loss ``sign * f(seen) + sum_k w_k R_k(xt)`` as one graph, and its backward
    into ``p.grad``.  Records each prior's values in ``hist``; returns f (N,), the weighted
    prior sum (N,) and the objective's extra metrics."""
    out = objective(seen)
    f, extra = (out if isinstance(out, tuple) else (out, {}))
    fval = f.numpy().astype(np.float64)
    total_t = f * sign
    reg_total = np.zeros(seen.shape[0])
    for name, w, fn in priors:
        r = fn(xt)
        v = r.numpy().astype(np.float64)
        hist.setdefault(name, []).append(v)
        reg_total += w * v
        total_t = total_t + r * (float(w[0]) if np.all(w == w[0]) else _xp(r.data).asarray(w.astype(r.dtype)))
    if total_t.requires_grad:
        total_t.backward(_xp(total_t.data).ones(total_t.shape, dtype=total_t.dtype))
    return fval, reg_total, extra


def _check_finite(desc, step, steps, lr, sign, fval, reg_total, grad):
    """OptimizationError naming the step and the culprit if the loss or the gradient is NaN/Inf."""
    total = sign * fval + reg_total
    if not (np.all(np.isfinite(total)) and (grad is None or bool(_xp(grad).isfinite(grad).all()))):
        bad = ("objective" if not np.all(np.isfinite(fval)) else
               "regulariser" if not np.all(np.isfinite(reg_total)) else "gradient")
        raise OptimizationError(f"{desc}: NaN/Inf in the {bad} at step {step + 1}/{steps} "
                                f"(lr={lr:g}); try a smaller learning rate or a stronger regulariser")


def update(opt: Optimizer, lr: float, schedule: Schedule | None, step: int, steps: int) -> float:
    """Step 4: one step of the update rule at the scheduled rate; returns the rate."""
    rate = lr * (schedule(step, steps) if schedule is not None else 1.0)
    opt.lr = rate
    opt.step()
    return rate


def project(P: T.Parameterization, p: Tensor, blur_every: int, blur_sigma: float | tuple[float, float],
            step: int, steps: int, lo: Array | float | None, hi: Array | float | None) -> None:
    """Step 5: blur the image every ``blur_every`` steps and clip it to [lo, hi] (None: off),
    written back into the parameter (through its inverse for a Fourier one)."""
    sigma = _blur_sigma_at(blur_sigma, step, steps) if blur_every else 0.0
    blur = sigma > 0 and (step + 1) % blur_every == 0
    if blur or lo is not None:
        img = P.to_image(p.data)
        if blur:
            img = R.gaussian_blur(img, sigma)
        if lo is not None:
            img = _xp(img).clip(img, lo, hi)
        p.data[...] = img if P.identity else P.from_image(img)


def _shown(image: Array, backgrounds: str | None, bg_bounds, scale: float) -> Array:
    """The image as the result shows it: over the backdrop, without the opacity channel."""
    if backgrounds is None:
        return image
    with no_grad():
        return T.composite(Tensor(image), _xp(image).asarray(T.backdrop(*bg_bounds, backgrounds), image.dtype),
                           scale).data
