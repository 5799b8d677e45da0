"""The per-model caches hold their model weakly: an entry goes when its model goes, and a new model
never receives a freed model's entry (a cache keyed by ``id(model)`` would do both wrong: ids are
reused, and nothing is ever evicted)."""
import gc

import numpy as np

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.explain import recipes


def tiny(mean):
    """A 3-channel 8x8 network; the colour matrix depends only on its input and preprocessing."""
    m = te.Network([("conv", nn.Conv2d(3, 2, 3)), ("relu", nn.ReLU())], input_shape=(3, 8, 8))
    m.preprocessing = dict(mean=list(mean), std=[0.2, 0.3, 0.4], channel_order="RGB", pixel_scale=1.0)
    return m


def test_natural_colour_is_dropped_with_its_model_and_never_handed_to_another():
    before = len(recipes._COLOURS)
    a = tiny([0.1, 0.2, 0.3])
    colour_a = recipes.natural_colour(a).copy()
    assert len(recipes._COLOURS) == before + 1
    assert recipes.natural_colour(a) is recipes.natural_colour(a)        # computed once per live model
    del a
    gc.collect()
    assert len(recipes._COLOURS) == before                               # gone with its model
    # many new models, some of them at a freed one's address: each gets the matrix of its own space
    # (std differs per channel, so the covariance in model space differs from a's)
    for _ in range(3):
        b = tiny([0.5, 0.5, 0.5])
        b.preprocessing["std"] = [0.4, 0.2, 0.3]
        colour_b = recipes.natural_colour(b)
        assert not np.allclose(colour_b, colour_a)
        del b
        gc.collect()
    assert len(recipes._COLOURS) == before


def test_decoders_are_dropped_with_their_model():
    """The decoders loaded for a model (explain.decoder) live as long as that model, like the
    colour matrices: a second model gets its own, and both go when their models go."""
    from tinygrad_explain.explain import decoder
    a, b = te.load_model(), te.load_model()
    da = decoder.load_decoder(a, "fc7")
    assert decoder.load_decoder(a, "fc7") is da                       # loaded once per live model
    db = decoder.load_decoder(b, "fc7")
    assert db is not da                                               # each model its own
    assert a in decoder._cache and b in decoder._cache
    n = len(decoder._cache)
    del a, da
    gc.collect()
    assert len(decoder._cache) == n - 1 and b in decoder._cache
