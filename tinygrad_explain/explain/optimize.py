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

The update rule is the training code's (:class:`tinygrad_explain.optim.SGD`
/ :class:`~tinygrad_explain.optim.Adam`, the image parameter being the one
"weight"): one optimiser in the project.  Also here: NaN detection, a tqdm
progress bar, a per-step history, and seeding.

On the GPU (``device="gpu"``, or ``x0`` a CuPy array) the parameter, the update
and the priors stay on the device for the whole run; per step only the
objective and regulariser values (N numbers each, for the history and the
NaN check) come back to the host.  Blur (off by default) is OpenCV's on the
host, a round trip every ``blur_every`` steps.  The result ``x`` is a host
(NumPy) array.

:func:`recipe` holds the named presets ("simonyan2014", "mahendran2015",
"natural") that the explainers take as ``recipe=``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .. import device as _device
from ..engine import Tensor, _xp, no_grad
from . import regularizers as R
from . import transforms as T
from ._common import Array, ExplainError, OptimizationError

#: The most steps one optimisation may take (the recipes use 100-2000; checked before any work).
MAX_STEPS = 1_000_000
#: ``schedule(step, steps) -> lr multiplier``
Schedule = Callable[[int, int], float]
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


def recipe(name: str, table: dict[str, dict], **overrides) -> dict:
    """The settings of the named recipe in ``table`` (an explainer's presets), with the
    caller's ``overrides`` (those not None) on top.  Unknown names list the valid ones."""
    if name not in table:
        raise ExplainError(f"unknown recipe {name!r}; expected one of {', '.join(repr(k) for k in table)}")
    out = dict(table[name])
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


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
    from ..optim import SGD, Adam
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
    hw = x.shape[2:]
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
    lo, hi = (None, None) if bounds is None else (_device.move(np.asarray(b, x.dtype), _device.of(x)) for b in bounds)
    hist: dict[str, list] = {}
    t0 = time.perf_counter()

    def start_octave(k, image):
        P = T.Parameterization(param, hw, size=plan[k][1], decay=decay, colour=colour)
        p = Tensor(P.from_image(image), requires_grad=True)
        opt = Adam([p], lr=lr) if optimizer == "adam" else SGD([p], lr=lr, momentum=momentum)
        return P, p, opt

    weight = lambda w: np.broadcast_to(np.asarray(w, np.float64), (x.shape[0],))          # noqa: E731
    priors = [(name, weight(w), fn) for name, w, fn in (
        ("l2", l2, lambda t: R.l2(t)),
        ("alpha_norm", alpha_norm, lambda t: R.alpha_norm(t, alpha, scale)),
        ("tv", tv, lambda t: R.total_variation(t, beta, scale / R.TV_RATIO)),
        ("opacity", opacity if backgrounds else 0.0, lambda t: T.opacity(t, scale).mean(axis=(1, 2, 3))))
        if np.any(weight(w))]

    def shown(image):
        """The image as the result shows it: over the backdrop, without the opacity channel."""
        if backgrounds is None:
            return image
        with no_grad():
            return T.composite(Tensor(image), xp.asarray(T.backdrop(*bg_bounds, backgrounds), image.dtype), scale).data

    P, p, opt = start_octave(0, x)
    octave = 0
    from tqdm.auto import tqdm
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        if octave + 1 < len(plan) and step == plan[octave + 1][0]:
            octave += 1
            P, p, opt = start_octave(octave, P.to_image(p.data))
        # 1. one graph: the parameter -> the image -> (a random transformation -> the objective) + priors
        p.grad = None
        xt = P.image(p)
        seen = transform.apply(xt, *transform.sample(rng)) if transform.active else xt
        if backgrounds is not None:         # over a new random background (the same draw on the CPU and GPU)
            bg = T.random_backgrounds(rng, x.shape[0], *bg_bounds, hw, backgrounds)
            seen = T.composite(seen, xp.asarray(bg, dtype=seen.dtype), scale)
        out = objective(seen)
        f, extra = (out if isinstance(out, tuple) else (out, {}))
        fval = f.numpy().astype(np.float64)
        total_t = f * sign
        reg_total = np.zeros(x.shape[0])
        for name, w, fn in priors:
            r = fn(xt)
            v = r.numpy().astype(np.float64)
            hist.setdefault(name, []).append(v)
            reg_total += w * v
            total_t = total_t + r * (float(w[0]) if np.all(w == w[0]) else xp.asarray(w.astype(r.dtype)))
        if total_t.requires_grad:
            total_t.backward(xp.ones(total_t.shape, dtype=total_t.dtype))
        grad = p.grad

        total = sign * fval + reg_total
        if not (np.all(np.isfinite(total)) and (grad is None or bool(xp.isfinite(grad).all()))):
            bad = ("objective" if not np.all(np.isfinite(fval)) else
                   "regulariser" if not np.all(np.isfinite(reg_total)) else "gradient")
            raise OptimizationError(f"{desc}: NaN/Inf in the {bad} at step {step + 1}/{steps} "
                                    f"(lr={lr:g}); try a smaller learning rate or a stronger regulariser")

        # 2. the update (optim.SGD / optim.Adam on the parameter), then blur and clip the image
        rate = lr * (schedule(step, steps) if schedule is not None else 1.0)
        opt.lr = rate
        opt.step()
        sigma = _blur_sigma_at(blur_sigma, step, steps) if blur_every else 0.0
        blur = sigma > 0 and (step + 1) % blur_every == 0
        if blur or lo is not None:
            img = P.to_image(p.data)
            if blur:
                img = R.gaussian_blur(img, sigma)
            if lo is not None:
                img = xp.clip(img, lo, hi)
            p.data[...] = img if P.identity else P.from_image(img)
        if not bool(xp.isfinite(p.data).all()):
            raise OptimizationError(f"{desc}: the image became NaN/Inf at step {step + 1}/{steps} "
                                    f"(lr={lr:g}); try a smaller learning rate")

        hist.setdefault("objective", []).append(fval)
        hist.setdefault("total", []).append(-total if maximize else total)
        hist.setdefault("lr", []).append(rate)
        for k2, v in extra.items():
            hist.setdefault(k2, []).append(np.asarray(v, np.float64))
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix_str(f"objective {np.mean(fval):.4g}")
        if callback is not None:
            callback(step, shown(P.to_image(p.data)))
    bar.close()
    x = P.to_image(p.data)
    alpha = None
    if backgrounds is not None:
        with no_grad():
            alpha = _device.move(T.opacity(Tensor(x), scale).data, "cpu")
    x = shown(x)
    return OptimizeResult(x=_device.move(xp.array(x, copy=True) if x is p.data else x, "cpu"),
                          history={k: np.asarray(v) for k, v in hist.items()}, steps=steps,
                          seconds=time.perf_counter() - t0, alpha=alpha)
