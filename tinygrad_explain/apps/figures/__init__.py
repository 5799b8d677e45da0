"""Every figure of the lecture "Explaining CNNs: Early Methods", as PNGs plus an HTML gallery.

``main`` is ``scripts/reproduce_figures.py``; ``reproduce(out_dir, inputs)`` makes
the gallery.  Figures (file names in the gallery order):

    toy_relu_rules.png     the slide's 4x4 example: ReLU forward, then the gradient
                           passed back by backprop / deconvnet / guided backprop
    class_models.png       a class model image per class (Simonyan et al. 2014, fig. 1): the
                           paper's recipe beside the default natural-image priors
    neurons_<layer>.png    images maximising units of a conv layer and of fc7
    saliency.png           image-specific class saliency maps (Simonyan fig. 2)
    grabcut.png            image / saliency / GrabCut mask / box (Simonyan fig. 3)
    inversion_fc7.png      an image and five reconstructions from its fc7 code
                           (Mahendran & Vedaldi 2015)
    inversion_layers.png   the same image reconstructed from each layer, conv1 ... fc8
    inversion_decoder.png  pool5, fc6, fc7 inverted from a learned decoder's start
    inversion_exemplar.png pool5 ... fc8 inverted by retrieval: the bank scene nearest in code,
                           and fc7's five nearest (embedded model, or any 64x64 RGB model)
    rules.png              backprop vs deconvnet vs guided backprop, same image and class
    methods.png            the methods that came next, beside the lecture's, on the same images:
                           SmoothGrad, Grad-CAM, guided Grad-CAM, occlusion, gradient x input
    explainer_benchmark.png  every method scored on the 500 shipped scenes (plotted from
                           docs/bench_explainers.json, written by scripts/bench_explainers.py;
                           embedded model only)
    sanity_cascade.png     every method's map as the weights are randomised from fc8 down
                           (Adebayo et al. 2018's cascading randomisation)
    zeiler_fergus.png      conv1..conv5 units: the 9 strongest patches (receptive fields) of the
                           shipped scenes, each activation projected back by deconvnet and guided
                           backprop (Zeiler & Fergus 2014, fig. 2)

One job per module:

    recipes    the ``fig_*`` functions: what each figure draws, from which model and images
    inputs     what they are made from (:class:`Inputs`: model, scenes or files, units, settings)
    captions   the captions' measured numbers, read from the benchmarks' JSON (docs/*.json)
    runner     :func:`reproduce`: the recipes one after another, or side by side in worker processes
    cli        :func:`main`: ``tinygrad-explain figures`` (scripts/reproduce_figures.py)

and :mod:`.gallery` collects them into a
folder with an HTML page, so that an interrupted run leaves the old gallery as
it was and nothing else in ``out_dir`` is ever removed (``--out .`` is safe).
"""
from __future__ import annotations

import importlib

#: public name -> the module of this package that holds it (imported on first use, so that
#: importing one module, e.g. ``.captions`` from figures_robust, does not import the others)
_HOME = {
    **dict.fromkeys(("main", "EMBEDDED_SETTINGS", "IMAGENET_SETTINGS"), "cli"),
    **dict.fromkeys(("reproduce", "COST_ORDER"), "runner"),
    **dict.fromkeys(("Inputs", "embedded_inputs", "file_inputs", "most_active_units", "shipped_models",
                     "load_judge", "LECTURE_IMAGENET_CLASSES", "ZF_POOL"), "inputs"),
    **dict.fromkeys(("DOCS", "bench_json", "r2", "judged", "decoder_caption_numbers", "layers_caption_numbers",
                     "exemplar_caption_numbers", "judge_caption_numbers", "benchmark_caption"), "captions"),
    **dict.fromkeys(("FIGURES", "EXEMPLAR_LAYERS", "plot_benchmark", "Figure", "fig_toy", "fig_class_models",
                     "fig_neurons", "fig_saliency", "fig_grabcut", "fig_inversion", "fig_inversion_layers",
                     "fig_inversion_decoder", "fig_inversion_exemplar", "fig_rules", "fig_zeiler_fergus",
                     "fig_methods", "fig_sanity", "fig_robust_twin", "fig_resnet_beside"), "recipes"),
}
__all__ = sorted(_HOME)


_MODULES = ("recipes", "inputs", "captions", "runner", "cli")


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
