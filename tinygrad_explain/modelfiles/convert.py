"""Convert published AlexNet weights (PyTorch ``.pth``, Caffe ``.caffemodel``) to model files.

Both converters do the same three things:

1. **Read** the foreign file with a parser that needs neither torch nor
   protobuf (:mod:`tinygrad_explain.modelfiles.torch_checkpoint`,
   :mod:`tinygrad_explain.modelfiles.caffemodel`).
2. **Rename** the parameters to this project's layer names and check every
   shape against ``te.models.alexnet(variant)`` -- a checkpoint of another
   architecture fails here with a message naming the offending key.
   No weight is transposed: PyTorch and Caffe both store conv weights as
   (out, in/groups, kH, kW) and fully-connected weights as (out, in), and
   both flatten the 256x6x6 pool5 map in C order before fc6, as we do.
3. **Write** a self-describing HDF5 model file with the 1000 ImageNet class
   names and the preprocessing the weights were trained with (see
   :mod:`tinygrad_explain.data.image`), so ``te.load_model(out)`` is all a user
   needs afterwards.

torchvision's module indices ``features.{0,3,6,8,10}`` are the five convs
(the indices in between are ReLU/MaxPool, which have no weights) and
``classifier.{1,4,6}`` the three linear layers (0 and 3 are Dropout).
"""
from __future__ import annotations

import os

import numpy as np

from ..core.safe_io import check_output
from ..data.imagenet import CAFFE_PREPROCESSING, IMAGENET_CLASSES, TORCHVISION_PREPROCESSING

__all__ = [
    "ConversionError",
    "TORCHVISION_TO_TE",
    "CAFFE_LAYERS",
    "TORCHVISION_PREPROCESSING",
    "CAFFE_PREPROCESSING",
    "check_torchvision_shapes",
    "torchvision_to_state_dict",
    "caffe_to_state_dict",
    "convert_torchvision",
    "convert_caffe",
]


class ConversionError(ValueError):
    """The input file is readable but is not the expected AlexNet."""


TORCHVISION_TO_TE = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3",
    "features.8": "conv4", "features.10": "conv5",
    "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8",
}
CAFFE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")



def _reference_shapes(variant: str, num_classes: int) -> dict[str, tuple]:
    from ..core import models
    return {k: tuple(v.shape) for k, v in
            models.alexnet(variant, num_classes=num_classes).state_dict().items()}


def _num_classes(shape: tuple, source: str) -> int:
    """Number of outputs from the fc8 weight shape (out, 4096)."""
    shape = tuple(shape)
    if len(shape) != 2 or shape[-1] != 4096:
        raise ConversionError(f"{source}: classifier weight has shape {tuple(shape)}, "
                              "expected (num_classes, 4096) -- not an AlexNet")
    return int(shape[0])


def check_torchvision_shapes(sd: dict, source: str = "checkpoint") -> dict[str, tuple]:
    """Names and shapes only (nothing read: works on unread checkpoint tensors):
    every key known, every shape torchvision AlexNet's; returns ``{our key: shape}``."""
    if "classifier.6.weight" not in sd:
        raise ConversionError(f"{source}: no 'classifier.6.weight' -- not a torchvision AlexNet "
                              f"state dict (keys: {_preview(sd)})")
    ref = _reference_shapes("torchvision", _num_classes(tuple(sd["classifier.6.weight"].shape), source))
    for key, arr in sd.items():
        mod, _, param = key.rpartition(".")
        if mod not in TORCHVISION_TO_TE or param not in ("weight", "bias"):
            raise ConversionError(f"{source}: unexpected key {key!r} -- not a torchvision AlexNet "
                                  f"(expected {sorted(k + '.weight' for k in TORCHVISION_TO_TE)} "
                                  "and the matching .bias keys)")
        te_key = f"{TORCHVISION_TO_TE[mod]}.{param}"
        if tuple(arr.shape) != ref[te_key]:
            raise ConversionError(f"{source}: {key!r} has shape {tuple(arr.shape)}, torchvision AlexNet "
                                  f"needs {ref[te_key]} -- wrong architecture")
        if np.dtype(arr.dtype).kind != "f":
            raise ConversionError(f"{source}: {key!r} has dtype {arr.dtype}, expected floating point")
    missing = [tv for tv, te in _inverse_keys().items() if te in ref and tv not in sd]
    if missing:
        raise ConversionError(f"{source}: missing {missing} -- incomplete or not an AlexNet")
    return ref


def torchvision_to_state_dict(sd: dict, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """torchvision AlexNet keys (``features.0.weight`` ...) -> ``conv1.weight`` ...

    Every key must be known and every shape must match torchvision's
    AlexNet (:func:`check_torchvision_shapes`, run first); otherwise
    :class:`ConversionError` names the key.  The number of classes is taken
    from ``classifier.6.weight`` (1000 for ImageNet).
    """
    check_torchvision_shapes(sd, source)
    out = {}
    for key, arr in sd.items():
        mod, _, param = key.rpartition(".")
        out[f"{TORCHVISION_TO_TE[mod]}.{param}"] = _as_float32(np.asarray(arr), key, source)
    return out


def _inverse_keys():
    return {f"{tv}.{p}": f"{te}.{p}" for tv, te in TORCHVISION_TO_TE.items()
            for p in ("weight", "bias")}


def caffe_to_state_dict(blobs: dict, source: str = "caffemodel") -> dict[str, np.ndarray]:
    """``{layer: [weight, bias]}`` from a caffemodel -> ``conv1.weight`` ...

    Caffe's legacy blob shapes pad with leading ones (an fc weight is
    ``(1, 1, out, in)``, a bias ``(1, 1, 1, out)``); those are squeezed.
    Any other shape difference is a :class:`ConversionError` naming the
    layer.  Layers with weights other than conv1..fc8 are an error too.
    """
    missing = [n for n in CAFFE_LAYERS if n not in blobs]
    if missing:
        raise ConversionError(f"{source}: layers {missing} not found (layers with weights: "
                              f"{list(blobs)}) -- not a bvlc_alexnet caffemodel")
    extra = [n for n in blobs if n not in CAFFE_LAYERS]
    if extra:
        raise ConversionError(f"{source}: unexpected layers with weights {extra} -- not a "
                              "bvlc_alexnet caffemodel")
    fc8_shape = np.shape(blobs["fc8"][0]) if blobs["fc8"] else (0,)
    ref = _reference_shapes("caffe", _num_classes(_strip_ones(fc8_shape), source + " fc8"))
    out = {}
    for name in CAFFE_LAYERS:
        layer = blobs[name]
        if len(layer) != 2:
            raise ConversionError(f"{source}: layer {name!r} has {len(layer)} blobs, expected 2 "
                                  "(weight, bias)")
        for param, arr in zip(("weight", "bias"), layer):
            want = ref[f"{name}.{param}"]
            arr = np.asarray(arr)
            if arr.shape != want:
                if _strip_ones(arr.shape) != _strip_ones(want):
                    raise ConversionError(f"{source}: layer {name!r} {param} has shape {arr.shape}, "
                                          f"bvlc_alexnet needs {want} -- wrong architecture")
                arr = arr.reshape(want)
            out[f"{name}.{param}"] = _as_float32(arr, f"{name}.{param}", source)
    return out


def _strip_ones(shape) -> tuple:
    """Drop Caffe's leading padding dims: (1, 1, 1000, 4096) -> (1000, 4096)."""
    shape = list(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def _as_float32(arr, key, source):
    if arr.dtype.kind != "f":
        raise ConversionError(f"{source}: {key!r} has dtype {arr.dtype}, expected floating point")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32)                 # checked after the cast: 1e300 in float64 is inf here
    if not np.isfinite(arr).all():
        raise ConversionError(f"{source}: {key!r} contains NaN or Inf (as float32)")
    return arr


def _preview(d, n=6):
    keys = list(d)
    return keys[:n] + (["..."] if len(keys) > n else [])


def _build_and_save(variant, state, out_path, preprocessing, class_names, source):
    from ..core import models
    from .modelfile import save_model
    num_classes = state["fc8.weight"].shape[0]
    if class_names is None and num_classes == len(IMAGENET_CLASSES):
        class_names = IMAGENET_CLASSES
    if class_names is not None and len(class_names) != num_classes:
        raise ConversionError(f"{source}: {len(class_names)} class names for {num_classes} outputs")
    model = models.alexnet(variant, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as e:      # shapes were checked above; belt and braces
        msg = e.args[0] if e.args else str(e)
        raise ConversionError(f"{source}: {msg}") from None
    out_path = check_output(out_path, inputs=[source], need_folder=False)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pre = {k: (list(v) if isinstance(v, tuple) else v) for k, v in preprocessing.items()}
    save_model(model, out_path, class_names=list(class_names) if class_names is not None else None,
               **pre)
    model.class_names = list(class_names) if class_names is not None else None
    model.preprocessing = dict(pre)
    model.path = str(out_path)
    return model


def convert_torchvision(in_path, out_path, class_names=None):
    """torchvision ``alexnet-owt-7be5be79.pth`` (or any AlexNet state dict) -> model file.

    Returns the converted model (``variant="torchvision"``), already carrying
    its ``class_names`` and ``preprocessing``.  Raises ``ValueError`` (or its
    subclasses :class:`ConversionError` /
    :class:`~tinygrad_explain.modelfiles.torch_checkpoint.UnsafeCheckpointError`) for a
    file that is not a safe, complete torchvision AlexNet checkpoint, and
    ``FileNotFoundError`` if ``in_path`` does not exist.
    """
    from .torch_checkpoint import load_torch_state_dict
    src = os.fspath(in_path)
    check_output(out_path, inputs=[src], need_folder=False)      # before minutes of reading
    # names and shapes are checked before any storage is decompressed
    sd = load_torch_state_dict(src, check=lambda sd: check_torchvision_shapes(sd, src))
    state = torchvision_to_state_dict(sd, source=src)
    return _build_and_save("torchvision", state, out_path, TORCHVISION_PREPROCESSING,
                           class_names, src)


def convert_caffe(in_path, out_path, class_names=None):
    """Caffe ``bvlc_alexnet.caffemodel`` -> model file (``variant="caffe"``).

    The weights only are read from the caffemodel; the layer graph is this
    project's bvlc_alexnet (conv1 -> relu1 -> norm1 -> pool1 -> ...).  The
    similar *CaffeNet* (``bvlc_reference_caffenet``) has identical weight
    shapes but pools before normalising, so it would convert without error
    and then score differently -- convert only bvlc_alexnet with this.
    """
    from .caffemodel import load_caffemodel
    src = os.fspath(in_path)
    check_output(out_path, inputs=[src], need_folder=False)      # before minutes of reading
    state = caffe_to_state_dict(load_caffemodel(src), source=src)
    return _build_and_save("caffe", state, out_path, CAFFE_PREPROCESSING, class_names, src)


def cli(kind, doc, argv=None):
    """The shared command line of scripts/convert_torchvision.py and convert_caffe.py:
    ``INPUT OUTPUT``; expected problems print one line and return exit code 2."""
    import argparse
    import sys
    convert, what, source = {
        "torchvision": (convert_torchvision, "torchvision AlexNet",
                        "torchvision AlexNet state dict saved by torch.save (zip format)"),
        "caffe": (convert_caffe, "Caffe bvlc_alexnet", "bvlc_alexnet .caffemodel (binary NetParameter)"),
    }[kind]
    ap = argparse.ArgumentParser(description=doc.splitlines()[1])
    ap.add_argument("input", help=source)
    ap.add_argument("output", help=f"HDF5 model file to write, e.g. weights/alexnet_{kind}.h5")
    args = ap.parse_args(argv)
    try:
        model = convert(args.input, args.output)
    except (ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"convert_{kind}: error: {msg}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {what}, input {model.input_shape}, {model.num_classes} classes")
    return 0
