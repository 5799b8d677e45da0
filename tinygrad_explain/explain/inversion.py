"""Feature inversion (Mahendran & Vedaldi, "Understanding Deep Image
Representations by Inverting Them", CVPR 2015).

Given a code phi0 = phi(x0) -- by default the fc7 output of an image -- find

    x* = argmin_x  ||phi(x) - phi0||^2 / ||phi0||^2  +  lambda_alpha R_alpha(x)  +  lambda_V R_TV^beta(x)

* the data term is normalised by ||phi0||^2, so it reads as a relative error;
* R_alpha = 1/(HW) sum |x/B|^alpha with alpha = 6 keeps pixels within the range
  of natural images (B: that range in model space);
* R_TV^beta = 1/(HW) sum ((dh^2 + dv^2)/V^2)^(beta/2), beta = 2, V = B/6.5, prefers
  piecewise-smooth images;
* the paper's step schedule -- the step size held, then divided by 10 twice --
  with Adam steps by default; ``optimizer="sgd"`` gives the paper's momentum SGD
  (m = 0.9).  Why not momentum SGD by default: on the embedded model, with the
  paper's objective, one or two of five random starts stay stuck at a normalised
  error of 0.10-0.13 even after 2000 momentum steps (a ReLU that should fire is
  dead and passes no gradient), while Adam's per-pixel step sizes bring all five
  below 0.10.  2500 steps by default: on an earlier embedded model one start
  of the figure's scene was still at 0.17 after 1500 (all five <= 0.075 after
  2500);
* the random starts are *smooth* noise (Gaussian-blurred, ``init_smooth``): white
  noise wastes most of the run on removing noise that the code cannot see, and
  with the TV prior strong enough to remove it the data term cannot get below
  0.10.  Smooth random starts keep the solutions different from one another (the
  colours and shapes the code does not constrain stay where each start put them);
* several random initialisations give several different solutions: the
  code does not determine the image, and the differences show what it throws away.

All initialisations are optimised together as one batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import Tensor, no_grad
from ._common import ExplainError, as_batch, data_scale, resolve_layer
from .optimize import optimize, step_schedule
from .regularizers import gaussian_blur

INVERT_DEFAULTS = dict(steps=2500, lr=0.03, momentum=0.9, alpha=6.0, beta=2.0, alpha_norm=1e-5, tv=3e-3,
                       milestones=(0.7, 0.9), init_std=0.3, init_smooth=0.06, optimizer="adam")


@dataclass
class Inversion:
    """``images`` (inits, C, H, W) reconstructions in model space; ``errors`` (inits,)
    final normalised errors ||phi(x*) - phi0|| / ||phi0||; ``history`` per-step arrays
    (steps, inits) ("objective" = squared normalised error, "alpha_norm", "tv", ...);
    ``pairwise_mad`` (inits, inits) mean absolute difference between reconstructions
    (model space); ``code`` phi0; ``layer``.  Unpacks as ``images, errors``."""
    images: np.ndarray
    errors: np.ndarray
    history: dict
    pairwise_mad: np.ndarray
    code: np.ndarray
    layer: str
    display: list = field(default_factory=list)
    seconds: float = 0.0

    def __iter__(self):
        return iter((self.images, self.errors))

    @property
    def mean_pairwise_mad(self) -> float:
        n = self.pairwise_mad.shape[0]
        return float(self.pairwise_mad[np.triu_indices(n, 1)].mean()) if n > 1 else 0.0


def feature_code(model, x, layer="fc7") -> np.ndarray:
    """phi(x): the flattened output of ``layer`` for one image in model space -> (D,)."""
    name = resolve_layer(model, layer)
    x = as_batch(model, x)
    if x.shape[0] != 1:
        raise ExplainError(f"feature_code takes one image, got {x.shape[0]}")
    with no_grad():
        return model(x, until=name).numpy().reshape(-1).astype(np.float32)


def invert(model, x=None, layer: str = "fc7", inits: int = 5, *, code=None,
           steps: int = INVERT_DEFAULTS["steps"], lr: float = INVERT_DEFAULTS["lr"],
           momentum: float = INVERT_DEFAULTS["momentum"], alpha: float = INVERT_DEFAULTS["alpha"],
           beta: float = INVERT_DEFAULTS["beta"], alpha_norm: float = INVERT_DEFAULTS["alpha_norm"],
           tv: float = INVERT_DEFAULTS["tv"], milestones=INVERT_DEFAULTS["milestones"],
           init_std: float = INVERT_DEFAULTS["init_std"], init_smooth: float = INVERT_DEFAULTS["init_smooth"],
           optimizer: str = INVERT_DEFAULTS["optimizer"], seed: int = 0,
           progress: bool = True) -> Inversion:
    """Reconstruct images from the code of ``layer``.

    x        one image in model space ((1, C, H, W) or (C, H, W)) whose code is
             inverted -- or the code itself (an array with the layer's number of
             elements), or pass ``code=`` explicitly.
    layer    layer name (default "fc7", the output of the 7th, fully connected layer).
    inits    number of random initialisations (independent solutions).
    steps, lr, momentum, milestones   SGD with momentum; lr is divided by 10 at
             each milestone (fraction of the run).  lr is in the paper's normalised
             units -- the optimisation runs on x / B -- so the model-space step is
             lr * B^2 and the same lr suits [0,1]/std and [0,255]-mean models.
    alpha, alpha_norm   exponent and weight of the alpha-norm prior (alpha = 6).
    beta, tv            exponent and weight of the TV prior (beta = 2).
    init_std  std of the Gaussian random initialisation, in units of B (the range
             of natural images in model space).
    init_smooth  if > 0, the random initialisation is Gaussian-blurred noise with std
             init_smooth * image side (then rescaled to init_std): random but smooth.
    optimizer "adam" (default; lr in units of B per step) or "sgd" (the paper's momentum
             SGD; lr in the normalised units above).  Both use the step schedule.
    Returns an :class:`Inversion` (unpacks as ``images, errors``).
    """
    name = resolve_layer(model, layer)
    D = int(np.prod(model.shapes[name]))
    if code is None and x is None:
        raise ExplainError("give an image x (model space) or a code to invert")
    if code is None:
        arr = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        if arr.size == D and arr.shape[-3:] != tuple(model.input_shape):
            code = arr
        else:
            code = feature_code(model, arr, name)
    code = np.asarray(code, np.float32).reshape(-1)
    if code.size != D:
        raise ExplainError(f"a code of layer {name!r} has {D} values (shape {model.shapes[name]}), got {code.size}")
    if not np.all(np.isfinite(code)):
        raise ExplainError("the code contains NaN or Inf")
    norm2 = float((code.astype(np.float64) ** 2).sum())
    if norm2 == 0:
        raise ExplainError(f"the code of layer {name!r} is all zeros: nothing to invert "
                           "(try the layer before the ReLU)")
    if inits < 1:
        raise ExplainError(f"inits must be >= 1, got {inits}")
    B = data_scale(model)
    target = Tensor(code.reshape((1,) + tuple(model.shapes[name]))).to(getattr(model, "device", "cpu"))
    inv_norm = 1.0 / norm2

    def objective(xt):
        d = model(xt, until=name) - target
        axes = tuple(range(1, d.ndim))
        return (d * d).sum(axis=axes) * inv_norm

    rng = np.random.default_rng(seed)
    C, H, W = model.input_shape
    x0 = rng.standard_normal((inits, C, H, W)).astype(np.float32)
    if init_smooth > 0:                         # low-frequency noise: random, but already image-like
        x0 = gaussian_blur(x0, init_smooth * max(H, W))
        x0 /= x0.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    x0 = (init_std * B * x0).astype(np.float32)
    rate = lr * B * B if optimizer == "sgd" else lr * B
    res = optimize(objective, x0, steps=steps, lr=rate, maximize=False, optimizer=optimizer, momentum=momentum,
                   schedule=step_schedule(milestones, 0.1), alpha_norm=alpha_norm, alpha=alpha, tv=tv, beta=beta,
                   scale=B, seed=seed, progress=progress, desc=f"invert {name}",
                   device=getattr(model, "device", "cpu"))
    with no_grad():
        feats = model(as_batch(model, res.x), until=name).numpy().reshape(inits, -1).astype(np.float64)
    errors = np.sqrt(((feats - code) ** 2).sum(1) / norm2)
    flat = res.x.reshape(inits, -1)
    mad = np.abs(flat[:, None, :] - flat[None, :, :]).mean(-1)
    from .visualize import _display
    return Inversion(images=res.x, errors=errors, history=res.history, pairwise_mad=mad, code=code, layer=name,
                     display=_display(model, res.x), seconds=res.seconds)
