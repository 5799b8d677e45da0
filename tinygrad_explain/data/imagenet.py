"""ImageNet (ILSVRC-2012) class names and the two classic normalisations.

``IMAGENET_CLASSES[i]`` is the name of output ``i`` of any 1000-way ImageNet
classifier that uses the standard class order (the synsets sorted by WordNet
id, ``n01440764`` = tench first) -- torchvision's and Caffe's AlexNet both do.
The names are the short ones from ``imagenet_classes.txt`` of the
``pytorch/hub`` repository, with underscores turned into spaces
(``"great_white_shark"`` -> ``"great white shark"``).  Two pairs of classes
share a name there (``crane`` 134 the bird / 517 the machine, and
``maillot`` 638 / 639); index, not name, is the identity of a class.

Two preprocessing conventions exist for AlexNet, and a model file records
which one its weights expect (see :mod:`tinygrad_explain.data.image`):

* **torchvision**: RGB, pixels scaled to [0, 1], then per-channel
  ``(x - TORCHVISION_MEAN) / TORCHVISION_STD``.
* **Caffe** (``bvlc_alexnet``): **BGR**, pixels in [0, 255], minus the
  per-channel mean of the ImageNet training set ``CAFFE_MEAN_BGR``, no
  division.  (The original model subtracted a full 256x256 mean *image*;
  its per-channel average is what is used here and in most ports.)
"""
from __future__ import annotations

from pathlib import Path

__all__ = [
    "IMAGENET_CLASSES",
    "TORCHVISION_MEAN",
    "TORCHVISION_STD",
    "CAFFE_MEAN_BGR",
    "TORCHVISION_PREPROCESSING",
    "CAFFE_PREPROCESSING",
    "load_class_names",
    "class_name",
]

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")

TORCHVISION_MEAN = (0.485, 0.456, 0.406)   # RGB, on pixels in [0, 1]
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)   # B, G, R on [0, 255]
# the whole preprocessing of the two AlexNet families (a model file's /preprocessing attributes)
TORCHVISION_PREPROCESSING = dict(mean=TORCHVISION_MEAN, std=TORCHVISION_STD, channel_order="RGB",
                                 pixel_scale=1.0, resize=256, crop=224)
CAFFE_PREPROCESSING = dict(mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0), channel_order="BGR",
                           pixel_scale=255.0, resize=256, crop=227)


def load_class_names(path=CLASSES_FILE) -> list[str]:
    """Read a class-name file: one name per line, line ``i`` = class ``i``."""
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\r\n") for line in f]
    while names and not names[-1].strip():
        names.pop()
    return names


IMAGENET_CLASSES: list[str] = load_class_names()
if len(IMAGENET_CLASSES) != 1000:
    raise RuntimeError(f"{CLASSES_FILE} lists {len(IMAGENET_CLASSES)} classes, expected 1000")


def class_name(index: int) -> str:
    """Name of ImageNet class ``index`` (0..999)."""
    return IMAGENET_CLASSES[index]
