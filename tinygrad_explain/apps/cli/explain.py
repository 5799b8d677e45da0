"""One explanation from the command line: a subcommand per entry of the method registry.

    tinygrad-explain METHOD --image PATH --target NAME|INDEX|LAYER:C[:I:J]
                            [--weights FILE] [--out PATH] [--device gpu]

Every map method of ``te.explain.methods.METHODS`` and every optimisation of
``OPTIMIZATIONS`` is a subcommand: its ``--help`` line is the entry's summary and
paper, its flags the entry's ``options`` (their defaults read from the function's
signature).  Nothing here names a method: a new registry entry is a new subcommand.

The image may be any size and greyscale or colour: it is converted to RGB and
resized the model file's way (te.image.load: for the embedded model, warped to
64x64).  --target defaults to the predicted class; for the methods that take any
target it may also be a channel, conv5:12 (its mean activation), or one neuron,
conv5:12:3:4 (channel 12, row 3, column 4).  The model is the embedded one unless
--weights names another model file or a shipped name (random_labels, robust, judge).
"""
from __future__ import annotations

import argparse
import inspect

import numpy as np

from ...explain.methods import Method, Optimization, every

#: the flags the registry's ``options`` may name: their type and help (the default is the function's)
OPTIONS = {
    "layer": dict(help="layer (a name such as conv5 or a graph node such as layer4.1.relu_1, or an index)"),
    "unit": dict(help="unit: a channel/neuron index, or c,i,j"),
    "inits": dict(type=int, help="reconstructions from random starts"),
    "recipe": dict(help="named settings (default \"natural\"): \"simonyan2014\", \"mahendran2015\", for "
                        "class-model and maximize also \"natural-opaque\", for invert also \"decoder\" "
                        "(pool5, fc6, fc7: start at a learned decoder's image) and \"exemplar\" (the training "
                        "scene nearest in code; 64x64 RGB models); docs/explainers.md"),
    "steps": dict(type=int, help="optimisation steps (default: the recipe's)"),
    "lr": dict(type=float, help="optimisation step size (default: the recipe's)"),
    "seed": dict(type=int, help="random seed"),
    "noise": dict(type=float, help="noise level, a fraction of the image's range"),
    "samples": dict(type=int, help="noisy copies averaged"),
    "patch": dict(type=int, help="side of the grey square in pixels (default 1/8 of the image side)"),
    "stride": dict(type=int, help="step of the grey square in pixels (default half a patch)"),
}
#: checks made before any work, by option (not by method): what a value must pass, and the words for it
LIMITS = {"threads": (lambda v: v >= 0, "at least 0"), "inits": (lambda v: v >= 1, "at least 1"),
          "steps": (lambda v: v >= 1, "at least 1"), "lr": (lambda v: 0 < v < float("inf"), "a positive number"),
          "noise": (lambda v: 0 <= v < float("inf"), "a non-negative number")}

def _default(entry, option):
    """The default of ``option`` in the entry's function, for --help (None: the function decides)."""
    p = inspect.signature(entry.fn).parameters.get(option)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image file (any size; resized as the model file says)")
    p.add_argument("--target", help="class name or index (default: the predicted class); for the map methods "
                   "that take any target also a channel LAYER:C or a neuron LAYER:C:I:J")
    p.add_argument("--weights", help="model file or shipped name (default: the embedded model)")
    p.add_argument("--out", help="output PNG (default: METHOD.png)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="where the network runs (gpu: needs CuPy and a CUDA device; default cpu)")
    p.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (default 1; 0 = library default)")


def add_method(sub, entry: Method | Optimization) -> None:
    """The subcommand of one registry entry: the common flags and the entry's options."""
    what = ("needs --image" if entry.needs_image else "no --image needed")
    if isinstance(entry, Method):
        what += "; --target may be a channel or a neuron" if entry.targets == "any" else "; a class --target"
    p = sub.add_parser(entry.name, help=entry.help, description=f"{entry.summary} ({entry.paper}; {what}).",
                       epilog=__doc__.split("\n\n", 3)[3], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    for o in entry.options:
        spec = dict(OPTIONS[o])
        d = _default(entry, o)
        if d is not None:
            spec["help"] += f" (default {d})"
        if o in entry.required:
            spec["help"] += " (required)"
        p.add_argument(f"--{o}", **spec)
    p.set_defaults(entry=entry, error=p.error, **{o: None for o in OPTIONS if o not in entry.options})


def check(args, error) -> None:
    """Refuse out-of-range numbers before any work (``error``: the parser's one-line exit)."""
    for name, (ok, what) in LIMITS.items():
        v = getattr(args, name, None)
        if v is not None and not ok(v):
            error(f"--{name} must be {what}, got {v}")

def run(args) -> str:
    """Make the picture of ``args.entry`` and write it to ``--out``; returns what to print."""
    import tinygrad_explain as te
    from tinygrad_explain import explain as X
    from tinygrad_explain.apps import draw as D
    from tinygrad_explain.core.safe_io import check_output
    from tinygrad_explain.data import image as te_image
    entry = args.entry
    out = check_output(args.out or f"{entry.name}.png", inputs=[p for p in (args.image, args.weights) if p])
    model = te.load_model(args.weights, device=args.device)
    missing = [o for o in entry.required if getattr(args, o) is None]
    if missing:
        raise X.ExplainError(f"{entry.name} needs " + " and ".join(f"--{o}" for o in missing))
    if entry.needs_image and not args.image:
        raise X.ExplainError(f"{entry.name} needs --image")
    x = te_image.load(args.image, model) if args.image else None
    picture = te_image.to_display(x, model) if x is not None else None
    msg, target = [], args.target
    if x is not None:
        names = X.class_names(model)
        _, probs = X.predict(model, x)
        pred = int(probs[0].argmax())
        msg.append(f"predicted: {names[pred]} (index {pred}, softmax {probs[0, pred]:.3f})")
        target = pred if target is None else target
    options = {o: getattr(args, o) for o in entry.options if getattr(args, o) is not None}

    if isinstance(entry, Optimization):
        made = entry.fn(model, x, target, **options)
        msg += made.lines
        img = (D.upscale(made.images[0]) if made.captions is None else
               np.asarray(D.grid([picture] + made.images, ["original"] + made.captions)))
    else:
        if entry.targets == "any":                  # a class, a channel (conv5:12) or a neuron (conv5:12:3:4)
            obj = X.resolve_objective(model, target, 1)
            msg.append(f"target: {obj.labels[0]}" + (f" (index {obj.classes[0]})" if obj.classes is not None else ""))
        else:
            target = X.resolve_class(model, target)
            msg.append(f"target: {X.class_names(model)[target]} (index {target})")
        values = entry.fn(model, x, target, **options)[0]
        img, lines = SHOWS[entry.shows](entry.name, values, picture)
        msg += lines
    D.save_png(img, out)
    msg.append(f"wrote {out}")
    return "\n".join(msg)


def _show_map(name, values, picture):
    from tinygrad_explain.apps import draw as D
    return D.upscale(D.method_picture(name, values, picture)), []


def _show_mask(name, values, picture):
    """The GrabCut mask (red) and its box (green) that the map seeds (Simonyan et al. 2014, sec. 6)."""
    from tinygrad_explain import explain as X
    from tinygrad_explain.apps import draw as D
    mask, box = X.grabcut_mask(picture, values)
    return D.overlay(picture, mask, box), [f"box (x0, y0, x1, y1): {tuple(int(v) for v in box)}; "
                                           f"mask area {int(mask.sum())} px"]


#: how a map is drawn, by the registry entry's ``shows``
SHOWS = {"map": _show_map, "mask": _show_mask}


def methods() -> dict[str, Method | Optimization]:
    """The subcommands: every registry entry."""
    return every()
