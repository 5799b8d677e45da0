"""Explaining CNNs, early methods (the lecture "Explaining CNNs: Early Methods").

    import tinygrad_explain as te
    model = te.load_model()
    x = te.image.load("scene.png", model)            # (1, C, H, W) float32, model space

    te.explain.gradient(model, x, "Bag", rule="guided")   # (N, C, H, W) dS/dx
    te.explain.saliency(model, x, "Bag")                  # (N, H, W) max_c |dS/dx|
    te.explain.gradient(model, x, ("conv5", 12), rule="deconvnet")   # a channel's mean activation
    te.explain.gradient(model, x, ("conv5", 12, 3, 4), rule="guided") # one neuron
    te.explain.gradient(model, x, "Bag", layer="conv5")   # (N, 128, 7, 7) dS/d(conv5 output)
    te.explain.smoothgrad(model, x, "Bag")                # (N, H, W) saliency averaged over noisy copies
    te.explain.gradcam(model, x, "Bag", layer="relu5")    # (N, H, W) Grad-CAM, upsampled
    te.explain.guided_gradcam(model, x, "Bag")            # (N, C, H, W)
    te.explain.occlusion(model, x, "Bag")                 # (N, H, W) drop of p_Bag under a grey patch
    te.explain.gradient_x_input(model, x, "Bag")          # (N, C, H, W) x * dS/dx
    te.explain.grabcut_mask(te.image.to_display(x, model), sal[0])   # mask, box
    te.explain.class_model(model, "Bag")                  # image maximising S_Bag
    te.explain.maximize(model, "conv3", 5)                # image maximising a channel
    te.explain.invert(model, x, layer="fc7", inits=5)     # 5 images with x's fc7 code
    te.explain.invert(model, x, "fc7", recipe="decoder")  # the same from a learned decoder's start
    te.explain.decode(model, code, "fc7")                 # the learned decoder's image alone
    te.explain.invert(model, x, "fc7", recipe="exemplar") # the training scene nearest in code (retrieval)
    te.explain.sanity.run(model, x, "Bag")                # Adebayo et al.'s randomisation tests
    te.explain.methods.get("guided-gradcam").fn(model, x, "Bag")   # every map method by name (CLI, explorer)
    te.explain.run_dataset(None, te.explain.dataset.Scenes("test", 0, 500), out="test500.h5")
                                                          # every method on a data set -> HDF5, on Dask workers

Spaces.  Every function takes and returns images in *model space*: float
(N, C, H, W), the model file's preprocessing applied (mean subtracted, divided
by std, its channel order) -- ``te.image.load`` goes there from a file / PIL
image / uint8 array, ``te.image.to_display`` comes back to uint8 (H, W, 3) RGB.
Gradients are with respect to model-space inputs.  ``grabcut_mask`` is the one
exception: GrabCut works on the picture itself, uint8 (H, W, 3) RGB.

Scores.  ``S`` is always the unnormalised class score (the last layer's
output, before softmax), as in Simonyan et al. 2014.
"""
from ._common import (ExplainError, class_names, OptimizationError, Objective, resolve_class,  # noqa: F401
                      resolve_targets, resolve_layer, resolve_unit, resolve_objective)
from .gradients import gradient, saliency, predict, relu_toy_example  # noqa: F401
from .optimize import optimize, OptimizeResult, step_schedule  # noqa: F401
from .visualize import class_model, maximize, Visualization  # noqa: F401
from .inversion import invert, invert_layers, feature_code, Inversion, LayerInversions  # noqa: F401
from .grabcut import grabcut_mask, largest_component, mask_box  # noqa: F401
from .attribution import (smoothgrad, smooth_gradient, gradcam, guided_gradcam, occlusion,  # noqa: F401
                          gradient_x_input)
from .decoder import decode  # noqa: F401
from . import methods, regularizers, transforms, metrics, benchmark, sanity, features, quality, decoder, exemplar  # noqa: F401
from . import dataset, layer_flow  # noqa: F401
from .dataset import run_dataset, run_sanity  # noqa: F401

__all__ = ["class_names", "gradient", "saliency", "predict", "smoothgrad", "smooth_gradient", "gradcam",
           "guided_gradcam", "occlusion", "gradient_x_input", "class_model", "maximize", "invert", "invert_layers",
           "feature_code", "decode", "grabcut_mask", "optimize", "step_schedule", "relu_toy_example", "ExplainError",
           "OptimizationError", "run_dataset", "run_sanity"]
