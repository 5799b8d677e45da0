"""Zeiler & Fergus feature visualisation (te.explain.features): receptive fields and top activations."""
import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.explain import features as ZF


def test_receptive_field_sizes_of_caffe_alexnet():
    """The well-known receptive fields of bvlc_alexnet: conv1 11, pool1 19, conv2 51, pool2 67,
    conv3 99, conv4 131, conv5 163, pool5 195 pixels."""
    m = te.models.alexnet("caffe")
    want = {"conv1": 11, "pool1": 19, "conv2": 51, "pool2": 67, "conv3": 99, "conv4": 131, "conv5": 163, "pool5": 195}
    for layer, r in want.items():
        assert ZF._geometry(m, layer)[0] == r, layer
    # conv1 (stride 4, no padding): the neuron at (i, j) sees pixels 4i..4i+10, 4j..4j+10
    assert ZF.receptive_field(m, "conv1", 3, 5) == (12, 23, 20, 31)
    with pytest.raises(te.explain.ExplainError, match="no receptive field"):
        ZF.receptive_field(m, "fc6", 0, 0)


@pytest.mark.parametrize("layer, i, j", [("conv1", 5, 9), ("pool1", 7, 3), ("conv2", 6, 8), ("conv3", 3, 3),
                                         ("conv3", 0, 6)])
def test_receptive_field_is_the_support_of_the_gradient(layer, i, j):
    """The input pixels on which one neuron depends are exactly its receptive field: the
    gradient of the neuron (without ReLU gating: a linear copy of the network's convolutions
    and pools, here through max-pool switches of a random image) vanishes outside the field,
    and reaches its first and last rows and columns where the field is not clipped."""
    te.manual_seed(0)
    m = te.models.scene_alexnet(width=(8, 8, 8, 8, 8), fc=16)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    # many channels: with all of them the union of the paths covers the whole field
    g = np.zeros((3, 64, 64))
    for c in range(m.shapes[layer][0]):
        g += np.abs(te.explain.gradient(m, x, (layer, c, i, j), rule="deconvnet")[0].astype(np.float64))
    support = g.sum(0) > 0
    y0, y1, x0, x1 = ZF.receptive_field(m, layer, i, j)
    inside = np.zeros_like(support)
    inside[y0:y1, x0:x1] = True
    assert support.any() and not (support & ~inside).any()
    rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
    r, jump, start = ZF._geometry(m, layer)
    if start + i * jump - (r - 1) / 2 >= 0:                   # not clipped at the top
        assert rows[0] == y0
    if start + j * jump + (r - 1) / 2 <= 63:                  # not clipped at the right
        assert cols[-1] == x1 - 1


def test_top_activations_known_answer():
    maps = np.zeros((5, 4, 6), np.float32)
    maps[2, 1, 3] = 9.0
    maps[4, 3, 0] = 7.0
    maps[0, 0, 5] = 8.0
    maps[1] = -1.0
    top = ZF.top_activations(maps, 3)
    assert top == [(2, 1, 3, 9.0), (0, 0, 5, 8.0), (4, 3, 0, 7.0)]
    with pytest.raises(te.explain.ExplainError):
        ZF.top_activations(maps[0], 3)


def test_activation_maps_match_the_forward_pass():
    te.manual_seed(1)
    m = te.models.scene_alexnet(width=(8, 8, 8, 8, 8), fc=16)
    x = np.random.default_rng(1).standard_normal((5, 3, 64, 64)).astype(np.float32)
    maps = ZF.activation_maps(m, x, ["conv2", "conv1"], batch_size=2)
    with te.no_grad():
        for layer in ("conv1", "conv2"):
            np.testing.assert_allclose(maps[layer], m(x, until=layer).numpy(), rtol=1e-5, atol=1e-6)
