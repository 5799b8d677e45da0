"""Inversion by retrieval (explain/exemplar.py; the "exemplar" recipe): the bank file, the
distances against a direct computation, the decoder's re-ranking, the recipe returning the
bank scenes, the errors, threads, and what the independent judge makes of the result."""
import threading

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.data import scenes
from tinygrad_explain.explain import ExplainError
from tinygrad_explain.explain import exemplar as ex

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return te.load_model()


@pytest.fixture(scope="module")
def sample():
    return scenes.load_sample()


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory, sample):
    """12 test scenes (indices 100..111) as a bank file."""
    p = tmp_path_factory.mktemp("bank") / "bank.npz"
    np.savez_compressed(p, images=sample["images"][100:112], labels=sample["labels"][100:112],
                        indices=sample["indices"][100:112], seed=np.asarray(0))
    return ex.load_bank(p)


def test_shipped_bank_is_training_scenes(sample):
    """2,000 scenes of the training split at seed 100, none of them a test scene (the sample
    and the benchmarks use the test split): no bank picture is (nearly) one of the sample's."""
    b = ex.load_bank()
    assert b["images"].shape == (2000, 64, 64, 3) and b["images"].dtype == np.uint8
    assert int(b["seed"]) == 100 and np.array_equal(b["indices"], np.arange(2000))
    assert set(np.unique(b["labels"])) == set(range(10))
    # RMS distance (0..255) of every bank picture to every sample picture; a re-rendered scene is < 0.1
    # away (platform rounding), the nearest pair is 22.9 apart
    A = b["images"].reshape(len(b["images"]), -1).astype(np.float64)
    T = sample["images"].reshape(len(sample["images"]), -1).astype(np.float64)
    d2 = (A * A).sum(1)[:, None] + (T * T).sum(1)[None, :] - 2 * A @ T.T
    assert np.sqrt(np.maximum(d2, 0).min() / A.shape[1]) > 5


def _have_fashion_mnist():
    try:
        from tinygrad_explain.data.fashion_mnist import load_fashion_mnist
        load_fashion_mnist("test")
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _have_fashion_mnist(), reason="needs Fashion-MNIST (dataset-fashion-mnist)")
def test_bank_is_the_training_split_and_shares_no_item_with_the_test_split():
    """Bank scene i is training scene i at seed 100, rendered again here (to one grey level: on
    this machine 2 of 2,000 differ from the shipped file by 1 in 3 pixels, OpenCV rounding), and no
    bank item (the 28x28 Fashion-MNIST garment inside the scene) is an item of the test split,
    under any background."""
    from tinygrad_explain.data.fashion_mnist import load_fashion_mnist
    b = ex.load_bank()
    again = scenes.render_images("train", int(b["seed"]), 0, len(b["images"]))
    diff = np.abs(again.astype(np.int16) - b["images"].astype(np.int16))
    assert diff.max() <= 1 and (diff.reshape(len(diff), -1).max(1) == 0).mean() > 0.99
    train_items, train_labels = load_fashion_mnist("train")
    test_items, _ = load_fashion_mnist("test")
    np.testing.assert_array_equal(b["labels"], train_labels[b["indices"]])
    test_set = {item.tobytes() for item in test_items}
    assert not [i for i in b["indices"] if train_items[i].tobytes() in test_set]
    # ... while the same indices of the test split are other scenes altogether
    other = scenes.render_images("test", int(b["seed"]), 0, 20)
    assert np.abs(other.astype(np.int16) - b["images"][:20].astype(np.int16)).reshape(20, -1).mean(1).min() > 5


def test_distances_match_a_direct_computation(model, sample, small_bank):
    """Every layer's squared normalised distances from one pass over the bank equal those of
    feature_code on each scene alone (float64 sums), for a kept (fc7) and an unkept (conv2) layer."""
    x = te.image.load(sample["images"][0], model)
    codes = {l: te.explain.feature_code(model, x, l) for l in ("conv2", "fc7")}
    d2 = ex.bank_distances(model, codes, small_bank)
    for l, c in codes.items():
        c = c.astype(np.float64).ravel()
        want = [((te.explain.feature_code(model, te.image.to_model(im, model), l).astype(np.float64).ravel() - c) ** 2
                 ).sum() / (c ** 2).sum() for im in small_bank["images"]]
        np.testing.assert_allclose(d2[l], want, rtol=1e-5)
    assert ex.bank_distances(model, {"fc7": codes["fc7"]}, small_bank)["fc7"].tolist() == d2["fc7"].tolist()


def test_kept_codes_follow_the_weights(small_bank):
    """The kept bank codes belong to the weights they were computed with: a new weight array,
    or an in-place write announced by mark_changed, makes the distances anew."""
    m = te.load_model()
    code = np.ones(512)
    a = ex.bank_distances(m, {"fc7": code}, small_bank)["fc7"]
    w = m.layers["fc7"].weight
    w.data = w.data * 2
    b = ex.bank_distances(m, {"fc7": code}, small_bank)["fc7"]
    assert not np.allclose(a, b)
    w.data[...] = w.data / 2
    w.mark_changed()
    np.testing.assert_allclose(ex.bank_distances(m, {"fc7": code}, small_bank)["fc7"], a, rtol=1e-6)


def test_a_bank_scenes_own_code_retrieves_it(model, small_bank):
    for k in (0, 7):
        code = te.explain.feature_code(model, te.image.to_model(small_bank["images"][k], model), "fc6")
        idx, d2 = ex.nearest(model, "fc6", code, 1, bank=small_bank, rerank=False)
        assert idx.tolist() == [k] and d2[0] < 1e-10


def test_decoder_reranks_the_nearest_candidates(model, sample, small_bank):
    """With a decoder (fc7), the first scene is, of the `candidates` nearest by code, the one
    whose blurred grey picture correlates best with D(code); without re-ranking the order is
    the code distance's."""
    from tinygrad_explain.explain import quality as q
    from tinygrad_explain.explain.decoder import decode
    code = te.explain.feature_code(model, te.image.load(sample["images"][3], model), "fc7")
    plain, d2 = ex.nearest(model, "fc7", code, 4, candidates=4, bank=small_bank, rerank=False)
    assert np.all(np.diff(d2) >= 0)
    ranked, _ = ex.nearest(model, "fc7", code, 4, candidates=4, bank=small_bank)
    assert sorted(ranked.tolist()) == sorted(plain.tolist())
    dpic = te.image.to_pictures(decode(model, code, "fc7"), model)[0]
    r = [q.reconstruction_correlation(small_bank["images"][i], dpic)["original"] for i in ranked]
    assert np.all(np.diff(r) <= 1e-9), r


def test_exemplar_recipe_returns_the_bank_scenes(model, sample):
    """recipe="exemplar" (steps=0): the first `inits` scenes of nearest(), unchanged (up to the
    float32 rounding of the Fourier round trip), errors their code distances; invert_layers
    gives each row its own layer's scene."""
    x = te.image.load(sample["images"][0], model)
    inv = te.explain.invert(model, x, "fc7", inits=3, recipe="exemplar", progress=False)
    bank = ex.load_bank()
    idx, d2 = ex.nearest(model, "fc7", te.explain.feature_code(model, x, "fc7"), 3)
    np.testing.assert_allclose(inv.images, te.image.to_model(bank["images"][idx], model), rtol=0, atol=1e-5)
    np.testing.assert_allclose(inv.errors, np.sqrt(d2), rtol=1e-4)
    rows = te.explain.invert_layers(model, x, ["pool5", "fc8"], recipe="exemplar", progress=False)
    for k, l in enumerate(rows.layers):
        i, _ = ex.nearest(model, l, te.explain.feature_code(model, x, l), 1)
        np.testing.assert_allclose(rows.images[k], te.image.to_model(bank["images"][i], model)[0], atol=1e-5)
    refined = te.explain.invert(model, x, "fc7", inits=1, recipe="exemplar", steps=30, jitter=0, progress=False)
    assert refined.errors[0] < 0.75 * inv.errors[0]          # steps > 0 refine towards the code (0.15 -> 0.10)


def test_bad_banks_and_models_are_refused(model, tmp_path, small_bank):
    with pytest.raises(ExplainError, match="nope.npz does not exist"):
        ex.load_bank(tmp_path / "nope.npz")
    p = tmp_path / "float.npz"
    np.savez(p, images=np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ExplainError, match="float.npz: needs 'images', uint8"):
        ex.load_bank(p)
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(ExplainError, match="junk.npz: not a readable"):
        ex.load_bank(p)
    p = tmp_path / "pickled.npz"
    np.savez(p, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ExplainError, match="pickled.npz"):
        ex.load_bank(p)
    other = te.models.scene_alexnet(size=96, width=(8, 16, 16, 16, 16), fc=32)
    with pytest.raises(ExplainError, match=r"holds 64x64 RGB scenes, this model takes \(3, 96, 96\)"):
        ex.nearest(other, "fc7", np.zeros(32), bank=small_bank)
    with pytest.raises(ExplainError, match="code has 3 values, layer 'fc7' gives 512"):
        ex.nearest(model, "fc7", np.zeros(3), bank=small_bank)
    with pytest.raises(ExplainError, match="asked for 13 scenes"):
        ex.nearest(model, "fc7", np.ones(512), 13, bank=small_bank)


def test_threads_share_the_banks_codes(model, sample, small_bank):
    """Threads retrieving at once (the first use computes and keeps the codes) get what one
    thread gets alone."""
    codes = [te.explain.feature_code(model, te.image.load(sample["images"][k], model), "fc6") for k in range(4)]
    want = [ex.nearest(model, "fc6", c, 3, bank=small_bank)[0].tolist() for c in codes]
    with ex._lock:
        ex._codes.pop(model, None)
    got, barrier = [None] * 8, threading.Barrier(8)

    def run(n):
        barrier.wait()
        got[n] = ex.nearest(model, "fc6", codes[n % 4], 3, bank=small_bank)[0].tolist()
    ts = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want[n % 4] for n in range(8)]


def test_the_judge_recognises_fc7_exemplars(model, sample):
    """20 held-out scenes (two per class, tests/_heldout.py: the recipe's candidates and steps=0 were
    chosen on the bench's 20 and 40 scenes), inverted from fc7 by retrieval: the independent judge
    names the original's class (its own verdict on the original) for at least 15 of 20.  Measured
    19 of 20 here (on the bench's tuning scenes 17-18 of 20, 0.85-0.88 of 40; docs/explainers.md);
    the margin is two judge decisions.  The natural recipe's optimised fc7 pictures got 0.50-0.65."""
    from _heldout import held_out_scenes

    from tinygrad_explain.explain import quality as q
    chosen = held_out_scenes(sample, per_class=2)
    judge = te.load_model("judge")
    bank = ex.load_bank()
    picks = []
    for i in chosen:
        code = te.explain.feature_code(model, te.image.load(sample["images"][i], model), "fc7")
        picks.append(ex.nearest(model, "fc7", code, 1)[0][0])
    agree = (q.judge_probabilities(judge, bank["images"][picks]).argmax(1)
             == q.judge_probabilities(judge, sample["images"][chosen]).argmax(1))
    assert agree.sum() >= 15, agree.sum()


def test_main_job_figure_of_retrieval(model, tmp_path):
    """figures.fig_inversion_exemplar: pool5 ... fc8 and fc7's five on the embedded model, each
    error the retrieved scene's code distance; nothing for a model of another input size."""
    from tinygrad_explain.apps import figures
    inp = figures.embedded_inputs(model, n=2)
    summary = {}
    fig = figures.fig_inversion_exemplar(inp, tmp_path, summary)
    assert fig.file == "inversion_exemplar.png" and (tmp_path / "inversion_exemplar.png").stat().st_size > 1000
    rows = summary["inversion_exemplar"]
    assert list(rows["layers"]) == list(figures.EXEMPLAR_LAYERS) and len(rows["fc7"]) == 5
    assert rows["fc7"][0] == pytest.approx(rows["layers"]["fc7"]["error"])
    inp.model = te.models.scene_alexnet(size=96, width=(8, 16, 16, 16, 16), fc=32)
    assert figures.fig_inversion_exemplar(inp, tmp_path, {}) == []
