"""Learned inversion: a decoder network D that maps a layer's code back to an image
(Dosovitskiy & Brox, "Inverting Visual Representations with Convolutional
Networks", CVPR 2016).

D is fitted (``scripts/train_decoder.py``) on many scenes x to minimise the pixel
error ||D(phi(x)) - x||^2, so D(phi0) estimates the *expected* image given the code,
E[x | phi(x) = phi0]: what the code determines comes out, what it leaves open comes
out as the average over the training scenes (blurred, grey).  The shipped decoders
are linear -- D(c) = upsample_x2(W c + b), the best affine read-out of a 32 x 32
image from the code, fitted in closed form (ridge regression) --, so they also
measure how much of the picture a layer's code holds *linearly*.  This is the
knowledge that hand-made priors (alpha-norm, TV, jitter) lack and that deep codes
need: from pool5 on, the embedded model's code does not say where exactly the item
is, whether it is light or dark, or what the background is.

``te.explain.invert(..., recipe="decoder")`` starts from D(phi0) and refines it with
Mahendran & Vedaldi's objective (inversion.py); :func:`decode` is the decoder alone.

A decoder is an ordinary model file (the engine's HDF5 format): its input_shape is
the code's shape as a map -- (C, H, W) of a convolutional layer, (F, 1, 1) of a fully
connected one -- and its output an image in the model's model space.  The shipped
ones sit next to the model file: ``<model>_decoder_<layer>.h5``.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.engine import Tensor, no_grad
from ..core.models import Network
from ._common import ExplainError, LayerName, resolve_layer

#: the layers of the embedded model with a shipped decoder (where hand-made priors fail)
DECODER_LAYERS = ("pool5", "fc6", "fc7")


def decoder_input_shape(code_shape: Sequence[int]) -> tuple[int, int, int]:
    """A code's shape as the decoder's (C, H, W) input: (F,) -> (F, 1, 1)."""
    code_shape = tuple(int(v) for v in code_shape)
    return code_shape if len(code_shape) == 3 else (int(np.prod(code_shape)), 1, 1)


def decoder_architecture(code_shape: Sequence[int], image_shape: Sequence[int] = (3, 32, 32),
                         factor: int = 2) -> list[dict]:
    """The decoder's layer specs for a code of ``code_shape`` (C, H, W) or (F,): the linear
    read-out of an ``image_shape`` image, upsampled by ``factor`` (nearest neighbour):
    flatten -> linear -> unflatten -> upsample."""
    D = int(np.prod(code_shape))
    return [dict(name="flatten", type="flatten"),
            dict(name="fc", type="linear", in_features=D, out_features=int(np.prod(image_shape))),
            dict(name="unflatten", type="unflatten", shape=[int(v) for v in image_shape]),
            dict(name="upsample", type="upsample", factor=int(factor))]


def decoder_path(model: Network | str | Path, layer: str) -> Path:
    """Where the decoder of ``layer`` for ``model`` (a Network loaded from a file, a
    shipped model's name or a model file's path) lives: next to the model file,
    ``<stem>_decoder_<layer>.h5``."""
    from ..modelfiles.modelfile import DEFAULT_WEIGHTS, MODEL_NAMES
    if isinstance(model, Network):
        src = getattr(model, "path", None)
        if src is None:
            raise ExplainError("this model was not loaded from a file, so it has no shipped decoder "
                               "(te.explain.decode takes one as decoder=)")
    elif isinstance(model, str) and model in MODEL_NAMES:
        src = MODEL_NAMES[model]
    else:
        src = model if model is not None else DEFAULT_WEIGHTS
    src = Path(src)
    return src.with_name(f"{src.stem}_decoder_{layer}.h5")


#: model -> {layer: its decoder}: the package's one cache policy (as recipes' colour matrices and the
#: exemplar bank's codes), weak references to the model, so a decoder goes with the model it was loaded for
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def load_decoder(model: Network, layer: LayerName) -> Network:
    """The shipped decoder of ``layer`` for ``model`` (loaded once per model and kept while the
    model lives; only read afterwards, so threads may share it).  A missing file or one whose
    input does not match the layer's code raises ExplainError naming the file."""
    from ..modelfiles.modelfile import load_model
    name = resolve_layer(model, layer)
    path = decoder_path(model, name)
    with _cache_lock:
        mine = _cache.setdefault(model, {})
        if name not in mine:
            if not path.exists():
                raise ExplainError(f"no decoder for layer {name!r} of this model: {path} does not exist "
                                   f"(shipped for {', '.join(DECODER_LAYERS)} of the embedded model; "
                                   "scripts/train_decoder.py makes one)")
            mine[name] = load_model(path, device=getattr(model, "device", "cpu"))
        d = mine[name]
    check_decoder(model, name, d, path)
    return d


def check_decoder(model: Network, layer: str, decoder: Network, where: str | Path = "the decoder") -> None:
    """Refuse a decoder whose input is not ``layer``'s code or whose output is not the model's input."""
    code = tuple(model.shapes[layer])
    want_in = decoder_input_shape(code)
    if tuple(decoder.input_shape) != want_in:
        raise ExplainError(f"{where}: takes input of shape {tuple(decoder.input_shape)}, but layer {layer!r} "
                           f"gives codes of shape {code}")
    out = decoder.shapes[decoder.layer_names[-1]]
    if tuple(out) != tuple(model.input_shape):
        raise ExplainError(f"{where}: outputs shape {tuple(out)}, the model takes {tuple(model.input_shape)}")


def decode(model: Network, code: np.ndarray, layer: LayerName = "fc7", decoder: Network | None = None) -> np.ndarray:
    """D(phi0): the decoder's image (1, C, H, W) in model space for one code of ``layer``
    (any array with the layer's number of values)."""
    name = resolve_layer(model, layer)
    if decoder is None:
        decoder = load_decoder(model, name)
    else:
        check_decoder(model, name, decoder)
    code = np.asarray(code, np.float32).reshape((1,) + tuple(decoder.input_shape))
    with no_grad():
        x = decoder(Tensor(code).to(getattr(model, "device", "cpu"))).numpy()
    return x.astype(np.float32)
