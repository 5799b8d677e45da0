"""Where the files that ship with the package live: one home for every path the library loads by name.

    weights/           the model files loadable by name (te.load_model("random_labels"), the judge, the decoders)
    data/              the scene sample, the retrieval bank, ImageNet's class names  (inside the package)
    apps/explorer_static/  the explorer's page                                    (inside the package)
    kernels/*.cu       the CUDA sources                                           (tinygrad_explain.kernels)
    docs/*.json        what the benchmarks measured, quoted by the figures' captions  (tinygrad_explain/measured/)

The repository keeps ``weights/`` (and ``kernels/``) at its top level, beside the
package (the design card).  A wheel maps that folder into the package
(``tinygrad_explain/weights/``: setup.cfg's ``package_dir``), so an installed
package finds its models from any working directory; a source checkout, plain
(``PYTHONPATH=.``) or installed with ``pip install -e .``, reads the top-level
folder.  Every ``weights/*.h5`` ships, so a model file added there is in the next
wheel without editing anything.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent   # tinygrad_explain/ (this file is in modelfiles/)
DATA_DIR = PACKAGE_DIR / "data"


def _weights_dir() -> Path:
    """``tinygrad_explain/weights`` in an installed wheel, else the checkout's top-level ``weights/``."""
    inside = PACKAGE_DIR / "weights"
    return inside if inside.is_dir() else PACKAGE_DIR.parent / "weights"


WEIGHTS_DIR = _weights_dir()


def _measured_dir() -> Path:
    """``tinygrad_explain/measured`` in an installed wheel (docs/*.json mapped there), else the
    checkout's ``docs/``."""
    inside = PACKAGE_DIR / "measured"
    return inside if inside.is_dir() else PACKAGE_DIR.parent / "docs"


MEASURED_DIR = _measured_dir()


def measured_file(name: str) -> Path:
    """A benchmark's JSON file (``docs/NAME`` in the repository), e.g. ``"bench_explainers.json"``."""
    return MEASURED_DIR / name


def weights_file(name: str) -> Path:
    """The shipped model file ``name`` (e.g. ``"judge_vgg.h5"``); it may not exist (a checkout
    where it was never trained): :func:`tinygrad_explain.load_model` says which script makes it."""
    return WEIGHTS_DIR / name


DEFAULT_WEIGHTS = weights_file("fashion_scenes_alexnet.h5")
# model files shipped in weights/, loadable by name: te.load_model("random_labels")
MODEL_NAMES = {
    "embedded": DEFAULT_WEIGHTS,
    # the same architecture trained on randomly permuted labels (scripts/train_random_labels.py),
    # the data-randomisation test of Adebayo et al. 2018 (te.explain.sanity)
    "random_labels": DEFAULT_WEIGHTS.with_name("fashion_scenes_alexnet_random_labels.h5"),
    # the independent judge of visualisations (scripts/train_judge.py): a VGG-style classifier of the
    # same scenes, a measuring instrument only (te.explain.quality)
    "judge": DEFAULT_WEIGHTS.with_name("judge_vgg.h5"),
    # the embedded model fine-tuned with PGD adversarial training (scripts/train_robust.py,
    # Madry et al. 2018): its input gradients look like the object (Tsipras et al. 2019)
    "robust": DEFAULT_WEIGHTS.with_name("fashion_scenes_alexnet_robust.h5"),
    # a small ResNet on the same scenes, trained by PyTorch and brought in through ONNX
    # (scripts/train_resnet.py, docs/resnet.md): a graph network with residual blocks
    "resnet": DEFAULT_WEIGHTS.with_name("fashion_scenes_resnet.h5"),
}
#: the script that makes each shipped model file (named when the file is missing)
MADE_BY = {"embedded": "train_embedded.py", "random_labels": "train_random_labels.py", "judge": "train_judge.py",
           "robust": "train_robust.py", "resnet": "train_resnet.py"}
