"""PyTorch twins of this package's AlexNets -- the independent reference for
tests and benchmarks.  Needs torch (imported lazily); nothing else here does.

``build(variant, state_dict)`` returns a ``torch.nn.Sequential`` in eval mode
with the given weights (a ``Network.state_dict()``), layer for layer the same
network as ``te.models.alexnet(variant)``; ``from_network(model)`` the same
for any ``Network`` of the layer types AlexNets use (e.g. the embedded model).
"""
from __future__ import annotations

# te layer name -> index in the torch Sequential
TORCH_INDEX = {
    "torchvision": {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 10, "fc6": 16, "fc7": 19, "fc8": 21},
    "caffe": {"conv1": 0, "conv2": 4, "conv3": 8, "conv4": 10, "conv5": 12, "fc6": 16, "fc7": 19, "fc8": 22},
}


def layers(variant, num_classes=1000):
    """The torch layers of AlexNet ``variant`` (each ReLU its own module, as Captum needs)."""
    import torch.nn as nn
    if variant == "torchvision":
        return [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(),
                nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, num_classes)]
    if variant == "caffe":
        return [nn.Conv2d(3, 96, 11, 4), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0), nn.MaxPool2d(3, 2),
                nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Dropout(), nn.Linear(4096, num_classes)]
    raise ValueError(f"unknown variant {variant!r}")


def build(variant, state_dict=None, num_classes=1000):
    """A torch AlexNet (eval mode) carrying ``state_dict`` (te layout: "conv1.weight", ...)."""
    import torch
    seq = torch.nn.Sequential(*layers(variant, num_classes)).eval()
    if state_dict is not None:
        tsd = {}
        for name, i in TORCH_INDEX[variant].items():
            for p in ("weight", "bias"):
                tsd[f"{i}.{p}"] = torch.as_tensor(state_dict[f"{name}.{p}"])
        seq.load_state_dict(tsd)
    return seq


def from_network(model):
    """A torch Sequential (eval mode), one module per layer of the te ``Network``
    ``model`` in its order, carrying its weights (as float32 copies)."""
    import numpy as np
    import torch
    import torch.nn as nn
    mods = []
    for spec in model.architecture():
        t = spec["type"]
        if t == "conv":
            mods.append(nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel_size"], spec["stride"],
                                  spec["padding"], groups=spec["groups"]))
        elif t == "linear":
            mods.append(nn.Linear(spec["in_features"], spec["out_features"]))
        elif t == "relu":
            mods.append(nn.ReLU())
        elif t == "lrn":
            mods.append(nn.LocalResponseNorm(spec["size"], spec["alpha"], spec["beta"], spec["k"]))
        elif t == "maxpool":
            mods.append(nn.MaxPool2d(spec["kernel_size"], spec["stride"], spec["padding"]))
        elif t == "adaptive_avgpool":
            mods.append(nn.AdaptiveAvgPool2d(tuple(spec["output_size"])))
        elif t == "flatten":
            mods.append(nn.Flatten())
        elif t == "dropout":
            mods.append(nn.Dropout(spec["p"]))
        elif t == "unflatten":
            mods.append(nn.Unflatten(1, tuple(spec["shape"])))
        elif t == "upsample":
            mods.append(nn.Upsample(scale_factor=spec["factor"], mode="nearest"))
        else:
            raise ValueError(f"layer {spec['name']!r}: no torch twin for type {t!r}")
    seq = nn.Sequential(*mods).eval()
    sd = model.state_dict()
    with torch.no_grad():
        for spec, m in zip(model.architecture(), seq):
            for p in ("weight", "bias"):
                key = f"{spec['name']}.{p}"
                if key in sd:
                    getattr(m, p).copy_(torch.from_numpy(np.asarray(sd[key], np.float32)))
    return seq
