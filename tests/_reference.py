"""Shared helpers for the engine tests (not a test module itself).

* ``rng``, ``away_from_zero``, ``distinct``: seeded test inputs (no ReLU kinks
  near a sample, no max-pool ties).
* ``one_and_all_threads``: a function's results serial and parallel.
* ``numeric_grad``: central differences of a scalar function of an array,
  independent of ``te.gradcheck`` (used where gradcheck's random output
  direction would get in the way, e.g. the sign-dependent ReLU rules).
* ``tiny_network``: a small Network with every layer type AlexNet uses.
* ``torch_alexnet`` / ``torch_state_dict``: PyTorch reference AlexNets whose
  ``nn.Sequential`` has exactly one module per te layer, in te's order, so
  that module ``i`` is ``te_model.layer_names[i]`` and ``seq[:i + 1]`` is the
  prefix network that ``te_model(x, until=layer_names[i])`` must match.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain import nn


def rng(seed=0):
    return np.random.default_rng(seed)


def away_from_zero(shape, seed=0, lo=0.1):
    """Standard normal values, pushed to |v| >= lo (no kinks within eps of a sample)."""
    v = rng(seed).standard_normal(shape)
    return np.where(v >= 0, v + lo, v - lo)


def distinct(shape, seed=0, spacing=1e-2):
    """Values all different by >= spacing (no max-pool ties), negative and positive."""
    n = int(np.prod(shape))
    return (rng(seed).permutation(n) - n / 2).reshape(shape) * spacing


@pytest.fixture(scope="module")
def serial_kernels():
    """Run the Numba kernels on one thread for a module of tiny-array tests.

    Gradient checks call kernels thousands of times on arrays of a few hundred
    elements; each parallel launch costs a thread-pool round trip that, on a
    busy 2-core machine, is ~1000x the work itself.  The parallel paths are
    tested separately (``test_kernels_parallel_equals_serial``, and the
    full-size AlexNets in test_torch_reference.py run with all threads)."""
    try:
        import numba
    except ImportError:
        yield
        return
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def one_and_all_threads(run):
    """(run() on one Numba thread, run() on all of them), the thread count restored after."""
    import numba
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = run()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        return serial, run()
    finally:
        numba.set_num_threads(prev)


def edit(path, fn):
    """Open an HDF5 file for writing, let ``fn(f)`` change it, return the path."""
    import h5py
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def forward_difference(t, axis=-1):
    """y = t[..., 1:] - t[..., :-1] along ``axis``, by indexing (what total variation
    sums): its gradient is indexing's scatter, dx[..., 1:] += g, dx[..., :-1] -= g."""
    hi = [slice(None)] * t.ndim
    lo = list(hi)
    hi[axis], lo[axis] = slice(1, None), slice(0, -1)
    return t[tuple(hi)] - t[tuple(lo)]


# d f / d arr by central differences: the package's one finite-difference loop
numeric_grad = te.central_differences


def tiny_network(seed=0, lrn_alpha=1e-4, dropout=True):
    """(2, 9, 9) input -> 3 classes; conv/relu/LRN/maxpool/grouped conv/flatten/linear/dropout."""
    te.manual_seed(seed)
    layers = [("conv1", nn.Conv2d(2, 4, 3, stride=1, padding=1)), ("relu1", nn.ReLU()),
              ("norm1", nn.LocalResponseNorm(3, lrn_alpha, 0.75, 1.0)),
              ("pool1", nn.MaxPool2d(3, 2)),
              ("conv2", nn.Conv2d(4, 6, 3, stride=1, padding=1, groups=2)), ("relu2", nn.ReLU()),
              ("flatten", nn.Flatten()),
              ("fc1", nn.Linear(6 * 4 * 4, 5)), ("relu3", nn.ReLU())]
    if dropout:
        layers.append(("drop", nn.Dropout(0.5)))
    layers.append(("fc2", nn.Linear(5, 3)))
    return te.Network(layers, (2, 9, 9))


def kink_margin(model, x):
    """How far the point ``x`` is from a non-differentiable point of ``model``:
    the smallest |ReLU input| and the smallest gap between the largest and the
    second largest value of any max-pool window whose maximum is positive
    (ties among zeros of a ReLU are harmless: those zeros are locally constant).
    Central differences with a step well below this margin are exact to O(eps^2)."""
    from numpy.lib.stride_tricks import sliding_window_view
    margin = np.inf
    h = te.Tensor(np.asarray(x, np.float64))
    with te.no_grad():
        for layer in model.layers.values():
            a = h.numpy()
            if isinstance(layer, nn.ReLU):
                margin = min(margin, float(np.abs(a).min()))
            elif isinstance(layer, nn.MaxPool2d):
                k, s, p = layer.kernel_size, layer.stride, layer.padding
                a = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
                win = sliding_window_view(a, (k, k), axis=(2, 3))[:, :, ::s, ::s]
                win = np.sort(win.reshape(win.shape[:4] + (k * k,)), axis=-1)
                top = win[..., -1] > 0
                if top.any():
                    margin = min(margin, float((win[..., -1] - win[..., -2])[top].min()))
            h = layer(h)
    return margin


# --------------------------------------------------------------------------
# PyTorch reference AlexNets (same module order as te.models.alexnet)
# --------------------------------------------------------------------------
def torch_alexnet(variant, num_classes=1000):
    """The package's independent PyTorch AlexNet (tinygrad_explain.torch_reference):
    module ``i`` of the Sequential is te layer ``i``, so ``seq[:i + 1]`` is a prefix net."""
    import torch.nn as tnn

    from tinygrad_explain.torch_reference import layers
    return tnn.Sequential(*layers(variant, num_classes)).eval()


def torch_state_dict(torch_model, layer_names):
    """PyTorch state dict ("16.weight") -> te state dict ("fc6.weight")."""
    out = {}
    for k, v in torch_model.state_dict().items():
        i, p = k.split(".")
        out[f"{layer_names[int(i)]}.{p}"] = v.detach().cpu().numpy()
    return out


def rel_err(a, ref):
    """max |a - ref| relative to the largest magnitude of ref."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.abs(a - ref).max() / np.abs(ref).max())
