"""Clip (ReLU6 = clip(x, 0, 6)) forward and backward, with the ReLU rules at the
lower bound.  ``mask_x`` / ``mask_g`` come from ``engine.RELU_MASKS`` as for ReLU
(kernels/relu.py); the upper bound always gates like the true gradient:

    dx = g * [x > lo if mask_x] * [g > 0 if mask_g] * [x < hi]      (g = dL/dy)

    backprop   (True,  False)   dx = g * [lo < x < hi]
    deconvnet  (False, True)    dx = relu(g) * [x < hi]
    guided     (True,  True)    dx = g * [x > lo] * [x < hi] * [g > 0]

The masks are read off the saved output: y = clip(x) is > lo exactly where x > lo
and < hi exactly where x < hi.  NaN as in ReLU: clip(NaN) = NaN; a mask blocks only
values known to be on the wrong side, so a NaN x lets g through and a NaN g comes
back as NaN under every rule.
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _forward(x, lo, hi, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = lo if v <= lo else (hi if v >= hi else v)    # NaN is neither: it stays NaN


@kernel
def _backward(y, g, lo, hi, dx, mask_x, mask_g):
    for i in prange(g.size):
        gi = g[i]
        yi = y[i]
        x_passes = (not mask_x or not yi <= lo) and not yi >= hi     # [x > lo] [x < hi], NaN passes
        g_passes = not mask_g or not gi <= 0                         # [g > 0], NaN passes
        dx[i] = gi if (x_passes and g_passes) or gi != gi else 0


def forward(x, lo, hi):
    """y = min(max(x, lo), hi) elementwise (any shape)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _forward(x.reshape(-1), x.dtype.type(lo), x.dtype.type(hi), y.reshape(-1))
    return y


def backward(y, g, lo, hi, mask_x, mask_g):
    """dx for the saved output ``y`` and the gradient ``g`` (masks as in the docstring)."""
    g = np.ascontiguousarray(g)
    dx = np.empty_like(g)
    _backward(np.ascontiguousarray(y).reshape(-1), g.reshape(-1), g.dtype.type(lo), g.dtype.type(hi),
              dx.reshape(-1), bool(mask_x), bool(mask_g))
    return dx
