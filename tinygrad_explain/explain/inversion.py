"""Feature inversion (Mahendran & Vedaldi, "Understanding Deep Image
Representations by Inverting Them", CVPR 2015).

Given a code phi0 = phi(x0) -- by default the fc7 output of an image -- find

    x* = argmin_x  ||phi(x) - phi0||^2 / ||phi0||^2  +  lambda_alpha R_alpha(x)  +  lambda_V R_TV^beta(x)

* the data term is normalised by ||phi0||^2, so it reads as a relative error;
* R_alpha = 1/(HW) sum |x/B|^alpha with alpha = 6 keeps pixels within the range
  of natural images (B: that range in model space);
* R_TV^beta = 1/(HW) sum ((dh^2 + dv^2)/V^2)^(beta/2), beta = 2, V = B/6.5, prefers
  piecewise-smooth images;
* the paper's step schedule -- the step size held, then divided by 10 twice.

Named recipes (``recipe=``, INVERT_RECIPES; their settings and how they reach the
optimiser are in :mod:`.recipes`):

* ``"mahendran2015"``: the paper -- momentum SGD (m = 0.9), alpha-norm + TV^beta,
  white-noise starts.  On the embedded model one or two of five starts stay
  stuck at a normalised error of 0.10-0.13 after 2000 momentum steps (a ReLU
  that should fire is dead and passes no gradient);
* ``"natural"`` (default): the same objective with Adam steps (per-pixel step
  sizes: with momentum one or two of five starts stay stuck), the image made
  from a decorrelated-colour Fourier spectrum (Olah et al. 2017) from a faint
  random start, and jitter (transformation robustness, as in Mahendran &
  Vedaldi 2016).  With pixel steps every colour that the code does not pin
  down stays where the random start put it, and deep codes pin down little
  colour; the Fourier image starts at the mean grey and changes mostly low
  frequencies and natural colours, so what the code leaves open stays grey.
  Blurred grey reconstructions from conv1-conv5 correlate 0.9-0.98 with the
  original (0.2-0.9 with pixel steps; docs/explainers.md).  The earlier
  default -- pixel steps from *smooth* random starts (``param="pixel",
  colour=None, jitter=0, init_std=0.3, init_smooth=0.06``) -- reaches lower
  fc7 errors (<= 0.10) with more colourful pictures;
* ``"simonyan2014"``: plain gradient descent with an L2 prior only, from the
  zero image plus faint noise -- what inversion looks like without image priors.
* ``"decoder"``: the natural recipe started from a learned decoder's image
  D(phi0) (decoder.py; pool5, fc6, fc7 of the embedded model), 100 steps;
* ``"exemplar"``: inversion by retrieval (exemplar.py) -- the scene of a bank
  of 2,000 training scenes whose code is nearest, re-ranked by the decoder's
  image, returned unchanged (``steps=0``).  Another scene the network can
  hardly tell from the original, not the original: what the independent judge
  recognises best from fc6-fc8 (docs/explainers.md).

Several random initialisations give several different solutions: the
code does not determine the image, and the differences show what it throws away.
:func:`invert_layers` inverts one image from many layers at once (Mahendran &
Vedaldi's figure: one reconstruction per layer).

Graph networks (ResNets, ONNX imports): every node can be inverted -- the
reconstruction runs the graph up to that node, ``model(x, until=node)``, only
the nodes it depends on -- and :func:`invert_layers` takes any set of nodes.
Without ``layer=``, the code inverted is fc7 where the model has one (AlexNet),
else the features the classifier reads (:func:`default_code_layer`: a ResNet's
global average pool).

All initialisations are optimised together as one batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core import device as _device
from ..core.engine import Tensor, no_grad
from ..core.models import Network
from ..core.ops import PutRows, TakeRows
from . import recipes as _recipes
from ._common import ExplainError, Images, LayerName, as_batch, resolve_layer
from .exemplar import CANDIDATES, exemplar_starts

# the recipes live in recipes.RECIPES, the one table; this is its inversion part
INVERT_RECIPES = _recipes.RECIPES["invert"]
DEFAULT_RECIPE = _recipes.DEFAULT_RECIPE
INVERT_DEFAULTS = INVERT_RECIPES[DEFAULT_RECIPE]
# every setting a recipe may hold: optimize's tunable arguments by its signature (no transparency:
# a reconstruction is opaque), plus the start's init, init_std, init_smooth, candidates (recipes.settings_of)
SETTINGS = _recipes.settings_of("invert")
# the layers of Mahendran & Vedaldi's figure that exist in AlexNet-style models
FIGURE_LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")


@dataclass
class Inversion:
    """``images`` (inits, C, H, W) reconstructions in model space; ``errors`` (inits,)
    final normalised errors ||phi(x*) - phi0|| / ||phi0||; ``history`` per-step arrays
    (steps, inits) ("objective" = squared normalised error, "alpha_norm", "tv", ...);
    ``pairwise_mad`` (inits, inits) mean absolute difference between reconstructions
    (model space); ``code`` phi0; ``layer``.  Unpacks as ``images, errors``."""
    images: np.ndarray
    errors: np.ndarray
    history: dict[str, np.ndarray]
    pairwise_mad: np.ndarray
    code: np.ndarray
    layer: str
    display: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    def __iter__(self):
        return iter((self.images, self.errors))

    @property
    def mean_pairwise_mad(self) -> float:
        n = self.pairwise_mad.shape[0]
        return float(self.pairwise_mad[np.triu_indices(n, 1)].mean()) if n > 1 else 0.0


#: node types that pass the classifier's features on unchanged in value (default_code_layer skips them)
_RESHAPES = ("flatten", "dropout")


def default_code_layer(model: Network) -> str:
    """The layer inverted by default: "fc7" where the model has it (AlexNet: the code of
    Mahendran & Vedaldi's figures), else the features the classifier reads -- the input of
    the last node, followed back through flatten and dropout nodes ("avgpool" for a ResNet)."""
    if "fc7" in model.layer_names:
        return "fc7"
    names = model.layer_names

    def below(n):                        # the one node n reads (None: the input, or a merge)
        ins = model.reads(n)
        return ins[0] if len(ins) == 1 and ins[0] in model.layers else None
    name = below(names[-1])
    while name is not None and model.layers[name].type in _RESHAPES and below(name) is not None:
        name = below(name)
    if name is None:
        raise ExplainError(f"this model's output {names[-1]!r} reads the input directly: give layer= (one of "
                           f"{', '.join(names)})")
    return name


def _layer(model, layer):
    """``layer`` resolved, or the default code layer for None."""
    return default_code_layer(model) if layer is None else resolve_layer(model, layer)


def feature_code(model: Network, x: Images, layer: LayerName | None = None) -> np.ndarray:
    """phi(x): the flattened output of ``layer`` (default :func:`default_code_layer`, fc7 for
    AlexNet) for one image in model space -> (D,)."""
    name = _layer(model, layer)
    x = as_batch(model, x)
    if x.shape[0] != 1:
        raise ExplainError(f"feature_code takes one image, got {x.shape[0]}")
    with no_grad():
        return model(x, until=name).numpy().reshape(-1).astype(np.float32)


def _settings(recipe, overrides):
    return _recipes.resolve("invert", recipe, overrides)


def _check_code(model, name, code):
    D = int(np.prod(model.shapes[name]))
    code = np.asarray(code, np.float32).reshape(-1)
    if code.size != D:
        raise ExplainError(f"a code of layer {name!r} has {D} values (shape {model.shapes[name]}), got {code.size}")
    if not np.all(np.isfinite(code)):
        raise ExplainError("the code contains NaN or Inf")
    norm2 = float((code.astype(np.float64) ** 2).sum())
    if norm2 == 0:
        raise ExplainError(f"the code of layer {name!r} is all zeros: nothing to invert "
                           "(try the layer before the ReLU)")
    return code, norm2


def _check_init(s):
    if s.get("init", "random") not in ("random", "decoder", "exemplar"):
        raise ExplainError(f"init must be 'random', 'decoder' or 'exemplar', got {s.get('init')!r}")


def _decoder_start(model, layer, code, required):
    """D(code) (1, C, H, W) from the shipped decoder of ``layer``; without one: an error
    if ``required``, else None (that row starts at random)."""
    from .decoder import decode, decoder_path
    if not required and (getattr(model, "path", None) is None or not decoder_path(model, layer).exists()):
        return None
    return decode(model, code, layer)


def _reconstruct(model, objective, n, s, seed, progress, desc, start=None):
    """Minimise ``objective`` (N,) from ``n`` random starts with the resolved recipe ``s``:
    ``start`` (n or 1, C, H, W) model space plus the random start (recipes.start_images)."""
    x0 = _recipes.start_images(model, n, s, seed, base=start)
    return _recipes.run(model, objective, x0, s, maximize=False, seed=seed, progress=progress, desc=desc)


def invert(model: Network, x: Images | None = None, layer: LayerName | None = None, inits: int = 5, *,
           code: np.ndarray | None = None, recipe: str = DEFAULT_RECIPE,
           seed: int = 0, progress: bool = True, **settings) -> Inversion:
    """Reconstruct images from the code of ``layer``.

    x        one image in model space ((1, C, H, W) or (C, H, W)) whose code is
             inverted -- or the code itself (an array with the layer's number of
             elements), or pass ``code=`` explicitly.
    layer    layer or graph node name (default :func:`default_code_layer`: "fc7", the
             output of AlexNet's 7th, fully connected layer; on a network without fc7 the
             features its classifier reads, e.g. a ResNet's global average pool).
    inits    number of random initialisations (independent solutions); with
             recipe "exemplar", the number of bank scenes returned (nearest first).
    recipe   "natural" (default), "mahendran2015", "simonyan2014", "decoder" or
             "exemplar" (module docstring; INVERT_RECIPES holds the settings).
    **settings  override the recipe (names in SETTINGS): ``steps``; ``lr`` (Adam: in units
             of B per step; SGD: the paper's normalised units -- the optimisation runs on
             x / B, so the model-space step is lr * B^2); ``optimizer`` "adam" / "sgd" with
             ``momentum``; ``milestones`` (lr divided by 10 at each fraction of the run);
             ``alpha``, ``alpha_norm`` (the alpha-norm prior), ``beta``, ``tv`` (TV^beta),
             ``l2``; ``init_std`` (std of the random start, in units of B) and
             ``init_smooth`` (> 0: Gaussian-blurred noise of std init_smooth * image side,
             rescaled to init_std); ``jitter``, ``scales``, ``angles``, ``blur_every`` /
             ``blur_sigma``, ``clip``, ``param``, ``decay``, ``colour``, ``octaves``: the
             shared optimiser's priors (optimize.optimize).
    Returns an :class:`Inversion` (unpacks as ``images, errors``).
    """
    name = _layer(model, layer)
    D = int(np.prod(model.shapes[name]))
    s = _settings(recipe, settings)
    if code is None and x is None:
        raise ExplainError("give an image x (model space) or a code to invert")
    if code is None:
        arr = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        if arr.size == D and arr.shape[-3:] != tuple(model.input_shape):
            code = arr
        else:
            code = feature_code(model, arr, name)
    code, norm2 = _check_code(model, name, code)
    if inits < 1:
        raise ExplainError(f"inits must be >= 1, got {inits}")
    _check_init(s)
    start = None
    if s.get("init") == "decoder":
        start = _decoder_start(model, name, code, required=True)
    elif s.get("init") == "exemplar":
        start = exemplar_starts(model, {name: code}, inits, s.get("candidates", CANDIDATES))[name]
    target = Tensor(code.reshape((1,) + tuple(model.shapes[name]))).to(getattr(model, "device", "cpu"))
    inv_norm = 1.0 / norm2

    def objective(xt):
        d = model(xt, until=name) - target
        axes = tuple(range(1, d.ndim))
        return (d * d).sum(axis=axes) * inv_norm

    res = _reconstruct(model, objective, inits, s, seed, progress, f"invert {name}", start)
    with no_grad():
        feats = model(as_batch(model, res.x), until=name).numpy().reshape(inits, -1).astype(np.float64)
    errors = np.sqrt(((feats - code) ** 2).sum(1) / norm2)
    flat = res.x.reshape(inits, -1)
    mad = np.abs(flat[:, None, :] - flat[None, :, :]).mean(-1)
    from ..data.image import to_pictures
    return Inversion(images=res.x, errors=errors, history=res.history, pairwise_mad=mad, code=code, layer=name,
                     display=to_pictures(res.x, model), seconds=res.seconds)


@dataclass
class LayerInversions:
    """One reconstruction of the same image per layer: ``images`` (L, C, H, W) model space,
    ``layers`` their names, ``errors`` (L,) normalised errors ||phi_l(x*) - phi_l(x0)|| /
    ||phi_l(x0)||, ``display`` uint8 pictures, ``history`` per-step arrays (steps, L)."""
    images: np.ndarray
    layers: list[str]
    errors: np.ndarray
    history: dict[str, np.ndarray]
    display: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0


def rows_per_node(model: Network, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """{node: the rows r (ascending) whose layer ``layers[r]`` is that node or is fed by it}."""
    below = {l: {n for n in model.layer_names if n == l or model.feeds(n, l)} for l in set(layers)}
    return {n: np.array([r for r, l in enumerate(layers) if n in below[l]], np.int64) for n in model.layer_names}


def layer_errors(model: Network, x: Tensor, layers: Sequence[str], codes: dict, inv_norm: dict,
                 rows: dict[str, np.ndarray] | None = None) -> Tensor:
    """(L,) the squared normalised error of row l of ``x`` (L, C, H, W) at its own layer:
    ||phi_l(x_l) - codes[l]||^2 * inv_norm[l] with l = ``layers[row]`` (Tensors: codes[l]
    (1, *shape), inv_norm[l] a scalar), differentiable.

    One pass serves every row, each row going only through the nodes its layer depends on:
    node n runs on the rows whose layer is n or is fed by n, so at each node the rows whose
    layers no longer need it leave the batch (a conv1 row costs one convolution, an fc8 row
    the whole network; in a graph network, a row stops where no path leads to its node).
    ``rows``: :func:`rows_per_node` of ``layers``, computed once for many calls."""
    L, names = len(layers), model.layer_names
    rows = rows_per_node(model, layers) if rows is None else rows
    values = {"input": (x, np.arange(L))}      # node -> (its output on some rows, those rows)
    total = None
    for name in names:
        need = rows[name]
        if not need.size:
            continue
        ins = []
        for i in model.reads(name):
            h, have = values[i]
            ins.append(h if have.size == need.size else TakeRows.apply(h, rows=np.searchsorted(have, need)))
        h = model.layers[name](*ins)
        values[name] = (h, need)
        here = np.flatnonzero([layers[r] == name for r in need])
        if here.size:                          # these rows' errors at their own layer, put at their rows
            d = (h if here.size == need.size else TakeRows.apply(h, rows=here)) - codes[name]
            e = (d * d).sum(axis=tuple(range(1, d.ndim))) * inv_norm[name]
            e = PutRows.apply(e, rows=need[here], n=L)
            total = e if total is None else total + e
    return total


def invert_layers(model: Network, x: Images, layers: Sequence[LayerName] | None = None, *,
                  recipe: str = DEFAULT_RECIPE, seed: int = 0, progress: bool = True, **settings) -> LayerInversions:
    """Reconstruct the image ``x`` from its code at each of ``layers`` (default: those of
    FIGURE_LAYERS the model has, conv1 ... fc8, where its layers with weights are named
    so -- AlexNet --, else its layers with weights, :func:`~tinygrad_explain.core.models.weight_layers`: a
    ResNet's convolutions and classifier), all as one batch: row l
    of the batch is matched to layer l's code only (:func:`layer_errors`: one forward pass
    serves every row, each row going only through the nodes its layer depends on).  Any
    node of a graph network may be named.  Settings as in :func:`invert`."""
    if layers is None:
        from ..core.models import weight_layers
        weighted = weight_layers(model)
        layers = [l for l in FIGURE_LAYERS if l in model.layer_names] if set(weighted) <= set(FIGURE_LAYERS) \
            else weighted
    else:
        layers = [resolve_layer(model, l) for l in layers]
    if not layers:
        raise ExplainError("no layers to invert")
    s = _settings(recipe, settings)
    x = as_batch(model, x)
    if x.shape[0] != 1:
        raise ExplainError(f"invert_layers takes one image, got {x.shape[0]}")
    last = model.until_for(layers)
    with no_grad():
        kept = model(Tensor(x), until=last, keep=layers)
        codes = {l: kept[l] for l in layers}
    norms = {l: float((codes[l].numpy().astype(np.float64) ** 2).sum()) for l in layers}
    for l in layers:
        _check_code(model, l, codes[l].numpy())
    _check_init(s)
    start = None
    if s.get("init") == "decoder":              # rows of layers with a shipped decoder start at D(code)
        starts = [_decoder_start(model, l, codes[l].numpy(), required=False) for l in layers]
        start = np.concatenate([np.zeros((1,) + tuple(model.input_shape), np.float32) if v is None else v
                                for v in starts])
    elif s.get("init") == "exemplar":           # each row starts at the bank scene nearest in its layer's code
        starts = exemplar_starts(model, {l: codes[l].numpy() for l in layers}, 1, s.get("candidates", CANDIDATES))
        start = np.concatenate([starts[l] for l in layers])
    L = len(layers)
    dev = getattr(model, "device", "cpu")
    inv_norm = {l: Tensor(_device.move(np.array(1.0 / norms[l], np.float32), dev)) for l in layers}
    rows = rows_per_node(model, layers)

    def objective(xt):
        return layer_errors(model, xt, layers, codes, inv_norm, rows)

    res = _reconstruct(model, objective, L, s, seed, progress, "invert layers", start)
    errors = np.empty(L)
    with no_grad():
        kept = model(Tensor(as_batch(model, res.x)), until=last, keep=layers)
        for name in dict.fromkeys(layers):
            a = kept[name].numpy().reshape(L, -1).astype(np.float64)
            c = codes[name].numpy().reshape(-1).astype(np.float64)
            for k in (k for k, l in enumerate(layers) if l == name):
                errors[k] = np.sqrt(((a[k] - c) ** 2).sum() / norms[name])
    from ..data.image import to_pictures
    return LayerInversions(images=res.x, layers=layers, errors=errors, history=res.history,
                           display=to_pictures(res.x, model), seconds=res.seconds)
