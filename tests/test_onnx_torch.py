"""Proof against independent implementations: torchvision's vgg16_bn, resnet18,
resnet50, mobilenet_v2, squeezenet1_1 and googlenet (written in plain torch after
torchvision's definitions, tests/_reference.py; random weights, non-trivial batch-norm
statistics), exported to ONNX here -- with batch norm folded by the exporter and kept
as nodes -- and loaded by te.

* scores (float32) equal onnxruntime's on the same file and torch's: <= 1e-4 of the
  largest score, for the exporter-folded file, the kept-BN file folded by te at load
  time, and the kept-BN file with batch-norm nodes;
* input gradients (float64, the kept-BN file read with batch-norm nodes, so the
  weights are the file's own numbers) under backprop / deconvnet / guided backprop
  equal Captum's Saliency / Deconvolution / GuidedBackprop on the torch module in
  float64: <= 1e-9 of the largest.  Captum's rules hook nn.ReLU modules only; for
  MobileNetV2's ReLU6 the reference rule is ``RuleReLU6`` below (a custom autograd
  Function: the rule at the lower bound, the upper bound gating as the true gradient),
  put in place of every nn.ReLU6 module;
* the gradient at a named inner node equals Captum's layer gradient
  (LayerGradientXActivation with multiply_by_inputs=False: the gradient alone), Grad-CAM
  at ResNet's last block equals LayerGradCam(model.layer4), and a neuron target equals
  NeuronGradient.

The worst error of every check is printed at the end (``pytest -s``).
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.modelfiles.onnx_import import load_onnx

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
ort = pytest.importorskip("onnxruntime")

from _reference import torch_classifier  # noqa: E402

MODELS = ["vgg16_bn", "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "googlenet"]
FAST = ("resnet18", "squeezenet1_1")     # the rest are marked slow (the whole module: ~5 min on a loaded machine)


def models(names=MODELS):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]
TARGETS = [3, 7]
WORST: dict = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if WORST:
        print("\nmodel x check: worst error (relative to the largest reference value)")
        for (model, check), e in sorted(WORST.items()):
            print(f"  {model:<14} {check:<34} {e:.2e}")


def close(model, check, ours, ref, tol):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max()
    assert scale > 0, f"{model} {check}: the reference is all zero (a test that cannot fail)"
    err = float(np.abs(ours - ref).max() / scale)
    WORST[(model, check)] = max(err, WORST.get((model, check), 0.0))
    assert err <= tol, f"{model} {check}: relative error {err:.3e} > {tol:.0e}"


_CACHE: dict = {}


def exported(name, tmp_path_factory):
    """(torch module float32, input size, {kind: onnx path}) for the folded and kept exports."""
    if name not in _CACHE:
        m, size = torch_classifier(name)
        d = tmp_path_factory.mktemp(name)
        x = torch.zeros(1, 3, size, size)
        paths = {}
        for kind, kw in (("folded", {}), ("kept", dict(training=torch.onnx.TrainingMode.PRESERVE))):
            f = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(m, x, f, dynamo=False, opset_version=13 if kind == "folded" else 17,
                                  input_names=["image"], output_names=["scores"],
                                  dynamic_axes={"image": {0: "N"}}, **kw)
            paths[kind] = d / f"{name}_{kind}.onnx"
            paths[kind].write_bytes(f.getvalue())
        _CACHE[name] = (m, size, paths)
    return _CACHE[name]


def images(size, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size))


@pytest.mark.parametrize("name", models())
def test_scores_equal_onnxruntime_and_torch(name, tmp_path_factory):
    m, size, paths = exported(name, tmp_path_factory)
    x = images(size).astype(np.float32)
    with torch.no_grad():
        ref_torch = m(torch.from_numpy(x)).numpy()
    for kind, path in paths.items():
        ref_ort = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        variants = [("", load_onnx(path))]
        if kind == "kept":
            variants.append((" bn-nodes", load_onnx(path, fold_batch_norm=False)))
        for label, net in variants:
            ours = net(x).numpy()
            close(name, f"scores {kind}{label} vs onnxruntime", ours, ref_ort, 1e-4)
            close(name, f"scores {kind}{label} vs torch", ours, ref_torch, 1e-4)
    # the last variant kept every batch norm as a node; the default folds every one into its conv
    assert sum(layer.type == "batchnorm" for layer in net.layers.values()) == \
        sum(isinstance(b, torch.nn.BatchNorm2d) for b in m.modules())
    assert not any(layer.type == "batchnorm" for layer in load_onnx(paths["kept"]).layers.values())


class RuleReLU6(torch.autograd.Function):
    """The reference rule for ReLU6 (Captum hooks nn.ReLU only): backprop is hardtanh's
    gradient g [0 < x < 6]; deconvnet relu(g) [x < 6]; guided g [0 < x < 6] [g > 0] --
    the ReLU rule at the lower bound, the upper bound gating like the true gradient."""
    rule = "backprop"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        below = (x < 6).to(g.dtype)
        if RuleReLU6.rule == "deconvnet":
            return g.clamp(min=0) * below
        gate = g * (x > 0).to(g.dtype) * below
        return gate.clamp(min=0) if RuleReLU6.rule == "guided" else gate


class _ReLU6(torch.nn.Module):
    def forward(self, x):
        return RuleReLU6.apply(x)


def float64_pair(name, tmp_path_factory):
    """(torch module in float64 with ReLU6 -> RuleReLU6, te model in float64 with BN nodes).
    The reference's batch-norm eps is the ONNX file's, a float32 attribute: GoogLeNet's
    0.001 is 0.0010000000475 there, which moves its gradients by ~6e-9 over 57 layers."""
    m, size, paths = exported(name, tmp_path_factory)
    key = name + ":64"
    if key not in _CACHE:
        import copy
        t = copy.deepcopy(m).double().eval()
        for parent in list(t.modules()):
            for k, child in parent.named_children():
                if isinstance(child, torch.nn.ReLU6):
                    setattr(parent, k, _ReLU6())
                if isinstance(child, torch.nn.BatchNorm2d):    # the file holds eps in float32
                    child.eps = float(np.float32(child.eps))
        _CACHE[key] = (t, load_onnx(paths["kept"], fold_batch_norm=False).astype(np.float64), size)
    return _CACHE[key]


CAPTUM = {"backprop": lambda t: captum_attr.Saliency(t), "deconvnet": lambda t: captum_attr.Deconvolution(t),
          "guided": lambda t: captum_attr.GuidedBackprop(t)}


@pytest.mark.parametrize("rule", list(CAPTUM))
@pytest.mark.parametrize("name", models())
def test_input_gradients_equal_captum(name, rule, tmp_path_factory):
    t, net, size = float64_pair(name, tmp_path_factory)
    x = images(size, seed=1)
    RuleReLU6.rule = rule
    xt = torch.from_numpy(x).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"abs": False} if rule == "backprop" else {}
        ref = CAPTUM[rule](t).attribute(xt, target=TARGETS, **kw).detach().numpy()
    close(name, f"input gradient {rule}", te.explain.gradient(net, x, TARGETS, rule=rule), ref, 1e-9)
    if rule == "backprop" and name == "resnet18":     # Simonyan's saliency map: max over colour channels of |gradient|
        close(name, "saliency map", te.explain.saliency(net, x, TARGETS), np.abs(ref).max(axis=1), 1e-9)


INNER = {   # a named inner node per model and the torch module whose output it is
    "vgg16_bn": ("features.32", lambda t: t.features[32]),
    "resnet18": ("layer3.1.relu_1", lambda t: t.layer3),
    "resnet50": ("layer2.3.add", None),
    "mobilenet_v2": ("features.5.add", lambda t: t.features[5]),
    "squeezenet1_1": ("features.7.concat", lambda t: t.features[7]),
    "googlenet": ("inception4a.concat", lambda t: t.inception4a),
}


@pytest.mark.parametrize("name", models([n for n in MODELS if INNER[n][1] is not None]))
def test_gradient_at_a_named_node_equals_captum(name, tmp_path_factory):
    t, net, size = float64_pair(name, tmp_path_factory)
    node, module = INNER[name]
    assert node in net.layer_names
    x = images(size, seed=2)
    RuleReLU6.rule = "backprop"
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = captum_attr.LayerGradientXActivation(t, module(t), multiply_by_inputs=False).attribute(
        xt, target=TARGETS).detach().numpy()
    close(name, f"gradient at {node}", te.explain.gradient(net, x, TARGETS, layer=node), ref, 1e-9)


@pytest.mark.parametrize("name,node,module", [
    ("resnet18", "layer4.1.relu_1", lambda t: t.layer4),
    pytest.param("resnet50", "layer4.2.relu_2", lambda t: t.layer4, marks=pytest.mark.slow),
    pytest.param("googlenet", "inception5b.concat", lambda t: t.inception5b, marks=pytest.mark.slow),
    pytest.param("mobilenet_v2", "features.18.2", lambda t: t.features[18], marks=pytest.mark.slow),
])
def test_gradcam_at_the_last_block_equals_layer_gradcam(name, node, module, tmp_path_factory):
    """Grad-CAM's default node is the last block's output; equal to LayerGradCam there."""
    t, net, size = float64_pair(name, tmp_path_factory)
    assert te.explain.attribution.default_cam_layer(net) == node
    x = images(size, seed=3)
    RuleReLU6.rule = "backprop"
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = captum_attr.LayerGradCam(t, module(t)).attribute(xt, target=TARGETS, relu_attributions=True)
    ours = te.explain.gradcam(net, x, TARGETS, upsample_to_input=False)
    close(name, f"Grad-CAM at {node}", ours, ref.detach().numpy()[:, 0], 1e-9)
    np.testing.assert_array_equal(ours, te.explain.gradcam(net, x, TARGETS, layer=node, upsample_to_input=False))


@pytest.mark.parametrize("name,node,module", [
    ("resnet18", "layer3.1.relu_1", lambda t: t.layer3),
    pytest.param("mobilenet_v2", "features.17.conv.1.2", lambda t: t.features[17].conv[1][2],
                 marks=pytest.mark.slow),
    pytest.param("googlenet", "inception3b.concat", lambda t: t.inception3b, marks=pytest.mark.slow),
])
def test_neuron_target_equals_neuron_gradient(name, node, module, tmp_path_factory):
    t, net, size = float64_pair(name, tmp_path_factory)
    x = images(size, seed=4)
    a = net(x, until=node).numpy()                 # a neuron active (0 < a < 6) in both images
    unit = tuple(int(v) for v in np.argwhere(((a > 0) & (a < 6)).all(axis=0))[len(a[0]) // 3])
    RuleReLU6.rule = "backprop"
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = captum_attr.NeuronGradient(t, module(t)).attribute(xt, neuron_selector=unit).detach().numpy()
    close(name, f"neuron {node}{list(unit)}", te.explain.gradient(net, x, (node,) + unit), ref, 1e-9)
