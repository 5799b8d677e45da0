"""Backprop to the image: data gradients, saliency maps, deconvnet and guided backprop.

All three "rules" differ only in what a ReLU passes back (the engine's
``te.relu_backward``), everything else being the exact chain rule:

    backprop   dx = dy * [x > 0]               Simonyan, Vedaldi & Zisserman 2014
    deconvnet  dx = dy * [dy > 0]              Zeiler & Fergus 2014
    guided     dx = dy * [x > 0] * [dy > 0]    Springenberg et al. 2015
"""
from __future__ import annotations

import numpy as np

from ..core.engine import RELU_RULES, Tensor, no_grad, relu_backward
from ..core.engine import array_module as _xp
from ..core.models import Network
from ..core.ops import Linear, softmax
from ._common import (
    ExplainError,
    Images,
    LayerName,
    Objective,
    Target,
    as_batch,
    check_finite,
    resolve_layer,
    resolve_objective,
    to_host,
)

#: the memory one batch of an explainer may take (activations, their gradients, im2col
#: buffers); ``default_batch_size`` picks the number of images that fits
BATCH_BYTES = 256 * 2 ** 20


def default_batch_size(model: Network, copies_per_image: int = 1, budget: int = BATCH_BYTES) -> int:
    """A memory-bounded default batch: how many images fit in ``budget`` bytes when each
    one holds every layer's output, its gradient and a spare of the same size (3 x the
    sum of the layer outputs, in the model's dtype), at least 1.  For the 64-px
    embedded AlexNet in float32 that is 60 images, for 224-px AlexNet 17.
    ``copies_per_image`` divides it (occlusion's patched copies, SmoothGrad's noisy ones)."""
    params = model.parameters()
    itemsize = np.dtype(params[0].data.dtype).itemsize if params else 4
    floats = int(np.prod(model.input_shape)) + sum(int(np.prod(s)) for s in model.shapes.values())
    return max(1, int(budget // (3 * itemsize * floats * max(1, copies_per_image))))


#: images per network pass at most: up to ``ops.Linear.SKINNY_MAX_ROWS`` rows the fully
#: connected layers run the streaming kernel (each sum in the naive order) forward and
#: fixed-shape BLAS blocks backward (``kernels.linear.blas_rows``), so an image's result
#: does not depend on the images beside it; above, one BLAS product, whose does
EXACT_ROWS = Linear.SKINNY_MAX_ROWS


def passes(model: Network, n: int, batch_size: int | None = None) -> list[slice]:
    """The network passes over n images: ``batch_size`` (default ``default_batch_size(model)``)
    at a time, at most EXACT_ROWS -- every image's numbers the same, bit for bit, in any batch."""
    return batches(n, min(EXACT_ROWS, batch_size or default_batch_size(model)))


def batches(n: int, size: int) -> list[slice]:
    """The slices that cut n items into consecutive batches of at most ``size``."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ExplainError(f"batch_size must be an integer >= 1, got {size!r}")
    return [slice(s, min(n, s + int(size))) for s in range(0, n, int(size))]


def backprop(model: Network, x: Images, obj: Objective, rule: str = "backprop",
             layer: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One forward and one backward pass for one batch: (dS/dx or dS/dh, h) with h the
    output of ``layer`` (None without a layer) -- both from the same pass, so Grad-CAM
    needs no second forward.  ``obj`` a resolved Objective (one per image of ``x``)."""
    xp = _xp(x)
    with relu_backward(rule):
        if layer is None:
            leaf = Tensor(x, requires_grad=True)
            out = model(leaf, until=obj.layer)
        else:
            outs = model(x, until=obj.layer, keep=layer)
            leaf, out = outs[layer], outs.output
        if obj.classes is not None and out.ndim != 2:
            raise ExplainError(f"the model's output has shape {out.shape}; expected class scores (N, K)")
        check_finite(out.data, f"the output of {obj.layer!r}")
        out.backward(obj.seed_like(out))
    grad = leaf.grad if leaf.grad is not None else xp.zeros_like(leaf.data)
    check_finite(grad, "the gradient")
    return to_host(grad), (None if layer is None else to_host(leaf.data))


def checked_layer(model: Network, layer: LayerName, obj: Objective) -> str:
    """``layer`` resolved, and checked to lie below the target's layer."""
    layer = resolve_layer(model, layer)
    if not model.feeds(layer, obj.layer):
        raise ExplainError(f"layer {layer!r} is not below the target's layer {obj.layer!r}: "
                           "the gradient there is the target's own seed (or zero)")
    return layer


def gradient(model: Network, x: Images, target: Target, rule: str = "backprop",
             layer: LayerName | None = None, batch_size: int | None = None) -> np.ndarray:
    """dS/dx for every image of a batch -- or, with ``layer``, dS/dh where h is that
    layer's output ("what gradient reaches conv5?", what Grad-CAM uses).

    model   a te Network (its last layer gives unnormalised class scores for class targets)
    x       images in model space, (N, C, H, W) or (C, H, W) (te.image.load output);
            for a network that takes vectors, (N, F) or (F,)
    target  what S is (``resolve_objective``):
            a class index or name -- S is that class's score, *before* softmax;
            ``("conv5", c)`` or ``"conv5:c"`` -- the mean activation of channel c of conv5
            (for a vector layer such as fc7, neuron c);
            ``("conv5", c, i, j)`` or ``"conv5:c:i:j"`` -- one neuron;
            or a list with one of those per image (all in the same layer).
            The lecture's procedure: set the gradient at the layer to 0 except at the
            unit, and backprop to the image.
    rule    "backprop" (the true gradient), "deconvnet" or "guided"
    layer   None (the gradient at the image) or a layer name / index below the target's layer
    batch_size  images per forward / backward pass (default: ``default_batch_size(model)``, memory-
            bounded; at most EXACT_ROWS); each image's gradient is the same whatever the batch
            (bit for bit)
    Returns float array (N, C, H, W) -- or (N, *model.shapes[layer]) -- in model space
    (the gradient with respect to the preprocessed input, not the raw pixels), on the
    host even for a model on the GPU.

    With ``layer`` the network runs with that layer's output kept
    (``model(x, keep=layer)``): only the part above it is differentiated, and the
    answer is that output's ``.grad``.
    """
    return gradient_and_activation(model, x, target, rule, layer, batch_size)[0]


def gradient_and_activation(model: Network, x: Images, target: Target, rule: str = "backprop",
                            layer: LayerName | None = None,
                            batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`gradient` and, with ``layer``, that layer's output h (N, *model.shapes[layer])
    from the same passes ((grad, None) without a layer)."""
    if rule not in RELU_RULES:
        raise ExplainError(f"unknown rule {rule!r}; expected one of {', '.join(RELU_RULES)}")
    x = as_batch(model, x)
    obj = resolve_objective(model, target, x.shape[0])
    if layer is not None:
        layer = checked_layer(model, layer, obj)
    parts = [backprop(model, x[sl], obj.take(sl), rule, layer)
             for sl in passes(model, x.shape[0], batch_size)]
    grad = np.concatenate([g for g, _ in parts])
    return grad, (None if layer is None else np.concatenate([h for _, h in parts]))


def saliency(model: Network, x: Images, target: Target, rule: str = "backprop") -> np.ndarray:
    """Simonyan et al.'s image-specific class saliency map: M_ij = max_c |dS/dx_cij|
    (the maximum over colour channels, not a sum); ``target`` as in :func:`gradient`
    (a class, a channel or a neuron).  Returns (N, H, W), >= 0 -- for a network that
    takes vectors, |dS/dx| (N, F)."""
    g = np.abs(gradient(model, x, target, rule))
    return g.max(axis=1) if g.ndim == 4 else g


def predict(model: Network, x: Images, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, K), softmax probabilities (N, K)) for images in model space, without a graph,
    ``batch_size`` images at a time (default: ``default_batch_size(model)``)."""
    x = as_batch(model, x)
    out = []
    with no_grad():
        for sl in passes(model, x.shape[0], batch_size):
            out.append(model(x[sl]).numpy())
    scores = np.concatenate(out).astype(np.float64)
    check_finite(scores, "the class scores")
    return scores, softmax(scores).numpy()


def relu_toy_example(x: np.ndarray | None = None, grad: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The lecture's toy example: a 4x4 feature map through ReLU forward, then one
    gradient passed back under each rule.  Returns a dict of 4x4 arrays:
    ``input``, ``relu`` (forward output), ``grad_out`` (the gradient arriving from
    above) and one entry per rule (what each rule passes back to the input)."""
    from ..core.ops import relu
    if x is None:
        x = np.array([[1, -1, 5, 2], [2, -5, -7, 3], [-2, 2, 4, -1], [3, -1, 2, 6]], np.float32)
    if grad is None:
        grad = np.array([[-2, 3, -1, 1], [6, -3, 1, 4], [2, -1, 3, -2], [1, 3, -4, 5]], np.float32)
    x, grad = np.asarray(x, np.float32), np.asarray(grad, np.float32)
    out = {"input": x, "grad_out": grad}
    for rule in RELU_RULES:
        t = Tensor(x.copy(), requires_grad=True)
        y = relu(t)
        with relu_backward(rule):
            y.backward(grad)
        out["relu"] = y.numpy()
        out[rule] = t.grad
    return out
