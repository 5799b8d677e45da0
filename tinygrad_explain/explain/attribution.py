"""The attribution methods that came after the lecture's: SmoothGrad, Grad-CAM,
guided Grad-CAM, occlusion and gradient x input.

Same calling convention as ``te.explain.saliency``: ``method(model, x, target, ...)``
with ``x`` images in model space (N, C, H, W) and ``target`` a class index, a
name, a channel or neuron (``("conv5", c[, i, j])``, see ``te.explain.gradient``),
or one per image; every map comes back on the host, one per image.  ``S`` is the
unnormalised class score (before softmax) unless said otherwise.

    smoothgrad       (N, H, W)     Smilkov et al. 2017        mean over noisy copies, max over channels
    gradcam          (N, H, W)     Selvaraju et al. 2017      ReLU(sum_k alpha_k A^k), upsampled
    guided_gradcam   (N, C, H, W)  Selvaraju et al. 2017      guided backprop * Grad-CAM
    occlusion        (N, H, W)     Zeiler & Fergus 2014       drop of p_target under a sliding grey patch
    gradient_x_input (N, C, H, W)  Shrikumar et al. 2016      x * dS/dx
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import cv2
import numpy as np

from ..core.engine import no_grad
from ..core.models import Network
from ..data.image import pixel_bounds
from ._common import (
    Array,
    ExplainError,
    Images,
    LayerName,
    Target,
    as_batch,
    resolve_layer,
    resolve_objective,
    to_host,
)
from .gradients import batches, default_batch_size, gradient, gradient_and_activation, passes

# --------------------------------------------------------------------------
# SmoothGrad
# --------------------------------------------------------------------------
#: Bounds checked before any noise is drawn: SmoothGrad's copies per image, and the
#: memory its noise, noisy copies and gradients take (16 bytes a value together).
MAX_SAMPLES = 10_000
MAX_SMOOTHGRAD_BYTES = 4 << 30

Seed = Union[int, Sequence]


def image_seeds(seed: Seed, n: int) -> list | None:
    """None for one seed for the whole batch (an int); for one seed per image (a sequence of
    ``n`` ints or tuples of ints, anything ``np.random.default_rng`` takes, e.g.
    ``[(job_seed, index) for index in indices]``), the list of them."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return None
    try:
        seeds = list(seed)
    except TypeError:
        raise ExplainError(f"seed must be an integer or one seed per image, got {seed!r}") from None
    if len(seeds) != n:
        raise ExplainError(f"seed: {len(seeds)} seeds for {n} images")
    return seeds


def check_noise(noise: float, samples: int) -> None:
    """SmoothGrad's options, checked (a clear error naming the bad one)."""
    if not noise >= 0 or not np.isfinite(noise):
        raise ExplainError(f"noise must be a finite level >= 0 (a fraction of the image's range), got {noise}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ExplainError(f"samples must be an integer >= 1, got {samples!r}")
    if samples > MAX_SAMPLES:
        raise ExplainError(f"samples must be at most {MAX_SAMPLES:,} (SmoothGrad's average settles within "
                           f"~50), got {samples:,}")


def check_noise_memory(x: np.ndarray, samples: int) -> None:
    """Refuse, before drawing, noise for ``x`` that would not fit in MAX_SMOOTHGRAD_BYTES."""
    need = 16 * x.size * int(samples)              # the float64 noise, the noisy copies and their gradients
    if need > MAX_SMOOTHGRAD_BYTES:
        raise ExplainError(f"{samples:,} noisy copies of {len(x)} image(s) of {x[0].size:,} values need "
                           f"{need / 2 ** 30:.1f} GiB, more than {MAX_SMOOTHGRAD_BYTES / 2 ** 30:.0f} GiB; "
                           "use fewer samples (or fewer images per call)")


def smoothgrad_noise(x: Array, noise: float, samples: int, seed: Seed,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """The noise SmoothGrad adds: (N, samples, C, H, W) float, N(0, sigma_n^2) with
    sigma_n = noise * (max(x_n) - min(x_n)) for image n (Smilkov et al.'s "noise level"
    relative to the image's range).  The same seed gives the same noise.  ``seed``: an int
    (one generator for the batch, drawn image after image) or one seed per image
    (``image_seeds``: each image's noise is then the same in any batch); ``rng``: the
    batch's generator to continue drawing from (what ``smooth_gradient`` passes group by
    group: a generator drawing in turn gives the numbers of one large draw)."""
    x = np.asarray(to_host(x), np.float64)
    check_noise(noise, samples)
    check_noise_memory(x, samples)
    sigma = noise * (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1))
    seeds = image_seeds(seed, len(x))
    if seeds is None:
        rng = np.random.default_rng(seed) if rng is None else rng
        eps = rng.standard_normal((len(x), int(samples)) + x.shape[1:])
    else:
        eps = np.stack([np.random.default_rng(s).standard_normal((int(samples),) + x.shape[1:]) for s in seeds]) \
            if len(x) else np.zeros((0, int(samples)) + x.shape[1:])
    return eps * sigma[:, None, None, None, None]


def smooth_gradient(model: Network, x: Images, target: Target, noise: float = 0.15, samples: int = 25, seed: Seed = 0,
                    rule: str = "backprop", absolute: bool = False, batch_size: int | None = None) -> np.ndarray:
    """SmoothGrad of the input gradient (Smilkov, Thorat, Kim, Viegas & Wattenberg 2017,
    "SmoothGrad: removing noise by adding noise"):

        G_n = 1/samples * sum_k g(x_n + eps_nk),   eps_nk ~ N(0, sigma_n^2)  (smoothgrad_noise)

    with g = dS_target/dx under ``rule`` (or |dS/dx| with ``absolute``); ``target`` as in
    ``gradient`` (a class, a channel or a neuron).  Returns
    (N, C, H, W) in model space.  With rule="backprop" and absolute=False this is the
    exact gradient of the smoothed score 1/samples * sum_k S(x + eps_k) for the
    drawn noise.  ``seed``: an int, or one per image (``image_seeds``).  The noisy copies
    go through the network ``batch_size`` at a time (default ``default_batch_size(model)``),
    images a group at a time so that the noise of only one group is held; the result is
    the same bit for bit whatever the batch."""
    check_noise(noise, samples)
    xb = as_batch(model, x)
    N = xb.shape[0]
    obj = resolve_objective(model, target, N)
    bs = batch_size or default_batch_size(model)
    seeds = image_seeds(seed, N)
    rng = np.random.default_rng(seed) if seeds is None else None
    out = []
    for g in batches(N, max(1, bs // samples)):
        eps = smoothgrad_noise(xb[g], noise, samples, seed if seeds is None else seeds[g], rng)
        noisy = (to_host(xb[g])[:, None].astype(np.float64) + eps).astype(xb.dtype).reshape((-1,) + xb.shape[1:])
        grads = gradient(model, noisy, obj.take(np.repeat(np.arange(g.start, g.stop), samples)), rule,
                         batch_size=bs)                                   # one objective per noisy copy
        if absolute:
            np.abs(grads, out=grads)
        out.append(grads.reshape((g.stop - g.start, samples) + xb.shape[1:]).mean(axis=1))
    return np.concatenate(out) if out else np.zeros(xb.shape, xb.dtype)


def smoothgrad(model: Network, x: Images, target: Target, noise: float = 0.15, samples: int = 25, seed: Seed = 0,
               rule: str = "backprop", batch_size: int | None = None) -> np.ndarray:
    """The SmoothGrad saliency map: Simonyan et al.'s saliency max_c |dS/dx| with the
    absolute gradient averaged over ``samples`` noisy copies of each image before the
    maximum over colour channels (Smilkov et al. 2017; noise level 10-20% of the
    image's range is their recommendation, 15% here).  Returns (N, H, W), >= 0."""
    return smooth_gradient(model, x, target, noise, samples, seed, rule, absolute=True,
                           batch_size=batch_size).max(axis=1)


# --------------------------------------------------------------------------
# Grad-CAM and guided Grad-CAM
# --------------------------------------------------------------------------
#: node types that keep a convolution's feature maps as they are (default_cam_layer follows them)
_MAP_TYPES = ("relu", "relu6", "clip", "batchnorm", "add", "concat")


def default_cam_layer(model: Network) -> str:
    """The last convolutional layer's rectified output (Selvaraju et al. use the last
    conv layer's rectified feature maps): the last conv, followed through the nodes
    right after it that keep its maps (batch norm, ReLU / ReLU6, a residual add, a
    concatenation) -- "relu5" for AlexNet, the last block's output ("layer4.1.relu2")
    for a ResNet, the last inception's concatenation for GoogLeNet."""
    names = model.layer_names
    convs = [i for i, n in enumerate(names) if model.layers[n].type == "conv"]
    if not convs:
        raise ExplainError("Grad-CAM needs a convolutional layer; this model has none")
    i = convs[-1]
    while i + 1 < len(names) and model.layers[names[i + 1]].type in _MAP_TYPES \
            and len(model.shapes[names[i + 1]]) == 3:
        i += 1
    return names[i]


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) maps to (N, H, W) (pixel centres aligned, as
    cv2.INTER_LINEAR and torch's interpolate(mode="bilinear", align_corners=False))."""
    H, W = size
    return np.stack([cv2.resize(np.asarray(m), (W, H), interpolation=cv2.INTER_LINEAR) for m in maps])


def gradcam(model: Network, x: Images, target: Target, layer: LayerName | None = None,
            upsample_to_input: bool = True, batch_size: int | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra 2017, "Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization"):

        alpha_k = 1/(h w) sum_ij dS_target/dA^k_ij      (global-average-pooled gradient)
        L = ReLU(sum_k alpha_k A^k)                      (h, w)

    for the feature maps A (N, K, h, w) of ``layer`` (any layer with a spatial output;
    default: the last conv layer after its ReLU).  A and dS/dA come from one forward and
    one backward pass, ``batch_size`` images at a time (``gradient_and_activation``).
    Returns (N, H, W), >= 0, bilinearly upsampled to the input size
    (``upsample_to_input=False``: (N, h, w))."""
    layer = default_cam_layer(model) if layer is None else resolve_layer(model, layer)
    if len(model.shapes[layer]) != 3:
        raise ExplainError(f"Grad-CAM needs a layer with feature maps (C, h, w); {layer!r} has shape "
                           f"{model.shapes[layer]}")
    g, a = gradient_and_activation(model, x, target, layer=layer, batch_size=batch_size)   # dS/dA, A
    cam = np.maximum((g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1), 0)
    return upsample(cam, model.input_shape[1:]) if upsample_to_input else cam


def guided_gradcam(model: Network, x: Images, target: Target, layer: LayerName | None = None,
                   batch_size: int | None = None) -> np.ndarray:
    """Guided Grad-CAM (Selvaraju et al. 2017): the guided-backprop gradient
    (Springenberg et al. 2015) times the upsampled Grad-CAM map, pixel by pixel:
    (N, C, H, W) = gradient(rule="guided") (N, C, H, W) * gradcam (N, 1, H, W).
    Two passes per batch (the ReLU rules differ): the guided one and Grad-CAM's."""
    return (gradient(model, x, target, rule="guided", batch_size=batch_size)
            * gradcam(model, x, target, layer, batch_size=batch_size)[:, None])


# --------------------------------------------------------------------------
# occlusion
# --------------------------------------------------------------------------
def grey(model: Network) -> np.ndarray:
    """Mid-grey (pixel value half-way between black and white) in model space, (C, 1, 1)."""
    lo, hi = pixel_bounds(model)
    return (lo + hi) / 2


def occlusion(model: Network, x: Images, target: Target, patch: int | None = None, stride: int | None = None,
              fill: np.ndarray | Sequence[float] | None = None, output: str = "probability",
              batch_size: int | None = None) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014, "Visualizing and Understanding
    Convolutional Networks", section 4.2): a grey square of side ``patch`` is slid over
    the image with step ``stride``; for each position the network sees the occluded
    image, and the map is how much the target's output drops,

        M_ij = mean over the positions p whose square covers (i, j) of  f(x) - f(x occluded at p)

    (each pixel averages the drops of every square over it, as Captum's Occlusion does;
    pixels no square covers get 0).  f is the softmax probability of the target class
    (Zeiler & Fergus's curve) or, with output="score", the unnormalised score -- or, for
    a channel or neuron target (as in ``gradient``), its activation (Zeiler & Fergus's
    figure 7 also follows a feature map).
    Default patch: 1/8 of the image side, stride half a patch.  ``fill``: the
    occluder's model-space value per channel (default mid-grey, ``grey(model)``).
    All occluded copies -- of every image -- go through the network in batches of
    ``batch_size`` (default ``default_batch_size(model)``), without a graph; each
    image's map is the same bit for bit whatever the batch.
    Returns (N, H, W); positive where hiding the pixels lowers f."""
    from ..core.ops import softmax
    if output not in ("probability", "score"):
        raise ExplainError(f"output must be 'probability' or 'score', got {output!r}")
    xb = to_host(as_batch(model, x))
    N, C, H, W = xb.shape
    obj = resolve_objective(model, target, N)
    probability = output == "probability" and obj.classes is not None
    patch = max(1, min(H, W) // 8) if patch is None else int(patch)
    stride = max(1, patch // 2) if stride is None else int(stride)
    if not 1 <= patch <= min(H, W) or stride < 1:
        raise ExplainError(f"need 1 <= patch <= {min(H, W)} and stride >= 1, got patch={patch}, stride={stride}")
    fill = grey(model) if fill is None else np.asarray(fill, xb.dtype).reshape(-1, 1, 1)
    ys, xs = range(0, H - patch + 1, stride), range(0, W - patch + 1, stride)
    pos = [(i, j) for i in ys for j in xs]
    cover = np.zeros((H, W))
    for i, j in pos:
        cover[i:i + patch, j:j + patch] += 1
    bs = batch_size or default_batch_size(model)

    def f(images, rows):                       # f for the targets of images ``rows`` on a batch of their copies
        with no_grad():
            a = to_host(model(as_batch(model, images), until=obj.layer).data).astype(np.float64)
        if probability:
            a = softmax(a, axis=1).numpy()
        return (a * obj.seed[rows]).reshape(len(a), -1).sum(axis=1)

    base = np.concatenate([f(xb[sl], np.arange(sl.start, sl.stop)) for sl in passes(model, N, bs)]
                          or [np.zeros(0)])
    image, where = np.repeat(np.arange(N), len(pos)), np.tile(np.arange(len(pos)), N)   # every (image, position)
    drops = np.empty(len(image))
    for sl in passes(model, len(image), bs):                    # copies of several images in one batch
        batch = xb[image[sl]]
        for b, p in enumerate(where[sl]):
            i, j = pos[p]
            batch[b, :, i:i + patch, j:j + patch] = fill
        drops[sl] = base[image[sl]] - f(batch, image[sl])
    out = np.zeros((N, H, W))
    for n, p, d in zip(image, where, drops):
        i, j = pos[p]
        out[n, i:i + patch, j:j + patch] += d
    return np.divide(out, cover, out=np.zeros_like(out), where=cover > 0)


# --------------------------------------------------------------------------
# gradient x input
# --------------------------------------------------------------------------
def gradient_x_input(model: Network, x: Images, target: Target, rule: str = "backprop",
                     batch_size: int | None = None) -> np.ndarray:
    """Gradient x input (Shrikumar, Greenside, Shcherbina & Kundaje 2016, "Not Just a
    Black Box"; Ancona et al. 2018): x * dS_target/dx, element by element, (N, C, H, W).
    In model space (mean-subtracted), so it is the first-order Taylor term of S around
    the mean image x = 0; for a ReLU network without biases (S(a x) = a S(x) for a > 0)
    the map sums exactly to S(x) (Euler's theorem)."""
    xb = as_batch(model, x)
    return to_host(xb) * gradient(model, xb, target, rule, batch_size=batch_size)
