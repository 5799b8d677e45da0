"""What the figures are made from (:class:`Inputs`): the model, sample images (the shipped
scenes, or files), the units and classes shown, and the settings of each figure."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import explain as X
from ...data import image as te_image

LECTURE_IMAGENET_CLASSES = ["washer", "goose", "ostrich", "limousine", "computer keyboard", "dalmatian"]


@dataclass
class Inputs:
    """What the figures are made from: the model, sample images in model space
    (N, C, H, W), their display pictures, names, and optional ground truth."""
    model: object
    x: np.ndarray
    pictures: list
    names: list
    truth_boxes: list | None = None
    classes: list | None = None           # class-model targets
    conv_layer: str = "conv3"
    conv_units: list = field(default_factory=lambda: list(range(8)))
    fc_units: list = field(default_factory=lambda: list(range(8)))
    fc_layer: str = "fc7"                     # the code inverted and maximised (what the classifier reads)
    settings: dict = field(default_factory=dict)
    pool_x: np.ndarray | None = None      # images to search for the strongest activations (Zeiler & Fergus)
    pool_pictures: list | None = None
    zf_units: int = 2                     # channels per conv layer in the Zeiler & Fergus figure
    _saliency: tuple | None = field(default=None, repr=False, compare=False)

    def saliency(self):
        """(class probabilities (N, K), predicted classes (N,), saliency maps (N, H, W)) of the
        sample images, computed once and shared by the saliency and GrabCut figures."""
        if self._saliency is None:
            _, probs = X.predict(self.model, self.x)
            pred = probs.argmax(1)
            self._saliency = (probs, pred, X.saliency(self.model, self.x, pred))
        return self._saliency


ZF_POOL = 250     # shipped scenes searched for the Zeiler & Fergus figure's strongest activations


def embedded_inputs(model, n=6):
    """Sample scenes shipped with the package: the first correctly classified scene of
    ``n`` different classes, with their ground-truth boxes."""
    from ...data import scenes
    data = scenes.load_sample()
    x_all = np.concatenate([te_image.load(im, model) for im in data["images"][:ZF_POOL]])
    _, probs = X.predict(model, x_all[:200])
    pred = probs.argmax(1)
    picked, seen = [], set()
    for want_correct in (True, False):          # prefer scenes the model gets right
        for i in range(len(probs)):
            c = int(data["labels"][i])
            if len(picked) < n and c not in seen and (pred[i] == c or not want_correct):
                picked.append(i)
                seen.add(c)
    names = X.class_names(model)
    return Inputs(model=model, x=x_all[picked], pictures=[data["images"][i] for i in picked],
                  names=[f"scene {i}: {names[int(data['labels'][i])]}" for i in picked],
                  truth_boxes=[data["boxes"][i] for i in picked], classes=None,
                  pool_x=x_all, pool_pictures=list(data["images"][:ZF_POOL]))


def most_active_units(model, x, layer, k):
    """The ``k`` units (channels of a conv map, by their spatial mean) of ``layer`` with the
    highest mean activation over the images ``x`` -- live units, not dead ones."""
    from ...core.engine import no_grad
    with no_grad():
        a = model(x, until=layer).numpy()
    score = a.reshape(a.shape[0], a.shape[1], -1).mean(-1).mean(0)
    return [int(i) for i in np.argsort(-score, kind="stable")[:k]]


def load_judge():
    from ...modelfiles.modelfile import load_model
    return load_model("judge")


def shipped_models():
    """Names of the model files of ``MODEL_NAMES`` that are present in weights/."""
    from ...modelfiles.modelfile import MODEL_NAMES
    return [n for n, p in MODEL_NAMES.items() if p.exists()]


def file_inputs(model, paths):
    x = np.concatenate([te_image.load(p, model) for p in paths])
    return Inputs(model=model, x=x, pictures=[te_image.to_display(x[i], model) for i in range(len(x))],
                  names=[Path(p).name for p in paths])
