"""The training loop of the engine: loss, initialisation, one epoch.

What the embedded model's training script (``scripts/train_embedded.py``)
runs, in plain NumPy on top of :mod:`tinygrad_explain.core.engine`; its other
parts live where their names say:

* here: :func:`smoothed_cross_entropy` (label smoothing), :func:`predict` /
  :func:`evaluate`, He initialisation (:func:`he_init`), :func:`set_dropout`,
  :func:`batch_gradients` (forward + backward of one batch) and
  :func:`train_epoch`;
* :mod:`.optim`: the optimisers (SGD, Adam) and learning-rate schedules;
* :mod:`.checkpoint`: pickle-free ``.npz`` checkpoints;
* :mod:`.parallel`: data-parallel helper processes, malloc tuning;
* :mod:`.image`: pixels -> model space for batches (:func:`~.image.to_model`);
* :mod:`.scenes`: the data set and its augmentation (:func:`~.scenes.augment`).
"""
from __future__ import annotations

import math

import numpy as np

from ..core import engine, ops
from ..core.engine import Tensor, no_grad
from ..data.image import to_model
from ..data.scenes import augment


# --------------------------------------------------------------------------
# loss and evaluation
# --------------------------------------------------------------------------
def smoothed_cross_entropy(scores: Tensor, labels, smoothing=0.0) -> Tensor:
    """Cross-entropy with label smoothing: the target puts ``1 - smoothing``
    on the true class and ``smoothing / K`` on every class.  ``smoothing=0``
    is exactly :func:`ops.cross_entropy`."""
    labels = np.asarray(labels)
    if not smoothing:
        return ops.cross_entropy(scores, labels)
    n, k = scores.shape
    target = np.full((n, k), smoothing / k, dtype=scores.dtype)
    target[np.arange(n), labels] += 1 - smoothing
    return (ops.log_softmax(scores) * Tensor(target)).sum() * (-1.0 / n)


def predict(model, images_uint8, batch=256, progress=False):
    """Class scores (N, K) float32 of uint8 NHWC images, in eval mode, no graph."""
    was_training = any(l.training for l in model.layers.values())
    model.eval()
    out = []
    it = range(0, len(images_uint8), batch)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="batch", leave=False)
    try:
        with no_grad():
            for i in it:
                out.append(model(to_model(images_uint8[i:i + batch], model)).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def evaluate(model, images_uint8, labels, batch=256, progress=False, parallel=None):
    """Top-1 accuracy (0..1) of ``model`` on uint8 NHWC images, preprocessed
    with the mean/std stored in ``model.preprocessing``.  ``parallel``: a
    :class:`~.parallel.DataParallel` of ``model`` that shares the images between its
    processes (no progress bar then)."""
    scores = (parallel.predict(images_uint8, batch) if parallel is not None
              else predict(model, images_uint8, batch, progress))
    return float((scores.argmax(1) == np.asarray(labels)).mean())


# --------------------------------------------------------------------------
# initialisation and the training loop
# --------------------------------------------------------------------------
def he_init(model, rng=None, last_std=0.01, bias=0.0):
    """Re-initialise conv/linear weights with He (Kaiming) normal init,
    ``std = sqrt(2 / fan_in)`` -- right for ReLU nets without batch norm, whose
    signal would shrink layer by layer with PyTorch's default uniform init --
    the last layer with ``N(0, last_std)``, biases with ``bias``."""
    from ..core import nn
    rng = engine.rng() if rng is None else rng
    layers = [l for l in model.layers.values() if isinstance(l, (nn.Conv2d, nn.Linear))]
    for i, l in enumerate(layers):
        he_init_layer(l, rng, last_std if i == len(layers) - 1 else None, bias)
    return model


def he_init_layer(layer, rng, std=None, bias=0.0):
    """He normal initialisation of one conv/linear layer in place: weight
    ``N(0, std^2)`` with ``std = sqrt(2 / fan_in)`` unless given, bias ``bias``
    (float32, on the host)."""
    w = layer.weight.data
    if std is None:
        std = math.sqrt(2.0 / int(np.prod(w.shape[1:])))
    layer.weight.data = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(std)
    layer.bias.data = np.full(layer.bias.data.shape, bias, np.float32)
    return layer


def set_dropout(model, p):
    """Set the probability of every Dropout layer of ``model`` to ``p``
    (an early-dropout schedule switches it off after the first epochs);
    ``nn.Dropout`` checks the value."""
    from ..core import nn
    for layer in model.layers.values():
        if isinstance(layer, nn.Dropout):
            layer.p = p
    return model


def batch_gradients(model, xb, yb, smoothing, attack=None):
    """Forward + backward of one (part of a) batch of uint8 NHWC images ``xb`` with
    labels ``yb``; returns (loss, #correct); the gradients are left in the
    parameters' ``.grad`` (the data-parallel helpers call it too).
    ``attack(model, xb, yb)``: replaces the images by others (pixels, 0..255)
    before the step -- adversarial training trains on ``adversarial.pgd``'s
    (``scripts/train_robust.py``); a module-level function or a
    ``functools.partial`` of one, so that it can travel to the helpers."""
    if attack is not None:
        xb = attack(model, xb, yb)
    scores = model(to_model(xb, model))
    loss = smoothed_cross_entropy(scores, yb, smoothing)
    model.zero_grad()
    loss.backward()
    return float(loss.data), int((scores.data.argmax(1) == yb).sum())


def train_epoch(model, optimizer, images, labels, batch, rng, lr_at=None, first_step=0,
                smoothing=0.0, flip=True, shift=0, jitter=0.0, n=None, progress=True, desc="train",
                parallel=None, attack=None):
    """One epoch of minibatch training over a random permutation (from ``rng``)
    of ``images`` (uint8 NHWC; the first ``n`` of the permutation if given).

    ``lr_at(step)`` sets ``optimizer.lr`` before each step (global step
    numbers start at ``first_step``).  ``parallel``: a :class:`~.parallel.DataParallel`
    that computes the gradients (dropout seeded per step); without it the
    engine's generator draws the dropout masks.  ``attack``: see
    :func:`batch_gradients` (applied after the augmentation).  Returns ``(mean loss,
    accuracy)`` over the epoch's training batches (dropout and augmentation on).
    """
    model.train()
    order = rng.permutation(len(images))
    if n is not None:
        order = order[:n]
    starts = range(0, len(order) - batch + 1, batch)     # drop the ragged last batch
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(starts), desc=desc, unit="batch", dynamic_ncols=True)
    tot_loss = tot_correct = seen = 0.0
    for k, s in enumerate(starts):
        idx = np.sort(order[s:s + batch])
        xb = augment(images[idx], rng, flip=flip, shift=shift, jitter=jitter)
        yb = np.asarray(labels[idx], np.int64)
        if lr_at is not None:
            optimizer.lr = lr_at(first_step + k)
        if parallel is not None:
            lv, correct = parallel.grads(first_step + k, xb, yb, smoothing, attack)
        else:
            lv, correct = batch_gradients(model, xb, yb, smoothing, attack)
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss became {lv} at step {first_step + k}; lower the learning rate")
        optimizer.step()
        tot_loss += lv * len(idx)
        tot_correct += correct
        seen += len(idx)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_correct / seen:.4f}", refresh=False,
                            lr=f"{optimizer.lr:.4g}")
    if bar is not None:
        bar.close()
    return tot_loss / max(seen, 1), tot_correct / max(seen, 1)


