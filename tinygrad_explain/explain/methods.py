"""The explanation methods by name: the one table that the command line
(``python -m tinygrad_explain METHOD``), the explorer, the sanity checks and the
benchmark read.

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
CLI offers them as flags).  Names are written with hyphens, as on the command
line; :func:`get` also accepts underscores (``"guided_gradcam"``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._common import ExplainError
from .attribution import gradcam, gradient_x_input, guided_gradcam, occlusion, smoothgrad
from .gradients import gradient, saliency


@dataclass(frozen=True)
class Method:
    """One explanation method: ``fn(model, x, target, **options)`` -> (N, C, H, W) or (N, H, W)
    on the host; ``summary`` one line on what the map is and ``paper`` where it comes from
    (together: the CLI's ``--help``); ``rule`` the ReLU rule of its backward pass (what the
    explorer's layer view follows); ``options`` the keyword options of ``fn`` offered to users."""
    name: str
    fn: Callable[..., np.ndarray]
    summary: str
    paper: str
    rule: str = "backprop"
    options: tuple[str, ...] = ()

    @property
    def help(self) -> str:
        """``summary (paper).``: the method's line in ``--help``."""
        return f"{self.summary} ({self.paper})."


def _rule(rule: str) -> Callable[..., np.ndarray]:
    """dS/dx under one ReLU rule, as a registry function."""
    def fn(model, x, target):
        return gradient(model, x, target, rule=rule)
    fn.__name__ = f"gradient_{rule}"
    return fn


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradient", _rule("backprop"), "The gradient dS/dx of the class score with respect to the image",
           "Simonyan et al. 2014"),
    Method("saliency", saliency, "The image-specific class saliency map max_c |dS/dx|", "Simonyan et al. 2014"),
    Method("deconvnet", _rule("deconvnet"),
           "The deconvnet 'gradient' of the class score: every ReLU passes back the positive gradients",
           "Zeiler & Fergus 2014", rule="deconvnet"),
    Method("guided", _rule("guided"),
           "The guided-backprop gradient of the class score: ReLUs pass back positive gradients where "
           "their input was positive", "Springenberg et al. 2015", rule="guided"),
    Method("smoothgrad", smoothgrad, "SmoothGrad: the saliency map averaged over noisy copies of the image",
           "Smilkov et al. 2017", options=("noise", "samples", "seed")),
    Method("gradcam", gradcam, "Grad-CAM: a conv layer's maps weighted by their mean gradient, rectified "
           "and upsampled to the image", "Selvaraju et al. 2017", options=("layer",)),
    Method("guided-gradcam", guided_gradcam, "Guided Grad-CAM: guided backprop times Grad-CAM",
           "Selvaraju et al. 2017", rule="guided", options=("layer",)),
    Method("occlusion", occlusion, "Occlusion sensitivity: how much the class probability drops when a grey "
           "square covers each pixel", "Zeiler & Fergus 2014", options=("patch", "stride")),
    Method("grad-x-input", gradient_x_input, "Gradient x input: the image times its gradient",
           "Shrikumar et al. 2016"),
    Method("grabcut", saliency, "Saliency -> GrabCut: the object's mask and box from the saliency map",
           "Simonyan et al. 2014, section 6"),
)}


def get(name: str) -> Method:
    """The method called ``name`` (hyphens or underscores); an unknown name lists the known ones."""
    key = str(name).replace("_", "-")
    if key not in METHODS:
        raise ExplainError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[key]
