"""The natural-image priors of the shared optimiser (explain/transforms.py, explain/optimize.py):
every linear map's backward is its exact adjoint (gradchecked in float64), transformations
undo exactly, the Fourier / colour parameterisation round-trips, octaves upsample correctly."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.explain import ExplainError
from tinygrad_explain.explain import transforms as T
from tinygrad_explain.explain.optimize import optimize
from tinygrad_explain.explain.recipes import lookup as recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def adjoint_gap(fn, x, gshape, seed=1):
    """<A x, g> - <x, A^T g> for the linear map fn (Tensor -> Tensor), float64."""
    g = rand(*gshape, seed=seed)
    xt = te.Tensor(x, requires_grad=True)
    y = fn(xt)
    y.backward(g)
    return float((y.data * g).sum() - (x * xt.grad).sum())


# --------------------------------------------------------------------------
# transformation robustness: jitter, scale, rotation
# --------------------------------------------------------------------------
def test_roll_backward_is_its_inverse():
    x = rand(2, 3, 7, 9)
    xt = te.Tensor(x, requires_grad=True)
    y = T.Roll.apply(xt, dy=2, dx=-3)
    np.testing.assert_array_equal(y.data, np.roll(x, (2, -3), axis=(2, 3)))
    y.backward(y.data)                                     # the adjoint of a permutation undoes it exactly
    np.testing.assert_array_equal(xt.grad, x)
    assert te.gradcheck(lambda t: T.Roll.apply(t, dy=-1, dx=4), [rand(1, 2, 5, 6)])


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -3), (-5, 1)])
def test_integer_shift_resample_is_exactly_the_roll(dy, dx):
    x = rand(2, 3, 8, 10)
    y = T.resample(te.Tensor(x), T.affine_taps(8, 10, 1.0, 0.0, dy, dx), (8, 10)).data
    np.testing.assert_array_equal(y, np.roll(x, (dy, dx), axis=(2, 3)))


@pytest.mark.parametrize("s,a,dy,dx", [(1.1, 0.0, 0, 0), (0.9, 7.0, 1, -2), (1.0, -12.5, 0.3, 0.0),
                                       (1.05, 90.0, 0, 0)])
def test_scale_and_rotation_backward_is_the_adjoint(s, a, dy, dx):
    taps = T.affine_taps(6, 7, s, a, dy, dx)
    assert np.allclose(taps[1].sum(0), 1.0) and taps[1].min() >= -1e-12      # bilinear weights
    fn = lambda t: T.resample(t, taps, (6, 7))                              # noqa: E731
    assert te.gradcheck(fn, [rand(2, 3, 6, 7)], atol=1e-7, rtol=1e-5)
    assert abs(adjoint_gap(fn, rand(2, 3, 6, 7), (2, 3, 6, 7))) < 1e-10


def test_rotation_by_90_degrees_on_a_square_grid_is_exact():
    x = rand(1, 2, 6, 6)
    y = T.resample(te.Tensor(x), T.affine_taps(6, 6, 1.0, 90.0), (6, 6)).data
    np.testing.assert_allclose(y, np.rot90(x, -1, axes=(2, 3)), atol=1e-12)     # clockwise as displayed
    z = T.resample(te.Tensor(y), T.affine_taps(6, 6, 1.0, -90.0), (6, 6)).data
    np.testing.assert_allclose(z, x, atol=1e-12)                           # and the inverse undoes it


def test_random_transform_is_seeded_and_off_by_default():
    assert not T.RandomTransform().active
    t = T.RandomTransform(jitter=3, scales=(0.9, 1.0, 1.1), angles=(-5, 0, 5))
    a = [t.sample(np.random.default_rng(4)) for _ in range(3)]
    b = [t.sample(np.random.default_rng(4)) for _ in range(3)]
    assert a == b and t.active
    draws = [t.sample(np.random.default_rng(k)) for k in range(40)]
    assert {d[2] for d in draws} == {0.9, 1.0, 1.1} and max(abs(d[0]) for d in draws) == 3
    with pytest.raises(ValueError, match="scales"):
        T.RandomTransform(scales=(0.0,))


# --------------------------------------------------------------------------
# octaves: bilinear upsampling of a coarse grid
# --------------------------------------------------------------------------
def test_octave_upsampling():
    taps = T.resize_taps(4, 5, 8, 10)
    fn = lambda t: T.resample(t, taps, (8, 10))                             # noqa: E731
    assert te.gradcheck(fn, [rand(1, 3, 4, 5)], atol=1e-7, rtol=1e-5)
    assert abs(adjoint_gap(fn, rand(1, 3, 4, 5), (1, 3, 8, 10))) < 1e-10
    const = np.full((1, 1, 4, 5), 0.7)
    np.testing.assert_allclose(fn(te.Tensor(const)).data, 0.7, atol=1e-12)   # constants stay constant
    ramp = np.broadcast_to(np.arange(5.0), (1, 1, 4, 5)).copy()             # a linear ramp stays linear inside
    up = fn(te.Tensor(ramp)).data[0, 0, 0]
    np.testing.assert_allclose(up[1:-1], (np.arange(1, 9) + 0.5) / 2 - 0.5, atol=1e-12)
    # the parameterisation carries an image down to the coarse grid (area) and back up
    P = T.Parameterization("pixel", (8, 10), size=(4, 5))
    img = np.kron(rand(1, 3, 4, 5), np.ones((2, 2)))                        # blocky: exactly representable
    np.testing.assert_allclose(P.from_image(img), img[:, :, ::2, ::2], atol=1e-12)
    assert P.to_image(P.from_image(img)).shape == (1, 3, 8, 10)


def test_octave_plan_splits_the_steps():
    from tinygrad_explain.explain.optimize import _octave_plan
    assert _octave_plan((4, 2, 1), 100, (64, 64)) == [(0, (16, 16)), (33, (32, 32)), (66, (64, 64))]
    assert _octave_plan(None, 10, (8, 8)) == [(0, (8, 8))]
    with pytest.raises(ValueError, match="ending with 1"):
        _octave_plan((4, 2), 10, (8, 8))


# --------------------------------------------------------------------------
# Fourier-space, decorrelated-colour parameterisation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(6, 8), (5, 7)])
def test_fourier_backward_is_the_adjoint(hw):
    H, W = hw
    w = T.frequency_scale(H, W, 1.0)
    fn = lambda t: T.FourierImage.apply(t, w=w, hw=hw)                      # noqa: E731
    p = rand(2, 3, H, W // 2 + 1, 2)
    assert te.gradcheck(fn, [p], atol=1e-7, rtol=1e-5)
    assert abs(adjoint_gap(fn, p, (2, 3, H, W))) < 1e-9


def test_colour_mix_backward_is_the_transpose():
    M = rand(3, 3, seed=5)
    assert te.gradcheck(lambda t: T.ColourMix.apply(t, M=M), [rand(2, 3, 4, 5)], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("hw", [(8, 8), (7, 10)])
def test_fourier_parameterisation_round_trips(hw):
    imgs = (np.random.default_rng(2).random((2, 3) + hw) * 2 - 1)
    M = T.colour_sqrt(imgs + 0.5 * imgs[:, :1])                              # correlated channels
    P = T.Parameterization("fourier", hw, colour=M)
    np.testing.assert_allclose(P.to_image(P.from_image(imgs)), imgs, atol=1e-10)
    q = P.from_image(imgs)
    np.testing.assert_allclose(P.from_image(P.to_image(q)), q, atol=1e-10)
    # unit-variance images from unit-variance spectra (the scaling's normalisation), colour off
    P0 = T.Parameterization("fourier", (32, 32), decay=1.0)
    x = P0.to_image(rand(4, 3, 32, 17, 2, seed=3))
    assert 0.7 < x.std() < 1.3


def test_colour_sqrt_decorrelates():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((50, 3, 8, 8))
    A = np.array([[1.0, 0.8, 0.6], [0.0, 0.6, 0.5], [0.0, 0.0, 0.4]])
    x = np.einsum("ij,njhw->nihw", A, y)
    M = T.colour_sqrt(x)
    np.testing.assert_allclose(M, M.T)
    z = np.einsum("ij,njhw->nihw", np.linalg.inv(M), x)                     # whitened up to one scale
    c = np.cov(np.moveaxis(z, 1, 0).reshape(3, -1))
    np.testing.assert_allclose(c / c[0, 0], np.eye(3), atol=1e-8)


# --------------------------------------------------------------------------
# the optimiser with every prior on
# --------------------------------------------------------------------------
def _pull_to(target):
    def objective(x):                                     # maximise -||x - target||^2
        d = x - te.Tensor(target)
        return -(d * d).sum(axis=(1, 2, 3))
    return objective


def test_optimize_with_each_parameterisation_reaches_a_smooth_target():
    i, j = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    target = np.stack([np.sin(2 * i), np.cos(3 * j), i * j])[None].repeat(2, 0).astype(np.float32)
    x0 = np.zeros_like(target)
    M = T.colour_sqrt(target)
    for kw in (dict(), dict(param="fourier"), dict(param="fourier", colour=M), dict(octaves=(4, 2, 1)),
               dict(colour=M)):
        r = optimize(_pull_to(target), x0, steps=150, lr=0.05, optimizer="adam", progress=False, **kw)
        err = np.abs(r.x - target).max()
        assert err < 0.05, (kw, err)


def test_optimize_transformations_blur_schedule_clip_are_seeded():
    target = rand(1, 3, 12, 12, seed=7).astype(np.float32)
    kw = dict(steps=12, lr=0.05, optimizer="adam", jitter=2, scales=(0.9, 1.0, 1.1), angles=(-10, 0, 10),
              blur_every=3, blur_sigma=(1.0, 0.3), bounds=(-0.5, 0.5), param="fourier", progress=False)
    a = optimize(_pull_to(target), np.zeros_like(target), seed=1, **kw)
    b = optimize(_pull_to(target), np.zeros_like(target), seed=1, **kw)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.max() <= 0.5 + 1e-5 and a.x.min() >= -0.5 - 1e-5           # clipped image (Fourier round trip)
    assert a.history["objective"][-1, 0] > a.history["objective"][0, 0]
    with pytest.raises(ValueError, match="octaves"):
        optimize(_pull_to(target), np.zeros_like(target), steps=2, param="fourier", octaves=(2, 1), progress=False)
    with pytest.raises(ValueError, match="parameterisation"):
        optimize(_pull_to(target), np.zeros_like(target), steps=2, param="wavelet", progress=False)


def test_gaussian_blur_of_many_images_blurs_each_plane_alone():
    """More planes (N * C) than one OpenCV call takes (OpenCV 5: 128; it failed from 129 with
    "m->dims <= 2"): the result is each plane's own blur, as for one image at a time."""
    import cv2

    from tinygrad_explain.explain.regularizers import BLUR_MAX_CHANNELS, gaussian_blur
    x = rand(3 * BLUR_MAX_CHANNELS // 2 + 1, 2, 9, 11, seed=3).astype(np.float32)       # 3 calls, the last partial
    y = gaussian_blur(x, 1.3)
    assert y.shape == x.shape and y.dtype == x.dtype
    for n in (0, BLUR_MAX_CHANNELS // 2, x.shape[0] - 1):
        for c in range(2):
            want = cv2.GaussianBlur(x[n, c], (9, 9), 1.3, borderType=cv2.BORDER_REFLECT)
            np.testing.assert_allclose(y[n, c], want, rtol=1e-6, atol=1e-7)   # OpenCV's multi-channel path
    np.testing.assert_allclose(gaussian_blur(x[:1], 1.3), y[:1], rtol=1e-6, atol=1e-7)  # rounds apart


# --------------------------------------------------------------------------
# transparency: an opacity channel over random backgrounds
# --------------------------------------------------------------------------
def test_composite_is_alpha_over_and_its_backward_is_gradchecked():
    x = rand(2, 4, 5, 6, seed=3)
    bg = rand(2, 3, 5, 6, seed=4)
    y = T.composite(te.Tensor(x), bg, scale=2.0).data
    a = 0.5 + x[:, 3:] / 4.0
    np.testing.assert_allclose(y, a * x[:, :3] + (1 - a) * bg, rtol=1e-12)
    assert te.gradcheck(lambda t: T.composite(t, bg, scale=2.0), [x])
    # fully opaque shows the colours, fully transparent the background
    x[:, 3] = 2.0
    np.testing.assert_allclose(T.composite(te.Tensor(x), bg, 2.0).data, x[:, :3])
    x[:, 3] = -2.0
    np.testing.assert_allclose(T.composite(te.Tensor(x), bg, 2.0).data, bg)


def test_random_backgrounds_stay_in_their_part_of_the_range_and_are_seeded():
    lo, hi = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 2.0, 4.0])
    for kind, (f0, f1) in T.BACKGROUNDS.items():
        b = T.random_backgrounds(np.random.default_rng(0), 40, lo, hi, (8, 9), kind)
        assert b.shape == (40, 3, 8, 9) and b.dtype == np.float32
        frac = (b - lo[:, None, None]) / (hi - lo)[:, None, None]
        assert frac.min() >= f0 - 1e-6 and frac.max() <= f1 + 1e-6, kind
        np.testing.assert_array_equal(b, T.random_backgrounds(np.random.default_rng(0), 40, lo, hi, (8, 9), kind))
    # both kinds are drawn: flat colours and smooth noise
    b = T.random_backgrounds(np.random.default_rng(1), 40, lo, hi, (8, 9), "any")
    spread = np.ptp(b.reshape(40, 3, -1), axis=2).max(axis=1)
    assert (spread == 0).any() and (spread > 0).any()
    np.testing.assert_array_equal(T.backdrop(lo, hi, "dark")[:, 0, 0], lo.astype(np.float32))
    with pytest.raises(ValueError, match="unknown background kind 'grey'"):
        T.random_backgrounds(np.random.default_rng(0), 1, lo, hi, (4, 4), "grey")


def test_optimize_with_backgrounds_draws_an_opaque_object_and_a_clear_rest():
    """Maximise the brightness of a centre square, seen over random dark backgrounds:
    only an opaque, bright square helps, and the opacity prior clears the rest."""
    H = W = 12
    inside = np.zeros((1, 1, H, W), np.float32)
    inside[..., 4:8, 4:8] = 1

    def objective(x):                                     # mean brightness inside the square
        return (x * te.Tensor(inside)).sum(axis=(1, 2, 3)) * (1.0 / 16)

    lo, hi = np.full((3, 1, 1), -1.0, np.float32), np.full((3, 1, 1), 1.0, np.float32)
    kw = dict(steps=150, lr=0.05, optimizer="adam", bounds=(lo, hi), scale=1.0, backgrounds="dark",
              opacity=0.3, progress=False)
    r = optimize(objective, np.zeros((2, 3, H, W), np.float32), seed=3, **kw)
    assert r.x.shape == (2, 3, H, W) and r.alpha.shape == (2, 1, H, W)
    assert r.alpha.min() >= 0 and r.alpha.max() <= 1
    sq = inside[0, 0].astype(bool)
    assert r.alpha[:, 0][:, sq].min() > 0.95                     # the square is opaque ...
    assert r.alpha[:, 0][:, ~sq].max() < 0.05                    # ... the rest transparent
    assert r.x[:, :, sq].min() > 0.9                             # bright, shown over black
    np.testing.assert_allclose(r.x[:, :, ~sq], -1.0, atol=0.1)
    assert "opacity" in r.history and r.history["opacity"].shape == (150, 2)
    np.testing.assert_array_equal(r.x, optimize(objective, np.zeros((2, 3, H, W), np.float32), seed=3, **kw).x)
    with pytest.raises(ValueError, match="unknown backgrounds 'grey'"):
        optimize(objective, np.zeros((1, 3, H, W), np.float32), steps=1, backgrounds="grey", progress=False)


def test_recipe_lookup():
    table = {"a": dict(steps=3, lr=0.1), "b": dict(steps=5)}
    assert recipe("a", table, lr=0.5, steps=None) == dict(steps=3, lr=0.5)
    with pytest.raises(ExplainError, match="unknown recipe 'c'.*'a', 'b'"):
        recipe("c", table)


# --------------------------------------------------------------------------
# recipes and the every-layer inversion on a tiny network
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    from test_explain import trained_tiny
    return trained_tiny()


def test_every_recipe_runs_and_unknown_names_are_refused(tiny_model):
    X = te.explain
    for name in X.visualize.CLASS_MODEL_RECIPES:
        v = X.class_model(tiny_model, ["cat", "goose"], steps=30, recipe=name, progress=False)
        assert np.isfinite(v.image).all() and np.all(v.final > v.history["score"][0]), name
    for name, settings in X.inversion.INVERT_RECIPES.items():
        if settings.get("init") in ("decoder", "exemplar"):    # need a shipped decoder / the 64x64 scene bank:
            continue                                            # tests/test_decoder.py, test_exemplar.py run them
        inv = X.invert(tiny_model, np.zeros((3, 12, 12), np.float32) + 0.5, layer="fc7", inits=2, steps=20,
                       recipe=name, progress=False)
        assert np.isfinite(inv.images).all() and inv.history["objective"][-1].max() < inv.history["objective"][0].min()
    with pytest.raises(ExplainError, match="unknown recipe 'fancy'"):
        X.class_model(tiny_model, "cat", recipe="fancy", progress=False)
    with pytest.raises(ExplainError, match="unknown setting"):
        X.invert(tiny_model, np.zeros((3, 12, 12), np.float32), recipe="natural", tvv=1.0, progress=False)
    # the paper's recipe is what its name says: zero start, plain ascent, L2 only
    s = X.visualize.CLASS_MODEL_RECIPES["simonyan2014"]
    assert s["optimizer"] == "sgd" and s["momentum"] == 0 and "tv" not in s and "param" not in s


def test_invert_layers_matches_each_row_to_its_own_layer(tiny_model):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((1, 3, 12, 12))).astype(np.float32)
    x[0, :, 1:5, 1:5] += 1.5
    res = te.explain.invert_layers(tiny_model, x, ["conv1", "pool2", "fc7"], steps=200, progress=False)
    assert res.layers == ["conv1", "pool2", "fc7"] and res.images.shape == (3, 3, 12, 12)
    # the errors it reports are each row's own layer's, recomputed here independently
    for k, layer in enumerate(res.layers):
        a = te.explain.feature_code(tiny_model, res.images[k], layer)
        c = te.explain.feature_code(tiny_model, x, layer)
        assert res.errors[k] == pytest.approx(np.linalg.norm(a - c) / np.linalg.norm(c), rel=1e-4)
    assert np.all(res.errors < 0.3), res.errors
    # the same row alone gives the same reconstruction (rows do not interact)
    one = te.explain.invert(tiny_model, x, layer="pool2", inits=1, steps=200, progress=False)
    assert res.errors[1] == pytest.approx(one.errors[0], abs=0.05)
    default = [l for l in te.explain.inversion.FIGURE_LAYERS if l in tiny_model.layer_names]
    assert te.explain.invert_layers(tiny_model, x, steps=1, progress=False).layers == default
