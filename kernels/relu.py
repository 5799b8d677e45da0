"""ReLU forward and its three backward rules.

Forward:    y = max(x, 0)
Backward, with g = dL/dy:
    rule 0 "backprop"   dx = g * [x > 0]              (the true gradient)
    rule 1 "deconvnet"  dx = g * [g > 0]              (Zeiler & Fergus 2014)
    rule 2 "guided"     dx = g * [x > 0] * [g > 0]    (Springenberg et al. 2015)
[x > 0] is read off the saved output: y > 0 exactly where x > 0.
"""
import numpy as np

from ._numba import kernel, prange

RULES = {"backprop": 0, "deconvnet": 1, "guided": 2}


@kernel
def _forward(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else 0


@kernel
def _backward(y, g, dx, rule):
    for i in prange(g.size):
        gi = g[i]
        keep = True
        if rule != 1 and not (y[i] > 0):
            keep = False
        if rule != 0 and not (gi > 0):
            keep = False
        dx[i] = gi if keep else 0


def forward(x):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _forward(x.reshape(-1), y.reshape(-1))
    return y


def backward(y, g, rule):
    g = np.ascontiguousarray(g)
    dx = np.empty_like(g)
    _backward(y.reshape(-1), g.reshape(-1), dx.reshape(-1), RULES[rule])
    return dx
