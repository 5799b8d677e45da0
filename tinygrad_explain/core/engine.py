"""The whole of reverse-mode autodiff, readable in one sitting.

A ``Tensor`` wraps an array (NumPy on the CPU, CuPy on the GPU).  Every
operation is a ``Function``: its ``forward`` computes the output array from
the input arrays and saves what the backward pass needs; its ``backward``
turns dL/d(output) into dL/d(input) for each input -- the chain rule, one
op at a time.  ``Tensor.backward()`` walks the graph in reverse topological
order and accumulates gradients into the leaves that asked for them.

Two details matter for explaining networks:

* **Only what is needed is computed.**  Each Function is told which of its
  inputs need a gradient (``ctx.needs_grad``).  With frozen weights and an
  image that requires grad (backprop to the input), no weight gradient is
  ever computed.
* **The ReLU backward rule is engine state.**  ``with relu_backward("guided"):``
  changes what *every* ReLU passes back while that backward runs
  (see :mod:`tinygrad_explain.core.ops` ``ReLU``), however the model is written.

Both switches (``no_grad`` and the ReLU rule) are **per thread** (context
variables): a ``with relu_backward("guided"):`` or ``no_grad()`` in one
thread never changes what another thread computes.  A new thread starts
with the defaults (grad on, rule "backprop").
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from types import ModuleType

import numpy as np
from numpy.typing import ArrayLike

# A Tensor's data: a numpy.ndarray, or a cupy.ndarray on the GPU (the same interface).
Array = np.ndarray

# The ReLU backward rules, in one table: name -> (mask by x, mask by g), where
#     dx = g * [x > 0 if mask by x] * [g > 0 if mask by g]
# The engine, the CPU kernel (kernels/relu.py) and the GPU kernel (kernels/relu.cu) all read it.
RELU_MASKS = {
    "backprop": (True, False),     # dx = g * [x > 0]               the true gradient
    "deconvnet": (False, True),    # dx = g * [g > 0]               Zeiler & Fergus 2014
    "guided": (True, True),        # dx = g * [x > 0] * [g > 0]     Springenberg et al. 2015
}
RELU_RULES = tuple(RELU_MASKS)
_GRAD_ENABLED = contextvars.ContextVar("tinygrad_explain_grad_enabled", default=True)
_RELU_RULE = contextvars.ContextVar("tinygrad_explain_relu_rule", default="backprop")


@contextlib.contextmanager
def _setting(var: contextvars.ContextVar, value: object) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def set_context(var: contextvars.ContextVar, value: object) -> contextlib.AbstractContextManager[None]:
    """Set a context variable for the ``with`` block (this thread only)."""
    return _setting(var, value)


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Inside this block no graph is recorded (inference, finite differences)."""
    return set_context(_GRAD_ENABLED, False)


def is_grad_enabled() -> bool:
    return _GRAD_ENABLED.get()


def relu_backward(rule: str) -> contextlib.AbstractContextManager[None]:
    """Choose what every ReLU passes back while ``.backward()`` runs: one of
    ``RELU_RULES`` ("backprop", "deconvnet", "guided"), whose masks ``RELU_MASKS`` gives."""
    if rule not in RELU_RULES:
        raise ValueError(f"unknown ReLU backward rule {rule!r}; expected one of {RELU_RULES}")
    return set_context(_RELU_RULE, rule)


def current_relu_rule() -> str:
    return _RELU_RULE.get()


def array_module(a: object) -> ModuleType:
    """The array module (numpy or cupy) that owns array ``a``."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy
        return cupy
    return np


# the old private name, kept until the branches written before the rename are merged (issue #29);
# tests/test_architecture.py fails on any module that still imports it
_xp = array_module


class Tensor:
    """An n-dimensional array that remembers how it was made.

    ``data``  the array (numpy.ndarray or cupy.ndarray)
    ``grad``  dL/d(self) after ``backward()``, same shape, or None
    """

    __array_priority__ = 1000  # so that ``ndarray * Tensor`` calls Tensor.__rmul__

    def __init__(self, data: Tensor | ArrayLike, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or array_module(data) is not np):
            data = np.asarray(data)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require grad, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None        # the Function that produced this tensor (None for leaves)
        self._parents = ()      # that Function's tensor inputs
        self._released = False  # made by a Function whose graph a backward() has freed
        self._retains_grad = False  # a non-leaf that keeps its .grad (retain_grad())
        self.version = 0        # bumped by mark_changed() after an in-place write to .data

    # ----- array-like conveniences -------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self) -> str:
        """Where ``data`` lives: "cpu" or "gpu"."""
        return "cpu" if array_module(self.data) is np else "gpu"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if needed)."""
        return self.data.get() if array_module(self.data) is not np else self.data

    def to(self, device: str) -> Tensor:
        """This tensor on ``device`` ("cpu" or "gpu"): itself if it is there already,
        else a copy (an explicit host <-> device transfer) with the same requires_grad."""
        from .device import move
        data = move(self.data, device)
        return self if data is self.data else Tensor(data, requires_grad=self.requires_grad)

    def retain_grad(self) -> Tensor:
        """Keep dL/d(self) in ``.grad`` after ``backward()`` although ``self`` is not a leaf
        (an intermediate activation: "what gradient reaches conv3?").  Returns self."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad: "
                               "nothing will flow back through it")
        self._retains_grad = True
        return self

    def mark_changed(self) -> None:
        """Say that ``.data`` was written in place (the optimisers call it after each
        update).  Copies made from the old values -- ``nn.Linear``'s bfloat16
        weights -- are remade at next use.  Assigning a new array to ``.data``
        needs no call."""
        self.version += 1

    def detach(self) -> Tensor:
        return Tensor(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        g = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{g})"

    # ----- backward ------------------------------------------------------
    def backward(self, grad: Tensor | ArrayLike | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into ``leaf.grad`` for every leaf
        that requires grad.  ``grad`` defaults to 1 for a one-element tensor.

        Intermediate gradients are freed as soon as they have been passed
        on, and the graph is released unless ``retain_graph`` is set.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(was it computed under no_grad(), or from inputs that do not require grad?)")
        xp = array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad must be given for a non-scalar output of shape {self.shape}")
            grad = xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"grad has shape {grad.shape}, expected {self.shape}")

        # topological order of the nodes that need a gradient
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p.requires_grad and id(p) not in seen:
                    stack.append((p, False))

        grads = {id(self): grad}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if node._released:
                raise RuntimeError("backward through a graph that an earlier backward() already freed; "
                                   "pass retain_graph=True to the first backward, or recompute the forward pass")
            if g is not None and (node._ctx is None or node._retains_grad):
                # a leaf, or a tensor that asked to keep its gradient (never aliasing another array)
                node.grad = g.copy() if node.grad is None else node.grad + g
            if node._ctx is None or g is None:
                continue
            in_grads = node._ctx.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for p, pg in zip(node._parents, in_grads):
                if pg is None or not p.requires_grad:
                    continue
                grads[id(p)] = pg if id(p) not in grads else grads[id(p)] + pg
            if not retain_graph:
                node._ctx, node._parents, node._released = None, (), True

    # ----- operators (defined in ops.py, attached there) ----------------


class Function:
    """One differentiable operation: ``forward`` on arrays, ``backward`` on gradients.

    Subclasses implement ``forward(self, *arrays, **params) -> array`` and
    ``backward(self, grad_out) -> tuple of grads`` (one per tensor input, None
    where ``self.needs_grad[i]`` is False).  ``apply`` wires them into the graph.
    """

    needs_grad: tuple[bool, ...] = ()

    @classmethod
    def apply(cls, *inputs: Tensor | ArrayLike, **params) -> Tensor:
        tensors = tuple(t if isinstance(t, Tensor) else Tensor(t) for t in inputs)
        if len(tensors) > 1:
            _check_same_device(cls.__name__, tensors)
        ctx = cls()
        ctx.needs_grad = tuple(t.requires_grad for t in tensors) if _GRAD_ENABLED.get() else (False,) * len(tensors)
        out = Tensor(ctx.forward(*(t.data for t in tensors), **params))
        if any(ctx.needs_grad):
            out.requires_grad = True
            out._ctx, out._parents = ctx, tensors
        return out

    def forward(self, *arrays: Array, **params) -> Array:
        raise NotImplementedError

    def backward(self, grad_out: Array) -> Array | tuple[Array | None, ...]:
        raise NotImplementedError


def release_intermediate(t: Tensor, *alive: Tensor) -> None:
    """Let go of ``t.data`` for an intermediate output that only the graph still holds.

    The backward pass never reads a tensor's ``data``: each Function saved the arrays
    its own backward needs (a ReLU its output, a convolution its input, max-pooling its
    switches).  A network runner that made ``t`` and handed it to every layer that reads
    it may therefore drop its array -- a convolution's output before its ReLU is then
    freed at once, as PyTorch frees it (its graph holds saved arrays, not tensors).
    Nothing is dropped for a leaf, a tensor that keeps its gradient (``retain_grad``, a
    ``keep=`` output), a tensor outside a graph (reference counting frees those), or one
    that is ``alive`` (still handed out, e.g. returned by an identity layer)."""
    if t._ctx is None or t._retains_grad or any(t is a for a in alive):
        return
    t.data = None


def _check_same_device(op, tensors):
    """Refuse an op whose inputs live on different devices (no silent host <-> device copies)."""
    where = ["cpu" if array_module(t.data) is np else "gpu" for t in tensors]
    if len(set(where)) > 1:
        raise RuntimeError(f"{op}: inputs on different devices ({', '.join(where)}); move them explicitly "
                           "with Tensor.to(device) / Network.to(device)")


_RNG = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the engine's random generator (dropout masks, initialisation)."""
    global _RNG
    _RNG = np.random.default_rng(seed)


def rng() -> np.random.Generator:
    """The engine's random generator (dropout masks, initialisation)."""
    return _RNG


def set_rng(generator: np.random.Generator) -> None:
    """Make ``generator`` the engine's generator (a training checkpoint restores
    the saved one, so a resumed run draws the same dropout masks)."""
    global _RNG
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"set_rng needs a numpy.random.Generator, got {type(generator).__name__}")
    _RNG = generator
