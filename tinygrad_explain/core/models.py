"""Networks as an ordered list of named layers, and AlexNet.

``Network(layers, input_shape)`` runs its layers in order; ``model(x)``
returns the last layer's output (unnormalised class scores for a
classifier) and ``model(x, until="fc7")`` the output of any named layer.
AlexNet comes in two layouts:

* ``"torchvision"``: torchvision's AlexNet (224x224 input, 64/192/384/256/256
  filters, no LRN, adaptive average pool to 6x6, dropout before fc6/fc7).
* ``"caffe"``: bvlc_alexnet (227x227 input, 96/256/384/384/256 filters,
  conv1 stride 4 without padding, LRN(5, 1e-4, 0.75, k=1) after relu1/relu2,
  groups=2 in conv2/conv4/conv5).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np

from . import device as _device
from . import nn
from .engine import Tensor, array_module, is_grad_enabled, release_intermediate


class Network:
    """An ordered stack of named layers.

    ``input_shape`` (C, H, W) -- or (F,) for a network of linear layers -- is what the
    first layer expects; the output
    shape of every layer is checked when the network is built, so a wrong
    architecture fails here, naming the layer, not deep inside a kernel.
    ``class_names`` and ``preprocessing`` travel with the model file.
    """

    def __init__(self, layers: Iterable[tuple[str, nn.Layer]], input_shape: Sequence[int],
                 class_names: Sequence[str] | None = None, preprocessing: dict | None = None) -> None:
        self.layers = {}
        for name, layer in layers:
            if not isinstance(name, str) or not name:
                raise ValueError(f"layer names must be non-empty strings, got {name!r}")
            if name in self.layers:
                raise ValueError(f"duplicate layer name {name!r}")
            self.layers[name] = layer
        self.input_shape = tuple(int(v) for v in input_shape)
        self.class_names = list(class_names) if class_names is not None else None
        self.preprocessing = dict(preprocessing or {})
        self.shapes = self._infer_shapes()
        self.device = "cpu"

    # ----- structure -----------------------------------------------------
    def _infer_shapes(self):
        shapes, s = {}, self.input_shape
        for name, layer in self.layers.items():
            s = layer_output_shape(name, layer, s, self.input_shape)
            shapes[name] = s
        return shapes

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    def feeds(self, below: str, above: str) -> bool:
        """Whether layer ``above``'s output depends on layer ``below``'s (``below`` comes
        before it; in a graph network, on a path to it)."""
        names = self.layer_names
        return names.index(below) < names.index(above)

    def reads(self, name: str) -> tuple[str, ...]:
        """The layers whose outputs layer ``name`` takes ("input": the network's input): in a
        chain the layer before it; in a graph network the node's ``inputs``."""
        k = self.layer_names.index(self._layer_name(name, "reads"))
        return (self.layer_names[k - 1] if k else "input",)

    def until_for(self, names: Sequence[str]) -> str:
        """The first layer whose output depends on every one of ``names`` (each counts as
        depending on itself): ``model(x, until=model.until_for(names), keep=names)`` computes
        them all in one pass.  In a chain, the last of ``names``; in a graph network, the
        first node from there on that every one of them feeds (the output at the latest)."""
        names = list(names)
        order = self.layer_names
        for k in range(max(order.index(n) for n in names), len(order)):
            if all(n == order[k] or self.feeds(n, order[k]) for n in names):
                return order[k]
        return order[-1]                    # not reached: every node feeds the output

    @property
    def num_classes(self) -> int:
        return self.shapes[self.layer_names[-1]][0]

    def architecture(self) -> list[dict]:
        """The JSON-able list of layer specs (each with its name)."""
        return [dict(name=n, **l.spec()) for n, l in self.layers.items()]

    def parameters(self) -> list[Tensor]:
        return [getattr(l, p) for l in self.layers.values() for p in l.params]

    def requires_grad_(self, flag: bool = True) -> Network:
        """Make the weights trainable (True) or frozen (False, the default)."""
        for t in self.parameters():
            t.requires_grad = flag
            t.grad = None
        for l in self.layers.values():
            if hasattr(l, "arrange_weight"):
                l.arrange_weight()          # nn.Linear: trainable C order / frozen forward layout
        return self

    def zero_grad(self) -> None:
        for t in self.parameters():
            t.grad = None

    def to(self, device: str) -> Network:
        """Move every parameter (and gradient) to ``device`` ("cpu" or "gpu"); returns self.
        A no-op where they already are.  ``to("gpu")`` raises a clear error if CuPy or a
        CUDA device is missing, ``to("tpu")`` a ValueError."""
        _device.require(device)
        for t in self.parameters():
            t.data = _device.move(t.data, device)
            if t.grad is not None:
                t.grad = _device.move(t.grad, device)
        self.device = device
        return self

    def astype(self, dtype: np.dtype | type) -> Network:
        """Cast every parameter (e.g. to float64 for gradient checks); returns self."""
        for t in self.parameters():
            t.data = t.data.astype(dtype)
        return self

    def train(self, mode: bool = True) -> Network:
        for l in self.layers.values():
            l.training = mode
        return self

    def eval(self) -> Network:
        return self.train(False)

    # ----- weights -------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"conv1.weight": ndarray, "conv1.bias": ndarray, ...}``; conv weights
        (O, I/groups, kH, kW), linear weights (out, in), as in PyTorch and Caffe."""
        return {f"{n}.{p}": getattr(l, p).numpy() for n, l in self.layers.items() for p in l.params}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> Network:
        """Copy weights in.  Missing, unexpected or mis-shaped keys and
        non-finite values raise an error that names the key."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        if missing:
            raise KeyError(f"state dict is missing {missing}")
        if extra:
            raise KeyError(f"state dict has unexpected keys {extra}; this network has {list(own)}")
        for key, value in state.items():
            arr = np.asarray(value)
            if arr.shape != own[key].shape:
                raise ValueError(f"{key}: shape {arr.shape} does not match the architecture's {own[key].shape}")
            if arr.dtype.kind != "f":
                raise ValueError(f"{key}: dtype {arr.dtype} is not floating point")
            if not np.isfinite(arr).all():
                raise ValueError(f"{key}: contains NaN or Inf")
        for key, value in state.items():
            name, p = key.rsplit(".", 1)
            layer = self.layers[name]
            # keep the model's dtype (float32 unless astype'd), the layer's layout and the device
            getattr(layer, p).data = _device.move(layer.copy_in(p, value), self.device)
        return self

    # ----- forward -------------------------------------------------------
    def check_input(self, x: Tensor | np.ndarray, after: str | None = None) -> Tensor:
        """Validate an input batch and return it as a Tensor: (N, C, H, W) for an image
        network, (N, F) for one that starts with a vector (an MLP), or -- with ``after`` --
        (N, *shape of that layer's output), to run the rest of the network from there.
        It must be on the model's device (a NumPy array for a CPU model, a CuPy array for
        a GPU model): nothing is copied behind the caller's back."""
        t = x if isinstance(x, Tensor) else None
        data = x.data if t is not None else x
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            raise TypeError(f"input must be an array or Tensor, got {type(x).__name__}")
        where = _device.of(data)
        if where != self.device:
            kind = {"cpu": "a NumPy (host) array", "gpu": "a CuPy (GPU) array"}
            how = "cupy.asarray(x) or te.Tensor(x).to('gpu')" if self.device == "gpu" else "x.get() or tensor.to('cpu')"
            raise TypeError(f"input is {kind[where]} but the model is on the {self.device.upper()}; "
                            f"move the input explicitly ({how}) or the model (model.to({where!r}))")
        if data.dtype.kind not in "f":
            raise TypeError(f"input dtype {data.dtype} is not floating point; images must be preprocessed "
                            "to float (te.image.load does it)")
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(f"input dtype {data.dtype} is not supported: the kernels run in float32 (or float64 "
                            "for checks); convert with x.astype(np.float32)")
        shape = self.input_shape if after is None else self.shapes[after]
        what = "input" if after is None else f"input after layer {after!r}"
        axes = {1: "(N, F)", 3: "(N, C, H, W)"}.get(len(shape), "(N, ...)")
        expected = f"(N, {', '.join(map(str, shape))})"
        if data.ndim != len(shape) + 1:
            raise ValueError(f"{what} must have shape {axes} = {expected}, got rank {data.ndim} "
                             f"shape {tuple(data.shape)}")
        if tuple(data.shape[1:]) != shape:
            if len(shape) == 3 and after is None:
                which = "channels" if data.shape[1] != shape[0] else "size"
                raise ValueError(f"input {which} mismatch: model expects {expected}, got {tuple(data.shape)}; "
                                 f"resize images to {shape[1]}x{shape[2]} (te.image.load does it)")
            raise ValueError(f"{what} must have shape {axes} = {expected}, got {tuple(data.shape)}")
        if data.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch (0 images); give at least one")
        if not bool(array_module(data).isfinite(data).all()):
            raise ValueError(f"{what} contains NaN or Inf")
        return t if t is not None else Tensor(data)

    def _layer_name(self, name, argument):
        if name not in self.layers:
            near = difflib.get_close_matches(str(name), self.layer_names, n=3)
            raise KeyError(f"{argument}: unknown layer {name!r}" + (f" (did you mean {near}?)" if near else "")
                           + f"; layers: {self.layer_names}")
        return name

    def __call__(self, x: Tensor | np.ndarray, until: str | None = None, keep: str | Sequence[str] | None = None,
                 start: str | None = None) -> Tensor | LayerOutputs:
        """Forward pass; returns the last layer's output (unnormalised class scores).

        ``until``  name of the layer whose output to return (the rest is not run).
        ``start``  run only the layers *after* this one: ``x`` is that layer's output,
                   (N, *model.shapes[start]) -- e.g. ``model(h, start="pool5")`` classifies
                   a pool5 code (inversion of intermediate codes, layer-wise experiments).
        ``keep``   a layer name or names whose outputs to keep.  Then a :class:`LayerOutputs`
                   dict {name: Tensor} is returned, holding the kept layers and the last
                   layer run, with ``.output`` the final output.  Each kept output takes
                   part in the backward pass and keeps its gradient: after ``.backward()``,
                   ``outs["conv3"].grad`` is dL/d(conv3 output), no hooks needed.  If
                   nothing below a kept layer needs a gradient (frozen weights, an input
                   without ``requires_grad``), its output becomes a leaf that requires one,
                   so the backward stops there.  Under ``no_grad()`` outputs are only kept.
        """
        names = self.layer_names
        first = 0 if start is None else names.index(self._layer_name(start, "start")) + 1
        last = len(names) - 1 if until is None else names.index(self._layer_name(until, "until"))
        if first == len(names):
            raise ValueError(f"start={start!r} is the last layer: no layer is left to run")
        if last < first:
            raise ValueError(f"until={until!r} does not come after start={start!r}: no layer would run")
        run = names[first:last + 1]
        if keep is not None:
            if isinstance(keep, str):
                keep = (keep,)
            try:
                keep = [self._layer_name(k, "keep") for k in keep]
            except TypeError:
                raise TypeError(f"keep must be a layer name or a list of layer names, got {keep!r}") from None
            for k in keep:
                if k not in run:
                    raise ValueError(f"keep: layer {k!r} is not run (this call runs {run[0]!r} .. {run[-1]!r})")
        x = self.check_input(x, after=start)
        kept, given = LayerOutputs(), x
        for name in run:
            y = self.layers[name](x)
            if x is not given:                  # an output of this call that no later layer reads
                release_intermediate(x, y)
            x = y
            if keep is not None and name in keep:
                kept[name] = keep_output(x)
        if keep is None:
            return x
        kept[run[-1]] = x
        kept.output = x
        return kept

    def __repr__(self):
        lines = [f"Network(input {self.input_shape})"]
        for n, l in self.layers.items():
            lines.append(f"  {n:<8} {l.spec()} -> {self.shapes[n]}")
        return "\n".join(lines)


def layer_output_shape(name: str, layer: nn.Layer, s: tuple, input_shape: tuple) -> tuple:
    """The output shape of ``layer`` (named ``name``) for an input of shape ``s`` (no
    batch axis), after checking that the layer can take it: a clear error naming the
    layer for a wrong architecture (the one check of ``Network`` and ``GraphNetwork``)."""
    maps = (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.LocalResponseNorm, nn.Upsample, nn.BatchNorm2d,
            nn.AvgPool2d, nn.GlobalAvgPool2d)
    if isinstance(layer, maps) and len(s) != 3:
        raise ValueError(f"layer {name!r} ({layer.type}) needs a (C, H, W) map as input, gets shape {s}")
    if isinstance(layer, nn.Conv2d) and s[0] != layer.in_channels:
        raise ValueError(f"layer {name!r} expects {layer.in_channels} input channels, gets {s[0]}")
    if isinstance(layer, nn.Linear) and (len(s) != 1 or s[0] != layer.in_features):
        raise ValueError(f"layer {name!r} expects {layer.in_features} input features, gets shape {s}")
    features = getattr(layer, "num_features", None)
    if features is not None and s[0] != features:
        raise ValueError(f"layer {name!r} expects {features} input channels, gets {s[0]}")
    s = layer.out_shape(s)
    if any(v <= 0 for v in s):
        raise ValueError(f"layer {name!r} would output an empty map {s} for input {input_shape}")
    return tuple(s)


def keep_output(x: Tensor) -> Tensor:
    """``x``, a layer output the caller keeps (``model(..., keep=...)``), made to keep its
    gradient: it retains it, or -- if nothing below needs a gradient (x is a leaf) --
    becomes a leaf that requires one, so the backward pass stops there."""
    if is_grad_enabled():
        if x.requires_grad:
            x.retain_grad()
        else:               # nothing below needs a gradient: x is a leaf, make it one that does
            x.requires_grad = True
    return x


class LayerOutputs(dict):
    """``model(x, keep=(...))``'s answer: {layer name: output Tensor} in layer order,
    the kept layers and the last layer run; ``.output`` is the final output."""
    output = None


def alexnet(variant: str = "torchvision", num_classes: int = 1000) -> Network:
    """AlexNet with random weights (PyTorch's default initialisation, seeded by
    ``te.manual_seed``).  Layer names: conv1..conv5, fc6..fc8, relu1..relu7,
    pool1, pool2, pool5, norm1, norm2 (caffe), drop6, drop7, avgpool (torchvision)."""
    C, R, M, L, D, F = nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.Dropout, nn.Linear
    if variant == "torchvision":
        layers = [("conv1", C(3, 64, 11, 4, 2)), ("relu1", R()), ("pool1", M(3, 2)),
                  ("conv2", C(64, 192, 5, 1, 2)), ("relu2", R()), ("pool2", M(3, 2)),
                  ("conv3", C(192, 384, 3, 1, 1)), ("relu3", R()),
                  ("conv4", C(384, 256, 3, 1, 1)), ("relu4", R()),
                  ("conv5", C(256, 256, 3, 1, 1)), ("relu5", R()), ("pool5", M(3, 2)),
                  ("avgpool", nn.AdaptiveAvgPool2d((6, 6))), ("flatten", nn.Flatten()),
                  ("drop6", D(0.5)), ("fc6", F(9216, 4096)), ("relu6", R()),
                  ("drop7", D(0.5)), ("fc7", F(4096, 4096)), ("relu7", R()),
                  ("fc8", F(4096, num_classes))]
        shape = (3, 224, 224)
    elif variant == "caffe":
        layers = [("conv1", C(3, 96, 11, 4, 0)), ("relu1", R()), ("norm1", L(5, 1e-4, 0.75, 1.0)), ("pool1", M(3, 2)),
                  ("conv2", C(96, 256, 5, 1, 2, groups=2)), ("relu2", R()), ("norm2", L(5, 1e-4, 0.75, 1.0)),
                  ("pool2", M(3, 2)),
                  ("conv3", C(256, 384, 3, 1, 1)), ("relu3", R()),
                  ("conv4", C(384, 384, 3, 1, 1, groups=2)), ("relu4", R()),
                  ("conv5", C(384, 256, 3, 1, 1, groups=2)), ("relu5", R()), ("pool5", M(3, 2)),
                  ("flatten", nn.Flatten()),
                  ("fc6", F(9216, 4096)), ("relu6", R()), ("drop6", D(0.5)),
                  ("fc7", F(4096, 4096)), ("relu7", R()), ("drop7", D(0.5)),
                  ("fc8", F(4096, num_classes))]
        shape = (3, 227, 227)
    else:
        raise ValueError(f"unknown AlexNet variant {variant!r}; expected 'torchvision' or 'caffe'")
    return Network(layers, shape)


def scene_alexnet(num_classes: int = 10, size: int = 64, width: Sequence[int] = (64, 128, 192, 192, 128),
                  fc: int = 512, dropout: float = 0.1, conv1: tuple[int, int, int] = (5, 2, 2),
                  conv2: tuple[int, int, int] = (3, 1, 1)) -> Network:
    """The embedded model's AlexNet-style network, sized for 64x64 "Fashion-MNIST
    scenes": AlexNet's layer names and order (conv1-relu1-norm1-pool1, conv2-relu2-
    norm2-pool2, conv3..conv5, pool5, fc6-relu6-drop6, fc7-relu7-drop7, fc8), with
    overlapping 3x3/2 max-pooling and LRN, at a size a 2-core CPU trains in minutes.
    ``conv2`` is 3x3 (kernel, stride, padding) rather than AlexNet's 5x5: on the
    15x15 maps it reaches the same accuracy per epoch at 0.36x that layer's
    arithmetic (a third less for the whole network), so more epochs fit the 40-minute
    budget.  ``dropout`` (drop6/drop7) is 0.1 rather than AlexNet's 0.5, and the
    embedded model was trained with it in its first 2 epochs only ("early
    dropout"): trained on freshly rendered scenes every epoch, the network
    underfits (its training accuracy stays at its test accuracy), and dropout
    through all epochs slows it down (docs/embedded_model.md has the
    measurements)."""
    C, R, M, L, D, F = nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.Dropout, nn.Linear
    w1, w2, w3, w4, w5 = width
    k1, s1, p1 = conv1
    k2, s2, p2 = conv2
    layers = [("conv1", C(3, w1, k1, s1, p1)), ("relu1", R()), ("norm1", L(5, 1e-4, 0.75, 1.0)), ("pool1", M(3, 2)),
              ("conv2", C(w1, w2, k2, s2, p2)), ("relu2", R()), ("norm2", L(5, 1e-4, 0.75, 1.0)), ("pool2", M(3, 2)),
              ("conv3", C(w2, w3, 3, 1, 1)), ("relu3", R()),
              ("conv4", C(w3, w4, 3, 1, 1)), ("relu4", R()),
              ("conv5", C(w4, w5, 3, 1, 1)), ("relu5", R()), ("pool5", M(3, 2)),
              ("flatten", nn.Flatten())]
    s = Network(layers, (3, size, size)).shapes["flatten"][0]
    layers += [("fc6", F(s, fc)), ("relu6", R()), ("drop6", D(dropout)),
               ("fc7", F(fc, fc)), ("relu7", R()), ("drop7", D(dropout)),
               ("fc8", F(fc, num_classes))]
    return Network(layers, (3, size, size))


#: the layer types that have learnt parameters (what the sanity checks' randomisation re-initialises)
WEIGHT_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def weight_layers(model: Network) -> list[str]:
    """Names of the layers that have weights (conv / linear / batch norm), input to output
    (a graph network's nodes in its topological order): ``["conv1", ..., "conv5", "fc6",
    "fc7", "fc8"]`` for AlexNet."""
    return [n for n, l in model.layers.items() if isinstance(l, WEIGHT_TYPES)]
