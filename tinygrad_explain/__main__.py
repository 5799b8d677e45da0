"""One explanation from the command line.

    python -m tinygrad_explain METHOD --image PATH --target NAME|INDEX [--weights FILE] [--out PATH] [--device gpu]

METHOD       what is written to --out (PNG)
saliency     the image-specific class saliency map max_c |dS/dx| (grey)
guided       the guided-backprop gradient of the class score (colour)
deconvnet    the deconvnet "gradient" of the class score (colour)
grabcut      the image with the GrabCut mask (red) and its box (green); the box is printed
class-model  the class model image of --target (no --image needed)
maximize     the image maximising --unit of --layer (no --image needed)
invert       the image beside --inits reconstructions from its --layer code (default fc7)

The image may be any size and greyscale or colour: it is converted to RGB and
resized the model file's way (te.image.load: for the embedded model, warped to
64x64).  --target defaults to the predicted class.  The model is the embedded
one unless --weights names another model file.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

METHODS = ("saliency", "guided", "deconvnet", "grabcut", "class-model", "maximize", "invert")


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m tinygrad_explain", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("--image", help="image file (any size; resized as the model file says)")
    ap.add_argument("--target", help="class name or index (default: the predicted class)")
    ap.add_argument("--weights", help="model file (default: the embedded model)")
    ap.add_argument("--out", help="output PNG (default: METHOD.png)")
    ap.add_argument("--layer", help="layer for maximize (required) / invert (default fc7)")
    ap.add_argument("--unit", help="unit for maximize: a channel/neuron index, or c,i,j")
    ap.add_argument("--inits", type=int, default=5, help="reconstructions for invert (default 5)")
    ap.add_argument("--steps", type=int, help="optimisation steps (class-model, maximize, invert)")
    ap.add_argument("--lr", type=float, help="optimisation step size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="where the network runs (gpu: needs CuPy and a CUDA device; default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1; 0 = library default)")
    return ap


def run(args) -> str:
    import tinygrad_explain as te
    from tinygrad_explain import explain as X, figures as F, image as te_image
    from tinygrad_explain.safe_io import check_output
    out = check_output(args.out or f"{args.method}.png", inputs=[p for p in (args.image, args.weights) if p])
    model = te.load_model(args.weights, device=args.device)
    opt = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    needs_image = args.method not in ("class-model", "maximize")
    if needs_image and not args.image:
        raise X.ExplainError(f"{args.method} needs --image")
    x = te_image.load(args.image, model) if args.image else None
    names = X._common.class_names(model)
    msg = []
    if x is not None:
        _, probs = X.predict(model, x)
        pred = int(probs[0].argmax())
        msg.append(f"predicted: {names[pred]} (index {pred}, softmax {probs[0, pred]:.3f})")
    target = X.resolve_class(model, args.target) if args.target is not None else (
        pred if x is not None else None)
    if args.method in ("saliency", "guided", "deconvnet", "grabcut"):
        msg.append(f"target: {names[target]} (index {target})")
    picture = te_image.to_display(x, model) if x is not None else None

    if args.method == "saliency":
        img = F.upscale(F.heat(X.saliency(model, x, target)[0]))
    elif args.method in ("guided", "deconvnet"):
        img = F.upscale(F.grad_picture(X.gradient(model, x, target, rule=args.method)[0]))
    elif args.method == "grabcut":
        mask, box = X.grabcut_mask(picture, X.saliency(model, x, target)[0])
        img = F.overlay(picture, mask, box)
        msg.append(f"box (x0, y0, x1, y1): {tuple(int(v) for v in box)}; mask area {int(mask.sum())} px")
    elif args.method == "class-model":
        if target is None:
            raise X.ExplainError("class-model needs --target (a class name or index)")
        v = X.class_model(model, target, seed=args.seed, **opt)
        img = F.upscale(v.display[0])
        msg.append(f"class model of {v.labels[0]}: score {v.final[0]:.2f}, softmax {v.probability[0]:.4f}")
    elif args.method == "maximize":
        if args.layer is None or args.unit is None:
            raise X.ExplainError("maximize needs --layer and --unit")
        layer = X.resolve_layer(model, args.layer)
        unit = X.resolve_unit(model, layer, args.unit)
        v = X.maximize(model, layer, unit, seed=args.seed, **opt)
        img = F.upscale(v.display[0])
        msg.append(f"{v.labels[0]}: activation {v.final[0]:.3f}")
    else:  # invert
        inv = X.invert(model, x, layer=args.layer or "fc7", inits=args.inits, seed=args.seed, **opt)
        img = np.asarray(F.grid([picture] + inv.display, ["original"] + [f"error {e:.3f}" for e in inv.errors]))
        msg.append("normalised errors: " + " ".join(f"{e:.4f}" for e in inv.errors))
        msg.append(f"mean pairwise |difference|: {inv.mean_pairwise_mad:.4f}")
    F.save_png(img, out)
    msg.append(f"wrote {out}")
    return "\n".join(msg)


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    for name, lo in (("threads", 0), ("inits", 1), ("steps", 1)):      # checked before any work
        v = getattr(args, name)
        if v is not None and v < lo:
            ap.error(f"--{name} must be at least {lo}, got {v}")
    if args.lr is not None and not (args.lr > 0 and args.lr < float("inf")):
        ap.error(f"--lr must be a positive number, got {args.lr}")
    import tinygrad_explain as te
    from tinygrad_explain import explain as X
    from tinygrad_explain.device import set_num_threads
    set_num_threads(args.threads)
    from tinygrad_explain.device import DeviceUnavailable
    try:
        print(run(args))
    except (X.ExplainError, X.OptimizationError, te.ModelFileError, FileNotFoundError, PermissionError,
            ValueError, KeyError, DeviceUnavailable) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
