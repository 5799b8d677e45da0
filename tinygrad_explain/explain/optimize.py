"""The one optimiser behind every "optimise the image" explainer.

Class models, neuron maximisation and feature inversion all solve

    x* = argmax_x  sign * f(x) - l2 ||x||^2 - lambda_alpha R_alpha(x) - lambda_V R_TV(x)

over a batch of images in model space, by gradient steps on ``x`` (the
network's weights never change).  ``f`` is what the explainer cares about:
a class score, a neuron's activation, or minus a reconstruction error.  This
module owns everything else: the regularisers, the update rule (plain
gradient ascent, momentum, or Adam), the step-size schedule, optional jitter,
blur and clipping, NaN detection, a tqdm progress bar, a per-step history,
and seeding.

On the GPU (``device="gpu"``, or ``x0`` a CuPy array) the image, the update
and the regularisers stay on the device for the whole run; per step only the
objective and regulariser values (N numbers each, for the history and the
NaN check) come back to the host.  Jitter is a roll on the device; blur
(off by default) is OpenCV's on the host, a round trip every ``blur_every``
steps.  The result ``x`` is a host (NumPy) array.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import device as _device
from ..engine import Tensor, _xp
from . import regularizers as R
from ._common import OptimizationError


@dataclass
class OptimizeResult:
    """``x`` the optimised batch (N, C, H, W) in model space; ``history`` maps a
    name ("objective", "l2", "alpha_norm", "tv", "total", "lr", plus whatever the
    objective reported) to an array (steps, N) or (steps,); ``seconds`` the wall time."""
    x: np.ndarray
    history: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def step_schedule(milestones=(0.5, 0.75), factor=0.1):
    """Learning-rate multiplier that drops by ``factor`` at each milestone
    (fractions of the run): the step schedule of Mahendran & Vedaldi."""
    milestones = tuple(sorted(float(m) for m in milestones))

    def schedule(step: int, steps: int) -> float:
        frac = step / max(steps, 1)
        return float(factor ** sum(frac >= m for m in milestones))
    return schedule


def optimize(objective, x0, *, steps: int = 100, lr: float = 1.0, maximize: bool = True,
             optimizer: str = "sgd", momentum: float = 0.0, schedule=None,
             l2: float = 0.0, alpha_norm: float = 0.0, alpha: float = 6.0,
             tv: float = 0.0, beta: float = 2.0, scale: float = 1.0,
             jitter: int = 0, blur_every: int = 0, blur_sigma: float = 0.0, bounds=None,
             seed=0, progress: bool = True, desc: str = "optimise", callback=None,
             device=None) -> OptimizeResult:
    """Gradient steps on a batch of images.

    objective(x: Tensor (N, C, H, W)) -> Tensor (N,), or (Tensor (N,), {name: array (N,)})
        the per-image quantity to maximise (``maximize=True``) or minimise; extra
        metrics returned in the dict are recorded in the history.
    x0          starting images (N, C, H, W), model space (not modified).
    steps, lr   number of steps and base step size.
    optimizer   "sgd" (``momentum`` 0 = plain gradient ascent, as Simonyan et al.;
                0.9 = Mahendran & Vedaldi's momentum) or "adam".
    schedule    None (constant) or ``f(step, steps) -> lr multiplier`` (see step_schedule).
    l2          weight of sum x^2 (Simonyan's lambda).
    alpha_norm, alpha   weight and exponent of R_alpha (normalised by ``scale`` = B).
    tv, beta    weight and exponent of R_TV (normalised by V = scale / 6.5).
    jitter      shift the image by up to this many pixels (random, per step) before
                the forward pass (Mordvintsev et al.); 0 = off.
    blur_every, blur_sigma  Gaussian-blur the image every k steps (Yosinski et al.); 0 = off.
    bounds      (lo, hi) arrays broadcastable to x: clip after every step; None = off.
    seed        seeds the jitter (runs are reproducible).
    progress    show a tqdm bar named ``desc``.
    callback    f(step, x) called after every step (x is the live array, on the device).
    device      "cpu" or "gpu": where the optimisation runs (x0 is copied there once);
                None: where x0 is.  Returns ``x`` on the host either way.

    Raises OptimizationError if the objective, the gradient or the image stops
    being finite -- with the step and a hint, rather than returning garbage.
    """
    if device is not None:
        x0 = _device.move(x0 if hasattr(x0, "dtype") else np.asarray(x0), device)
    xp = _xp(x0)
    x = xp.array(x0, dtype=np.float32 if xp.asarray(x0).dtype != np.float64 else np.float64, copy=True)
    if x.ndim != 4:
        raise ValueError(f"x0 must be (N, C, H, W), got shape {x.shape}")
    if steps < 0 or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'sgd' or 'adam'")
    rng = np.random.default_rng(seed)
    sign = -1.0 if maximize else 1.0                  # we minimise sign * f + regularisers
    lo, hi = (None, None) if bounds is None else (_device.move(np.asarray(b, x.dtype), _device.of(x)) for b in bounds)
    vel = xp.zeros_like(x)
    m2 = xp.zeros_like(x) if optimizer == "adam" else None
    hist: dict[str, list] = {}
    t0 = time.perf_counter()

    from tqdm.auto import tqdm
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        # 1. the explainer's objective, on a jittered copy of the image
        dy, dx = R.jitter_shift(rng, jitter)
        xt = Tensor(R.roll(x, dy, dx), requires_grad=True)
        out = objective(xt)
        f, extra = (out if isinstance(out, tuple) else (out, {}))
        fval = f.numpy().astype(np.float64)
        f.backward(xp.full(f.shape, sign, dtype=f.dtype))
        grad = R.roll(xt.grad, -dy, -dx) if xt.grad is not None else xp.zeros_like(x)

        # 2. the regularisers, on the image itself
        reg_total = np.zeros(x.shape[0])
        terms = []
        xr = Tensor(x, requires_grad=True)
        if l2:
            terms.append(("l2", l2, R.l2(xr)))
        if alpha_norm:
            terms.append(("alpha_norm", alpha_norm, R.alpha_norm(xr, alpha, scale)))
        if tv:
            terms.append(("tv", tv, R.total_variation(xr, beta, scale / R.TV_RATIO)))
        for name, w, t in terms:
            v = t.numpy().astype(np.float64)
            hist.setdefault(name, []).append(v)
            reg_total += w * v
            t.backward(xp.full(t.shape, w, dtype=t.dtype))
        if terms:
            grad = grad + xr.grad

        total = sign * fval + reg_total
        if not (np.all(np.isfinite(total)) and bool(xp.isfinite(grad).all())):
            bad = "objective" if not np.all(np.isfinite(fval)) else ("regulariser" if not np.all(np.isfinite(reg_total)) else "gradient")
            raise OptimizationError(f"{desc}: NaN/Inf in the {bad} at step {step + 1}/{steps} "
                                    f"(lr={lr:g}); try a smaller learning rate or a stronger regulariser")

        # 3. the update
        rate = lr * (schedule(step, steps) if schedule is not None else 1.0)
        if optimizer == "sgd":
            vel = momentum * vel - rate * grad if momentum else -rate * grad
            x += vel
        else:
            b1, b2, k = 0.9, 0.999, step + 1
            vel = b1 * vel + (1 - b1) * grad
            m2 = b2 * m2 + (1 - b2) * grad * grad
            x -= rate * (vel / (1 - b1 ** k)) / (xp.sqrt(m2 / (1 - b2 ** k)) + 1e-8)
        if blur_every and blur_sigma > 0 and (step + 1) % blur_every == 0:
            x[...] = R.gaussian_blur(x, blur_sigma)
        if lo is not None:
            xp.clip(x, lo, hi, out=x)
        if not bool(xp.isfinite(x).all()):
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
            callback(step, x)
    bar.close()
    return OptimizeResult(x=_device.move(x, "cpu"), history={k: np.asarray(v) for k, v in hist.items()}, steps=steps,
                          seconds=time.perf_counter() - t0)
