"""Hand-written kernels, one module per op, forward and backward side by side.

CPU kernels are Numba functions (``@njit(cache=True)``, compiled on first
use and cached on disk, so a second process does not recompile).  Each
module's plain-Python wrappers allocate the outputs and call the compiled
loop; the ops in :mod:`tinygrad_explain.ops` only call these wrappers.
Matrix products are not here: they go through NumPy's BLAS (``np.matmul``).

Modules: ``im2col`` (convolution data movement), ``layout`` (bias add and
NCHW <-> rows transposition), ``relu``, ``maxpool``, ``lrn``, ``avgpool``,
``workspace`` (reusable scratch buffers).
"""
from . import im2col, layout, relu, maxpool, lrn, avgpool, workspace  # noqa: F401
