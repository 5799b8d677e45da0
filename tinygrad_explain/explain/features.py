"""Zeiler & Fergus's feature visualisation (ECCV 2014, "Visualizing and Understanding
Convolutional Networks", figure 2).

For one unit (a channel of a convolutional layer):

1. run a set of images and find the ones with the strongest *single* activation
   of that channel -- each at its own strongest position (i, j);
2. show each image cropped to the receptive field of the neuron at (i, j): the
   patch of input pixels that neuron can see;
3. beside it, project that one activation back to pixel space: the gradient of
   the neuron ``(layer, c, i, j)`` with respect to the input
   (``te.explain.gradient(model, x, (layer, c, i, j), rule=...)``), with every other
   activation of the layer set to zero, passed down through the network with
   the deconvnet rule (ReLU passes positive gradients, ignoring the forward
   sign) and -- as Zeiler & Fergus did -- through *that image's own* max-pooling
   switches (the engine's max-pool backward routes to the argmax of that
   forward pass).  Guided backprop (Springenberg et al. 2015) gives the
   sharper variant.

Receptive fields follow the standard recurrence over the layers up to the
unit: with ``r`` the field size, ``j`` the distance in input pixels between
neighbouring positions and ``s`` the input coordinate of the first position's
centre, a layer of kernel k, stride t and padding p gives
``r += (k - 1) j``, ``s += ((k - 1) / 2 - p) j``, ``j *= t``.  In a graph network the
recurrence follows the nodes on the way to the unit, and a merge (a residual
addition, a concatenation) takes the union of its inputs' fields.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.engine import no_grad
from ..core.models import Network
from ._common import ExplainError, Images, LayerName, as_batch, resolve_layer

__all__ = ["receptive_field", "activation_maps", "top_activations"]


#: layer types that keep every position where it is (the geometry passes through them)
_SAME_PLACE = ("relu", "relu6", "clip", "lrn", "dropout", "batchnorm", "sigmoid", "silu")


def _geometry(model, layer):
    """(size r, jump j, start s) of the receptive fields of ``layer``'s positions, in input pixels.
    In a graph network, over the nodes on the way to ``layer``; where paths merge (a residual
    addition, a concatenation) the field is the union of the inputs' fields."""
    from ..core import nn
    geo = {"input": (1.0, 1.0, 0.0)}
    for name, l in model.layers.items():
        if name != layer and not model.feeds(name, layer):
            continue                        # a graph network: only the nodes on the way to ``layer``
        ins = [geo[i] for i in model.reads(name)]
        if getattr(l, "merge", False):
            if len({j for _, j, _ in ins}) != 1:
                raise ExplainError(f"receptive_field: node {name!r} merges positions of different strides")
            lo = min(s - (r - 1) / 2 for r, _, s in ins)
            hi = max(s + (r - 1) / 2 for r, _, s in ins)
            geo[name] = (hi - lo + 1, ins[0][1], (lo + hi) / 2)
            continue
        r, j, s = ins[0]
        if isinstance(l, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, t, p = l.kernel_size, l.stride, l.padding          # square kernels (ints)
            r += (k - 1) * j
            s += ((k - 1) / 2 - p) * j
            j *= t
        elif l.type not in _SAME_PLACE:
            raise ExplainError(f"receptive_field: layer {name!r} ({type(l).__name__}) has no receptive field "
                               "geometry (only convolutions, pooling windows, merges and element-wise layers "
                               "below the unit)")
        geo[name] = (r, j, s)
    if layer not in geo:
        raise ExplainError(f"unknown layer {layer!r}")
    return geo[layer]


def receptive_field(model: Network, layer: LayerName, i: int, j: int) -> tuple[int, int, int, int]:
    """The input pixels the neuron at row ``i``, column ``j`` of ``layer`` can see:
    ``(y0, y1, x0, x1)``, inclusive-exclusive, clipped to the image."""
    layer = resolve_layer(model, layer)
    r, jump, start = _geometry(model, layer)
    H, W = model.input_shape[1:]
    cy, cx = start + i * jump, start + j * jump
    half = (r - 1) / 2
    y0, y1 = int(round(cy - half)), int(round(cy + half)) + 1
    x0, x1 = int(round(cx - half)), int(round(cx + half)) + 1
    return max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)


def activation_maps(model: Network, x: Images, layers: Sequence[LayerName],
                    batch_size: int = 100) -> dict[str, np.ndarray]:
    """The outputs of ``layers`` for every image of ``x`` (model space), from one forward pass
    per batch: {layer: (N, C, h, w) float32}."""
    layers = [resolve_layer(model, l) for l in layers]
    last = model.until_for(layers)
    x = as_batch(model, x)
    out = {l: [] for l in layers}
    with no_grad():
        for s in range(0, x.shape[0], batch_size):
            kept = model(x[s:s + batch_size], until=last, keep=layers)
            for l in layers:
                out[l].append(kept[l].numpy())
    return {l: np.concatenate(v) for l, v in out.items()}


def top_activations(maps: np.ndarray, k: int = 9) -> list[tuple[int, int, int, float]]:
    """The ``k`` images whose strongest single activation in ``maps`` (N, h, w) -- one channel
    of a layer, e.g. ``activation_maps(...)[layer][:, c]`` -- is largest.  Returns a list of
    ``(image index, i, j, value)``, strongest first; (i, j) is that image's own argmax position."""
    a = np.asarray(maps)
    if a.ndim != 3:
        raise ExplainError(f"top_activations takes one channel's maps (N, h, w), got shape {a.shape}")
    flat = a.reshape(a.shape[0], -1)
    pos = flat.argmax(1)
    best = flat[np.arange(len(flat)), pos]
    order = np.argsort(-best, kind="stable")[:k]
    w = a.shape[2]
    return [(int(n), int(pos[n] // w), int(pos[n] % w), float(best[n])) for n in order]
