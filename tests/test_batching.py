"""Explainers that batch their own work give, image by image, exactly what they give one
image at a time: bit for bit in float64 (np.array_equal), whatever the batch size --
the engine's kernels run image by image inside a batch, so batching changes the
amount of Python per image, not one floating-point operation."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core.engine import no_grad
from tinygrad_explain.data import scenes
from tinygrad_explain.explain import attribution as A
from tinygrad_explain.explain import metrics as M
from tinygrad_explain.explain.gradients import batches, default_batch_size


@pytest.fixture(scope="module")
def scene_batch():
    model = te.load_model().astype(np.float64)
    d = scenes.load_sample()
    x = np.concatenate([te.image.load(im, model) for im in d["images"][:3]]).astype(np.float64)
    return model, x, np.asarray(d["labels"][:3], np.int64)


def one_by_one(fn, x, t, **kw):
    return np.concatenate([fn(x[n:n + 1], t[n:n + 1], **kw) for n in range(len(x))])


@pytest.mark.parametrize("rule", ["backprop", "guided"])
def test_gradient_batched_equals_image_by_image(scene_batch, rule):
    model, x, t = scene_batch
    batched = te.explain.gradient(model, x, t, rule, batch_size=2)
    assert batched.dtype == np.float64 and np.abs(batched).max() > 0
    assert np.array_equal(batched, one_by_one(lambda a, b: te.explain.gradient(model, a, b, rule), x, t))


def test_gradcam_one_pass_equals_two_passes(scene_batch):
    """Grad-CAM takes A and dS/dA from one pass; the textbook two passes (a forward for A,
    a backward for dS/dA) give the same bits, image by image or in a batch."""
    model, x, t = scene_batch
    layer = A.default_cam_layer(model)
    with no_grad():
        a = model(x, until=layer).numpy()
    g = te.explain.gradient(model, x, t, layer=layer, batch_size=1)
    two_passes = A.upsample(np.maximum((g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1), 0), x.shape[2:])
    batched = A.gradcam(model, x, t, batch_size=2)
    assert batched.max() > 0
    assert np.array_equal(batched, two_passes)
    assert np.array_equal(batched, one_by_one(lambda a, b: A.gradcam(model, a, b), x, t))
    assert np.array_equal(A.guided_gradcam(model, x, t, batch_size=2),
                          one_by_one(lambda a, b: A.guided_gradcam(model, a, b), x, t))


def test_smoothgrad_per_image_seeds_batched_equals_image_by_image(scene_batch):
    model, x, t = scene_batch
    seeds = [(7, i) for i in (10, 11, 12)]
    batched = A.smoothgrad(model, x, t, samples=3, seed=seeds, batch_size=4)     # groups of 1 image, 3 copies
    alone = np.concatenate([A.smoothgrad(model, x[n:n + 1], t[n:n + 1], samples=3, seed=[seeds[n]])
                            for n in range(3)])
    assert np.array_equal(batched, alone)
    assert np.array_equal(A.smoothgrad(model, x, t, samples=3, seed=seeds, batch_size=100), alone)
    assert not np.array_equal(A.smoothgrad(model, x, t, samples=3, seed=[(8, i) for i in (10, 11, 12)]), alone)


def test_smoothgrad_one_seed_does_not_depend_on_the_batch(scene_batch):
    """One int seed draws the batch's noise image after image; drawn group by group it is
    the same stream, so any batch size gives the same map."""
    model, x, t = scene_batch
    ref = A.smoothgrad(model, x, t, samples=3, seed=5, batch_size=100)
    assert np.array_equal(A.smoothgrad(model, x, t, samples=3, seed=5, batch_size=2), ref)
    eps = np.random.default_rng(5).standard_normal((3, 3) + x.shape[1:])      # the one large draw
    sigma = 0.15 * (x.reshape(3, -1).max(1) - x.reshape(3, -1).min(1))
    noisy = (x[:, None] + eps * sigma[:, None, None, None, None]).reshape((-1,) + x.shape[1:])
    g = np.abs(te.explain.gradient(model, noisy, np.repeat(t, 3)))
    assert np.array_equal(g.reshape((3, 3) + x.shape[1:]).mean(axis=1).max(axis=1), ref)


def test_occlusion_batches_across_images(scene_batch):
    model, x, t = scene_batch
    batched = A.occlusion(model, x, t, patch=16, stride=16, batch_size=7)      # 16 copies per image: mixed
    assert np.abs(batched).max() > 0
    assert np.array_equal(batched, one_by_one(lambda a, b: A.occlusion(model, a, b, patch=16, stride=16,
                                                                       batch_size=1), x, t))


def test_deletion_insertion_batched_equals_image_by_image(scene_batch):
    model, x, t = scene_batch
    maps = te.explain.saliency(model, x, t)
    base = M.blur(x, 8.0)
    batched = M.deletion_insertion(model, x, t, maps, base, steps=4, batch_size=5)
    for n in range(3):
        alone = M.deletion_insertion(model, x[n:n + 1], t[n:n + 1], maps[n:n + 1], base[n:n + 1], steps=4,
                                     batch_size=1)
        for k in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
            assert np.array_equal(batched[k][n], alone[k][0]), k


def test_default_batch_size_is_memory_bounded():
    small = te.load_model()
    assert 20 <= default_batch_size(small) <= 1000
    assert default_batch_size(small, copies_per_image=10) == default_batch_size(small) // 10
    big = te.models.alexnet("torchvision")
    assert 1 <= default_batch_size(big) < default_batch_size(small) / 2
    assert [(s.start, s.stop) for s in batches(5, 2)] == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(te.explain.ExplainError, match="batch_size"):
        batches(5, 0)


def test_float32_is_bit_identical_too():
    """The same holds in float32 (the model's own dtype): the arithmetic per image is the
    same in any batch, not merely close."""
    model = te.load_model()
    d = scenes.load_sample()
    x = np.concatenate([te.image.load(im, model) for im in d["images"][:3]])
    t = np.asarray(d["labels"][:3], np.int64)
    assert x.dtype == np.float32
    assert np.array_equal(te.explain.gradient(model, x, t, batch_size=2),
                          one_by_one(lambda a, b: te.explain.gradient(model, a, b), x, t))
    assert np.array_equal(A.gradcam(model, x, t, batch_size=2), one_by_one(lambda a, b: A.gradcam(model, a, b), x, t))
