"""Backprop to the image: data gradients, saliency maps, deconvnet and guided backprop.

All three "rules" differ only in what a ReLU passes back (the engine's
``te.relu_backward``), everything else being the exact chain rule:

    backprop   dx = dy * [x > 0]               Simonyan, Vedaldi & Zisserman 2014
    deconvnet  dx = dy * [dy > 0]              Zeiler & Fergus 2014
    guided     dx = dy * [x > 0] * [dy > 0]    Springenberg et al. 2015
"""
from __future__ import annotations

import numpy as np

from ..engine import RELU_RULES, Tensor, _xp, no_grad, relu_backward
from ..models import Network
from ..ops import softmax
from ._common import (
    ExplainError,
    Images,
    LayerName,
    Target,
    as_batch,
    check_finite,
    resolve_layer,
    resolve_objective,
    to_host,
)


def gradient(model: Network, x: Images, target: Target, rule: str = "backprop",
             layer: LayerName | None = None) -> np.ndarray:
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
    Returns float array (N, C, H, W) -- or (N, *model.shapes[layer]) -- in model space
    (the gradient with respect to the preprocessed input, not the raw pixels), on the
    host even for a model on the GPU.

    With ``layer`` the network runs with that layer's output kept
    (``model(x, keep=layer)``): only the part above it is differentiated, and the
    answer is that output's ``.grad``.
    """
    if rule not in RELU_RULES:
        raise ExplainError(f"unknown rule {rule!r}; expected one of {', '.join(RELU_RULES)}")
    x = as_batch(model, x)
    xp = _xp(x)
    obj = resolve_objective(model, target, x.shape[0])
    if layer is not None:
        layer = resolve_layer(model, layer)
        if not model.feeds(layer, obj.layer):
            raise ExplainError(f"layer {layer!r} is not below the target's layer {obj.layer!r}: "
                               "the gradient there is the target's own seed (or zero)")
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
    return to_host(grad)


def saliency(model: Network, x: Images, target: Target, rule: str = "backprop") -> np.ndarray:
    """Simonyan et al.'s image-specific class saliency map: M_ij = max_c |dS/dx_cij|
    (the maximum over colour channels, not a sum); ``target`` as in :func:`gradient`
    (a class, a channel or a neuron).  Returns (N, H, W), >= 0 -- for a network that
    takes vectors, |dS/dx| (N, F)."""
    g = np.abs(gradient(model, x, target, rule))
    return g.max(axis=1) if g.ndim == 4 else g


def predict(model: Network, x: Images, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, K), softmax probabilities (N, K)) for images in model space, without a graph."""
    x = as_batch(model, x)
    out = []
    with no_grad():
        for s in range(0, x.shape[0], batch_size):
            out.append(model(x[s:s + batch_size]).numpy())
    scores = np.concatenate(out).astype(np.float64)
    check_finite(scores, "the class scores")
    return scores, softmax(scores).numpy()


def relu_toy_example(x: np.ndarray | None = None, grad: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The lecture's toy example: a 4x4 feature map through ReLU forward, then one
    gradient passed back under each rule.  Returns a dict of 4x4 arrays:
    ``input``, ``relu`` (forward output), ``grad_out`` (the gradient arriving from
    above) and one entry per rule (what each rule passes back to the input)."""
    from ..ops import relu
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
