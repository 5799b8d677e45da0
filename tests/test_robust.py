"""The robust twin (scripts/train_robust.py) and the PGD attack it is trained with."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.data import image, scenes
from tinygrad_explain.modelfiles.modelfile import MODEL_NAMES
from tinygrad_explain.training import adversarial, optim, train

TINY = dict(width=(8, 8, 8, 8, 8), fc=16)
#: the training attack of the shipped twin (scripts/train_robust.py defaults)
EPS, NORM = 0.5, "l2"
#: how many more of the first 40 shipped scenes (as a fraction) the twin keeps correct under
#: that attack than the embedded model: measured 27 against 21 (0.675 vs 0.525, the same for random-start
#: seeds 0, 1, 2); the test asks for 4 more, leaving 2 scenes of slack
ROBUST_MARGIN = 0.1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture(scope="module")
def sample():
    return scenes.load_sample()


def tiny_model(seed=0):
    te.manual_seed(seed)
    m = train.he_init(te.models.scene_alexnet(**TINY))
    m.preprocessing.update(mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    return m


# ----------------------------------------------------------------------------
# the attack
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", adversarial.NORMS)
def test_projection_keeps_the_ball_and_the_pixel_range(norm):
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (6, 8, 8, 3))
    p[:2] = np.round(p[:2])                               # images at the edges of the range
    eps = 0.5 if norm == "l2" else 4 / 255
    delta = adversarial.project(rng.normal(0, 1, p.shape), p, eps, norm)
    flat = delta.reshape(len(delta), -1)
    size = np.sqrt((flat ** 2).sum(1)) if norm == "l2" else np.abs(flat).max(1)
    assert (size <= eps + 1e-12).all() and (size > 0.5 * eps).all()
    assert (p + delta >= 0).all() and (p + delta <= 1).all()
    small = adversarial.project(1e-4 * np.ones_like(p), np.full_like(p, 0.5), eps, norm)
    np.testing.assert_allclose(small, 1e-4)               # inside the ball and the range: unchanged


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 3 / 255)])
def test_pgd_stays_in_the_ball_and_raises_the_loss(sample, norm, eps):
    """PGD's images lie within eps of the originals (pixels on [0,1]) and in range,
    and one step without random start raises the loss of a (tiny) model."""
    m = tiny_model(seed=3)
    xb, yb = sample["images"][:8], sample["labels"][:8].astype(np.int64)
    adv = adversarial.pgd(m, xb, yb, eps, norm, steps=3, rng=np.random.default_rng(0))
    assert adv.dtype == np.float32 and adv.shape == xb.shape
    d = (adv.astype(np.float64) - xb) / 255.0
    size = np.sqrt((d.reshape(8, -1) ** 2).sum(1)) if norm == "l2" else np.abs(d.reshape(8, -1)).max(1)
    assert (size <= eps * (1 + 1e-5)).all() and (size > 0.3 * eps).all()
    assert adv.min() >= 0 and adv.max() <= 255
    clean, _ = adversarial.loss_gradient(m, xb / 255.0, yb)
    one = adversarial.pgd(m, xb, yb, eps, norm, steps=1, random_init=False)
    attacked, _ = adversarial.loss_gradient(m, one / 255.0, yb)
    assert attacked > clean + 1e-3, (clean, attacked)
    assert not any(p.requires_grad for p in m.parameters())        # left as it was found
    m.requires_grad_(True)
    adversarial.pgd(m, xb, yb, eps, norm, steps=1)
    assert all(p.requires_grad and p.grad is None for p in m.parameters())


def test_pgd_is_reproducible_and_refuses_bad_arguments(sample):
    m = tiny_model(seed=1)
    xb, yb = sample["images"][:4], sample["labels"][:4].astype(np.int64)
    a = adversarial.pgd(m, xb, yb, 0.5, rng=np.random.default_rng(7))
    b = adversarial.pgd(m, xb, yb, 0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(adversarial.pgd(m, xb, yb, 0.0), xb)   # eps 0: the images themselves
    with pytest.raises(ValueError, match="norm must be one of"):
        adversarial.pgd(m, xb, yb, 0.5, norm="l1")
    with pytest.raises(ValueError, match="eps must be"):
        adversarial.pgd(m, xb, yb, -1.0)


@pytest.mark.parametrize("order,scale", [("RGB", 1.0), ("BGR", 255.0)])
def test_model_grad_to_pixels_is_the_chain_rule_of_to_model(order, scale):
    """L(p) = sum(w * to_model(p)) is linear in the pixels: its gradient, by
    model_grad_to_pixels(w), equals the finite differences of to_model."""
    class M:
        input_shape = (3, 4, 5)
        preprocessing = dict(mean=[0.3 * scale, 0.4 * scale, 0.5 * scale], std=[0.2 * scale, 0.5 * scale, 0.1 * scale],
                             channel_order=order, pixel_scale=scale)
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 255, (2, 4, 5, 3))
    w = rng.normal(size=(2, 3, 4, 5))
    g = image.model_grad_to_pixels(w, M)
    num = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        e = np.zeros_like(p)
        e[idx] = 1.0
        num[idx] = (w * (image.to_model(p + e, M).astype(np.float64)
                         - image.to_model(p - e, M).astype(np.float64))).sum() / 2.0
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-6)


def test_training_with_an_attack_steps_on_the_attacked_images(sample):
    """train_epoch(attack=...) computes the gradient on what the attack returns."""
    m = tiny_model(seed=2).requires_grad_(True)
    xb, yb = sample["images"][:6], sample["labels"][:6].astype(np.int64)
    seen = []

    def attack(model, x, y):
        seen.append(x.copy())
        return adversarial.pgd(model, x, y, 0.5, steps=1, random_init=False)

    loss_adv, _ = train.batch_gradients(m, xb, yb, 0.0, attack)
    g_adv = [p.grad.copy() for p in m.parameters()]
    assert len(seen) == 1 and (seen[0] == xb).all()
    loss_clean, _ = train.batch_gradients(m, xb, yb, 0.0)
    loss_direct, _ = train.batch_gradients(m, attack(m, xb, yb), yb, 0.0)
    assert loss_adv > loss_clean and loss_adv == pytest.approx(loss_direct, rel=1e-6)
    for a, p in zip(g_adv, m.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-5, atol=1e-7)
    partial = functools.partial(adversarial.pgd, eps=0.5, norm="l2", steps=1)    # what the script sends
    rng = np.random.default_rng(0)
    train.train_epoch(m, optim.SGD(m.parameters(), lr=1e-3), xb, yb, 3, rng, flip=False, progress=False,
                      attack=partial)


# ----------------------------------------------------------------------------
# the shipped twin
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def twin():
    return te.load_model("robust")


def test_twin_is_shipped_with_the_embedded_architecture(twin):
    path = MODEL_NAMES["robust"]
    assert path.exists() and path.stat().st_size < 25e6
    emb = te.load_model()
    assert twin.architecture() == te.models.scene_alexnet().architecture() == emb.architecture()
    assert twin.preprocessing == emb.preprocessing and twin.class_names == emb.class_names
    assert any(not np.array_equal(a, b) for a, b in zip(twin.state_dict().values(), emb.state_dict().values()))


def test_missing_twin_names_its_script(tmp_path, monkeypatch):
    from tinygrad_explain.modelfiles import modelfile
    monkeypatch.setitem(modelfile.MODEL_NAMES, "robust", tmp_path / "gone.h5")
    with pytest.raises(FileNotFoundError, match=r"gone.h5 does not exist \(made by scripts/train_robust.py\)"):
        te.load_model("robust")


def test_twin_is_more_robust_than_the_embedded_model(twin, sample):
    """On 40 shipped scenes under the training attack (L2 0.5, 3 steps, seed 0) the twin keeps
    ROBUST_MARGIN more of them correct than the embedded model, and is still an accurate
    classifier of the clean scenes (87.1% of 2000 test scenes, scripts/train_robust.py)."""
    emb = te.load_model()
    xb, yb = sample["images"][:40], sample["labels"][:40].astype(np.int64)
    acc = {name: adversarial.robust_accuracy(m, xb, yb, EPS, NORM, steps=3, seed=0)
           for name, m in (("embedded", emb), ("robust", twin))}
    assert acc["robust"] >= acc["embedded"] + ROBUST_MARGIN, acc
    assert train.evaluate(twin, xb, yb) >= 0.75


def test_fig_robust_runs_at_tiny_step_counts(twin, tmp_path):
    from tinygrad_explain.apps import figures, figures_robust
    m = te.load_model()
    inp = figures.embedded_inputs(m, n=1)
    inp.classes = [0, 9]
    inp.settings["robust"] = dict(class_steps=2, invert_steps=2)
    summary = {}
    fig = figures_robust.fig_robust(inp, tmp_path, summary, robust=twin)
    assert isinstance(fig, figures.Figure) and fig.file == "robust.png" and (tmp_path / "robust.png").exists()
    assert set(summary["robust"]["inversion_errors"]["robust"]) == {"pool5", "fc7"}
    assert summary["robust"]["settings"]["class_steps"] == 2
    other = te.models.scene_alexnet(width=(8, 8, 8, 8, 8), fc=16)
    with pytest.raises(te.explain.ExplainError, match="another architecture"):
        figures_robust.fig_robust(inp, tmp_path, {}, robust=other)
