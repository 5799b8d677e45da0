"""The explainers (te.explain) on small networks: fast, exact where possible.

Quality targets on the embedded model live at the end and skip when
weights/fashion_scenes_alexnet.h5 is absent.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.explain import ExplainError, OptimizationError
from tinygrad_explain.explain import regularizers as R

NAMES = ["cat", "dog", "sailboat", "goose"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0, lrn=True, size=12, dtype=np.float32):
    """conv-relu-(lrn)-pool-conv-relu-pool-fc-relu-fc: every layer kind the explainers meet."""
    te.manual_seed(seed)
    layers = [("conv1", nn.Conv2d(3, 6, 3, 1, 1)), ("relu1", nn.ReLU())]
    if lrn:
        layers.append(("norm1", nn.LocalResponseNorm(3, 1e-2, 0.75, 1.0)))
    layers += [("pool1", nn.MaxPool2d(2, 2)), ("conv2", nn.Conv2d(6, 8, 3, 1, 1)), ("relu2", nn.ReLU()),
               ("pool2", nn.MaxPool2d(2, 2)), ("flatten", nn.Flatten()),
               ("fc6", nn.Linear(8 * (size // 4) ** 2, 16)), ("relu6", nn.ReLU()),
               ("fc7", nn.Linear(16, 16)), ("relu7", nn.ReLU()), ("fc8", nn.Linear(16, len(NAMES)))]
    m = te.Network(layers, (3, size, size), class_names=NAMES,
                   preprocessing={"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.25, 0.25], "pixel_scale": 1.0})
    return m.astype(dtype)


def quadrant_data(n, rng, size=12):
    """Class k = a bright blob in quadrant k of a noisy image."""
    y = rng.integers(0, 4, n)
    x = 0.3 * rng.standard_normal((n, 3, size, size)).astype(np.float32)
    h = size // 2
    for i, k in enumerate(y):
        r, c = (k // 2) * h, (k % 2) * h
        x[i, :, r + 1:r + h - 1, c + 1:c + h - 1] += 1.5
    return x, y


def trained_tiny(steps=150, seed=0):
    """The tiny network trained (plain SGD with momentum, with the engine) to tell the quadrants apart."""
    m = tiny(seed).requires_grad_(True)
    rng = np.random.default_rng(seed)
    params = m.parameters()
    vel = [np.zeros_like(p.data) for p in params]
    for _ in range(steps):
        x, y = quadrant_data(32, rng)
        loss = te.cross_entropy(m(x), y)
        m.zero_grad()
        loss.backward()
        for p, v in zip(params, vel):
            v *= 0.9
            v -= 0.02 * p.grad
            p.data += v
    return m.requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    return trained_tiny()


def test_the_test_model_learned_its_task(model):
    x, y = quadrant_data(100, np.random.default_rng(5))
    with te.no_grad():
        acc = (model(x).data.argmax(1) == y).mean()
    assert acc > 0.9


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32)


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------
def test_gradient_is_the_true_gradient_of_the_unnormalised_score():
    m = tiny(dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((1, 3, 12, 12))
    g = te.explain.gradient(m, x, "dog")
    assert g.shape == x.shape and g.dtype == np.float64
    rng = np.random.default_rng(0)
    eps = 1e-6
    for _ in range(20):
        i = tuple(rng.integers(0, s) for s in x.shape)
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        with te.no_grad():
            num = (m(xp).data[0, 1] - m(xm).data[0, 1]) / (2 * eps)
        assert abs(num - g[i]) <= 1e-6 + 1e-4 * abs(num)


def test_gradient_targets_and_rules(model, images):
    g_idx = te.explain.gradient(model, images, 2)
    g_name = te.explain.gradient(model, images, "Sailboat")       # names are case-insensitive
    g_list = te.explain.gradient(model, images, [2, "sailboat", np.int64(2)])
    np.testing.assert_array_equal(g_idx, g_name)
    np.testing.assert_array_equal(g_idx, g_list)
    per = te.explain.gradient(model, images, [0, 1, 3])
    for n, c in enumerate([0, 1, 3]):
        np.testing.assert_allclose(per[n], te.explain.gradient(model, images[n], c)[0], rtol=1e-5, atol=1e-7)
    single = te.explain.gradient(model, images[0], 1)
    assert single.shape == (1, 3, 12, 12)
    rules = {r: te.explain.gradient(model, images, 0, rule=r) for r in te.RELU_RULES}
    assert not np.allclose(rules["backprop"], rules["guided"])
    assert not np.allclose(rules["deconvnet"], rules["guided"])


def test_saliency_is_max_over_channels_of_abs_gradient(model, images):
    g = te.explain.gradient(model, images, "cat")
    s = te.explain.saliency(model, images, "cat")
    assert s.shape == (3, 12, 12)
    np.testing.assert_array_equal(s, np.abs(g).max(axis=1))
    assert not np.allclose(s, np.abs(g).sum(axis=1))


BAD_CLASS_TARGETS = [
    ("dgo", "did you mean 'dog'"), ("zebra", "unknown class name 'zebra'"), (7, "out of range"),
    (-1, "out of range"), ([0, 1], "2 targets for 3 images"), (1.5, "class index, a class name")]


def test_bad_inputs(model, images):
    with pytest.raises(ExplainError, match="rule"):
        te.explain.gradient(model, images, 0, rule="smooth")
    with pytest.raises(ExplainError, match="size mismatch"):
        te.explain.gradient(model, np.zeros((1, 3, 10, 10), np.float32), 0)
    with pytest.raises(ExplainError, match="channels"):
        te.explain.gradient(model, np.zeros((1, 1, 12, 12), np.float32), 0)
    with pytest.raises(ExplainError, match="te.image.load"):
        te.explain.gradient(model, np.zeros((1, 3, 12, 12), np.uint8), 0)
    with pytest.raises(ExplainError, match="NaN"):
        te.explain.gradient(model, np.full((1, 3, 12, 12), np.nan, np.float32), 0)


# --------------------------------------------------------------------------
# channel and neuron targets, gradients at a layer
# --------------------------------------------------------------------------
def _by_hand(model, x, layer, seed, rule, at=None):
    """The lecture's procedure, spelled out: forward to ``layer``, put ``seed`` there
    (zero except at the unit), backprop to the image (or to the output of ``at``)."""
    xt = te.Tensor(x.copy(), requires_grad=True)
    with te.relu_backward(rule):
        if at is None:
            a = model(xt, until=layer)
        else:
            with te.no_grad():
                h = model(xt, until=at).data
            xt = te.Tensor(h, requires_grad=True)
            a = model(xt, start=at, until=layer)
        a.backward(seed.astype(a.dtype))
    return xt.grad


@pytest.mark.parametrize("rule", ["backprop", "deconvnet", "guided"])
def test_channel_and_neuron_targets(model, images, rule):
    C, H, W = model.shapes["conv2"]
    seed = np.zeros((3, C, H, W))
    seed[0, 3] = 1.0 / (H * W)                  # image 0: the mean of channel 3
    seed[1, 5, 1, 2] = 1.0                      # image 1: the neuron (5, 1, 2)
    seed[2, 0, 4, 4] = 1.0
    targets = [("conv2", 3), ("conv2", 5, 1, 2), "conv2:0:4:4"]
    g = te.explain.gradient(model, images, targets, rule=rule)
    np.testing.assert_array_equal(g, _by_hand(model, images, "conv2", seed, rule))
    assert np.abs(g).max() > 0
    # one target for the whole batch, as a tuple or as the CLI's string
    np.testing.assert_array_equal(te.explain.gradient(model, images, ("conv2", 3), rule=rule),
                                  te.explain.gradient(model, images, "conv2:3", rule=rule))
    # a vector layer: ("fc7", k) is neuron k; a layer index names the layer too
    seed = np.zeros((3, 16))
    seed[:, 9] = 1.0
    g = te.explain.gradient(model, images, ("fc7", 9), rule=rule)
    np.testing.assert_array_equal(g, _by_hand(model, images, "fc7", seed, rule))
    np.testing.assert_array_equal(te.explain.saliency(model, images, ("fc7", 9), rule=rule), np.abs(g).max(1))
    # the gradient that reaches pool1 from a conv2 neuron
    seed = np.zeros((3, C, H, W))
    seed[:, 5, 1, 2] = 1.0
    np.testing.assert_array_equal(te.explain.gradient(model, images, ("conv2", 5, 1, 2), rule=rule, layer="pool1"),
                                  _by_hand(model, images, "conv2", seed, rule, at="pool1"))


def test_objective_value_is_what_gradient_differentiates(model, images):
    """resolve_objective's S (what other explainers build on): its values are the channel
    mean / the neuron / the class score, and its gradient is te.explain.gradient's."""
    targets = [("conv2", 3), ("conv2", 5, 1, 2), ("conv2", 0)]
    obj = te.explain.resolve_objective(model, targets, 3)
    assert obj.layer == "conv2" and obj.labels == ["conv2[3]", "conv2[5,1,2]", "conv2[0]"] and obj.classes is None
    xt = te.Tensor(images.copy(), requires_grad=True)
    a = model(xt, until="conv2")
    s = obj.value(a)
    np.testing.assert_allclose(s.numpy(), [a.data[0, 3].mean(), a.data[1, 5, 1, 2], a.data[2, 0].mean()], rtol=1e-6)
    s.sum().backward()
    np.testing.assert_allclose(xt.grad, te.explain.gradient(model, images, targets), rtol=1e-5, atol=1e-7)
    obj = te.explain.resolve_objective(model, "goose", 3)
    assert obj.layer == "fc8" and obj.labels == ["goose"] * 3 and list(obj.classes) == [3, 3, 3]


def test_class_target_equals_unit_of_the_last_layer(model, images):
    np.testing.assert_array_equal(te.explain.gradient(model, images, "dog"),
                                  te.explain.gradient(model, images, ("fc8", 1)))


BAD_UNIT_TARGETS = [
    (("conv9", 1), "unknown layer 'conv9'.*did you mean 'conv2'"),
    ("conv9:1", "unknown layer 'conv9'"),
    (("conv2", 8), "channel 8 out of range for layer 'conv2' of shape \\(8, 6, 6\\)"),
    (("conv2", -1), "channel -1 out of range"),
    (("conv2", 1, 6, 0), "row 6 out of range"),
    (("conv2", 1, 0, 6), "column 6 out of range"),
    (("conv2", 1, 2), "has 2 indices"),
    (("fc7", 16), "unit 16 out of range for layer 'fc7'"),
    (("conv2", 1.5), "integer indices"),
    (("conv2",), "integer indices"),
    ("conv2:x", "integer indices"),
    ([("conv2", 1), ("fc7", 1), 0], "different layers"),
    ([("conv2", 1)], "1 targets for 3 images"),
]


@pytest.mark.parametrize("target, message", BAD_CLASS_TARGETS + BAD_UNIT_TARGETS)
def test_bad_targets(model, images, target, message):
    with pytest.raises(ExplainError, match=message):
        te.explain.gradient(model, images, target)


def test_gradient_at_a_layer_checks(model, images):
    with pytest.raises(ExplainError, match="unknown layer 'conv7'"):
        te.explain.gradient(model, images, 0, layer="conv7")
    with pytest.raises(ExplainError, match="'fc8' is not below the target's layer 'fc8'"):
        te.explain.gradient(model, images, 0, layer="fc8")
    with pytest.raises(ExplainError, match="'fc6' is not below the target's layer 'conv2'"):
        te.explain.gradient(model, images, ("conv2", 1), layer="fc6")
    g = te.explain.gradient(model, images, 0, layer="relu6")
    assert g.shape == (3, 16)


def test_relu_toy_example_matches_the_slide():
    t = te.explain.relu_toy_example()
    x, g = t["input"], t["grad_out"]
    np.testing.assert_array_equal(t["relu"], np.maximum(x, 0))
    np.testing.assert_array_equal(t["backprop"], g * (x > 0))
    np.testing.assert_array_equal(t["deconvnet"], g * (g > 0))
    np.testing.assert_array_equal(t["guided"], g * (x > 0) * (g > 0))


# --------------------------------------------------------------------------
# regularisers and the shared optimiser
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda x: R.alpha_norm(x, 6.0, 1.7), lambda x: R.alpha_norm(x, 3.0, 0.5),
    lambda x: R.total_variation(x, 2.0, 0.3), lambda x: R.total_variation(x, 1.5, 0.3), R.l2])
def test_regularizer_gradients(fn):
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6))
    assert te.gradcheck(fn, [x], atol=1e-6, rtol=1e-4)


def test_regularizer_values():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :, 2:] = 1.0                                  # one vertical edge
    tv = R.total_variation(te.Tensor(x), 2.0, 1.0).data[0]
    assert tv == pytest.approx(3 / 16)                    # 3 rows (the last is cropped) x jump 1, / HW
    a = R.alpha_norm(te.Tensor(2 * x), 6.0, 2.0).data[0]
    assert a == pytest.approx(8 / 16)


def test_optimize_ascends_and_records_history():
    target = np.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4).astype(np.float32)

    def objective(x):                                     # maximise -||x - target||^2
        d = x - te.Tensor(target)
        return -(d * d).sum(axis=(1, 2, 3)), {"mean": x.numpy().mean(axis=(1, 2, 3))}

    res = te.explain.optimize(objective, np.zeros_like(target), steps=60, lr=0.1, progress=False)
    np.testing.assert_allclose(res.x, target, atol=1e-4)
    assert res.history["objective"].shape == (60, 2) and res.history["mean"].shape == (60, 2)
    assert np.all(np.diff(res.history["objective"][:, 0]) >= -1e-9)
    # momentum + step schedule, adam, and an L2 pull towards zero
    for kw in (dict(momentum=0.9, schedule=te.explain.step_schedule((0.5,), 0.1)), dict(optimizer="adam", lr=0.05)):
        r = te.explain.optimize(objective, np.zeros_like(target), steps=150, progress=False, **kw)
        np.testing.assert_allclose(r.x, target, atol=2e-2)
    r = te.explain.optimize(objective, np.zeros_like(target), steps=200, lr=0.1, l2=1.0, progress=False)
    np.testing.assert_allclose(r.x, target / 2, atol=1e-3)   # argmax of -|x-t|^2 - |x|^2 is t/2
    assert "l2" in r.history


def test_optimize_jitter_blur_clip_and_seed():
    def objective(x):
        return (x * x).sum(axis=(1, 2, 3)) * 0.0 + x.sum(axis=(1, 2, 3))

    x0 = np.zeros((1, 3, 8, 8), np.float32)
    kw = dict(steps=10, lr=1.0, jitter=2, blur_every=2, blur_sigma=0.8, bounds=(-0.5, 0.5), progress=False)
    a = te.explain.optimize(objective, x0, seed=3, **kw)
    b = te.explain.optimize(objective, x0, seed=3, **kw)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.max() <= 0.5 and a.x.min() >= -0.5
    assert np.all(x0 == 0)                                # the start image is not modified


def test_optimize_reports_nan():
    def objective(x):
        return (x * x * x * x).sum(axis=(1, 2, 3))        # explodes with a big step

    with pytest.raises(OptimizationError, match="NaN/Inf"):
        te.explain.optimize(objective, np.ones((1, 1, 2, 2), np.float32), steps=50, lr=100.0, progress=False)


# --------------------------------------------------------------------------
# class models, neuron maximisation, inversion
# --------------------------------------------------------------------------
def test_class_model_increases_the_target_score(model):
    v = te.explain.class_model(model, steps=80, progress=False)
    assert v.image.shape == (4, 3, 12, 12) and v.labels == NAMES
    s = v.history["objective"]
    assert s.shape == (80, 4)
    # the history is the score of each step's randomly shifted / scaled / rotated view (the default
    # recipe's transformation robustness: on this 12 px quadrant task a 2 px shift moves the pattern
    # out of its quadrant); the returned images' own scores are v.final
    assert np.all(v.final > s[0] + 10)
    assert np.all(v.probability > 0.9)
    plain = te.explain.class_model(model, steps=80, jitter=0, scales=(1.0,), angles=(0,), progress=False)
    assert np.all(plain.history["objective"][-1] > plain.history["objective"][0])
    assert len(v.display) == 4 and v.display[0].dtype == np.uint8 and v.display[0].shape == (12, 12, 3)
    image, history = te.explain.class_model(model, "goose", steps=3, progress=False)
    assert image.shape == (1, 3, 12, 12) and "probability" in history
    with pytest.raises(ExplainError, match="did you mean"):
        te.explain.class_model(model, "gose", steps=1, progress=False)


def test_class_model_from_zero_image_and_clip(model):
    one = te.explain.class_model(model, "cat", steps=1, lr=1.0, l2=0.0, init_noise=0, optimizer="sgd",
                                 recipe="simonyan2014", progress=False)
    g = te.explain.gradient(model, np.zeros((1, 3, 12, 12), np.float32), "cat")
    B = te.image.data_scale(model)
    assert B == pytest.approx(2.8)                                   # (1 - 0.3) / 0.25: the widest pixel range
    np.testing.assert_allclose(one.image, B * B * g, rtol=1e-5, atol=1e-8)   # first step: 0 + lr B^2 dS/dI
    noisy = te.explain.class_model(model, "cat", steps=0, seed=4, progress=False)
    assert 0 < np.abs(noisy.image).max() < 0.1                       # default: faint noise around zero


def test_dead_start_warns():
    m = tiny()
    m.layers["conv1"].bias.data[:] = -10.0                           # no conv1 unit fires on the zero image
    with pytest.warns(RuntimeWarning, match="exactly zero"):
        v = te.explain.class_model(m, "cat", steps=3, init_noise=0, recipe="natural-opaque", progress=False)
    assert np.all(v.image == 0)
    # with transparency (the default) the picture is shown over black, so it changes; the score does not
    with pytest.warns(RuntimeWarning, match="exactly zero"):
        v = te.explain.class_model(m, "cat", steps=3, init_noise=0, progress=False)
    assert v.alpha is not None and np.ptp(v.history["objective"]) == 0


def test_class_model_log_softmax_objective(model):
    v = te.explain.class_model(model, ["dog", "goose"], steps=40, lr=0.1, objective="log_softmax", progress=False)
    assert np.all(v.probability > 0.9) and "score" in v.history
    with pytest.raises(ExplainError, match="objective"):
        te.explain.class_model(model, "dog", objective="posterior", progress=False)


def test_class_model_regularisers(model):
    v = te.explain.class_model(model, "cat", steps=30, lr=0.2, clip=True, jitter=1, blur_every=5, blur_sigma=0.5,
                               progress=False)
    lo, hi = te.image.pixel_bounds(model)
    assert np.all(v.image >= lo - 1e-6) and np.all(v.image <= hi + 1e-6)


def test_maximize_units(model):
    v = te.explain.maximize(model, "conv2", [0, 3], steps=30, progress=False)
    assert v.image.shape == (2, 3, 12, 12) and v.labels == ["conv2[0]", "conv2[3]"]
    assert np.all(v.history["objective"][-1] > v.history["objective"][0])
    n = te.explain.maximize(model, "conv2", (5, 1, 2), steps=20, progress=False)
    assert n.final[0] > n.history["objective"][0, 0]
    # the tiny network's fc units code the quadrant of a blob: random shifts / rotations of a 12x12
    # image (the default recipe's transformation robustness) move it out, so the paper's recipe here
    f = te.explain.maximize(model, "fc7", 4, steps=20, recipe="simonyan2014", progress=False)
    assert f.final[0] > f.history["objective"][0, 0]
    with pytest.raises(ExplainError, match="unknown layer 'conv7'"):
        te.explain.maximize(model, "conv7", 0)
    with pytest.raises(ExplainError, match="out of range"):
        te.explain.maximize(model, "conv2", 8)
    with pytest.raises(ExplainError, match="out of range"):
        te.explain.maximize(model, "fc7", 16)
    with pytest.raises(ExplainError, match="indices"):
        te.explain.maximize(model, "conv2", (1, 2))


def test_invert_fc7(model, images):
    inv = te.explain.invert(model, images[0], layer="fc7", inits=3, steps=120, progress=False)
    images_, errors = inv
    assert images_.shape == (3, 3, 12, 12) and errors.shape == (3,)
    assert np.all(errors < 0.2)
    obj = inv.history["objective"]
    assert np.all(obj[-1] < obj[0])
    assert inv.pairwise_mad.shape == (3, 3) and inv.mean_pairwise_mad > 0.05
    np.testing.assert_allclose(np.diag(inv.pairwise_mad), 0)
    # the same from the code itself
    code = te.explain.feature_code(model, images[0], "fc7")
    inv2 = te.explain.invert(model, code, layer="fc7", inits=3, steps=120, progress=False)
    np.testing.assert_allclose(inv2.errors, errors, rtol=1e-4)
    inv3 = te.explain.invert(model, code=code, inits=1, steps=2, progress=False)
    assert inv3.images.shape == (1, 3, 12, 12)
    with pytest.raises(ExplainError, match="has 16 values"):
        te.explain.invert(model, code=np.ones(5), steps=1, progress=False)
    with pytest.raises(ExplainError, match="all zeros"):
        te.explain.invert(model, code=np.zeros(16), steps=1, progress=False)


# --------------------------------------------------------------------------
# GrabCut
# --------------------------------------------------------------------------
def _square_scene(rng):
    img = (rng.integers(0, 60, (32, 32, 3))).astype(np.uint8)
    img[8:22, 10:26] = (200, 40, 40) + rng.integers(0, 20, (14, 16, 3))
    truth = np.zeros((32, 32), bool)
    truth[8:22, 10:26] = True
    sal = rng.random((32, 32)) * 0.3
    sal[truth] += 0.3                                     # the whole object somewhat salient,
    sal[10:20, 12:24] += 1.0 * rng.random((10, 12))       # its centre most
    return img, sal, truth


def test_grabcut_mask_finds_the_object():
    img, sal, truth = _square_scene(np.random.default_rng(0))
    mask, box = te.explain.grabcut_mask(img, sal)
    assert mask.dtype == bool and mask.shape == (32, 32)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8
    np.testing.assert_array_equal(box, te.explain.mask_box(mask))
    assert te.explain.metrics.box_iou(box, (10, 8, 26, 22)) > 0.8


def test_grabcut_is_deterministic():
    """GrabCut's colour models start from k-means on OpenCV's global random generator:
    without seeding it, about one shipped scene in seven got another box on a second call."""
    from tinygrad_explain.data import scenes
    model = te.load_model()
    data = scenes.load_sample()
    x = np.concatenate([te.image.load(p, model) for p in data["images"][:24]])
    sal = te.explain.saliency(model, x, te.explain.predict(model, x)[1].argmax(1))
    for i in range(len(x)):
        first = te.explain.grabcut_mask(data["images"][i], sal[i])
        again = te.explain.grabcut_mask(data["images"][i], sal[i])
        np.testing.assert_array_equal(first[0], again[0], err_msg=f"scene {i}")


def test_grabcut_bad_input():
    img, sal, _ = _square_scene(np.random.default_rng(0))
    with pytest.raises(ExplainError, match="does not match"):
        te.explain.grabcut_mask(img, sal[:10])
    with pytest.raises(ExplainError, match="uint8"):
        te.explain.grabcut_mask(img.astype(np.float32), sal)
    with pytest.raises(ExplainError, match="quantile"):
        te.explain.grabcut_mask(img, sal, fg_quantile=0.2, bg_quantile=0.3)
    mask, box = te.explain.grabcut_mask(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32)))
    assert mask.shape == (32, 32)                         # degenerate input: no crash


def test_largest_component_and_box():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = True
    m[5:9, 4:9] = True
    lc = te.explain.largest_component(m)
    assert lc.sum() == 20
    np.testing.assert_array_equal(te.explain.mask_box(lc), [4, 5, 9, 9])
    np.testing.assert_array_equal(te.explain.mask_box(np.zeros((4, 4), bool)), [0, 0, 0, 0])
