"""Optimisers and learning-rate schedules: one implementation for training
weights (scripts/train_embedded.py) and for optimising images
(:func:`tinygrad_explain.explain.optimize`, where the image is the one parameter).

* :class:`SGD` (momentum, Nesterov, weight decay) and :class:`Adam` (its update
  one Numba pass, ``kernels/adam.py``; element-wise CuPy code on the GPU), each
  with ``step()``, ``zero_grad()``, ``state_dict()`` / ``load_state_dict()``;
* schedules as functions of the step number: :func:`cosine_lr`, :func:`step_lr`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from ..core import engine


# --------------------------------------------------------------------------
# optimisers
# --------------------------------------------------------------------------
class Optimizer:
    """Base class: a list of parameter Tensors and a learning rate."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = float(lr)
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _buffers(self) -> dict:
        """name -> list of arrays (one per parameter), the state to checkpoint."""
        return {}

    def state_dict(self) -> dict:
        """Plain arrays only: ``{"lr": ..., "steps": ..., "<buffer>.<i>": array}``."""
        out = {"lr": np.asarray(self.lr, np.float64), "steps": np.asarray(self.steps, np.int64)}
        for name, bufs in self._buffers().items():
            for i, b in enumerate(bufs):
                out[f"{name}.{i}"] = np.asarray(b)
        return out

    def load_state_dict(self, state: dict):
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name, bufs in self._buffers().items():
            for i, p in enumerate(self.params):
                key = f"{name}.{i}"
                if key not in state:
                    raise KeyError(f"optimizer state is missing {key!r}")
                arr = np.asarray(state[key])
                if arr.shape != p.data.shape:
                    raise ValueError(f"optimizer state {key!r} has shape {arr.shape}, parameter has {p.data.shape}")
                bufs[i][...] = arr
        return self


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's formulation).

        g = grad + weight_decay * w
        v = momentum * v + g
        w -= lr * (g + momentum * v)   if nesterov   else   lr * v

    Parameters whose ``grad`` is None are skipped.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)
        self.velocity = [engine.array_module(p.data).zeros_like(p.data) for p in self.params]

    def _buffers(self):
        return {"velocity": self.velocity} if self.momentum else {}

    def step(self):
        self.steps += 1
        lr, mu, wd = np.float32(self.lr), np.float32(self.momentum), np.float32(self.weight_decay)
        for p, v in zip(self.params, self.velocity):
            if p.grad is None:
                continue
            g = p.grad.astype(p.data.dtype, copy=True)
            if wd:
                g += wd * p.data
            if mu:
                v *= mu
                v += g
                g = g + mu * v if self.nesterov else v
            p.data -= lr * g
            p.mark_changed()


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015); ``weight_decay`` is decoupled (AdamW) when
    ``decoupled=True``, otherwise added to the gradient (L2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=True):
        super().__init__(params, lr)
        self.b1, self.b2 = map(float, betas)
        self.eps, self.weight_decay, self.decoupled = float(eps), float(weight_decay), bool(decoupled)
        self.m = [engine.array_module(p.data).zeros(p.data.shape, p.data.dtype) for p in self.params]
        self.v = [engine.array_module(p.data).zeros(p.data.shape, p.data.dtype) for p in self.params]

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def step(self):
        self.steps += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            if engine.array_module(p.data) is np:
                if not p.data.flags.c_contiguous:   # a frozen nn.Linear weight is held column-major
                    p.data = np.ascontiguousarray(p.data)
                K.adam.step(p.data, p.grad, m, v, self.lr, self.b1, self.b2, self.eps, self.weight_decay,
                            self.decoupled, self.steps)
            else:                                   # a GPU (CuPy) array: the same formula, element-wise
                _adam_step_xp(p.data, p.grad, m, v, self.lr, self.b1, self.b2, self.eps, self.weight_decay,
                              self.decoupled, self.steps)
            p.mark_changed()


def _adam_step_xp(w, g, m, v, lr, b1, b2, eps, weight_decay, decoupled, t):
    """``kernels/adam.py``'s update written with array operations (for CuPy arrays)."""
    f = w.dtype.type
    g = g.astype(w.dtype, copy=False)
    if weight_decay and not decoupled:
        g = g + f(weight_decay) * w
    m *= f(b1)
    m += f(1 - b1) * g
    v *= f(b2)
    v += f(1 - b2) * g * g
    if weight_decay and decoupled:
        w -= f(lr * weight_decay) * w
    w -= f(lr / (1 - b1 ** t)) * m / (engine.array_module(w).sqrt(v / f(1 - b2 ** t)) + f(eps))


# --------------------------------------------------------------------------
# learning-rate schedules: step (0-based) -> learning rate
# --------------------------------------------------------------------------
def cosine_lr(step, total_steps, base_lr, warmup_steps=0, final_lr=0.0, warmup_from=0.1):
    """Linear warm-up from ``warmup_from * base_lr`` over ``warmup_steps``,
    then half a cosine from ``base_lr`` down to ``final_lr`` at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        f = step / warmup_steps
        return base_lr * (warmup_from + (1 - warmup_from) * f)
    span = max(1, total_steps - warmup_steps)
    f = min(1.0, (step - warmup_steps) / span)
    return final_lr + (base_lr - final_lr) * 0.5 * (1 + math.cos(math.pi * f))


def step_lr(step, base_lr, milestones, gamma=0.1):
    """``base_lr * gamma ** (number of milestones <= step)``."""
    return base_lr * gamma ** sum(step >= m for m in milestones)
