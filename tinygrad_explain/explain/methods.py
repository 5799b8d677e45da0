"""The explanation methods by name: the one registry that the command line
(``tinygrad-explain METHOD``, one subcommand per entry, its flags from ``options``),
the explorer, the sanity checks and the benchmark read.

Two tables: :data:`METHODS`, the maps of an image, and :data:`OPTIMIZATIONS`, the
images made by optimisation (class model, activation maximisation, inversion).
Adding a map method is one function, one :class:`Method` entry here and its test:
the command line offers it (with its options and their defaults read from the
function's signature) without further edits.

Each entry is a :class:`Method` whose ``fn`` has one signature,

    fn(model, x, target, **options) -> one map per image, on the host (NumPy)

with ``x`` images in model space (N, C, H, W) and ``target`` a class (index or
name), a channel or a neuron (``("conv5", c[, i, j])``), or one of those per image
(see ``te.explain.gradient``).  A map is (N, C, H, W) for the gradient-like
methods and (N, H, W) for the others:

    name            map           what it is                                       paper
    gradient        (N, C, H, W)  dS/dx                                            Simonyan et al. 2014
    saliency        (N, H, W)     max_c |dS/dx|                                    Simonyan et al. 2014
    deconvnet       (N, C, H, W)  ReLUs pass back positive gradients               Zeiler & Fergus 2014
    guided          (N, C, H, W)  ... where the input was positive, too            Springenberg et al. 2015
    smoothgrad      (N, H, W)     saliency averaged over noisy copies              Smilkov et al. 2017
    gradcam         (N, H, W)     ReLU(sum_k alpha_k A^k), upsampled               Selvaraju et al. 2017
    guided-gradcam  (N, C, H, W)  guided backprop * Grad-CAM                       Selvaraju et al. 2017
    occlusion       (N, H, W)     drop of p_target under a sliding grey patch      Zeiler & Fergus 2014
    grad-x-input    (N, C, H, W)  x * dS/dx                                        Shrikumar et al. 2016
    grabcut         (N, H, W)     the saliency map that seeds GrabCut              Simonyan et al. 2014, sec. 6

``grabcut``'s map is the saliency map; ``te.explain.grabcut_mask(picture, map)``
turns it into the object's mask and box (the CLI and the explorer draw them).
``options`` names the keyword options each ``fn`` takes beyond its defaults (the
CLI offers them as flags); ``targets`` says whether the method explains a class only
or also a channel / neuron; ``picture`` how it is drawn (:data:`PICTURES`); the flags
``benchmark``, ``sanity``, ``figure`` and ``explorer`` where it takes part.

Adding a map method (docs/adding_a_method.md has the worked steps):

1. write ``fn(model, x, target, **options)`` in ``te.explain`` (attribution.py or a module
   of its own), returning one map per image on the host;
2. add one :class:`Method` entry to :data:`METHODS` below (its label, picture, options and
   flags) -- or call :func:`register` from your own code;
3. test the function against an independent implementation (tests/test_methods.py and
   tests/test_attribution_torch.py show how).

The command line (a subcommand with flags from ``options``), the explorer's menu, the
benchmark, the sanity checks, the methods figure and the drawing all read the registry;
tests/test_registry.py checks that no other list of method names exists in the package.

Names are written with hyphens, as on the command line; :func:`get` also accepts underscores (``"guided_gradcam"``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._common import ExplainError
from .attribution import gradcam, gradient_x_input, guided_gradcam, occlusion, smoothgrad
from .gradients import gradient, saliency

#: how one image's map is drawn (``apps.draw.method_picture`` reads a method's ``picture``):
PICTURES = {
    "heat": "|map| as grey, brightest = most important (99th percentile clipped)",
    "gradient": "a (C, H, W) gradient as a colour picture (min-max, 0.5% clipped)",
    "cam": "a class activation map in jet colours over the picture",
    "positive-heat": "the map's positive part as grey (where covering a pixel lowers the probability)",
    "signed": "the channel sum, red where positive and blue where negative",
    "mask": "the GrabCut mask and box that the map seeds",
}


@dataclass(frozen=True)
class Method:
    """One explanation method: ``fn(model, x, target, **options)`` -> (N, C, H, W) or (N, H, W)
    on the host; ``summary`` one line on what the map is and ``paper`` where it comes from
    (together: the CLI's ``--help``); ``label`` its short name in pictures and menus; ``picture``
    how one image's map is drawn (a key of :data:`PICTURES`); ``rule`` the ReLU rule of its
    backward pass (what the explorer's layer view follows); ``options`` the keyword options of
    ``fn`` offered to users; ``targets`` ``"class"`` (a class only) or ``"any"`` (also a channel
    ``conv5:12`` or a neuron ``conv5:12:3:4``).

    Where it takes part (the registry queries :func:`benchmarked`, :func:`sanity_checked`,
    :func:`in_figure`, :func:`explorer_menu` read these): ``benchmark`` scored by the explainer
    benchmark, which reduces its map to (H, W) by the channel sum when ``signed`` and by
    max_c |.| otherwise; ``sanity`` checked by the sanity checks (Adebayo et al. 2018);
    ``figure`` drawn in the figures' methods.png; ``explorer`` the options the explorer's menu
    runs it with (pairs; None: not in the menu)."""
    name: str
    fn: Callable[..., np.ndarray]
    summary: str
    paper: str
    label: str = ""
    picture: str = "heat"
    rule: str = "backprop"
    options: tuple[str, ...] = ()
    targets: str = "class"
    benchmark: bool = True
    signed: bool = False
    sanity: bool = False
    figure: bool = True
    explorer: tuple[tuple[str, object], ...] | None = ()
    needs_image: bool = True
    required: tuple[str, ...] = ()

    def __post_init__(self):
        if self.picture not in PICTURES:
            raise ValueError(f"method {self.name!r}: picture {self.picture!r} is not one of {', '.join(PICTURES)}")
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def help(self) -> str:
        """``summary (paper).``: the method's line in ``--help``."""
        return f"{self.summary} ({self.paper})."

    @property
    def shows(self) -> str:
        """What the command line draws: ``"mask"`` (the GrabCut mask and box the map seeds) or ``"map"``."""
        return "mask" if self.picture == "mask" else "map"


def _rule(rule: str) -> Callable[..., np.ndarray]:
    """dS/dx under one ReLU rule, as a registry function."""
    def fn(model, x, target):
        return gradient(model, x, target, rule=rule)
    fn.__name__ = f"gradient_{rule}"
    return fn


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradient", _rule("backprop"), "The gradient dS/dx of the class score with respect to the image",
           "Simonyan et al. 2014", label="gradient", picture="gradient", targets="any", signed=True, sanity=True,
           figure=False),
    Method("saliency", saliency, "The image-specific class saliency map max_c |dS/dx|", "Simonyan et al. 2014",
           label="saliency", targets="any", sanity=True),
    Method("deconvnet", _rule("deconvnet"),
           "The deconvnet 'gradient' of the class score: every ReLU passes back the positive gradients",
           "Zeiler & Fergus 2014", label="deconvnet", picture="gradient", rule="deconvnet", targets="any",
           sanity=True, figure=False),
    Method("guided", _rule("guided"),
           "The guided-backprop gradient of the class score: ReLUs pass back positive gradients where "
           "their input was positive", "Springenberg et al. 2015", label="guided backprop", picture="gradient",
           rule="guided", targets="any", sanity=True),
    Method("smoothgrad", smoothgrad, "SmoothGrad: the saliency map averaged over noisy copies of the image",
           "Smilkov et al. 2017", label="SmoothGrad", options=("noise", "samples", "seed"), sanity=True),
    Method("gradcam", gradcam, "Grad-CAM: a conv layer's maps weighted by their mean gradient, rectified "
           "and upsampled to the image", "Selvaraju et al. 2017", label="Grad-CAM", picture="cam",
           options=("layer",), sanity=True),
    Method("guided-gradcam", guided_gradcam, "Guided Grad-CAM: guided backprop times Grad-CAM",
           "Selvaraju et al. 2017", label="guided Grad-CAM", picture="gradient", rule="guided", options=("layer",),
           sanity=True),
    Method("occlusion", occlusion, "Occlusion sensitivity: how much the class probability drops when a grey "
           "square covers each pixel", "Zeiler & Fergus 2014", label="occlusion", picture="positive-heat",
           options=("patch", "stride"), explorer=(("patch", 8), ("stride", 8))),
    Method("grad-x-input", gradient_x_input, "Gradient x input: the image times its gradient",
           "Shrikumar et al. 2016", label="gradient x input", picture="signed", signed=True),
    Method("grabcut", saliency, "Saliency -> GrabCut: the object's mask and box from the saliency map",
           "Simonyan et al. 2014, section 6", label="saliency -> GrabCut mask and box", picture="mask",
           targets="any", benchmark=False, figure=False),
)}


# --------------------------------------------------------------------------
# the images made by optimisation
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Made:
    """What an optimisation method made, for display: ``images`` uint8 (H, W, 3) pictures;
    ``captions`` None for one picture shown alone, else one per picture, drawn beside the
    input image; ``lines`` what to print (scores, errors)."""
    images: list
    captions: list[str] | None
    lines: list[str]


@dataclass(frozen=True)
class Optimization:
    """An image made by optimisation: ``fn(model, x, target, **options) -> Made`` (``x`` None
    unless ``needs_image``); ``required`` the options (or ``"target"``) it cannot do without;
    the rest as :class:`Method`."""
    name: str
    fn: Callable[..., Made]
    summary: str
    paper: str
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    needs_image: bool = False

    @property
    def help(self) -> str:
        """``summary (paper).``: the method's line in ``--help``."""
        return f"{self.summary} ({self.paper})."


def _given(**settings):
    """The settings a caller gave (None: the recipe's own)."""
    return {k: v for k, v in settings.items() if v is not None}


def _class_model(model, x, target, *, recipe=None, steps=None, lr=None, seed=0) -> Made:
    from ._common import resolve_class
    from .visualize import class_model
    v = class_model(model, resolve_class(model, target), seed=seed, **_given(recipe=recipe, steps=steps, lr=lr))
    return Made([v.display[0]], None,
                [f"class model of {v.labels[0]}: score {v.final[0]:.2f}, softmax {v.probability[0]:.4f}"])


def _maximize(model, x, target, *, layer=None, unit=None, recipe=None, steps=None, lr=None, seed=0) -> Made:
    from ._common import resolve_layer, resolve_unit
    from .visualize import maximize
    layer = resolve_layer(model, layer)
    v = maximize(model, layer, resolve_unit(model, layer, unit), seed=seed,
                 **_given(recipe=recipe, steps=steps, lr=lr))
    return Made([v.display[0]], None, [f"{v.labels[0]}: activation {v.final[0]:.3f}"])


def _invert(model, x, target, *, layer=None, inits=5, recipe=None, steps=None, lr=None, seed=0) -> Made:
    from .inversion import invert
    inv = invert(model, x, layer=layer, inits=inits, seed=seed, **_given(recipe=recipe, steps=steps, lr=lr))
    return Made(list(inv.display), [f"error {e:.3f}" for e in inv.errors],
                ["normalised errors: " + " ".join(f"{e:.4f}" for e in inv.errors),
                 f"mean pairwise |difference|: {inv.mean_pairwise_mad:.4f}"])


OPTIMIZATIONS: dict[str, Optimization] = {m.name: m for m in (
    Optimization("class-model", _class_model, "The class model image of --target; no --image needed",
                 "Simonyan et al. 2014", options=("recipe", "steps", "lr", "seed"), required=("target",)),
    Optimization("maximize", _maximize, "The image maximising --unit of --layer (activation maximisation); "
                 "no --image needed", "Erhan et al. 2009; Simonyan et al. 2014",
                 options=("layer", "unit", "recipe", "steps", "lr", "seed"), required=("layer", "unit")),
    Optimization("invert", _invert, "The image beside --inits reconstructions from its --layer code",
                 "Mahendran & Vedaldi 2015", options=("layer", "inits", "recipe", "steps", "lr", "seed"),
                 needs_image=True),
)}


def get(name: str) -> Method:
    """The map method called ``name`` (hyphens or underscores); an unknown name lists the known ones."""
    key = str(name).replace("_", "-")
    if key not in METHODS:
        raise ExplainError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[key]


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a new name only); everything derived from the registry
    -- the command line, the explorer's menu, the benchmark, the sanity checks, the figures and
    the drawing -- offers it from then on.  Returns it (usable as a decorator's last step)."""
    if method.name in METHODS or method.name in OPTIMIZATIONS:
        raise ExplainError(f"a method called {method.name!r} is registered already")
    METHODS[method.name] = method
    return method


def benchmarked() -> tuple[str, ...]:
    """The map methods the explainer benchmark scores (``te.explain.benchmark``), in registry order."""
    return tuple(n for n, m in METHODS.items() if m.benchmark)


def sanity_checked() -> tuple[str, ...]:
    """The map methods the sanity checks compare (``te.explain.sanity``), in registry order."""
    return tuple(n for n, m in METHODS.items() if m.sanity)


def in_figure() -> tuple[str, ...]:
    """The map methods drawn side by side in the figures' methods.png, in registry order."""
    return tuple(n for n, m in METHODS.items() if m.figure)


def explorer_menu() -> dict[str, dict]:
    """The explorer's menu: method -> the options it runs with, in registry order."""
    return {n: dict(m.explorer) for n, m in METHODS.items() if m.explorer is not None}


def every() -> dict[str, Method | Optimization]:
    """Every registered method, the maps first, then the optimisations (the command line's subcommands)."""
    return {**METHODS, **OPTIMIZATIONS}


def markdown_table() -> str:
    """Every registered method as a Markdown table (command, what it is, paper): the README's
    method table, which tests/test_registry.py checks against this."""
    rows = ["| command | what it is | paper |", "|---|---|---|"]
    for name, m in every().items():
        rows.append(f"| `{name}` | {m.summary.replace('|', chr(92) + '|')} | {m.paper} |")
    return "\n".join(rows)
