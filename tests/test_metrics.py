"""te.explain.metrics on hand-made maps whose answers are known, and the benchmark's
mechanics on a small random-weight model."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.explain import benchmark as B
from tinygrad_explain.explain import metrics as M

pytestmark = pytest.mark.usefixtures("one_thread")


def disc(shape=(32, 32), centre=(12, 20), r=6):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_pointing_tolerance_is_torchrays_scaled():
    assert M.pointing_tolerance(224) == 15
    assert M.pointing_tolerance(64) == pytest.approx(15 * 64 / 224)


def test_pointing_game_on_known_maps():
    mask = disc()
    assert M.pointing_hit(mask.astype(float), mask, 0)                 # the map is the mask: a hit
    avoid = (~mask).astype(float) * np.random.default_rng(0).random(mask.shape)
    avoid[mask] = -1
    far = np.zeros(mask.shape)
    far[31, 0] = 1                                                     # far from the object
    assert not M.pointing_hit(far, mask, M.pointing_tolerance(32))
    near = np.zeros(mask.shape)
    near[12, 20 + 6 + 3] = 1                                           # 3 px right of the disc's edge
    assert not M.pointing_hit(near, mask, 2.9) and M.pointing_hit(near, mask, 3.0)
    assert not M.pointing_hit(np.ones(mask.shape), np.zeros(mask.shape, bool), 5)   # no object: never a hit


def test_iou_on_known_masks_and_boxes():
    mask = disc()
    assert M.mask_iou(mask, mask) == 1 and M.mask_iou(mask, ~mask) == 0
    half = mask.copy()
    half[:12] = False
    assert M.mask_iou(half, mask) == pytest.approx(half.sum() / mask.sum())
    assert M.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert M.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert M.box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0
    assert M.box_mask((2, 3, 5, 7), (8, 8)).sum() == 12


def test_grabcut_localisation_of_a_perfect_map():
    """A map equal to the mask, on a picture of that object, gives IoU 1 after GrabCut;
    a map on the background gives IoU 0."""
    rng = np.random.default_rng(0)
    mask = disc((48, 48), (24, 20), 9)
    img = (rng.random((48, 48, 3)) * 60 + 20).astype(np.uint8)
    img[mask] = (200, 180, 40)
    m, box = te.explain.grabcut_mask(img, mask.astype(float))
    assert M.mask_iou(m, mask) == 1.0
    assert M.box_iou(box, te.explain.mask_box(mask)) == 1.0
    other = disc((48, 48), (40, 40), 6).astype(float)                  # a map on the background
    m, box = te.explain.grabcut_mask(img, other)
    assert M.mask_iou(m, mask) == 0.0


def test_deletion_insertion_paths():
    x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4) + 100
    base = np.zeros_like(x)
    m = np.arange(16.0).reshape(4, 4)                                  # pixel 15 first, then 14, ...
    d, i = M.deletion_insertion_images(x, base, m, steps=4)
    assert d.shape == i.shape == (5, 2, 4, 4)
    np.testing.assert_array_equal(d[0], x)
    np.testing.assert_array_equal(d[4], base)
    np.testing.assert_array_equal(i[0], base)
    np.testing.assert_array_equal(i[4], x)
    np.testing.assert_array_equal((d[1] == 0).reshape(2, -1)[0], np.arange(16) >= 12)   # the top quarter went first
    np.testing.assert_array_equal(d[2] + i[2], x)                      # complementary
    assert M.auc([1, 1, 1]) == 1 and M.auc([1, 0]) == 0.5 and M.auc([0, 0.5, 1]) == 0.5


def toy_model():
    """A linear 'network' whose class-0 score is the mean brightness inside a fixed
    square: deleting that square first is the fastest way down."""
    te.manual_seed(0)
    m = te.Network([("flatten", nn.Flatten()), ("fc", nn.Linear(16 * 16, 2))], (1, 16, 16)).astype(np.float64)
    w = np.zeros((2, 256))
    sq = np.zeros((16, 16), bool)
    sq[4:10, 5:11] = True
    w[0, sq.reshape(-1)] = 0.5
    m.layers["fc"].weight.data[:] = w
    m.layers["fc"].bias.data[:] = 0
    return m, sq


def test_deletion_of_a_perfect_map_drops_faster_than_of_its_reverse():
    m, sq = toy_model()
    x = np.ones((1, 1, 16, 16))
    base = np.zeros_like(x)
    good, bad = sq.astype(float)[None], (~sq).astype(float)[None]
    r_good = M.deletion_insertion(m, x, 0, good, base, steps=8)
    r_bad = M.deletion_insertion(m, x, 0, bad, base, steps=8)
    assert r_good["deletion_auc"][0] < r_bad["deletion_auc"][0] - 0.2
    assert r_good["insertion_auc"][0] > r_bad["insertion_auc"][0] + 0.2
    assert np.all(np.diff(r_good["deletion"][0]) <= 1e-12)             # monotone: only the square matters
    p = te.explain.predict(m, np.concatenate([x, base]))[1][:, 0]
    np.testing.assert_allclose(r_good["deletion"][0, [0, -1]], p)      # the curves end on p(x), p(baseline)
    np.testing.assert_allclose(r_good["insertion"][0, [0, -1]], p[::-1])
    ends = M.deletion_insertion(m, x, 0, good, base, steps=8, ends=(p[:1], p[1:]))
    np.testing.assert_allclose(ends["deletion"], r_good["deletion"])


def test_hard_scenes():
    flat = np.full((2, 32, 32, 3), 128, np.uint8)
    busy = flat.copy()
    busy[:, (np.arange(32) // 2) % 2 == 0] = 0                         # stripes 2 px wide
    small, big = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    small[10:15, 10:15], big[4:28, 4:28] = True, True
    images = np.concatenate([flat[:1], busy[:1], busy[:1]])
    hard = M.hard_scenes(images, np.stack([small, small, big]))
    np.testing.assert_array_equal(hard, [False, True, False])


def test_to_map_and_baselines():
    a = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    np.testing.assert_array_equal(M.to_map(a), np.abs(a).max(1))
    np.testing.assert_array_equal(M.to_map(a, "sum"), a.sum(1))
    c = M.centre_map((5, 7))
    assert np.unravel_index(c.argmax(), c.shape) == (2, 3)
    with pytest.raises(ValueError, match="reduce"):
        M.to_map(a, "mean")


def test_benchmark_runs_every_method_on_a_small_model(tmp_path):
    from tinygrad_explain.data import scenes
    d = scenes.load_sample()
    te.manual_seed(0)
    m = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)
    m.preprocessing = {"mean": [0.45] * 3, "std": [0.25] * 3}
    res = B.evaluate(m, d["images"][:3], d["masks"][:3], d["boxes"][:3], d["labels"][:3], steps=2,
                     batch_size=2, smoothgrad_samples=2, occlusion_patch=16, occlusion_stride=16, progress=False)
    rows = B.summarize(res)
    assert list(rows) == list(B.METHODS)
    for r in rows.values():
        assert all(0 <= r[k] <= 1 for k in ("pointing", "mask_iou", "box_accuracy", "deletion_auc", "insertion_auc"))
    assert "| smoothgrad |" in B.format_table(rows)
    again = B.evaluate(m, d["images"][1:3], d["masks"][1:3], d["boxes"][1:3], d["labels"][1:3], ["random"],
                       indices=[1, 2], steps=2, progress=False)                # the random baseline is per scene
    np.testing.assert_array_equal(again["methods"]["random"]["pointing"], res["methods"]["random"]["pointing"][1:])
    first = B.evaluate(m, d["images"][:1], d["masks"][:1], d["boxes"][:1], d["labels"][:1], ["random"], steps=2,
                       progress=False)
    B.save(again, tmp_path / "b.npz")                                            # parts saved, merged
    merged = B.concat([first, B.load(tmp_path / "b.npz")])
    for k in B.SCENE_KEYS:          # the AUCs to float32 rounding: other batches, other BLAS blocking
        np.testing.assert_allclose(merged["methods"]["random"][k], res["methods"]["random"][k], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(merged["indices"], [0, 1, 2])
    with pytest.raises(ValueError, match="unknown methods"):
        B.evaluate(m, d["images"][:1], d["masks"][:1], d["boxes"][:1], d["labels"][:1], ["lime"], progress=False)
