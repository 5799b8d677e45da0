"""Gradient checking by central finite differences, in float64.

For f: inputs -> output and a fixed random direction v of the output's
shape, the scalar s(x) = sum(f(x) * v) has the analytic gradient that
``backward(v)`` computes.  Each checked element i is compared with

    (s(x + eps e_i) - s(x - eps e_i)) / (2 eps)          (error O(eps^2))

and must satisfy |analytic - numeric| <= atol + rtol * |numeric|.

Inputs may be CuPy arrays (or GPU Tensors): the check then runs on the GPU,
in float64, perturbing one element at a time in place on the device.
"""
from __future__ import annotations

import numpy as np

from .engine import Tensor, array_module, no_grad


class GradcheckError(AssertionError):
    pass


def central_differences(f, arr, eps=1e-6, idx=None) -> dict:
    """d f / d arr by central differences: the one finite-difference loop of the
    project (gradcheck, the tests' references and the walkthrough use it).

    f    a function of no arguments returning a float; it reads ``arr``
    arr  the array (NumPy or CuPy) that f depends on; each element i in ``idx``
         (flat indices, default all) is set to arr[i] + eps and arr[i] - eps in
         place, then restored
    Returns {i: (f(arr + eps e_i) - f(arr - eps e_i)) / (2 eps)}, error O(eps^2).
    """
    flat = arr.reshape(-1)
    if isinstance(arr, np.ndarray) and not np.shares_memory(flat, arr):
        raise ValueError("central_differences needs a contiguous array (it perturbs a view in place)")
    out = {}
    for i in (range(flat.size) if idx is None else idx):
        old = float(flat[i])            # a value, not a view (CuPy's flat[i] is a 0-d view)
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[int(i)] = (fp - fm) / (2 * eps)
    return out


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_checks=None, seed=0, raise_exception=True):
    """Check ``fn``'s backward against central differences.

    fn        callable taking Tensors (one per input) and returning a Tensor
    inputs    arrays (cast to float64, kept on their device); each gets
              ``requires_grad=True``.  Pass ``Tensor(arr)`` (requires_grad False)
              to hold an input constant.
    max_checks  check at most this many randomly chosen elements per input
              (None = all) -- for whole networks.
    Returns True, or raises GradcheckError naming the input, the element and
    both values (or returns False when ``raise_exception=False``).
    """
    rng = np.random.default_rng(seed)
    ts = []
    for a in inputs:        # C order: each element is perturbed through a flat view (a frozen nn.Linear weight is not)
        if isinstance(a, Tensor):
            ts.append(Tensor(array_module(a.data).asarray(a.data, np.float64, order="C"),
                             requires_grad=a.requires_grad))
        else:
            ts.append(Tensor(array_module(a).array(a, np.float64, order="C"), requires_grad=True))
    out = fn(*ts)
    if out.dtype != np.float64:
        raise GradcheckError(f"fn returned {out.dtype}; gradcheck needs float64 all the way through")
    v = rng.standard_normal(out.shape)
    if array_module(out.data) is not np:
        v = array_module(out.data).asarray(v)
    out.backward(v)

    def s():
        with no_grad():
            return float((fn(*ts).data * v).sum())

    for k, t in enumerate(ts):
        if not t.requires_grad:
            continue
        analytic = t.grad if t.grad is not None else array_module(t.data).zeros_like(t.data)
        flat = t.data.reshape(-1)
        idx = np.arange(flat.size)
        if max_checks is not None and flat.size > max_checks:
            idx = rng.choice(flat.size, max_checks, replace=False)
        numeric = central_differences(s, t.data, eps=eps, idx=idx)
        for i in idx:
            num = numeric[int(i)]
            ana = float(analytic.reshape(-1)[i])
            if not abs(ana - num) <= atol + rtol * abs(num):
                if raise_exception:
                    raise GradcheckError(f"input {k}, element {np.unravel_index(i, t.shape)}: "
                                         f"analytic {ana:.10g} vs numeric {num:.10g}")
                return False
    return True
