"""The learned inversion decoders (explain/decoder.py; Dosovitskiy & Brox 2016): their
layers against PyTorch, the shipped files, the checks, and the "decoder" inversion recipe."""
import _need as need
import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.core.architecture import from_architecture
from tinygrad_explain.explain import ExplainError
from tinygrad_explain.explain import decoder as dec
from tinygrad_explain.modelfiles.modelfile import ModelFileError, load_model, save_model
from tinygrad_explain.training.train import he_init


def small_decoder(code_shape=(6,), image_shape=(3, 4, 4), factor=2):
    arch = dec.decoder_architecture(code_shape, image_shape, factor)
    return from_architecture(arch, dec.decoder_input_shape(code_shape))


def test_architecture_shapes():
    d = small_decoder((6,))
    assert d.input_shape == (6, 1, 1)
    assert d.shapes["unflatten"] == (3, 4, 4)
    assert d.shapes[d.layer_names[-1]] == (3, 8, 8)
    d = small_decoder((2, 3, 3), (3, 5, 5), 3)
    assert d.input_shape == (2, 3, 3) and d.shapes["upsample"] == (3, 15, 15)


def test_layer_specs_are_checked():
    with pytest.raises(ValueError, match="factor"):
        nn.Upsample(0)
    with pytest.raises(ValueError, match="shape"):
        nn.Unflatten([3, 0])
    with pytest.raises(ValueError, match="cannot be read as"):
        from_architecture([dict(name="u", type="unflatten", shape=[2, 2, 2])], (5, 1, 1))


def test_decoder_matches_torch_float64():
    """A whole decoder (linear, unflatten, nearest upsampling, then a convolution) against PyTorch in float64:
    the output and the gradient of a weighted sum with respect to the code."""
    torch = need.module("torch")
    from tinygrad_explain.testing.torch_reference import from_network
    arch = dec.decoder_architecture((6,), (3, 4, 4), 2) + [
        dict(name="conv", type="conv", in_channels=3, out_channels=2, kernel_size=3, padding=1)]
    d = from_architecture(arch, (6, 1, 1))
    he_init(d, np.random.default_rng(0), last_std=None)
    seq = from_network(d).double()
    d.astype(np.float64)
    z = np.random.default_rng(1).standard_normal((3, 6, 1, 1))
    w = np.random.default_rng(2).standard_normal((3, 2, 8, 8))
    zt = te.Tensor(z, requires_grad=True)
    (d(zt) * te.Tensor(w)).sum().backward()
    tz = torch.tensor(z, requires_grad=True)
    out = seq(tz.reshape(3, 6))
    (out * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(d(te.Tensor(z)).numpy(), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(zt.grad, tz.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_decoder_file_round_trip(tmp_path):
    d = small_decoder((6,))
    he_init(d, np.random.default_rng(0), last_std=None)
    p = save_model(d, tmp_path / "d.h5")
    d2 = load_model(p)
    assert d2.architecture() == d.architecture()
    z = np.random.default_rng(1).standard_normal((2, 6, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(d2(te.Tensor(z)).numpy(), d(te.Tensor(z)).numpy())


def test_bad_upsample_in_a_file_names_the_layer(tmp_path):
    import json

    import h5py
    d = small_decoder((6,))
    p = save_model(d, tmp_path / "d.h5")
    with h5py.File(p, "r+") as f:
        arch = json.loads(f.attrs["architecture"])
        arch[[a["name"] for a in arch].index("upsample")]["factor"] = -2
        f.attrs["architecture"] = json.dumps(arch)
    with pytest.raises(ModelFileError, match="factor"):
        load_model(p)


@pytest.fixture(scope="module")
def model():
    return te.load_model()


@pytest.mark.parametrize("layer", dec.DECODER_LAYERS)
def test_shipped_decoders_fit_the_embedded_model(model, layer):
    d = dec.load_decoder(model, layer)
    dec.check_decoder(model, layer, d)
    assert dec.decoder_path(model, layer).name == f"fashion_scenes_alexnet_decoder_{layer}.h5"


def test_decoder_refuses_a_wrong_layer(model):
    d = dec.load_decoder(model, "fc7")
    with pytest.raises(ExplainError, match="gives codes of shape"):
        dec.decode(model, np.zeros(1152), "pool5", decoder=d)
    with pytest.raises(ExplainError, match="no decoder for layer 'conv3'"):
        te.explain.invert(model, np.zeros((3, 64, 64), np.float32) + 0.5, "conv3", recipe="decoder", steps=1,
                          progress=False)
    with pytest.raises(ExplainError, match="init must be"):
        te.explain.invert(model, np.ones((3, 64, 64), np.float32), "fc7", init="nope", steps=1, progress=False)


def test_decoder_start_is_the_decoders_image(model):
    """With zero steps and no random start, the "decoder" recipe returns D(phi0) (up to the
    float32 rounding of the Fourier parameterisation's round trip); the fc7 decoder's picture
    of a held-out boot correlates with the boot."""
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain import quality as q
    sample = scenes.load_sample()
    i = int(np.flatnonzero(sample["labels"] == 9)[0])
    x = te.image.load(sample["images"][i], model)
    inv = te.explain.invert(model, x, "fc7", inits=1, recipe="decoder", steps=0, init_std=0.0, progress=False)
    np.testing.assert_allclose(inv.images, dec.decode(model, te.explain.feature_code(model, x, "fc7"), "fc7"),
                               rtol=0, atol=1e-5)
    r = q.reconstruction_correlation(inv.display[0], sample["images"][i])["original"]
    assert r > 0.5, r


def test_invert_layers_uses_decoders_where_shipped(model):
    """Rows of layers with a decoder start at D(code), the others at the natural recipe's start."""
    from tinygrad_explain.data import scenes
    sample = scenes.load_sample()
    x = te.image.load(sample["images"][0], model)
    a = te.explain.invert_layers(model, x, ["conv3", "fc7"], recipe="decoder", steps=0, progress=False)
    b = te.explain.invert_layers(model, x, ["conv3", "fc7"], recipe="natural", steps=0, progress=False)
    np.testing.assert_array_equal(a.images[0], b.images[0])
    assert not np.allclose(a.images[1], b.images[1])


def test_decoder_recipe_lowers_the_objective(model):
    from tinygrad_explain.data import scenes
    sample = scenes.load_sample()
    x = te.image.load(sample["images"][3], model)
    inv = te.explain.invert(model, x, "pool5", inits=2, recipe="decoder", steps=20, progress=False)
    assert np.isfinite(inv.images).all()
    assert inv.history["objective"][-1].max() < inv.history["objective"][0].min()


def test_main_job_figure_of_the_decoders(model, tmp_path):
    """figures.fig_inversion_decoder: one row per shipped decoder (pool5, fc6, fc7) on the
    embedded model; nothing for a model without decoders."""
    from tinygrad_explain.apps import figures
    inp = figures.embedded_inputs(model, n=2)
    inp.settings = {"invert_decoder": dict(steps=3, progress=False)}
    summary = {}
    fig = figures.fig_inversion_decoder(inp, tmp_path, summary)
    assert fig.file == "inversion_decoder.png" and (tmp_path / "inversion_decoder.png").stat().st_size > 1000
    assert list(summary["inversion_decoder"]) == list(dec.DECODER_LAYERS)
    for row in summary["inversion_decoder"].values():
        assert -1 <= row["decoder_r"] <= 1 and row["refined_error"] >= 0
    other = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)     # no file, so no decoders
    inp.model = other
    assert figures.fig_inversion_decoder(inp, tmp_path, {}) == []


def test_decoders_shared_between_threads(model):
    """Threads that load (first use) and run the shipped decoders at once get what one thread
    gets alone, and each decoder file is read once."""
    import threading
    codes = {l: np.random.default_rng(k).standard_normal(int(np.prod(model.shapes[l]))).astype(np.float32)
             for k, l in enumerate(dec.DECODER_LAYERS)}
    want = {l: dec.decode(model, c, l) for l, c in codes.items()}
    with dec._cache_lock:
        dec._cache.clear()
    jobs = [l for l in dec.DECODER_LAYERS for _ in range(3)]
    got, barrier = [None] * len(jobs), threading.Barrier(len(jobs))

    def run(n):
        barrier.wait()
        got[n] = dec.decode(model, codes[jobs[n]], jobs[n])
    ts = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(np.array_equal(g, want[l]) for g, l in zip(got, jobs))
    assert list(dec._cache.keys()) == [model] and sorted(dec._cache[model]) == sorted(dec.DECODER_LAYERS)


def test_decoder_recipe_on_a_model_without_a_file():
    """A network built in memory has no shipped decoders: invert refuses the recipe in one
    line, invert_layers starts every row as "natural"."""
    m = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)
    x = np.zeros((3, 64, 64), np.float32) + 0.5
    with pytest.raises(ExplainError, match="not loaded from a file"):
        te.explain.invert(m, x, "fc7", recipe="decoder", steps=1, progress=False)
    a = te.explain.invert_layers(m, x, ["conv3", "fc7"], recipe="decoder", steps=0, progress=False)
    b = te.explain.invert_layers(m, x, ["conv3", "fc7"], recipe="natural", steps=0, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
