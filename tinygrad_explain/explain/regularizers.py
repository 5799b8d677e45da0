"""Image priors for the optimisation-based explainers, as engine Functions.

Each regulariser maps an image batch (N, C, H, W) to one value per image
(N,), so a batch of independent optimisations shares one graph and each
image still gets exactly its own gradient.

* ``l2(x)``            sum x^2                                  (Simonyan et al. 2014)
* ``alpha_norm(x)``    1/(HW) sum |x/B|^alpha                   (Mahendran & Vedaldi 2015)
* ``total_variation``  1/(HW) sum ((dh^2 + dv^2)/V^2)^(beta/2)  (Mahendran & Vedaldi 2015)

``B`` is the range of natural images in model space and ``V = B / 6.5`` a
typical neighbour difference (the paper's normalisation), so the weights
do not depend on the image size or on the model's pixel scale.  Both are
written out as Functions with their closed-form backward (checked by
``te.gradcheck`` in the tests) rather than as chains of elementwise ops:
one pass each way, no intermediate tensors.  Those Functions, ``AlphaNorm``
and ``TotalVariation``, live in :mod:`tinygrad_explain.core.ops` with every other
differentiable operation; this module holds the priors built on them.

The Gaussian blur that acts on the image between steps (Yosinski et al.
2015) is a plain OpenCV helper at the end; the differentiable priors that
transform or reparameterise the image (jitter, scaling, rotation, octaves,
Fourier / decorrelated colour) are in :mod:`.transforms`.

The same code runs on NumPy and CuPy arrays (``xp``): on the GPU each
regulariser is a few CuPy element-wise kernels and one reduction.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..core.engine import Tensor
from ..core.engine import array_module as _xp
from ..core.ops import AlphaNorm, TotalVariation  # noqa: F401  (the Functions live in ops.py)
from ._common import Array

TV_RATIO = 6.5      # V = B / 6.5 (Mahendran & Vedaldi 2015, "balancing the different terms")


def l2(x: Tensor) -> Tensor:
    """Squared Euclidean norm per image, sum x^2 (N,) -- Simonyan's ||I||_2^2."""
    return (x * x).sum(axis=(1, 2, 3))


def alpha_norm(x: Tensor, alpha: float = 6.0, scale: float = 1.0) -> Tensor:
    """Mahendran & Vedaldi's alpha-norm prior per image (N,): ``AlphaNorm``."""
    return AlphaNorm.apply(x, alpha=alpha, scale=scale)


def total_variation(x: Tensor, beta: float = 2.0, scale: float = 1.0) -> Tensor:
    """Mahendran & Vedaldi's TV^beta prior per image (N,), with V = ``scale``: ``TotalVariation``."""
    return TotalVariation.apply(x, beta=beta, scale=scale)


# --------------------------------------------------------------------------
# a non-differentiable image operation applied between steps
# --------------------------------------------------------------------------
BLUR_MAX_CHANNELS = 128     # planes per OpenCV call: OpenCV 4 takes up to 512 channels, OpenCV 5 up to 128


def gaussian_blur(x: Array, sigma: float) -> Array:
    """Blur every channel of every image (N, C, H, W) with a Gaussian of std ``sigma`` px.
    OpenCV's, on the host: a CuPy array is copied there and the result back."""
    if sigma <= 0:
        return x
    if _xp(x) is not np:
        return _xp(x).asarray(gaussian_blur(x.get(), sigma))
    N, C, H, W = x.shape
    k = int(2 * np.ceil(3 * sigma) + 1)
    planes = x.reshape(N * C, H, W).transpose(1, 2, 0)
    out = np.empty_like(planes)
    step = BLUR_MAX_CHANNELS
    for s in range(0, N * C, step):
        out[:, :, s:s + step] = cv2.GaussianBlur(np.ascontiguousarray(planes[:, :, s:s + step]), (k, k), sigma,
                                                 borderType=cv2.BORDER_REFLECT).reshape(H, W, -1)
    return np.ascontiguousarray(out.transpose(2, 0, 1)).reshape(N, C, H, W)
