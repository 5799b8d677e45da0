"""The Adam / AdamW parameter update, one pass over each parameter.

With g = dL/dw, step t, c1 = 1 - b1^t, c2 = 1 - b2^t:
    g  = g + weight_decay * w                  (L2 form only: ``decay_l2``)
    m  = b1 * m + (1 - b1) * g
    v  = b2 * v + (1 - b2) * g * g
    w  = w - lr * weight_decay * w             (decoupled form, AdamW: ``decay_w``)
    w  = w - (lr / c1) * m / (sqrt(v / c2) + eps)
The NumPy expressions for this take ~10 passes over memory with temporaries;
this kernel does one, with the same operations in the same order and
precision (the parameter's dtype), so the result is the same, bit for bit.
"""
import numpy as np

from ._numba import kernel, prange


@kernel
def _step(w, g, m, v, b1, b2, one_b1, one_b2, decay_l2, decay_w, lr_c1, c2, eps):
    for i in prange(w.size):
        gi = g[i]
        if decay_l2 != 0:
            gi = gi + decay_l2 * w[i]
        mi = m[i] * b1 + one_b1 * gi
        vi = v[i] * b2 + one_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        wi = w[i]
        if decay_w != 0:
            wi = wi - decay_w * wi
        w[i] = wi - lr_c1 * mi / (np.sqrt(vi / c2) + eps)


def step(w, g, m, v, lr, b1, b2, eps, weight_decay, decoupled, t):
    """Update the contiguous arrays ``w`` (parameter), ``m``, ``v`` (moments)
    in place from the gradient ``g`` at step ``t`` (1-based)."""
    f = w.dtype.type
    for a, name in ((w, "parameter"), (m, "first moment"), (v, "second moment")):
        if not a.flags.c_contiguous:
            raise ValueError(f"adam: the {name} array must be C-contiguous")
    for a, name in ((g, "gradient"), (m, "first moment"), (v, "second moment")):
        if a.shape != w.shape:
            raise ValueError(f"adam: the {name} has shape {a.shape}, the parameter {w.shape}")
    g = np.ascontiguousarray(g, dtype=w.dtype)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    _step(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), f(b1), f(b2), f(1 - b1), f(1 - b2),
          f(0 if decoupled else weight_decay), f(lr * weight_decay if decoupled else 0),
          f(lr / c1), f(c2), f(eps))
