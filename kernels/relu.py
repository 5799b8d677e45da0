"""ReLU forward and backward.  The backward rules are one table,
``tinygrad_explain.core.engine.RELU_MASKS``: rule name -> (mask_x, mask_g), read as

    dx = g * [x > 0 if mask_x] * [g > 0 if mask_g]        (g = dL/dy)

    backprop   (True,  False)   dx = g * [x > 0]              the true gradient
    deconvnet  (False, True)    dx = g * [g > 0]              Zeiler & Fergus 2014
    guided     (True,  True)    dx = g * [x > 0] * [g > 0]    Springenberg et al. 2015

so this kernel (and its CUDA twin, kernels/relu.cu) takes the two switches, not a
rule name.  [x > 0] is read off the saved output: y > 0 exactly where x > 0.

NaN is never turned into a number (as in PyTorch): relu(NaN) = NaN forward; a mask
blocks only values known to be <= 0, so a NaN x lets g through, and a NaN g comes
back as NaN under every rule -- a network that overflows gives NaN, not plausible
numbers.
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _forward(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = 0 if v <= 0 else v                    # NaN is not <= 0: it stays NaN


@kernel
def _backward(y, g, dx, mask_x, mask_g):
    for i in prange(g.size):
        gi = g[i]
        x_passes = not mask_x or not y[i] <= 0       # [x > 0], a NaN x passes
        g_passes = not mask_g or not gi <= 0         # [g > 0], a NaN g passes
        dx[i] = gi if (x_passes and g_passes) or gi != gi else 0


def forward(x):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _forward(x.reshape(-1), y.reshape(-1))
    return y


def backward(y, g, mask_x, mask_g):
    """dx for the saved output ``y`` and the gradient ``g``, masked by x and/or by g."""
    g = np.ascontiguousarray(g)
    dx = np.empty_like(g)
    _backward(np.ascontiguousarray(y).reshape(-1), g.reshape(-1), dx.reshape(-1), bool(mask_x), bool(mask_g))
    return dx
