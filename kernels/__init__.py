"""Hand-written kernels, one module per op, forward and backward side by side.

CPU kernels are Numba functions (``@njit(cache=True)``, compiled on first
use and cached on disk, so a second process does not recompile).  Each
module's plain-Python wrappers allocate the outputs and call the compiled
loop; the ops in :mod:`tinygrad_explain.core.ops` only call these wrappers.
Matrix products go through NumPy's BLAS (``np.matmul``), except the fully
connected layers' products for a few rows (``linear``).

Modules: ``im2col`` (convolution data movement), ``layout`` (bias add and
NCHW <-> rows transposition), ``relu``, ``clip`` (ReLU6), ``maxpool``, ``lrn``,
``avgpool`` (adaptive and windowed), ``depthwise`` (depthwise convolution),
``batchnorm`` (inference batch normalisation),
``linear`` (fully connected products for a few rows),
``adam`` (the optimiser's update, for training), ``workspace`` (reusable
scratch buffers), ``threads`` (a batch split over the threads, one slice of
the images each).

What a backend must offer -- namespaces, functions, signatures, which
arrays they allocate or write into -- is declared in :mod:`.interface`;
``tests/test_kernel_interface.py`` checks both backends against it.

GPU kernels are their CUDA twins (``<op>.cu`` next to ``<op>.py``), wrapped
with the same signatures in :mod:`.gpu`.  ``backend(array)`` returns the
namespace that owns an array -- this package for a NumPy array, ``gpu`` for
a CuPy array -- so an op reads ``B = K.backend(x); B.relu.forward(x)``.  The
GPU module is imported only once a CuPy array exists: importing
tinygrad_explain never imports CuPy.
"""
import sys

from . import adam, avgpool, batchnorm, clip, depthwise, im2col, layout, linear, lrn, maxpool, relu, threads, workspace  # noqa: F401


def backend(a):
    """The kernel namespace for array ``a``: Numba (this package) or CUDA (``kernels.gpu``)."""
    if type(a).__module__.startswith("cupy"):
        from . import gpu
        return gpu
    return sys.modules[__name__]
