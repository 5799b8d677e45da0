"""Projected gradient descent (PGD) attacks on pixels, for adversarial training.

Madry et al. (2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks") train on the worst input within a small ball around each image,
found by a few steps of projected gradient *ascent* on the loss::

    delta_0 = random point of the ball          (random start)
    delta_{t+1} = P( delta_t + a * step(grad_pixels L(x + delta_t, y)) )
    x_adv = x + delta_T

``step`` is ``sign(g)`` for the L-infinity ball (each pixel moves by ``a``)
and ``g / ||g||_2`` for the L2 ball (the whole image moves by ``a``); ``P``
projects back onto the ball (clip each pixel to ``[-eps, eps]``; or rescale
``delta`` to norm ``eps`` when it is longer) and onto the valid pixels
(``x + delta`` in ``[0, 1]``).  Robustly trained networks have input
gradients that look like the object (Tsipras et al. 2019; Santurkar et al.
2019): ``scripts/train_robust.py`` fine-tunes the embedded model this way
(``te.load_model("robust")``).

Units: the attack lives on **pixels scaled to [0, 1]** (``eps = 0.5`` in L2
is an image change of Euclidean length 0.5 on that scale; ``eps = 2/255`` in
L-infinity moves no pixel by more than 2 grey levels), whatever the model's
preprocessing; the model sees ``image.to_model(255 * pixels)`` and the
gradient comes back through the same map (:func:`~.image.model_grad_to_pixels`).
Images are (N, H, W, C) uint8 or float on 0..255, as the scene generator
makes them.
"""
from __future__ import annotations

import numpy as np

from ..core import engine, ops
from ..core.engine import Tensor
from ..data.image import model_grad_to_pixels, to_model

NORMS = ("linf", "l2")


def _check(norm, eps):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (pixels on [0, 1]), got {eps!r}")


def _norms(delta):
    """Euclidean norm of each image of a batch (N, ...) -> (N, 1, 1, 1)."""
    return np.sqrt((delta.reshape(len(delta), -1).astype(np.float64) ** 2).sum(1)).reshape(-1, 1, 1, 1)


def project(delta, pixels, eps, norm="l2"):
    """``delta`` (N, H, W, C, on [0, 1]) moved onto the ``eps``-ball of ``norm``
    and then so that ``pixels + delta`` lies in [0, 1] (``pixels`` on [0, 1]).

    L-infinity: clip every value to ``[-eps, eps]``.  L2: scale each image's
    ``delta`` by ``min(1, eps / ||delta||_2)``.  The clip to the valid range
    only shrinks values towards 0, so it keeps the norm bound."""
    _check(norm, eps)
    delta = np.asarray(delta, np.float64)
    if norm == "linf":
        delta = np.clip(delta, -eps, eps)
    else:
        n = _norms(delta)
        delta = delta * np.minimum(1.0, eps / np.maximum(n, 1e-12))
    return np.clip(pixels + delta, 0.0, 1.0) - pixels


def loss_gradient(model, pixels, labels):
    """Mean cross-entropy of ``model`` on ``pixels`` (N, H, W, C on [0, 1]) and
    its gradient with respect to them, (N, H, W, C) on the same scale (chain
    rule: ``dL/dp01 = 255 * dL/dp255``, :func:`~.image.model_grad_to_pixels`).
    The weights get no gradient (their ``requires_grad`` is off meanwhile)."""
    params = model.parameters()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    try:
        x = Tensor(to_model(np.asarray(pixels) * 255.0, model), requires_grad=True)
        loss = ops.cross_entropy(model(x), np.asarray(labels, np.int64))
        loss.backward()
        g = model_grad_to_pixels(x.grad, model) * 255.0
    finally:
        for p, f in zip(params, flags):
            p.requires_grad = f
    return float(loss.data), g


def random_start(shape, eps, norm, rng):
    """A random ``delta`` in the ball: uniform in ``[-eps, eps]`` per value
    (L-infinity); a random direction of length ``eps`` (L2)."""
    if norm == "linf":
        return rng.uniform(-eps, eps, size=shape)
    d = rng.standard_normal(shape)
    return d * (eps / np.maximum(_norms(d), 1e-12))


def pgd(model, images, labels, eps, norm="l2", steps=3, step_size=None, random_init=True, rng=None):
    """Adversarial versions of ``images`` (N, H, W, C, uint8 or float on
    0..255): ``steps`` steps of projected gradient ascent on the cross-entropy
    of the true ``labels`` within the ``eps``-ball of ``norm`` (``"l2"`` or
    ``"linf"``, pixels on [0, 1]).  ``step_size`` defaults to
    ``2.5 * eps / steps`` (Madry et al.); ``random_init`` starts from a random
    point of the ball drawn from ``rng`` (default: the engine's generator,
    seeded per step by the data-parallel trainer).  The model is used in
    whatever train/eval mode it is in.  Returns float32 (N, H, W, C) on 0..255,
    not rounded (rounding to grey levels would move it out of the ball)."""
    _check(norm, eps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    p0 = np.asarray(images, np.float64) / 255.0
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    rng = engine.rng() if rng is None else rng
    delta = random_start(p0.shape, eps, norm, rng) if random_init and eps > 0 else np.zeros_like(p0)
    delta = project(delta, p0, eps, norm)
    for _ in range(steps if eps > 0 else 0):
        _, g = loss_gradient(model, p0 + delta, labels)
        if norm == "linf":
            move = np.sign(g)
        else:
            move = g / np.maximum(_norms(g), 1e-12)
        delta = project(delta + step_size * move, p0, eps, norm)
    return ((p0 + delta) * 255.0).astype(np.float32)


def robust_accuracy(model, images, labels, eps, norm="l2", steps=10, step_size=None, batch=100, seed=0,
                    progress=False):
    """Fraction of ``images`` still classified correctly after :func:`pgd`
    (eval mode; random start from ``np.random.default_rng(seed)``)."""
    was_training = any(l.training for l in model.layers.values())
    model.eval()
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, np.int64)
    correct = 0
    it = range(0, len(images), batch)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"PGD {norm} eps={eps:.4g}", unit="batch", leave=False)
    try:
        for i in it:
            adv = pgd(model, images[i:i + batch], labels[i:i + batch], eps, norm, steps, step_size, rng=rng)
            with engine.no_grad():
                scores = model(to_model(adv, model)).numpy()
            correct += int((scores.argmax(1) == labels[i:i + batch]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(images), 1)
