"""Training with the engine: optimisers, weight gradients, checkpoints, the shipped model.

* one SGD step on a small batch of real scenes lowers the loss (the weight
  gradients point downhill);
* weight gradients of conv (strided, padded, grouped), linear and of a conv
  seen through LRN, and of a whole small scene_alexnet, against central
  finite differences in float64;
* SGD/Adam against their formulas, schedules, preprocessing, augmentation;
* checkpoints are pickle-free .npz and an interrupted run resumes to exactly
  the weights of an uninterrupted one (library and script);
* the shipped weights load and reach >= 85% on the shipped sample.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core.engine import Tensor
from tinygrad_explain.data import image, scenes
from tinygrad_explain.training import checkpoint, optim, parallel, train

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(width=(8, 8, 8, 8, 8), fc=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many small kernels: one thread avoids the slowdown of
    oversubscribed parallel kernels on a busy machine.  Restored afterwards."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)
    except ImportError:
        limiter = None
    yield
    numba.set_num_threads(before)
    if limiter is not None:
        limiter.restore_original_limits()


@pytest.fixture(scope="module")
def sample():
    return scenes.load_sample()


def tiny_model(seed=0, **kw):
    te.manual_seed(seed)
    m = te.models.scene_alexnet(**{**TINY, **kw})
    train.he_init(m)
    return m


# ----------------------------------------------------------------------------
# a training step lowers the loss
# ----------------------------------------------------------------------------
def test_one_sgd_step_lowers_the_loss(sample):
    te.manual_seed(0)
    model = te.models.scene_alexnet()
    train.he_init(model)
    mean, std = image.channel_stats(sample["images"])
    model.preprocessing.update(mean=mean.tolist(), std=std.tolist())
    model.requires_grad_(True).eval()          # dropout off: the two losses see the same network
    x = image.to_model(sample["images"][:32], model)
    y = sample["labels"][:32].astype(np.int64)
    lr = 1e-3                                   # small enough for the first-order prediction to hold
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    before = [p.data.copy() for p in model.parameters()]
    loss0 = te.cross_entropy(model(x), y)
    opt.zero_grad()
    loss0.backward()
    for (name, _), p in zip(model.state_dict().items(), model.parameters()):
        assert p.grad is not None and p.grad.shape == p.data.shape, name
        assert np.isfinite(p.grad).all() and np.abs(p.grad).max() > 0, name
    grad_sq = sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in model.parameters())
    opt.step()
    assert all(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    with te.no_grad():
        loss1 = te.cross_entropy(model(x), y)
    # a step of -lr * grad lowers the loss by ~lr * |grad|^2 (first order); a wrong
    # weight gradient gives a much smaller decrease, or an increase
    drop = float(loss0.data) - float(loss1.data)
    assert drop > 0.5 * lr * grad_sq, (float(loss0.data), float(loss1.data), lr * grad_sq)


def test_a_few_steps_fit_a_small_batch(sample):
    model = tiny_model()
    mean, std = image.channel_stats(sample["images"])
    model.preprocessing.update(mean=mean.tolist(), std=std.tolist())
    model.requires_grad_(True).eval()
    x = image.to_model(sample["images"][:16], model)
    y = sample["labels"][:16].astype(np.int64)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = te.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    assert losses[-1] < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------
# weight gradients against finite differences (float64)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding,groups", [(1, 0, 1), (2, 2, 1), (1, 1, 2)])
def test_conv_weight_gradient(stride, padding, groups):
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 4, 9, 8)))             # held constant: only w and b are checked
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    b = rng.standard_normal(6)
    te.gradcheck(lambda x, w, b: te.conv2d(x, w, b, stride=stride, padding=padding, groups=groups), [x, w, b])


def test_linear_weight_gradient():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((5, 7)))
    te.gradcheck(lambda x, w, b: te.linear(x, w, b), [x, rng.standard_normal((3, 7)), rng.standard_normal(3)])


def test_weight_gradient_through_lrn():
    """conv -> relu -> LRN: the conv's weight gradient flows back through LRN.
    alpha is large enough that the normalisation really mixes channels."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 3, 7, 7)))
    w = rng.standard_normal((7, 3, 3, 3))
    b = rng.standard_normal(7)

    def f(x, w, b):
        return te.local_response_norm(te.relu(te.conv2d(x, w, b, padding=1)), size=5, alpha=0.5, beta=0.75, k=2.0)
    te.gradcheck(f, [x, w, b])


def test_lrn_input_gradient_in_the_training_regime():
    rng = np.random.default_rng(4)
    x = np.abs(rng.standard_normal((2, 8, 5, 5))) * 3
    te.gradcheck(lambda x: te.local_response_norm(x, 5, 1e-4, 0.75, 1.0), [x])
    te.gradcheck(lambda x: te.local_response_norm(x, 3, 0.3, 0.75, 1.0), [x])


def test_whole_network_weight_gradients_with_label_smoothing(sample):
    """Every parameter of a small scene_alexnet (4 random elements each), float64."""
    model = tiny_model(seed=5).astype(np.float64).requires_grad_(True).eval()
    x = image.pixels_to_model(sample["images"][:3], [0.5] * 3, [0.25] * 3).astype(np.float64)
    y = sample["labels"][:3]
    params = model.parameters()
    names = list(model.state_dict())
    loss = train.smoothed_cross_entropy(model(Tensor(x)), y, 0.1)
    model.zero_grad()
    loss.backward()
    rng = np.random.default_rng(0)
    eps = 1e-6

    def loss_now():
        with te.no_grad():
            return float(train.smoothed_cross_entropy(model(Tensor(x)), y, 0.1).data)
    for name, p in zip(names, params):
        flat = p.data.reshape(-1)
        for i in rng.choice(flat.size, min(4, flat.size), replace=False):
            num = te.central_differences(loss_now, p.data, eps=eps, idx=[i])[int(i)]
            ana = p.grad.reshape(-1)[i]
            assert abs(ana - num) <= 1e-6 + 1e-4 * abs(num), (name, i, ana, num)


def test_smoothed_cross_entropy():
    rng = np.random.default_rng(6)
    s = rng.standard_normal((4, 5))
    y = np.array([0, 3, 4, 1])
    assert float(train.smoothed_cross_entropy(Tensor(s), y, 0.0).data) == pytest.approx(
        float(te.cross_entropy(Tensor(s), y).data))
    logp = s - s.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    t = np.full((4, 5), 0.1 / 5)
    t[np.arange(4), y] += 0.9
    assert float(train.smoothed_cross_entropy(Tensor(s), y, 0.1).data) == pytest.approx(-(t * logp).sum() / 4)
    te.gradcheck(lambda s: train.smoothed_cross_entropy(s, y, 0.1), [s])


# ----------------------------------------------------------------------------
# optimisers, schedules, data helpers
# ----------------------------------------------------------------------------
def _param(v, g):
    p = Tensor(np.array(v, np.float32), requires_grad=True)
    p.grad = np.array(g, np.float32)
    return p


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_its_formula(nesterov):
    p = _param([1.0, -2.0], [0.5, 0.25])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    w, v = np.array([1.0, -2.0]), np.zeros(2)
    for _ in range(3):
        g = np.array([0.5, 0.25]) + 0.01 * w
        v = 0.9 * v + g
        w = w - 0.1 * (g + 0.9 * v if nesterov else v)
        opt.step()
        np.testing.assert_allclose(p.data, w, rtol=1e-6)
    opt.zero_grad()
    assert p.grad is None
    opt.step()                                  # no gradient: parameter untouched
    np.testing.assert_allclose(p.data, w, rtol=1e-6)


def test_adam_matches_its_formula():
    p = _param([1.0, -2.0], [0.5, -0.25])
    opt = optim.Adam([p], lr=0.01, weight_decay=0.1)
    w, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    g = np.array([0.5, -0.25])
    for t in range(1, 4):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * 0.1 * w
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        opt.step()
        np.testing.assert_allclose(p.data, w, rtol=1e-5)


def test_optimizer_state_round_trip():
    p = _param([1.0, 2.0], [0.3, -0.1])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    st = opt.state_dict()
    q = _param([1.0, 2.0], [0.3, -0.1])
    opt2 = optim.SGD([q], lr=0.5, momentum=0.9)
    opt2.load_state_dict(st)
    assert opt2.lr == 0.1 and opt2.steps == 1
    np.testing.assert_array_equal(opt2.velocity[0], opt.velocity[0])
    with pytest.raises(ValueError, match="shape"):
        optim.SGD([_param([1.0, 2.0, 3.0], [0, 0, 0])], momentum=0.9).load_state_dict(st)


def test_cosine_schedule():
    lrs = [optim.cosine_lr(s, 100, 1.0, warmup_steps=10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert optim.step_lr(25, 1.0, [10, 20]) == pytest.approx(0.01)


def test_preprocess_and_augment(sample):
    imgs = sample["images"][:8]
    x = image.pixels_to_model(imgs, [0.5, 0.4, 0.3], [0.2, 0.2, 0.25])
    assert x.shape == (8, 3, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[3, 1, 5, 7], (imgs[3, 5, 7, 1] / 255 - 0.4) / 0.2, rtol=1e-5)
    rng = np.random.default_rng(0)
    a = scenes.augment(imgs, rng, flip=True, shift=0)
    for i in range(8):
        assert np.array_equal(a[i], imgs[i]) or np.array_equal(a[i], imgs[i][:, ::-1])
    a = scenes.augment(imgs, np.random.default_rng(1), flip=False, shift=3, jitter=0.2)
    assert a.shape == imgs.shape and a.dtype == np.uint8
    b = scenes.augment(imgs, np.random.default_rng(1), flip=False, shift=3, jitter=0.2)
    np.testing.assert_array_equal(a, b)        # seeded: reproducible


def test_plain_scenes():
    items = np.zeros((2, 28, 28), np.uint8)
    items[:, 10:18, 12:16] = 200
    p = scenes.plain_scenes(items)
    assert p.shape == (2, 64, 64, 3) and p.dtype == np.uint8
    assert (p[:, :8] == 0).all() and (p[:, :, :8] == 0).all()
    assert (p[..., 0] == p[..., 2]).all() and p.max() == 200


# ----------------------------------------------------------------------------
# checkpoints and resuming
# ----------------------------------------------------------------------------
def _run(sample, epochs, ckdir, stop_after=None, resume=False):
    images, labels = sample["images"][:96], sample["labels"][:96]
    model = tiny_model(seed=7).requires_grad_(True)
    model.preprocessing.update(mean=[0.5] * 3, std=[0.25] * 3)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    rng = np.random.default_rng(11)
    start = 0
    if resume:
        start, rngs, extra = checkpoint.resume(ckdir, model, opt, {"lr": 0.05}, ("lr",))
        rng = rngs["data"]
    steps = 96 // 32
    for ep in range(start, epochs if stop_after is None else stop_after):
        train.train_epoch(model, opt, images, labels, 32, rng, progress=False, shift=2, smoothing=0.1,
                          lr_at=lambda s: optim.cosine_lr(s, steps * epochs, 0.05, 2), first_step=ep * steps)
        checkpoint.save_checkpoint(Path(ckdir) / f"epoch_{ep + 1:03d}.npz", model, opt, ep + 1, rngs={"data": rng},
                              extra={"epoch": ep + 1})
    return model, opt


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_result(sample, tmp_path):
    full, full_opt = _run(sample, 3, tmp_path / "a")
    _run(sample, 3, tmp_path / "b", stop_after=1)                 # "killed" after epoch 1
    assert checkpoint.latest_checkpoint(tmp_path / "b").name == "epoch_001.npz"
    resumed, res_opt = _run(sample, 3, tmp_path / "b", resume=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    for a, b in zip(full_opt.velocity, res_opt.velocity):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_is_pickle_free(sample, tmp_path):
    _run(sample, 1, tmp_path)
    ck = tmp_path / "epoch_001.npz"
    with np.load(ck, allow_pickle=False) as z:               # would raise on an object array
        assert int(z["epoch"]) == 1
        states = json.loads(str(z["rng_states"]))
        assert {"engine", "data"} <= set(states)
        assert any(k.startswith("opt/velocity.") for k in z.files)
        assert all(z[k].dtype != object for k in z.files)
    model = tiny_model(seed=99).requires_grad_(True)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    epoch, rngs, extra = checkpoint.load_checkpoint(ck, model, opt)
    assert epoch == 1 and extra == {"epoch": 1} and isinstance(rngs["data"], np.random.Generator)
    assert model.preprocessing["mean"] == [0.5] * 3
    # leftovers of an interrupted write are never taken for the latest checkpoint
    (tmp_path / "tmp_epoch_005.npz").write_bytes(b"partial")
    (tmp_path / "epoch_002.npz.part").write_bytes(b"partial")
    assert checkpoint.latest_checkpoint(tmp_path).name == "epoch_001.npz"
    assert checkpoint.latest_checkpoint(tmp_path / "nowhere") is None


def test_checkpoint_generator_name_is_checked(sample, tmp_path):
    """The generator's kind is a name read from the file: only numpy's bit generators
    are accepted (never an arbitrary np.random attribute such as ``seed``)."""
    _run(sample, 1, tmp_path)
    ck = tmp_path / "epoch_001.npz"
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for kind, match in (("seed", "bit generator 'seed'"), ("PCG64", "unusable state")):
        states = json.loads(str(arrays["rng_states"]))
        states["data"]["bit_generator"] = kind
        if kind == "PCG64":
            states["data"]["state"] = "garbage"
        bad = tmp_path / f"bad_{kind}.npz"
        np.savez(bad, **dict(arrays, rng_states=np.array(json.dumps(states))))
        model = tiny_model(seed=99).requires_grad_(True)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with pytest.raises(ValueError, match=match):
            checkpoint.load_checkpoint(bad, model, opt)


def _have_fashion_mnist():
    try:
        from tinygrad_explain.data.fashion_mnist import load_fashion_mnist
        load_fashion_mnist("test")
        return True
    except (FileNotFoundError, ValueError):
        return False


@pytest.mark.slow
@pytest.mark.needs(_have_fashion_mnist(), "needs Fashion-MNIST (dataset-fashion-mnist)")
def test_script_resumes_after_interruption(tmp_path):
    common = [sys.executable, str(ROOT / "scripts" / "train_embedded.py"), "--train-size", "96", "--epochs", "2",
              "--batch", "32", "--eval-size", "0", "--width", "8,8,8,8,8", "--fc", "16", "--no-progress",
              "--seed", "3", "--fresh-scenes", "--keep-blas-env"]
    a = subprocess.run(common + ["--out", str(tmp_path / "a.h5"), "--checkpoint-dir", str(tmp_path / "ca")],
                       capture_output=True, text=True, timeout=600)
    assert a.returncode == 0, a.stderr
    b = subprocess.run(common + ["--out", str(tmp_path / "b.h5"), "--checkpoint-dir", str(tmp_path / "cb"),
                                 "--stop-after-epoch", "1"], capture_output=True, text=True, timeout=600)
    assert b.returncode != 0 and not (tmp_path / "b.h5").exists()
    assert sorted(p.name for p in (tmp_path / "cb").iterdir()) == ["epoch_001.npz"]
    c = subprocess.run(common + ["--out", str(tmp_path / "b.h5"), "--checkpoint-dir", str(tmp_path / "cb"),
                                 "--resume"], capture_output=True, text=True, timeout=600)
    assert c.returncode == 0, c.stderr
    assert "resumed from" in c.stdout and "wall time" in c.stdout
    ma, mb = te.load_model(tmp_path / "a.h5"), te.load_model(tmp_path / "b.h5")
    for (k, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
        np.testing.assert_array_equal(x, y, err_msg=k)
    assert ma.preprocessing["mean"] == mb.preprocessing["mean"]
    assert ma.class_names == mb.class_names and len(ma.class_names) == 10


# ----------------------------------------------------------------------------
# the shipped model
# ----------------------------------------------------------------------------
def test_shipped_weights_load_and_are_accurate(sample):
    from tinygrad_explain.modelfiles.modelfile import DEFAULT_WEIGHTS
    assert DEFAULT_WEIGHTS.name == "fashion_scenes_alexnet.h5"
    assert DEFAULT_WEIGHTS.stat().st_size <= 25 * 1024 * 1024
    model = te.load_model()
    assert Path(model.path).resolve() == DEFAULT_WEIGHTS.resolve() or "TGE_WEIGHTS" in __import__("os").environ
    assert model.input_shape == (3, 64, 64) and model.num_classes == 10
    assert model.class_names[0] == "T-shirt/top" and len(model.class_names) == 10
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "norm1", "norm2",
                 "pool1", "pool2", "pool5", "drop6", "drop7"):
        assert name in model.layers, name
    assert len(model.preprocessing["mean"]) == 3 and len(model.preprocessing["std"]) == 3
    acc = train.evaluate(model, sample["images"], sample["labels"])
    assert acc >= 0.85, acc


def test_data_parallel_gradient_equals_the_single_process_one(sample):
    """Two processes, each half of the batch: the averaged gradient is the whole batch's."""
    model = tiny_model(seed=8, dropout=0.0).requires_grad_(True).train()
    model.preprocessing.update(mean=[0.5] * 3, std=[0.25] * 3)
    xb, yb = sample["images"][:10], sample["labels"][:10].astype(np.int64)
    with parallel.DataParallel(model, workers=2, threads=1, seed=0) as par:
        loss2, correct2 = par.grads(0, xb, yb, smoothing=0.1)
        g2 = [p.grad.copy() for p in model.parameters()]
        assert len(par.procs) == 1 and par.procs[0].is_alive()
    assert not par.procs
    loss1, correct1 = train.batch_gradients(model, xb, yb, 0.1)
    assert loss2 == pytest.approx(loss1, rel=1e-5) and correct1 == correct2
    for a, p in zip(g2, model.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-4, atol=1e-6)


def test_data_parallel_map_splits_work_between_processes_in_order():
    """map() runs contiguous parts of the argument list in this process and
    the helper, and returns the results in the order of the list."""
    import os
    model = tiny_model(seed=8, dropout=0.0)
    with parallel.DataParallel(model, workers=2, threads=1, seed=0) as par:
        out = par.map(np.arange, [(3,), (5,), (2,), (4,)])
        pids = par.map(os.getpid, [(), ()])
    assert [len(a) for a in out] == [3, 5, 2, 4]
    assert pids[0] == os.getpid() and pids[1] != os.getpid()
    with parallel.DataParallel(model, workers=1) as single:
        assert single.map(np.arange, [(2,), (1,)])[1].tolist() == [0]


def test_data_parallel_apply_sets_dropout_in_the_helper_too(sample):
    """Early dropout switches dropout off between epochs in every process: with
    p = 0 set through apply(), the two-process gradient is the one-process
    gradient without dropout (a helper still at p = 0.5 would change it)."""
    model = tiny_model(seed=8, dropout=0.5).requires_grad_(True).train()
    model.preprocessing.update(mean=[0.5] * 3, std=[0.25] * 3)
    xb, yb = sample["images"][:10], sample["labels"][:10].astype(np.int64)
    with parallel.DataParallel(model, workers=2, threads=1, seed=0) as par:
        par.apply(train.set_dropout, 0.0)
        loss2, _ = par.grads(0, xb, yb)
        g2 = [p.grad.copy() for p in model.parameters()]
    assert [l.p for l in model.layers.values() if isinstance(l, te.nn.Dropout)] == [0.0, 0.0]
    loss1, _ = train.batch_gradients(model, xb, yb, 0.0)
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    for a, p in zip(g2, model.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="dropout probability"):
        train.set_dropout(model, 1.0)


def test_adam_kernel_equals_the_numpy_expressions_bit_for_bit():
    """kernels/adam.py does in one pass what the NumPy form does in ~10: the same
    float32 operations in the same order, so 30 steps agree to the last bit
    (AdamW and L2 weight decay, a changing learning rate)."""
    r = np.random.default_rng(3)
    shapes = [(6, 3, 5, 5), (6,), (20, 54)]
    for decoupled in (True, False):
        params = [Tensor(r.standard_normal(s).astype(np.float32), requires_grad=True) for s in shapes]
        ref = [p.data.copy() for p in params]
        ms, vs = [np.zeros_like(a) for a in ref], [np.zeros_like(a) for a in ref]
        arr = [(a.copy(), np.zeros_like(a), np.zeros_like(a)) for a in ref]     # the GPU path's array form
        opt = optim.Adam(params, lr=2e-3, weight_decay=0.05, decoupled=decoupled)
        for t in range(1, 31):
            grads = [r.standard_normal(s).astype(np.float32) * 0.01 for s in shapes]
            for p, g in zip(params, grads):
                p.grad = g
            opt.lr = 2e-3 * (1 - t / 40)
            opt.step()
            for (w2, m2, v2), g in zip(arr, grads):
                optim._adam_step_xp(w2, g, m2, v2, opt.lr, 0.9, 0.999, 1e-8, 0.05, decoupled, t)
            c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
            for w, m, v, g in zip(ref, ms, vs, grads):
                g = g.copy()
                if not decoupled:
                    g += np.float32(0.05) * w
                m *= np.float32(0.9)
                m += np.float32(1 - 0.9) * g
                v *= np.float32(0.999)
                v += np.float32(1 - 0.999) * g * g
                if decoupled:
                    w -= np.float32(opt.lr * 0.05) * w
                w -= np.float32(opt.lr / c1) * m / (np.sqrt(v / np.float32(c2)) + np.float32(1e-8))
        for p, w, (w2, _, _) in zip(params, ref, arr):
            assert p.data.tobytes() == w.tobytes()
            np.testing.assert_allclose(w2, w, rtol=1e-6, atol=1e-7)


def test_data_parallel_predict_uses_the_current_parameters(sample):
    """predict() shares the images between the processes; the helper reads this
    process's parameters as they are now (changed after the helper started),
    and the scores are the single-process ones, in order."""
    model = tiny_model(seed=8, dropout=0.5).train()
    model.preprocessing.update(mean=[0.5] * 3, std=[0.25] * 3)
    images = sample["images"][:11]
    with parallel.DataParallel(model, workers=2, threads=1, seed=0) as par:
        for p in model.parameters():
            p.data *= np.float32(1.5)
        scores2 = par.predict(images, batch=4)
        acc2 = train.evaluate(model, images, sample["labels"][:11], parallel=par)
    assert all(l.training for l in model.layers.values())     # predict() restores the mode
    scores1 = train.predict(model, images, batch=4)
    assert scores2.shape == scores1.shape == (11, 10)
    np.testing.assert_allclose(scores2, scores1, rtol=1e-5, atol=1e-6)
    assert acc2 == train.evaluate(model, images, sample["labels"][:11])


def test_adam_refuses_a_gradient_of_the_wrong_shape():
    """The kernel loops over the parameter's elements: a gradient of another
    shape is refused by name instead of being read out of bounds."""
    p = _param([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    p.grad = np.ones(2, np.float32)
    with pytest.raises(ValueError, match=r"gradient has shape \(2,\), the parameter \(3,\)"):
        optim.Adam([p], lr=0.1).step()


def test_resume_from_an_empty_folder_starts_afresh(tmp_path, capsys):
    model = tiny_model()
    assert checkpoint.resume(tmp_path / "none", model, optim.SGD(model.parameters(), lr=0.1), {}, ()) is None
    assert "no checkpoint in" in capsys.readouterr().out


def test_resume_warns_about_changed_settings(capsys):
    changed = checkpoint.warn_changed_settings({"lr": 0.1, "batch": 64, "old_only": 1}, {"lr": 0.2, "batch": 64},
                                               ("lr", "batch", "epochs"))
    assert changed == ["lr"]
    assert capsys.readouterr().err.strip() == "warning: --lr is 0.2, the checkpoint was trained with 0.1"
