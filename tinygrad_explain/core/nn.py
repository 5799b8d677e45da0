"""Layers: small objects that hold parameters and call one op.

Every layer can describe itself as a JSON-able dict (``spec()``) and be
rebuilt from it (``layer_from_spec``): that is how the HDF5 model file
stores the architecture.  Parameters are ``Tensor``s, frozen
(``requires_grad=False``) unless ``Network.requires_grad_(True)`` is called
for training -- explaining a network only needs gradients for the image.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import weakref
from collections.abc import Sequence

import numpy as np

from .. import kernels as K
from . import ops
from .engine import Tensor, array_module, rng
from .engine import set_context as _set_var


class Layer:
    type = "layer"
    params: tuple = ()

    def __init__(self) -> None:
        self.training = False

    def spec(self) -> dict:
        return {"type": self.type}

    def out_shape(self, in_shape: tuple) -> tuple:
        """(C, H, W) or (F,) of the output for an input of shape ``in_shape`` (no batch)."""
        return in_shape

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def copy_in(self, name: str, value: np.ndarray) -> np.ndarray:
        """A copy of ``value`` (checked: shape, finite floats) to become parameter
        ``name``'s data, in that parameter's dtype (``Network.load_state_dict``)."""
        return np.array(value, dtype=getattr(self, name).data.dtype)


def positive_ints(layer: str, **values: int) -> list[int]:
    """Check that every value is a whole number >= 1 (>= 0 for padding); return them as ints."""
    out = []
    for name, v in values.items():
        lo = 0 if name == "padding" else 1
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{layer}: {name} must be an integer >= {lo}, got {v!r}")
        out.append(int(v))
    return out


# Set while a model file is read (modelfile.load_model): every weight is overwritten by the file's,
# so the layers skip drawing random ones (for AlexNet, 61 M numbers: about half a second).
_no_init = contextvars.ContextVar("no_init", default=False)


def weights_to_be_loaded() -> contextlib.AbstractContextManager[None]:
    """Build layers without drawing their initial weights (uninitialised memory, not the
    engine's generator): only for weights that are all loaded right after."""
    return _set_var(_no_init, True)


def _uniform(shape, bound):
    """U(-bound, bound) in float32, drawn without a float64 temporary."""
    if _no_init.get():
        return np.empty(shape, np.float32)
    a = rng().random(shape, dtype=np.float32)
    a *= np.float32(2 * bound)
    a -= np.float32(bound)
    return a


def _uniform_forward_layout(shape, bound, rows=256):
    """The values of ``_uniform(shape, bound)`` for a matrix W (O, K), held in the
    forward layout: the view Wt.T of a contiguous Wt (K, O).  Drawn ``rows`` rows
    of W at a time (the generator's stream does not depend on the chunking) and
    transposed into Wt's columns, so there is no full-size temporary."""
    O, K_ = shape
    wt = np.empty((K_, O), np.float32)
    if _no_init.get():
        return wt.T
    for o0 in range(0, O, rows):
        chunk = _uniform((min(O, o0 + rows) - o0, K_), bound)
        K.linear.pack(chunk, out=wt[:, o0:o0 + chunk.shape[0]])
    return wt.T


class Conv2d(Layer):
    type = "conv"
    params = ("weight", "bias")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 groups: int = 1):
        super().__init__()
        in_channels, out_channels, kernel_size, stride, padding, groups = positive_ints(
            "conv", in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
            stride=stride, padding=padding, groups=groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"conv: channels ({in_channels}, {out_channels}) not divisible by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        fan_in = in_channels // groups * kernel_size ** 2
        bound = 1 / math.sqrt(fan_in)           # PyTorch's default initialisation
        self.weight = Tensor(_uniform((out_channels, in_channels // groups, kernel_size, kernel_size), bound))
        self.bias = Tensor(_uniform((out_channels,), bound))

    def spec(self) -> dict:
        return {"type": self.type, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "groups": self.groups}

    def out_shape(self, s: tuple) -> tuple:
        k, st, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, (s[1] + 2 * p - k) // st + 1, (s[2] + 2 * p - k) // st + 1)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class Linear(Layer):
    """Fully connected layer, weight (out, in).

    For a few rows (``ops.Linear.SKINNY_MAX_ROWS``) the forward product reads the
    weight transposed, Wt (in, out) contiguous (kernels/linear.py).  A frozen CPU
    weight is *held* in that layout, one copy: ``weight.data`` is the view Wt.T
    -- the same values, shape (out, in), column-major.  It is laid out so when
    it is made (``__init__``, ``Network.load_state_dict``: drawn or read
    straight into Wt) and, for any other array assigned to ``weight.data``
    (``to("cpu")``, user code), at the next call (``arrange_weight``).  In-place
    writes need no care: there is no second copy to go stale.  The backward to
    the input reads the same array (BLAS, see ``kernels.linear.backward``).

    A trainable weight (``requires_grad``; ``Network.requires_grad_`` arranges
    it at once) is held C-contiguous, as the optimisers need; its forward uses
    BLAS.  GPU weights are left as they are.

    ``storage = "bfloat16"`` (an explicit option, off by default) adds copies
    for both products in bfloat16 -- half the bytes to read, float32
    arithmetic, each weight rounded to 8 significant bits; the product error is
    printed by ``scripts/bench_cpu.py --reduced``.  They are made at first use
    and remade when the weight changes: a new array assigned to ``weight.data``
    or ``weight.mark_changed()`` after an in-place write (the optimisers call
    it).  They apply to float32 inputs of up to SKINNY_MAX_ROWS rows and are
    not pickled (they are remade)."""
    type = "linear"
    params = ("weight", "bias")

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = positive_ints("linear", in_features=in_features,
                                                            out_features=out_features)
        bound = 1 / math.sqrt(in_features)
        self.weight = Tensor(_uniform_forward_layout((out_features, in_features), bound))
        self.bias = Tensor(_uniform((out_features,), bound))
        self._packed = None             # bfloat16 copies: (weakref to the weight array, its version, copies)
        self.storage = None

    def spec(self) -> dict:
        return {"type": self.type, "in_features": self.in_features, "out_features": self.out_features}

    def out_shape(self, s: tuple) -> tuple:
        return (self.out_features,)

    @property
    def storage(self) -> str | None:
        """None (the weight's own dtype) or "bfloat16": how the packed copies are stored."""
        return self._storage

    @storage.setter
    def storage(self, value: str | None) -> None:
        if value not in (None, "bfloat16"):
            raise ValueError(f"linear: storage must be None or 'bfloat16', got {value!r}")
        self._storage = value

    def arrange_weight(self) -> None:
        """Hold the weight as its products read it: frozen on the CPU, in the
        forward layout (the view Wt.T of a contiguous Wt); trainable, C-contiguous
        (W itself).  A no-op when it already is, and for GPU weights."""
        w = self.weight
        if array_module(w.data) is not np or w.data.ndim != 2:
            return
        forward = K.linear.in_forward_layout(w.data)
        if not w.requires_grad and not forward:
            w.data = K.linear.pack(w.data).T
        elif w.requires_grad and forward and not w.data.flags.c_contiguous:
            w.data = K.linear.pack(w.data.T)        # transposed back: W (out, in) contiguous

    def copy_in(self, name: str, value: np.ndarray) -> np.ndarray:
        """A frozen CPU weight is read straight into the forward layout (one
        transpose instead of a copy); anything else as ``Layer.copy_in``."""
        t = getattr(self, name)
        if name == "weight" and not t.requires_grad and array_module(t.data) is np and np.ndim(value) == 2:
            return K.linear.pack(np.asarray(value), t.data.dtype).T
        return super().copy_in(name, value)

    def packed_weight(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(forward matrix, backward matrix or None) for ``ops.Linear``: Wt, the
        array the frozen weight is held in (``weight.data.T``, no copy), and None
        (the backward reads the weight itself); with bfloat16 storage, Wt and W in
        bfloat16 bits (kept per weight version).  None for a trainable or GPU weight."""
        w = self.weight
        if w.requires_grad or array_module(w.data) is not np:
            self._packed = None
            return None
        self.arrange_weight()
        if self.storage is None:
            self._packed = None
            return w.data.T, None
        p = self._packed
        if p is None or p[0]() is not w.data or p[1] != w.version:
            self._packed = None                 # free the old copies before making the new ones
            wt = K.linear.to_bfloat16(w.data.T)
            self._packed = p = (weakref.ref(w.data), w.version, (wt, K.linear.pack(wt)))
        return p[2]

    def __getstate__(self):
        return dict(self.__dict__, _packed=None)

    @property
    def packed_nbytes(self) -> int:
        """Bytes held besides the weight itself: the bfloat16 copies (0 without;
        the forward layout is the weight, not a copy)."""
        return 0 if self._packed is None else sum(c.nbytes for c in self._packed[2])

    def __call__(self, x: Tensor) -> Tensor:
        self.arrange_weight()
        return ops.linear(x, self.weight, self.bias, packed=self.packed_weight)


class ReLU(Layer):
    type = "relu"

    def __call__(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class _Pool2d(Layer):
    """A k x k pooling window, stride, padding and ``ceil_mode`` (PyTorch's output size rule)."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = positive_ints(self.type, kernel_size=kernel_size, stride=stride,
                                                                padding=padding)
        if self.padding * 2 > self.kernel_size:
            raise ValueError(f"{self.type}: padding {padding} must be at most half of kernel_size {kernel_size}")
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise ValueError(f"{self.type}: ceil_mode must be true or false, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)

    def spec(self) -> dict:
        d = {"type": self.type, "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}
        if self.ceil_mode:              # only when set: the files of floor-mode networks stay as they were
            d["ceil_mode"] = True
        return d

    def out_shape(self, s: tuple) -> tuple:
        k, st, p = self.kernel_size, self.stride, self.padding
        return (s[0],) + tuple(K.im2col.out_size(n, k, st, p, self.ceil_mode) for n in s[1:])


class MaxPool2d(_Pool2d):
    type = "maxpool"

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 0, ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, ceil_mode)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)


class AvgPool2d(_Pool2d):
    """Average pooling (``ops.avg_pool2d``, PyTorch's semantics); stride defaults to kernel_size."""
    type = "avgpool"

    def __init__(self, kernel_size: int = 2, stride: int | None = None, padding: int = 0,
                 count_include_pad: bool = True, ceil_mode: bool = False):
        super().__init__(kernel_size, kernel_size if stride is None else stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise ValueError(f"avgpool: count_include_pad must be true or false, got {count_include_pad!r}")
        self.count_include_pad = bool(count_include_pad)

    def spec(self) -> dict:
        return dict(super().spec(), count_include_pad=self.count_include_pad, ceil_mode=self.ceil_mode)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad, self.ceil_mode)


class GlobalAvgPool2d(Layer):
    """(C, H, W) -> (C, 1, 1): the mean of each channel (ResNet, MobileNet, SqueezeNet, GoogLeNet)."""
    type = "global_avgpool"

    def out_shape(self, s: tuple) -> tuple:
        return (s[0], 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.global_avg_pool2d(x)


class LocalResponseNorm(Layer):
    type = "lrn"

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        (self.size,) = positive_ints("lrn", size=size)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)
        if not (np.isfinite([self.alpha, self.beta, self.k]).all() and self.k > 0 and self.alpha >= 0):
            raise ValueError(f"lrn: need finite alpha >= 0, beta and k > 0, got alpha={alpha}, beta={beta}, k={k}")

    def spec(self) -> dict:
        return {"type": self.type, "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}

    def __call__(self, x: Tensor) -> Tensor:
        return ops.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class AdaptiveAvgPool2d(Layer):
    type = "adaptive_avgpool"

    def __init__(self, output_size: int | tuple[int, int] = (6, 6)):
        super().__init__()
        try:
            oh, ow = ops.pair(output_size)
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"adaptive_avgpool: output_size must be an int or a pair, got {output_size!r}") from None
        self.output_size = tuple(positive_ints("adaptive_avgpool", output_height=oh, output_width=ow))

    def spec(self) -> dict:
        return {"type": self.type, "output_size": list(self.output_size)}

    def out_shape(self, s: tuple) -> tuple:
        return (s[0],) + self.output_size

    def __call__(self, x: Tensor) -> Tensor:
        return ops.adaptive_avg_pool2d(x, self.output_size)


class BatchNorm2d(Layer):
    """Inference batch normalisation (``ops.batch_norm``): parameters weight (gamma) and bias
    (beta), and the running statistics running_mean, running_var (PyTorch's state-dict
    names).  The statistics are parameters for ``state_dict``, ``astype``, ``to`` and the
    model file, but the op takes them as constants: they never get a gradient."""
    type = "batchnorm"
    params = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        (self.num_features,) = positive_ints("batchnorm", num_features=num_features)
        if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
            raise ValueError(f"batchnorm: eps must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)
        C = self.num_features
        self.weight, self.bias = Tensor(np.ones(C, np.float32)), Tensor(np.zeros(C, np.float32))
        self.running_mean, self.running_var = Tensor(np.zeros(C, np.float32)), Tensor(np.ones(C, np.float32))

    def spec(self) -> dict:
        return {"type": self.type, "num_features": self.num_features, "eps": self.eps}

    def copy_in(self, name: str, value: np.ndarray) -> np.ndarray:
        if name == "running_var" and (np.asarray(value) + self.eps <= 0).any():
            raise ValueError(f"batchnorm: running_var + eps must be > 0, got min {np.min(value)}")
        return super().copy_in(name, value)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.batch_norm(x, self.running_mean.data, self.running_var.data, self.weight, self.bias, self.eps)


def fold_batch_norm(conv_weight: np.ndarray, conv_bias: np.ndarray | None, mean: np.ndarray, var: np.ndarray,
                    gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """A convolution followed by inference batch norm, as one convolution (at load time):

        bn(conv(x)) = (w * x + b - mean) * s + beta,   s = gamma / sqrt(var + eps)
                    = (w * s) * x + ((b - mean) * s + beta)

    so weight' = w * s (per output channel), bias' = (b - mean) * s + beta (b = 0 if None).
    Computed in float64 and returned in float64 (``Network.load_state_dict`` casts to
    the model's dtype).  Works for any weight (O, ...) whose first axis is the channel."""
    w = np.asarray(conv_weight, np.float64)
    O = w.shape[0] if w.ndim else 0
    b = np.zeros(O) if conv_bias is None else np.asarray(conv_bias, np.float64)
    parts = {"conv_bias": b, "mean": mean, "var": var, "gamma": gamma, "beta": beta}
    for name, v in parts.items():
        if np.shape(v) != (O,):
            raise ValueError(f"fold_batch_norm: {name} has shape {np.shape(v)}, expected ({O},) for a "
                             f"weight of shape {np.shape(conv_weight)}")
    var = np.asarray(var, np.float64)
    if not (np.isfinite(eps) and (var + eps > 0).all()):
        raise ValueError(f"fold_batch_norm: var + eps must be > 0 (eps={eps}, min var {var.min()})")
    s = np.asarray(gamma, np.float64) / np.sqrt(var + eps)
    weight = w * s.reshape((O,) + (1,) * (w.ndim - 1))
    bias = (b - np.asarray(mean, np.float64)) * s + np.asarray(beta, np.float64)
    return weight, bias


class Clip(Layer):
    """y = min(max(x, lo), hi) (``ops.clip``); the ReLU rules act at the lower bound."""
    type = "clip"

    def __init__(self, lo: float | None = 0.0, hi: float | None = 6.0):
        super().__init__()
        lo = -math.inf if lo is None else lo
        hi = math.inf if hi is None else hi
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not math.isnan(lo)
                and not math.isnan(hi) and lo <= hi):
            raise ValueError(f"clip: need numbers lo <= hi, got lo={lo!r}, hi={hi!r}")
        self.lo, self.hi = float(lo), float(hi)

    def spec(self) -> dict:
        # JSON has no infinity: an absent bound is written as None
        return {"type": self.type, "lo": self.lo if math.isfinite(self.lo) else None,
                "hi": self.hi if math.isfinite(self.hi) else None}

    def __call__(self, x: Tensor) -> Tensor:
        return ops.clip(x, self.lo, self.hi)


class ReLU6(Clip):
    """clip(x, 0, 6) (MobileNetV2); the ReLU rules act at 0."""
    type = "relu6"

    def __init__(self):
        super().__init__(0.0, 6.0)

    def spec(self) -> dict:
        return {"type": self.type}

    def __call__(self, x: Tensor) -> Tensor:
        return ops.relu6(x)


class Sigmoid(Layer):
    type = "sigmoid"

    def __call__(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class SiLU(Layer):
    type = "silu"

    def __call__(self, x: Tensor) -> Tensor:
        return ops.silu(x)


class Dropout(Layer):
    type = "dropout"

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, p: float) -> None:
        """Checked on every change (training may switch dropout off between epochs)."""
        if not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self._p = float(p)

    def spec(self) -> dict:
        return {"type": self.type, "p": self.p}

    def __call__(self, x: Tensor) -> Tensor:
        return ops.dropout(x, self.p, self.training)


class Flatten(Layer):
    type = "flatten"

    def out_shape(self, s: tuple) -> tuple:
        return (int(np.prod(s)),)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.flatten(x)


class Unflatten(Layer):
    """(F,) -> ``shape`` (C, H, W): a code vector read as a map (a decoder's first step)."""
    type = "unflatten"

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        if not isinstance(shape, (list, tuple)) or not shape:
            raise ValueError(f"unflatten: shape must be a list of integers, got {shape!r}")
        self.shape = tuple(positive_ints("unflatten", **{f"shape[{i}]": v for i, v in enumerate(shape)}))

    def spec(self) -> dict:
        return {"type": self.type, "shape": list(self.shape)}

    def out_shape(self, s: tuple) -> tuple:
        if int(np.prod(s)) != int(np.prod(self.shape)):
            raise ValueError(f"unflatten: an input of shape {s} ({int(np.prod(s))} values) cannot be read as "
                             f"{self.shape} ({int(np.prod(self.shape))} values)")
        return self.shape

    def __call__(self, x: Tensor) -> Tensor:
        return ops.unflatten(x, self.shape)


class Upsample(Layer):
    """Nearest-neighbour upsampling by an integer ``factor`` (ops.Upsample)."""
    type = "upsample"

    def __init__(self, factor: int = 2):
        super().__init__()
        (self.factor,) = positive_ints("upsample", factor=factor)

    def spec(self) -> dict:
        return {"type": self.type, "factor": self.factor}

    def out_shape(self, s: tuple) -> tuple:
        return (s[0], s[1] * self.factor, s[2] * self.factor)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.upsample(x, self.factor)


LAYER_TYPES = {cls.type: cls for cls in
               (Conv2d, Linear, ReLU, MaxPool2d, LocalResponseNorm, AdaptiveAvgPool2d, Dropout, Flatten,
                Unflatten, Upsample, AvgPool2d, GlobalAvgPool2d, BatchNorm2d, Clip, ReLU6, Sigmoid, SiLU)}


def layer_from_spec(spec: dict) -> Layer:
    """Build a layer from its ``spec()`` dict; unknown type or arguments -> ValueError."""
    spec = dict(spec)
    t = spec.pop("type", None)
    spec.pop("name", None)
    if t not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {t!r}; known: {sorted(LAYER_TYPES)}")
    try:
        return LAYER_TYPES[t](**spec)
    except TypeError as e:
        raise ValueError(f"bad arguments for layer type {t!r}: {e}") from None
