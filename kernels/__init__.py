"""Hand-written kernels, one module per op, forward and backward side by side.

CPU kernels are Numba functions (``@njit(cache=True)``, compiled on first
use and cached on disk, so a second process does not recompile).  Each
module's plain-Python wrappers allocate the outputs and call the compiled
loop; the ops in :mod:`tinygrad_explain.core.ops` only call these wrappers.
Matrix products go through NumPy's BLAS (``np.matmul``), except the fully
connected layers' products for a few rows (``linear``).

Modules: ``im2col`` (convolution data movement), ``layout`` (bias add and
NCHW <-> rows transposition), ``relu``, ``clip`` (ReLU6), ``max_pool2d``, ``lrn``,
``avg_pool2d`` (windowed and adaptive), ``depthwise_conv2d`` (depthwise convolution),
``batch_norm`` (inference batch normalisation),
``linear`` (fully connected products for a few rows),
``adam`` (the optimiser's update, for training), ``workspace`` (reusable
scratch buffers), ``threads`` (a batch split over the threads, one slice of
the images each).

What a backend must offer -- namespaces, functions, signatures, which
arrays they allocate or write into -- is declared in :mod:`.interface`;
``tests/test_kernel_interface.py`` checks both backends against it.

GPU kernels are their CUDA twins (``<stem>.cu`` next to ``<stem>.py``), wrapped
with the same signatures in :mod:`.gpu`.  Each op has one stem at every level
(naive reference, kernel module, CUDA source, GPU namespace): the op cards at
the top of :mod:`tinygrad_explain.core.ops` list them, with the naming and shape
conventions; tests/test_op_cards.py checks the table.  ``backend(array)`` returns the
namespace that owns an array -- this package for a NumPy array, ``gpu`` for
a CuPy array -- so an op reads ``B = K.backend(x); B.relu.forward(x)``.  The
GPU module is imported only once a CuPy array exists: importing
tinygrad_explain never imports CuPy.
"""
import sys

from . import (adam, avg_pool2d, batch_norm, clip, depthwise_conv2d, im2col, layout, linear, lrn,  # noqa: F401
               max_pool2d, relu, threads, workspace)


def backend(a):
    """The kernel namespace for array ``a``: Numba (this package) or CUDA (``kernels.gpu``)."""
    if type(a).__module__.startswith("cupy"):
        from . import gpu
        return gpu
    return sys.modules[__name__]
