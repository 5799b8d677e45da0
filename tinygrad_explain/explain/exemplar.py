"""Inversion by retrieval: the natural scene whose code is nearest.

A deep code leaves much of the picture open (the item's exact place, its polarity,
the background: docs/explainers.md measures it), and an optimiser that matches the
code exactly fills that gap with whatever it meets first -- texture that the
model under study accepts and an independent judge often reads as another class.
A bank of *real* scenes answers the question differently: which scene that the
network has seen the like of gives (nearly) this code?  Weinzaepfel, Jegou & Perez
("Reconstructing an image from its local descriptors", CVPR 2011) inverted SIFT
this way, from a database of patches; here the units are whole scenes:

1. code distance: the ``candidates`` bank scenes b with the smallest squared
   normalised distance ||phi(b) - phi0||^2 / ||phi0||^2 (Mahendran & Vedaldi's error);
2. where the layer has a shipped decoder (decoder.py), those candidates are
   re-ranked by the Pearson correlation of their blurred grey picture with the
   decoder's expected image D(phi0) -- the decoder knows *where* the code puts the
   item, the code distance *what* it is;
3. ``te.explain.invert(..., recipe="exemplar")`` returns the first ``inits`` of
   that order, unchanged (``steps=0``); with ``steps > 0`` each is refined by the
   natural recipe's objective and priors, which lowers the code error further.

Everything here uses the code (and the decoder, a function of the code) alone,
never the image the code came from.  The bank is 2,000 scenes of the Fashion-MNIST
*training* split (scene seed 100, the decoders' training scenes; never the test
split that the sample and the benchmarks use), shipped as
``tinygrad_explain/data/fashion_scenes_bank.npz`` (``scripts/make_scene_sample.py
--bank`` regenerates it).  The bank's codes come from one forward pass over it,
kept per model (until its weights change) for the small layers: pool5 and the
fully connected ones.

What it shows is a scene the network cannot tell from the original at that layer
-- the invariance itself -- not the original: measured on the bench's held-out
scenes it is what the judge recognises best from fc6-fc8, and refining it towards
the code loses that (docs/explainers.md).
"""
from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np

from ..core.engine import Tensor, no_grad
from ..core.models import Network
from ..modelfiles.shipped import DATA_DIR
from ._common import ExplainError, LayerName, resolve_layer

BANK_PATH = DATA_DIR / "fashion_scenes_bank.npz"
CANDIDATES = 5          # nearest scenes by code that the decoder re-ranks (measured: docs/explainers.md)
_BATCH = 250            # scenes per forward pass over the bank
CACHE_MAX_VALUES = 4096  # a layer's bank codes are kept if one code has at most this many values

_banks: dict[str, dict] = {}
_codes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()     # model -> {"stamp", (bank, layer): codes}
_lock = threading.Lock()


def load_bank(path: str | Path | None = None) -> dict:
    """The bank of scenes (default: the shipped one): ``images`` uint8 (n, H, W, 3),
    ``labels`` (n,), ``indices`` (n,) (training-split scene indices), ``seed``.
    Read without pickles, once per process; a missing or malformed file raises
    ExplainError naming it."""
    path = Path(BANK_PATH if path is None else path)
    key = str(path.resolve())
    with _lock:
        if key in _banks:
            return _banks[key]
    if not path.exists():
        raise ExplainError(f"exemplar bank {path} does not exist (scripts/make_scene_sample.py --bank makes it)")
    from ..core.safe_io import load_npz
    try:     # regular file, no pickles, sizes checked before reading (safe_io.load_npz)
        bank = load_npz(path, "exemplar bank", keys=("images", "labels", "indices", "seed"))
    except (OSError, ValueError) as e:
        raise ExplainError(str(e) if str(e).startswith("exemplar bank") else
                           f"exemplar bank {path}: not a readable .npz of arrays ({e})") from None
    im = bank.get("images")
    if im is None or im.dtype != np.uint8 or im.ndim != 4 or im.shape[-1] != 3 or len(im) == 0:
        raise ExplainError(f"exemplar bank {path}: needs 'images', uint8 (n, H, W, 3) with n >= 1, got "
                           f"{None if im is None else (im.dtype, im.shape)}")
    for k in ("labels", "indices"):
        a = bank.get(k)
        if a is not None and (a.ndim != 1 or len(a) != len(im) or a.dtype.kind not in "iu"):
            raise ExplainError(f"exemplar bank {path}: {k!r} must be {len(im)} integers (one per scene), got "
                               f"{a.dtype} of shape {a.shape}")
    bank["path"] = key
    with _lock:
        return _banks.setdefault(key, bank)


def bank_fits(model: Network, bank: dict | None = None) -> bool:
    """Whether ``model`` takes the bank's pictures: RGB at the bank scenes' size."""
    bank = load_bank() if bank is None else bank
    return tuple(model.input_shape) == (3,) + bank["images"].shape[1:3]


def _check_fits(model: Network, bank: dict) -> None:
    if not bank_fits(model, bank):
        C, H, W = model.input_shape
        raise ExplainError(f"exemplar bank {bank['path']}: holds {bank['images'].shape[1]}x"
                           f"{bank['images'].shape[2]} RGB scenes, this model takes {(C, H, W)}")


def bank_distances(model: Network, codes: dict[str, np.ndarray], bank: dict | None = None) -> dict[str, np.ndarray]:
    """{layer: (n,) float64} squared normalised distances ||phi(b) - phi0||^2 / ||phi0||^2 of
    every bank scene b to the code phi0 given for each layer (layer names as the model
    has them).  One forward pass over the bank serves every layer; the codes of layers
    with at most ``CACHE_MAX_VALUES`` values (pool5, the fully connected layers) are
    kept per model and bank, so later calls cost no pass at all -- until the model's
    weights change (a new array, or ``mark_changed`` after an in-place write)."""
    from ..data.image import to_model
    bank = load_bank() if bank is None else bank
    _check_fits(model, bank)
    flat = {}
    for layer, code in codes.items():
        code = np.asarray(code, np.float64).reshape(-1)
        D = int(np.prod(model.shapes[layer]))
        if code.size != D:
            raise ExplainError(f"code has {code.size} values, layer {layer!r} gives {D}")
        flat[layer] = code
    with _lock:
        kept = _codes.get(model)
        if kept is None or not _same_weights(kept["stamp"], model):
            kept = _codes[model] = {"stamp": _weights_stamp(model)}     # new or changed weights: codes anew
        stamp, kept = kept["stamp"], dict(kept)
    out = {l: _d2(kept[(bank["path"], l)], c) for l, c in flat.items() if (bank["path"], l) in kept}
    todo = [l for l in flat if l not in out]
    if todo:
        last = model.until_for(todo)
        parts = {l: [] for l in todo}
        with no_grad():
            for s in range(0, len(bank["images"]), _BATCH):
                x = Tensor(to_model(bank["images"][s:s + _BATCH], model)).to(getattr(model, "device", "cpu"))
                acts = model(x, until=last, keep=todo)
                for l in todo:
                    h = acts[l].numpy().reshape(len(x), -1)
                    parts[l].append(h.astype(np.float32) if h.shape[1] <= CACHE_MAX_VALUES
                                    else _d2(h, flat[l]))
        for l in todo:
            if flat[l].size <= CACHE_MAX_VALUES:
                c = np.concatenate(parts[l])
                c.setflags(write=False)
                with _lock:
                    entry = _codes.get(model)
                    if entry is not None and entry["stamp"] is stamp:
                        c = entry.setdefault((bank["path"], l), c)
                out[l] = _d2(c, flat[l])
            else:
                out[l] = np.concatenate(parts[l])
    return out


def _weights_stamp(model: Network) -> list:
    """What identifies the model's current weights: each parameter's array (weakly) and version
    (bumped by ``mark_changed`` after an in-place write), as nn.Linear's packed copies are keyed."""
    return [(weakref.ref(p.data), p.version) for p in model.parameters()]


def _same_weights(stamp: list, model: Network) -> bool:
    params = model.parameters()
    return len(stamp) == len(params) and all(r() is p.data and v == p.version for (r, v), p in zip(stamp, params))


def _d2(h: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Squared distances of the rows of h (n, D) to code (D,), over ||code||^2 (float64)."""
    return ((h.astype(np.float64) - code) ** 2).sum(1) / max(float((code ** 2).sum()), 1e-30)


def nearest(model: Network, layer: LayerName, code: np.ndarray, n: int = 1, candidates: int = CANDIDATES,
            bank: dict | None = None, rerank: bool = True,
            d2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bank scenes for ``code`` in order (module docstring): the max(n, candidates)
    nearest by squared normalised code distance, re-ranked by the decoder's image if
    ``rerank`` and the layer has a shipped decoder; the first ``n``.  Returns (bank
    indices (n,), their squared normalised code distances (n,)).  ``d2``: the distances
    if already computed (:func:`bank_distances`)."""
    from .decoder import decode, decoder_path
    bank = load_bank() if bank is None else bank
    name = resolve_layer(model, layer)
    if n < 1 or candidates < 1:
        raise ExplainError(f"n and candidates must be >= 1, got n={n}, candidates={candidates}")
    if n > len(bank["images"]):
        raise ExplainError(f"asked for {n} scenes; the exemplar bank {bank['path']} holds {len(bank['images'])}")
    if d2 is None:
        d2 = bank_distances(model, {name: code}, bank)[name]
    k = min(max(n, candidates), len(d2))
    order = np.argsort(d2, kind="stable")[:k]
    if rerank and getattr(model, "path", None) is not None and decoder_path(model, name).exists():
        from ..data.image import to_pictures
        from .quality import reconstruction_correlation
        expected = to_pictures(decode(model, code, name), model)[0]
        r = np.array([reconstruction_correlation(bank["images"][j], expected)["original"] for j in order])
        order = order[np.argsort(-r, kind="stable")]
    order = order[:n]
    return order, d2[order]


def exemplar_starts(model: Network, codes: dict[str, np.ndarray], n: int = 1,
                    candidates: int = CANDIDATES) -> dict[str, np.ndarray]:
    """{layer: the first ``n`` scenes of :func:`nearest` for that layer's code, in model
    space, (n, C, H, W) float32} -- one pass over the bank for all the layers."""
    from ..data.image import to_model
    bank = load_bank()
    codes = {resolve_layer(model, l): c for l, c in codes.items()}
    d2 = bank_distances(model, codes, bank)
    out = {}
    for layer, code in codes.items():
        idx, _ = nearest(model, layer, code, n, candidates, bank, d2=d2[layer])
        out[layer] = to_model(bank["images"][idx], model).astype(np.float32)
    return out
