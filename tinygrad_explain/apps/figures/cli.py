"""``tinygrad-explain figures`` (``scripts/reproduce_figures.py``): the command line of the figures."""
from __future__ import annotations

import html
import os
import threading
import time

import numpy as np

from ... import explain as X
from ...core.device import set_num_threads
from .. import gallery
from ..figures_resnet import RESNET_SETTINGS
from ..figures_robust import ROBUST_SETTINGS
from . import recipes
from .inputs import LECTURE_IMAGENET_CLASSES, embedded_inputs, file_inputs, most_active_units, shipped_models
from .runner import reproduce

EMBEDDED_SETTINGS = {                         # the library defaults, spelled out
    "class_model": dict(steps=X.visualize.CLASS_MODEL_DEFAULTS["steps"]),
    "maximize": dict(steps=X.visualize.MAXIMIZE_DEFAULTS["steps"]),
    "invert": dict(steps=X.inversion.INVERT_DEFAULTS["steps"]),
    "invert_layers": dict(steps=500),
    "invert_decoder": dict(steps=X.inversion.INVERT_RECIPES["decoder"]["steps"]),
    "robust": {k: v for k, v in ROBUST_SETTINGS.items() if k.endswith("steps")},
    "resnet": {k: v for k, v in RESNET_SETTINGS.items() if k.endswith("steps")},
}
IMAGENET_SETTINGS = {                         # fewer steps: a 224/227 AlexNet step costs ~25x more
    "class_model": dict(steps=100),
    "maximize": dict(steps=60),
    "invert": dict(steps=150),
    "invert_layers": dict(steps=100),
}



def _conv_layer(model) -> str:
    """The default --conv-layer: conv3 where the model has it (AlexNet), else its middle convolution."""
    if "conv3" in model.layer_names:
        return "conv3"
    convs = [n for n, l in model.layers.items() if l.type == "conv"]
    if not convs:
        raise X.ExplainError("the model has no convolution: give --conv-layer")
    return convs[len(convs) // 2]

def main(argv=None, prog="tinygrad-explain figures") -> int:
    import argparse
    import sys
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Write every figure of the lecture 'Explaining CNNs: Early Methods' as PNG, plus index.html. "
                    "Default: the embedded Fashion-MNIST-scenes AlexNet and shipped sample scenes; "
                    "--weights FILE --images PHOTO... for real AlexNet (ImageNet preprocessing from the file).")
    ap.add_argument("--out", required=True, help="output folder (created if missing; when complete, the files of "
                                                 "this run replace their namesakes there, nothing else is touched)")
    ap.add_argument("--weights", help="model file (default: the embedded weights/fashion_scenes_alexnet.h5)")
    ap.add_argument("--images", nargs="+", help="image files (default: sample scenes; required with --weights)")
    ap.add_argument("--classes", nargs="+", help="class-model targets (default: every class of the embedded "
                                                 "model / the lecture's classes for ImageNet models)")
    ap.add_argument("--conv-layer", default=None,
                    help="conv layer for neuron maximisation (default conv3: in the embedded model most conv5 "
                         "channels cannot be driven above their negative bias from a near-zero start; a model "
                         "without conv3, such as a ResNet: its middle convolution)")
    ap.add_argument("--units", type=int, default=8, help="units per layer for neuron maximisation (default 8)")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply every optimisation's number of steps (e.g. 0.1 for a quick look)")
    ap.add_argument("--only", nargs="+", choices=[n for n, _ in recipes.FIGURES], help="make only these figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="where the network runs (gpu: needs CuPy and a CUDA device; default cpu)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes making figures side by side (default: the number of CPU cores "
                         "this process may use; 1 = one after another in this process)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for Numba and BLAS (default 1, fastest for these small batches; 0 = library default)")
    args = ap.parse_args(argv)
    # Everything that can be checked before minutes of work is checked here.
    if args.units < 1:
        ap.error(f"--units must be at least 1, got {args.units}")
    if not (args.steps_scale > 0 and np.isfinite(args.steps_scale)):
        ap.error(f"--steps-scale must be a positive number, got {args.steps_scale}")
    from ...explain.optimize import MAX_STEPS
    most = max(v for d in (EMBEDDED_SETTINGS, IMAGENET_SETTINGS) for s in d.values() for k, v in s.items()
               if k.endswith("steps"))
    if most * args.steps_scale > MAX_STEPS:
        ap.error(f"--steps-scale {args.steps_scale:g} makes {most * args.steps_scale:,.0f} steps; "
                 f"at most {MAX_STEPS:,}")
    if args.jobs is None:
        args.jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads < 0:
        ap.error(f"--threads must be 0 (library default) or a positive count, got {args.threads}")
    set_num_threads(args.threads)
    import signal
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # a kill still removes the partial folder

    from ... import ModelFileError, load_model
    from ...core.device import DeviceUnavailable
    t0 = time.perf_counter()
    try:
        gallery.prepare_out(args.out).rmdir()       # fail early on an unwritable folder
        model = load_model(args.weights, device=args.device)
        embedded = args.weights is None
        if args.images:
            inputs = file_inputs(model, args.images)
        elif embedded or tuple(model.input_shape) == (3, 64, 64):
            inputs = embedded_inputs(model)
        else:
            ap.error("--images is required with --weights (photos to explain)")
        if len(inputs.x) == 0:
            raise ValueError("no input images")
        names = X.class_names(model)
        if args.classes:
            inputs.classes = [X.resolve_class(model, c) for c in args.classes]
        elif model.num_classes <= 20:
            inputs.classes = list(range(model.num_classes))
        else:
            inputs.classes = [X.resolve_class(model, c) for c in LECTURE_IMAGENET_CLASSES if c in names] or [0]
        inputs.conv_layer = X.resolve_layer(model, _conv_layer(model) if args.conv_layer is None else args.conv_layer)
        if len(model.shapes[inputs.conv_layer]) != 3:
            raise X.ExplainError(f"--conv-layer {args.conv_layer!r} is not a convolutional map")
        inputs.fc_layer = X.inversion.default_code_layer(model)      # fc7; a ResNet's avgpool
        nconv, nfc = model.shapes[inputs.conv_layer][0], int(np.prod(model.shapes[inputs.fc_layer]))
        inputs.conv_units = most_active_units(model, inputs.x, inputs.conv_layer, min(args.units, nconv))
        inputs.fc_units = most_active_units(model, inputs.x, inputs.fc_layer, min(args.units, nfc))
        defaults = EMBEDDED_SETTINGS if model.num_classes <= 20 else IMAGENET_SETTINGS
        settings = {k: dict(v) for k, v in defaults.items()}
        for s in settings.values():              # every step count ("steps", "class_steps", ...) scaled
            s.update({k: max(1, int(round(v * args.steps_scale))) for k, v in s.items() if k.endswith("steps")})
            s["seed"] = args.seed
        settings["sanity_twin"] = embedded and "random_labels" in shipped_models()
        settings["judge"] = embedded and "judge" in shipped_models()
        settings["robust_twin"] = embedded and "robust" in shipped_models()
        settings["resnet_beside"] = embedded and "resnet" in shipped_models()
        inputs.settings = settings
        info = (f"Model: {html.escape(getattr(model, 'path', '?'))} (input {model.input_shape}, "
                f"{model.num_classes} classes). Images: {len(inputs.x)}.")
        print(f"model {getattr(model, 'path', '?')}: input {model.input_shape}, {model.num_classes} classes; "
              f"{len(inputs.x)} images; writing {args.out}")
        figures, summary, secs = reproduce(args.out, inputs, info=info, only=args.only, jobs=args.jobs,
                                           threads=args.threads)
    except (X.ExplainError, X.OptimizationError, ModelFileError, OSError, ValueError, DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(figures)} figures to {args.out}/index.html in {time.perf_counter() - t0:.1f} s "
          f"(figures {secs:.1f} s)")
    return 0
