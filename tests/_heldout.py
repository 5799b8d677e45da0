"""The seeds and scenes that no recipe was chosen on: the quality tests run on these.

docs/explainers.md ("Tuning and held-out data") lists what each recipe was tuned on:
class-model seeds 0, 1, 2; inversion scenes among the sample's first 60 (the bench's 20
and 40 scenes, the figures' scenes, scenes 0, 1, 2, 7, 33); the bench's "real" scenes are
the sample's last 100 (400..499).  Held out: class-model seeds 3 and up, and the sample's
scenes 300..399 (test split, scene seed 0).
"""
import numpy as np

TUNING_SEEDS = (0, 1, 2)
HELD_OUT_SEED = 3
HELD_OUT_SCENES = range(300, 400)       # positions in scenes.load_sample() (= test-split indices)


def held_out_scenes(sample: dict, classes=range(10), per_class: int = 1) -> list[int]:
    """The first ``per_class`` held-out scenes of each of ``classes``, class by class."""
    labels = np.asarray(sample["labels"]).astype(int)
    pool = np.arange(HELD_OUT_SCENES.start, HELD_OUT_SCENES.stop)
    assert np.array_equal(np.asarray(sample["indices"])[pool], pool)       # position = test-split index
    return [int(i) for c in classes for i in pool[labels[pool] == c][:per_class]]
