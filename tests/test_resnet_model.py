"""The shipped scene ResNet (weights/fashion_scenes_resnet.h5, ``te.load_model("resnet")``).

Made by scripts/train_resnet.py: trained by PyTorch, exported to ONNX, brought in by
the project's ONNX importer (docs/resnet.md).  These tests check the file a user
gets: what it holds, its accuracy on the shipped scenes, and that this engine's
scores, input gradients and Grad-CAM on it equal an independent PyTorch
implementation that runs the file's own weights node by node (float64).
"""
import numpy as np
import pytest
from _reference import torch_rule_relu

import tinygrad_explain as te
from tinygrad_explain.data import scenes
from tinygrad_explain.data.fashion_mnist import CLASS_NAMES
from tinygrad_explain.modelfiles.modelfile import MODEL_NAMES

PATH = MODEL_NAMES["resnet"]
#: measured when the file was made (docs/resnet.md): correct on the 500 shipped test scenes
SAMPLE_CORRECT = 455
#: the last residual block's output, Grad-CAM's layer
LAST_BLOCK = "layer3.0.relu_1"


@pytest.fixture(scope="module")
def model():
    return te.load_model("resnet")


@pytest.fixture(scope="module")
def sample():
    return scenes.load_sample()


def test_the_file_holds_a_graph_resnet_with_its_preprocessing(model):
    assert PATH.stat().st_size <= 10e6
    assert type(model).__name__ == "GraphNetwork"
    assert model.class_names == list(CLASS_NAMES)
    assert tuple(model.input_shape) == (3, 64, 64)
    pre = model.preprocessing
    assert pre["channel_order"] == "RGB" and pre["pixel_scale"] == 1.0
    assert np.all(np.abs(np.asarray(pre["mean"]) - 0.5) < 0.05) and np.all(np.abs(np.asarray(pre["std"]) - 0.28) < 0.05)
    types = [model.layers[n].type for n in model.layer_names]
    assert types.count("add") == 3 and "global_avgpool" in types and "batchnorm" not in types   # BN folded
    adds = [n for n in model.layer_names if model.layers[n].type == "add"]
    assert all(len(model.inputs[n]) == 2 for n in adds)
    assert model.layer_names[-1] == "fc" and LAST_BLOCK in model.layer_names


def test_accuracy_on_the_shipped_scenes(model, sample):
    """The number in docs/resnet.md, to the scene (float32 here; a BLAS that rounds differently
    may flip a borderline scene, hence the margin of two)."""
    x = np.concatenate([te.image.load(im, model) for im in sample["images"]])
    _, probs = te.explain.predict(model, x)
    correct = int((probs.argmax(1) == sample["labels"]).sum())
    assert abs(correct - SAMPLE_CORRECT) <= 2, correct
    assert correct >= 0.88 * len(x)


# ----------------------------------------------------------------------------
# an independent implementation: the file's weights run node by node in torch
# ----------------------------------------------------------------------------
def torch_forward(model, x, keep=None, guided=False):
    """Run ``model``'s graph in torch.nn.functional (float64) on NCHW tensor ``x``;
    returns (scores, {node: output}) -- the output of ``keep`` is a leaf that gets a ``.grad``."""
    import torch
    import torch.nn.functional as F

    guided_relu = torch_rule_relu("guided")

    state = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in model.state_dict().items()}
    out = {"input": x}
    for name in model.layer_names:
        spec, ins = model.layers[name].spec(), [out[i] for i in model.inputs[name]]
        t = spec["type"]
        if t == "conv":
            y = F.conv2d(ins[0], state[f"{name}.weight"], state[f"{name}.bias"], spec["stride"], spec["padding"],
                         groups=spec["groups"])
        elif t == "relu":
            y = guided_relu(ins[0]) if guided else F.relu(ins[0])
        elif t == "maxpool":
            y = F.max_pool2d(ins[0], spec["kernel_size"], spec["stride"], spec["padding"],
                             ceil_mode=spec.get("ceil_mode", False))
        elif t == "add":
            y = ins[0] + ins[1]
        elif t == "global_avgpool":
            y = ins[0].mean(dim=(2, 3), keepdim=True)
        elif t == "flatten":
            y = ins[0].flatten(1)
        elif t == "linear":
            y = F.linear(ins[0], state[f"{name}.weight"], state[f"{name}.bias"])
        else:
            raise AssertionError(f"node {name}: type {t} not in this reference")
        if name == keep:                    # a leaf from here up: its .grad is dS/d(this output)
            y = y.detach().requires_grad_(True)
        out[name] = y
    return out[model.layer_names[-1]], out


@pytest.fixture(scope="module")
def model64(model):
    return te.load_model("resnet").astype(np.float64)


@pytest.fixture(scope="module")
def x64(model, sample):
    return np.concatenate([te.image.load(sample["images"][i], model) for i in (0, 1, 2, 3)]).astype(np.float64)


def test_scores_equal_torch(model64, x64):
    torch = pytest.importorskip("torch")
    ref, _ = torch_forward(model64, torch.from_numpy(x64))
    with te.no_grad():
        got = model64(x64).numpy()
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rule", ["backprop", "guided"])
def test_input_gradients_equal_torch(model64, x64, rule):
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(x64.copy()).requires_grad_(True)
    scores, _ = torch_forward(model64, xt, guided=rule == "guided")
    c = scores.argmax(1)
    scores[torch.arange(len(c)), c].sum().backward()
    got = te.explain.gradient(model64, x64, [int(v) for v in c], rule=rule)
    scale = float(np.abs(xt.grad.numpy()).max())
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=0, atol=1e-10 * scale)
    assert scale > 0


def test_gradcam_at_the_last_block_equals_torch(model64, x64):
    torch = pytest.importorskip("torch")
    scores, outs = torch_forward(model64, torch.from_numpy(x64), keep=LAST_BLOCK)
    c = scores.argmax(1)
    scores[torch.arange(len(c)), c].sum().backward()
    a, g = outs[LAST_BLOCK].detach().numpy(), outs[LAST_BLOCK].grad.numpy()
    want = np.maximum((g.mean(axis=(2, 3), keepdims=True) * a).sum(1), 0)
    got = te.explain.gradcam(model64, x64, [int(v) for v in c], layer=LAST_BLOCK, upsample_to_input=False)
    assert te.explain.attribution.default_cam_layer(model64) == LAST_BLOCK
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * float(np.abs(want).max()))
    assert (want > 0).any()
