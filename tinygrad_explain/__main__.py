"""One explanation from the command line.

    python -m tinygrad_explain METHOD --image PATH --target NAME|INDEX|LAYER:C[:I:J]
                               [--weights FILE] [--out PATH] [--device gpu]
    python -m tinygrad_explain serve [--host 127.0.0.1] [--port 8000]   (the explorer: a local web page)

METHOD          what is written to --out (PNG)
saliency        the image-specific class saliency map max_c |dS/dx| (grey)
guided          the guided-backprop gradient of the class score (colour)
deconvnet       the deconvnet "gradient" of the class score (colour)
smoothgrad      the saliency map averaged over --samples noisy copies (grey)
gradcam         the Grad-CAM map of --layer (default: the last conv layer), over the image
guided-gradcam  guided backprop times Grad-CAM (colour)
occlusion       the drop of the class probability under a grey --patch slid by --stride (grey)
grad-x-input    the image times its gradient, summed over channels (red +, blue -)
grabcut         the image with the GrabCut mask (red) and its box (green); the box is printed
class-model     the class model image of --target (no --image needed)
maximize        the image maximising --unit of --layer (no --image needed)
invert          the image beside --inits reconstructions from its --layer code (default fc7)

`python -m tinygrad_explain METHOD --help` lists that method's options.

The image may be any size and greyscale or colour: it is converted to RGB and
resized the model file's way (te.image.load: for the embedded model, warped to
64x64).  --target defaults to the predicted class; for saliency, guided, deconvnet
and grabcut it may also be a channel, conv5:12 (its mean activation), or one
neuron, conv5:12:3:4 (channel 12, row 3, column 4).  The model is the embedded
one unless --weights names another model file.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .explain.methods import METHODS as EXPLAINERS

# the maps of an image the CLI draws: their functions, --help lines and options are te.explain.methods'
GRADIENT_MAPS = ("saliency", "guided", "deconvnet", "smoothgrad", "gradcam", "guided-gradcam", "occlusion",
                 "grad-x-input", "grabcut")
OBJECTIVE_MAPS = ("saliency", "guided", "deconvnet", "grabcut")   # also take channel / neuron targets
METHODS = {   # name: (one line for its --help, its own options beyond the common ones)
    **{name: (EXPLAINERS[name].help, EXPLAINERS[name].options) for name in GRADIENT_MAPS},
    # the images made by optimisation (no --image needed)
    "class-model": ("The class model image of --target (Simonyan et al. 2014); no --image needed.",
                    ("recipe", "steps", "lr", "seed")),
    "maximize": ("The image maximising --unit of --layer (activation maximisation); no --image needed.",
                 ("layer", "unit", "recipe", "steps", "lr", "seed")),
    "invert": ("The image beside --inits reconstructions from its --layer code (Mahendran & Vedaldi 2015).",
               ("layer", "inits", "recipe", "steps", "lr", "seed")),
}


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--image", help="image file (any size; resized as the model file says)")
    common.add_argument("--target", help="class name or index (default: the predicted class), or for saliency, "
                        "guided, deconvnet and grabcut also a channel LAYER:C or a neuron LAYER:C:I:J")
    common.add_argument("--weights", help="model file (default: the embedded model)")
    common.add_argument("--out", help="output PNG (default: METHOD.png)")
    common.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="where the network runs (gpu: needs CuPy and a CUDA device; default cpu)")
    common.add_argument("--threads", type=int, default=1,
                        help="Numba/BLAS threads (default 1; 0 = library default)")
    own = {
        "layer": dict(help="layer (a node of a graph network, e.g. layer4.1.relu_1): for maximize (required), "
                           "invert (default fc7), gradcam / guided-gradcam (default: the last conv layer after "
                           "its ReLU)"),
        "unit": dict(help="unit for maximize: a channel/neuron index, or c,i,j"),
        "inits": dict(type=int, default=5, help="reconstructions for invert (default 5)"),
        "recipe": dict(help="named settings (default \"natural\"): \"simonyan2014\", \"mahendran2015\", for "
                            "class-model and maximize also \"natural-opaque\", for invert also \"decoder\" "
                            "(pool5, fc6, fc7: start at a learned decoder's image) and \"exemplar\" (the training "
                            "scene nearest in code; 64x64 RGB models); docs/explainers.md"),
        "steps": dict(type=int, help="optimisation steps"),
        "lr": dict(type=float, help="optimisation step size"),
        "seed": dict(type=int, default=0, help="random seed (default 0)"),
        "noise": dict(type=float, default=0.15, help="noise level, a fraction of the image's range (default 0.15)"),
        "samples": dict(type=int, default=25, help="noisy copies averaged (default 25)"),
        "patch": dict(type=int, help="side of the grey square in pixels (default 1/8 of the image side)"),
        "stride": dict(type=int, help="step of the grey square in pixels (default half a patch)"),
    }
    ap = argparse.ArgumentParser(prog="python -m tinygrad_explain", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="method", metavar="METHOD", required=True)
    sub.add_parser("serve", help="The explorer: a local web page for every map above "
                                 "(python -m tinygrad_explain serve --help; handled by tinygrad_explain.explorer).")
    for name, (text, options) in METHODS.items():
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        for o in options:
            p.add_argument(f"--{o}", **own[o])
        p.set_defaults(**{o: own[o].get("default") for o in own if o not in options})
    return ap


def run(args) -> str:
    import tinygrad_explain as te
    from tinygrad_explain import draw as D
    from tinygrad_explain import explain as X
    from tinygrad_explain import image as te_image
    from tinygrad_explain.safe_io import check_output
    out = check_output(args.out or f"{args.method}.png", inputs=[p for p in (args.image, args.weights) if p])
    model = te.load_model(args.weights, device=args.device)
    opt = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("recipe", args.recipe)) if v is not None}
    needs_image = args.method not in ("class-model", "maximize")
    if needs_image and not args.image:
        raise X.ExplainError(f"{args.method} needs --image")
    x = te_image.load(args.image, model) if args.image else None
    names = X.class_names(model)
    msg = []
    if x is not None:
        _, probs = X.predict(model, x)
        pred = int(probs[0].argmax())
        msg.append(f"predicted: {names[pred]} (index {pred}, softmax {probs[0, pred]:.3f})")
    target = args.target if args.target is not None else (pred if x is not None else None)
    if args.method in OBJECTIVE_MAPS:
        obj = X.resolve_objective(model, target, 1)       # a class, a channel (conv5:12) or a neuron (conv5:12:3:4)
        msg.append(f"target: {obj.labels[0]}" + (f" (index {obj.classes[0]})" if obj.classes is not None else ""))
    elif target is not None:
        target = X.resolve_class(model, target)
        if args.method in GRADIENT_MAPS:
            msg.append(f"target: {names[target]} (index {target})")
    picture = te_image.to_display(x, model) if x is not None else None

    if args.method in GRADIENT_MAPS:
        method = EXPLAINERS[args.method]
        values = method.fn(model, x, target, **{o: getattr(args, o) for o in method.options})[0]
        if args.method == "grabcut":                  # the saliency map seeds GrabCut
            mask, box = X.grabcut_mask(picture, values)
            img = D.overlay(picture, mask, box)
            msg.append(f"box (x0, y0, x1, y1): {tuple(int(v) for v in box)}; mask area {int(mask.sum())} px")
        else:
            img = D.upscale(D.method_picture(args.method, values, picture))
    elif args.method == "class-model":
        if target is None:
            raise X.ExplainError("class-model needs --target (a class name or index)")
        v = X.class_model(model, target, seed=args.seed, **opt)
        img = D.upscale(v.display[0])
        msg.append(f"class model of {v.labels[0]}: score {v.final[0]:.2f}, softmax {v.probability[0]:.4f}")
    elif args.method == "maximize":
        if args.layer is None or args.unit is None:
            raise X.ExplainError("maximize needs --layer and --unit")
        layer = X.resolve_layer(model, args.layer)
        unit = X.resolve_unit(model, layer, args.unit)
        v = X.maximize(model, layer, unit, seed=args.seed, **opt)
        img = D.upscale(v.display[0])
        msg.append(f"{v.labels[0]}: activation {v.final[0]:.3f}")
    else:  # invert
        inv = X.invert(model, x, layer=args.layer or "fc7", inits=args.inits, seed=args.seed, **opt)
        img = np.asarray(D.grid([picture] + inv.display, ["original"] + [f"error {e:.3f}" for e in inv.errors]))
        msg.append("normalised errors: " + " ".join(f"{e:.4f}" for e in inv.errors))
        msg.append(f"mean pairwise |difference|: {inv.mean_pairwise_mad:.4f}")
    D.save_png(img, out)
    msg.append(f"wrote {out}")
    return "\n".join(msg)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        from .explorer import main as serve
        return serve(argv[1:])
    ap = build_parser()
    args = ap.parse_args(argv)
    for name, lo in (("threads", 0), ("inits", 1), ("steps", 1)):
        v = getattr(args, name, None)               # checked before any work
        if v is not None and v < lo:
            ap.error(f"--{name} must be at least {lo}, got {v}")
    if args.lr is not None and not 0 < args.lr < float("inf"):
        ap.error(f"--lr must be a positive number, got {args.lr}")
    if args.noise is not None and not 0 <= args.noise < float("inf"):
        ap.error(f"--noise must be a non-negative number, got {args.noise}")
    import tinygrad_explain as te
    from tinygrad_explain import explain as X
    from tinygrad_explain.device import set_num_threads
    set_num_threads(args.threads)
    from tinygrad_explain.device import DeviceUnavailable
    try:
        print(run(args))
    except (X.ExplainError, X.OptimizationError, te.ModelFileError, OSError, ValueError, KeyError,
            DeviceUnavailable) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
