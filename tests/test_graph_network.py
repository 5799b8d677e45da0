"""Graph networks (tinygrad_explain.core.graph): named nodes with several inputs.

A small residual network is checked against the same network written in
PyTorch (float64: scores, input gradients under the three ReLU rules, the
gradient at an inner node); the Network interface (until / keep / start,
state_dict, astype, eval, the model file) is checked on it; a chain written
as a graph gives bit-identical results to the Network it describes; old model
files still load.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from _reference import tiny_network, torch_rule_relu

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.core.graph import INPUT, Add, GraphNetwork
from tinygrad_explain.modelfiles.modelfile import ModelFileError

torch = pytest.importorskip("torch")


def residual_net(seed=0):
    """(3, 8, 8) -> 5 classes: conv-relu, a residual block (conv-relu-conv + skip, relu),
    a strided block with a 1x1 projection on the skip, max-pool, flatten, linear."""
    te.manual_seed(seed)
    C, R = nn.Conv2d, nn.ReLU
    nodes = [("conv1", C(3, 4, 3, 1, 1)), ("relu1", R()),
             ("layer1.0.conv1", C(4, 4, 3, 1, 1)), ("layer1.0.relu1", R()), ("layer1.0.conv2", C(4, 4, 3, 1, 1)),
             ("layer1.0.add", Add(), ["layer1.0.conv2", "relu1"]), ("layer1.0.relu2", R()),
             ("layer2.0.conv1", C(4, 6, 3, 2, 1)), ("layer2.0.relu1", R()), ("layer2.0.conv2", C(6, 6, 3, 1, 1)),
             ("layer2.0.downsample", C(4, 6, 1, 2, 0), "layer1.0.relu2"),
             ("layer2.0.add", Add(), ["layer2.0.conv2", "layer2.0.downsample"]), ("layer2.0.relu2", R()),
             ("pool", nn.MaxPool2d(2, 2)), ("flatten", nn.Flatten()), ("fc", nn.Linear(6 * 2 * 2, 5))]
    return GraphNetwork(nodes, (3, 8, 8), class_names=list("abcde"))


class TorchResidual(torch.nn.Module):
    """The same network in PyTorch, its weights copied from the te graph."""

    def __init__(self, g):
        super().__init__()
        T = torch.nn
        self.m = T.ModuleDict()
        for n, l in g.layers.items():
            key = n.replace(".", "_")
            if isinstance(l, nn.Conv2d):
                m = T.Conv2d(l.in_channels, l.out_channels, l.kernel_size, l.stride, l.padding)
            elif isinstance(l, nn.Linear):
                m = T.Linear(l.in_features, l.out_features)
            elif isinstance(l, nn.ReLU):
                m = T.ReLU()
            elif isinstance(l, nn.MaxPool2d):
                m = T.MaxPool2d(l.kernel_size, l.stride)
            elif isinstance(l, nn.Flatten):
                m = T.Flatten()
            else:
                continue
            for p in l.params:
                getattr(m, p).data = torch.tensor(getattr(l, p).numpy().astype(np.float64))
            self.m[key] = m
        self.inputs = {n: g.inputs[n] for n in g.layer_names}
        self.order = g.layer_names

    def forward(self, x, keep=None):
        v = {INPUT: x}
        for n in self.order:
            ins = [v[i] for i in self.inputs[n]]
            v[n] = sum(ins[1:], ins[0]) if n.endswith(".add") else self.m[n.replace(".", "_")](ins[0])
            if n == keep:
                v[n].retain_grad()
                self.kept = v[n]
        return v[self.order[-1]]


@pytest.fixture(scope="module")
def net():
    return residual_net().astype(np.float64)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((3, 3, 8, 8))


def test_residual_network_equals_pytorch(net, x):
    ref = TorchResidual(net).double()
    xt = torch.tensor(x, requires_grad=True)
    out = ref(xt, keep="layer1.0.relu2")
    out[:, 2].sum().backward()
    np.testing.assert_allclose(net(x).numpy(), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(te.explain.gradient(net, x, 2), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(te.explain.gradient(net, x, 2, layer="layer1.0.relu2"), ref.kept.grad.numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_relu_rules_act_on_every_relu_of_the_graph(net, x, rule):
    """The rules with PyTorch: a ReLU whose backward is replaced by the rule (what
    Captum's hooks do), every ReLU module of the reference network."""
    rule_relu = torch_rule_relu(rule)
    ref = TorchResidual(net).double()
    for k, m in ref.m.items():
        if isinstance(m, torch.nn.ReLU):
            ref.m[k] = type("R", (torch.nn.Module,), {"forward": lambda self, a: rule_relu(a)})()
    xt = torch.tensor(x, requires_grad=True)
    ref(xt)[:, 1].sum().backward()
    np.testing.assert_allclose(te.explain.gradient(net, x, 1, rule=rule), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_neuron_target_and_gradcam_default_on_node_names(net, x):
    ref = TorchResidual(net).double()
    xt = torch.tensor(x, requires_grad=True)
    ref(xt, keep="layer2.0.relu2")
    ref.kept[:, 3, 1, 0].sum().backward()
    g = te.explain.gradient(net, x, ("layer2.0.relu2", 3, 1, 0))
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g, te.explain.gradient(net, x, "layer2.0.relu2:3:1:0"))
    assert te.explain.attribution.default_cam_layer(net) == "layer2.0.relu2"
    cam = te.explain.gradcam(net, x, 0, upsample_to_input=False)
    a = net(x, until="layer2.0.relu2").numpy()
    gl = te.explain.gradient(net, x, 0, layer="layer2.0.relu2")
    np.testing.assert_allclose(cam, np.maximum((gl.mean(axis=(2, 3), keepdims=True) * a).sum(1), 0))


def test_gradient_at_a_node_off_the_path_is_refused(net, x):
    with pytest.raises(te.explain.ExplainError, match="not below"):
        te.explain.gradient(net, x, ("layer2.0.conv2", 0), layer="layer2.0.downsample")


def test_until_keep_start_on_node_names(net, x):
    full = net(x).numpy()
    h = net(x, until="layer1.0.relu2")
    np.testing.assert_array_equal(net(h, start="layer1.0.relu2").numpy(), full)
    outs = net(x, keep=["layer1.0.add", "relu1"])
    assert list(outs) == ["relu1", "layer1.0.add", "fc"]
    np.testing.assert_array_equal(outs.output.numpy(), full)
    # a node inside a block: the add also reads the skip path
    with pytest.raises(ValueError, match=r"start='layer1.0.conv1': node 'layer1.0.add' also reads 'relu1'.*"
                                         r"e.g. \['conv1', 'relu1', 'layer1.0.add', 'layer1.0.relu2'\]"):
        net(net(x, until="layer1.0.conv1"), start="layer1.0.conv1")
    assert net.cut_nodes == ["conv1", "relu1", "layer1.0.add", "layer1.0.relu2", "layer2.0.add",
                             "layer2.0.relu2", "pool", "flatten", "fc"]
    # a start inside a branch is fine when what is run depends on that branch only
    a = net(x, until="layer2.0.conv1")
    np.testing.assert_array_equal(net(a, start="layer2.0.conv1", until="layer2.0.conv2").numpy(),
                                  net(x, until="layer2.0.conv2").numpy())
    with pytest.raises(KeyError, match="unknown node 'layer1.0.relu3'.*did you mean"):
        net(x, until="layer1.0.relu3")
    with pytest.raises(ValueError, match="keep: node 'layer2.0.downsample' is not run"):
        net(x, until="layer2.0.conv2", keep="layer2.0.downsample")
    with pytest.raises(ValueError, match="does not come after"):
        net(x, start="layer2.0.conv2", until="layer2.0.downsample")
    with pytest.raises(ValueError, match="does not come after"):
        net(net(x, until="pool"), start="pool", until="pool")
    with pytest.raises(ValueError, match="input after layer 'relu1' must have shape"):
        net(x, start="relu1")


def test_state_dict_astype_eval_and_model_file_round_trip(tmp_path, x):
    g = residual_net(seed=3)
    sd = g.state_dict()
    assert "layer2.0.downsample.weight" in sd and sd["conv1.weight"].dtype == np.float32
    h = residual_net(seed=4).load_state_dict(sd)
    np.testing.assert_array_equal(h(x.astype(np.float32)).numpy(), g(x.astype(np.float32)).numpy())
    assert g.train().layers["relu1"].training and not g.eval().layers["relu1"].training
    path = te.save_model(g, tmp_path / "res.h5", mean=[0.5] * 3, std=[0.25] * 3)
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 2
    back = te.load_model(path)
    assert type(back) is GraphNetwork and back.architecture() == g.architecture()
    assert back.inputs == g.inputs and back.class_names == list("abcde")
    np.testing.assert_array_equal(back(x.astype(np.float32)).numpy(), g(x.astype(np.float32)).numpy())
    assert back.preprocessing["mean"] == [0.5] * 3
    d = back.astype(np.float64)(x).numpy()
    assert d.dtype == np.float64
    np.testing.assert_allclose(d, g(x.astype(np.float32)).numpy(), rtol=1e-4, atol=1e-5)


def test_graph_file_errors(tmp_path):
    g = residual_net()
    path = te.save_model(g, tmp_path / "res.h5")

    def edit(fn):
        p = tmp_path / "bad.h5"
        p.write_bytes(path.read_bytes())
        with h5py.File(p, "r+") as f:
            fn(f)
        return p

    import json
    arch = g.architecture()
    cases = [
        (lambda f: f.attrs.__setitem__("format_version", 1), "name their 'inputs'.*format_version 2"),
        (lambda f: f.attrs.__setitem__("architecture", json.dumps(
            [dict(a, inputs=["nowhere"]) if a["name"] == "layer1.0.add" else a for a in arch])),
         "node 'layer1.0.add' reads 'nowhere', which is not an earlier node"),
        (lambda f: f.attrs.__setitem__("architecture", json.dumps(
            [dict(a, inputs=["layer2.0.relu2"]) if a["name"] == "layer1.0.relu2" else a for a in arch])),
         "reads 'layer2.0.relu2', which is not an earlier node .nodes must come after"),
        (lambda f: f.attrs.__setitem__("architecture", json.dumps(
            [dict(a, inputs=["conv1"]) if a["name"] == "layer1.0.add" else a for a in arch])),
         "node 'layer1.0.add' .add. needs at least two inputs"),
        (lambda f: f.attrs.__setitem__("architecture", json.dumps(
            [dict(a, inputs=["conv1", "layer2.0.conv1"]) if a["name"] == "layer2.0.add" else a for a in arch])),
         r"node 'layer2.0.add': add: inputs of different shapes"),
        (lambda f: f.attrs.__setitem__("architecture", json.dumps(
            [dict(a, inputs=["relu1"]) if a["name"] == "layer1.0.relu2" else a for a in arch])),
         "do not lead to the output"),
        (lambda f: f.attrs.__setitem__("architecture", json.dumps(
            [dict(a, inputs="relu1") if a["name"] == "layer1.0.conv1" else a for a in arch])),
         "'inputs' must be a list of node names"),
    ]
    for fn, message in cases:
        with pytest.raises(ModelFileError, match=message):
            te.load_model(edit(fn))


def test_a_chain_as_a_graph_is_bit_identical_to_the_network():
    """The AlexNet path is the Network's own; a chain of the same layers written as a
    graph gives the very same numbers (forward and input gradient)."""
    net = tiny_network(dropout=False)
    chain = GraphNetwork(list(net.layers.items()), net.input_shape)
    assert [i for i in chain.inputs.values()] == [(INPUT,)] + [(n,) for n in net.layer_names[:-1]]
    assert "inputs" not in net.architecture()[0]
    x = np.random.default_rng(0).standard_normal((2, 2, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(chain(x).numpy(), net(x).numpy())
    for rule in ("backprop", "guided"):
        np.testing.assert_array_equal(te.explain.gradient(chain, x, 1, rule=rule),
                                      te.explain.gradient(net, x, 1, rule=rule))
    assert chain.cut_nodes == net.layer_names


def graph_tensors(y):
    """Every tensor of y's graph (y, its parents, theirs, ...), once each."""
    seen, todo = {}, [y]
    while todo:
        t = todo.pop()
        if id(t) not in seen:
            seen[id(t)] = t
            todo.extend(t._parents)
    return list(seen.values())


@pytest.mark.parametrize("graph", [False, True])
def test_intermediate_outputs_are_freed_and_the_gradient_unchanged(net, x, graph):
    """The runners drop the arrays of the outputs they made once no later node reads
    them (a convolution's output before its ReLU, an addition's): the graph's backward
    never reads them.  The input, kept outputs and the output keep theirs, and the input
    gradient is the one of the same layers run by hand (nothing released)."""
    model = net if graph else tiny_network(dropout=False).astype(np.float64)
    xin = x if graph else np.random.default_rng(0).standard_normal((2,) + model.input_shape)
    keep = "layer1.0.conv2" if graph else model.layer_names[0]
    xt = te.Tensor(xin, requires_grad=True)
    outs = model(xt, keep=keep)
    tensors = graph_tensors(outs.output)
    freed = [t for t in tensors if t.data is None]
    assert freed and all(t._ctx is not None for t in freed)
    assert xt.data is not None and outs[keep].data is not None and outs.output.data is not None
    g = np.random.default_rng(2).standard_normal(outs.output.shape)
    outs.output.backward(g)
    # the same layers by hand, every output kept alive
    ref, values = te.Tensor(xin, requires_grad=True), {}
    inputs = model.inputs if graph else {n: (p,) for n, p in zip(model.layer_names, [INPUT] + model.layer_names)}
    values[INPUT] = ref
    for n, layer in model.layers.items():
        values[n] = layer(*[values[i] for i in inputs[n]])
    values[model.layer_names[-1]].backward(g)
    np.testing.assert_array_equal(xt.grad, ref.grad)
    assert outs[keep].grad is not None


def test_old_model_files_still_load(tmp_path):
    """The shipped embedded model was written as format_version 1, before graphs; a
    Network is still written as version 1 (readable by older readers)."""
    path = te.modelfile.DEFAULT_WEIGHTS
    if not path.exists():
        pytest.skip("the embedded model is not built")
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 1
        assert "inputs" not in f.attrs["architecture"]
    m = te.load_model(path)
    assert type(m) is te.Network
    out = te.save_model(tiny_network(), tmp_path / "tiny.h5")
    with h5py.File(out) as f:
        assert f.attrs["format_version"] == 1


def test_building_errors():
    R = nn.ReLU
    with pytest.raises(ValueError, match="node name 'input' is not allowed"):
        GraphNetwork([("input", R())], (1,))
    with pytest.raises(ValueError, match="node name 'a/b' is not allowed"):
        GraphNetwork([("a/b", R())], (1,))
    with pytest.raises(ValueError, match="node 'r' .relu. takes one input"):
        GraphNetwork([("a", R()), ("b", R()), ("r", R(), ["a", "b"])], (1,))
    with pytest.raises(ValueError, match="duplicate node name 'a'"):
        GraphNetwork([("a", R()), ("a", R())], (1,))


# --------------------------------------------------------------------------
# the methods on a graph network: inversion and maximisation at a node, the
# explorer's layer-by-layer view, the command line on an ONNX file
# --------------------------------------------------------------------------
def torch_node(net, x, node):
    """The output of ``node`` computed by the PyTorch twin (an independent forward)."""
    ref = TorchResidual(net).double()
    v = {INPUT: torch.tensor(np.asarray(x, np.float64))}
    with torch.no_grad():
        for n in ref.order:
            ins = [v[i] for i in ref.inputs[n]]
            v[n] = sum(ins[1:], ins[0]) if n.endswith(".add") else ref.m[n.replace(".", "_")](ins[0])
            if n == node:
                return v[n].numpy()


def test_invert_and_maximize_at_a_node(net, x):
    node = "layer1.0.add"
    inv = te.explain.invert(net, x[:1], layer=node, inits=2, steps=30, progress=False)
    code = torch_node(net, x[:1], node).reshape(-1)
    feats = torch_node(net, inv.images, node).reshape(2, -1)
    errors = np.sqrt(((feats - code) ** 2).sum(1) / (code ** 2).sum())
    np.testing.assert_allclose(inv.errors, errors, rtol=1e-6)
    assert (errors < 0.9).all()          # the optimisation went somewhere
    rows = te.explain.invert_layers(net, x[:1], ["relu1", node], steps=2, progress=False)   # any nodes at once
    assert rows.layers == ["relu1", node] and np.isfinite(rows.errors).all()
    with pytest.raises(TypeError, match="add: needs two or more inputs"):
        net.layers["layer1.0.add"](te.Tensor(x))
    v = te.explain.maximize(net, "layer2.0.add", (2, 1, 1), steps=20, progress=False)
    np.testing.assert_allclose(v.final[0], torch_node(net, v.image, "layer2.0.add")[0, 2, 1, 1], rtol=1e-5)


def test_explorer_layer_view_on_a_graph(net, x):
    """One row per node the target depends on; each gradient norm is the norm of the
    gradient at that node (te.explain.gradient(layer=node), itself checked above)."""
    from types import SimpleNamespace

    from tinygrad_explain.apps.explorer import Explorer
    rows = Explorer.layer_flow(SimpleNamespace(model=net), x[:1], ("layer2.0.relu2", 1), "guided")
    names = [r["name"] for r in rows]
    assert names == ["input"] + [n for n in net.layer_names if net.feeds(n, "layer2.0.relu2")] + ["layer2.0.relu2"]
    for r in rows[1:-1]:
        g = te.explain.gradient(net, x[:1], ("layer2.0.relu2", 1), rule="guided", layer=r["name"])
        np.testing.assert_allclose(r["grad_norm"], np.linalg.norm(g), rtol=1e-6)


def residual_onnx(path):
    """A (3, 16, 16) residual classifier written with the onnx helpers: Conv-Relu-Conv,
    Add (skip), Relu, GlobalAveragePool, Flatten, Gemm (4 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    r = np.random.default_rng(5)
    inits = [numpy_helper.from_array(r.standard_normal(s).astype(np.float32) * 0.3, n) for n, s in
             (("w1", (6, 3, 3, 3)), ("b1", (6,)), ("w2", (6, 6, 3, 3)), ("b2", (6,)), ("fw", (4, 6)), ("fb", (4,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/conv1/Conv", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="/block/conv/Conv", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["a"], name="/block/Add"),
             helper.make_node("Relu", ["a"], ["r2"], name="/block/relu/Relu"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="/pool/GlobalAveragePool"),
             helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="/fc/Gemm", transB=1)]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_command_line_on_an_onnx_file(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from PIL import Image

    from tinygrad_explain.__main__ import main
    path = residual_onnx(tmp_path / "res.onnx")
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), np.uint8)).save(img)
    model = te.load_model(path)
    assert model.layer_names == ["conv1", "relu1", "block.conv", "block.add", "block.relu", "pool", "flatten",
                                 "fc"]
    x = te.image.load(str(img), model)
    pred = int(ort.InferenceSession(str(path)).run(None, {"x": x})[0][0].argmax())
    assert main(["saliency", "--weights", str(path), "--image", str(img), "--out", str(tmp_path / "s.png")]) == 0
    assert f"predicted: {pred} " in capsys.readouterr().out and (tmp_path / "s.png").stat().st_size > 0
    assert main(["guided", "--weights", str(path), "--image", str(img), "--target", "block.relu:2:3:4",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert "target: block.relu[2,3,4]" in capsys.readouterr().out
    assert main(["gradcam", "--weights", str(path), "--image", str(img), "--layer", "block.add",
                 "--out", str(tmp_path / "c.png")]) == 0
    assert main(["gradcam", "--weights", str(path), "--image", str(img), "--layer", "block.ad",
                 "--out", str(tmp_path / "d.png")]) == 2
    assert "unknown layer 'block.ad'; did you mean 'block.add'" in capsys.readouterr().err
    assert te.explain.attribution.default_cam_layer(model) == "block.relu"


def test_explorer_on_an_onnx_file(tmp_path):
    """``serve --weights net.onnx``'s model side: the layer menu lists the nodes, and a
    request for a channel of a dotted node gives that gradient's map and the layer view."""
    from tinygrad_explain.apps.explorer import Explorer
    ex = Explorer(weights=str(residual_onnx(tmp_path / "res.onnx")))
    try:
        info = ex.info()
        assert [l["name"] for l in info["layers"]] == ["conv1", "relu1", "block.conv", "block.add", "block.relu",
                                                       "pool", "flatten"]
        x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
        rows = ex.run(ex.layer_flow, x, ("block.add", 2), "backprop")
        assert [r["name"] for r in rows] == ["input", "conv1", "relu1", "block.conv", "block.add"]
        g = te.explain.gradient(ex.model, x, ("block.add", 2), layer="relu1")
        np.testing.assert_allclose(rows[2]["grad_norm"], np.linalg.norm(g), rtol=1e-6)
    finally:
        ex.close()


def test_receptive_field_follows_the_path_to_the_node():
    """On a graph only the nodes a node depends on count: the 3x3 branch beside a 5x5
    one does not widen the 5x5's field; through a merge, the field is the union of the inputs' fields."""
    from tinygrad_explain.core.graph import Concat
    te.manual_seed(0)
    g = GraphNetwork([("a", nn.Conv2d(3, 2, 3, 1, 1), INPUT), ("b", nn.Conv2d(3, 2, 5, 1, 2), INPUT),
                      ("cat", Concat(), ["a", "b"]), ("c", nn.Conv2d(4, 2, 3, 1, 1)), ("flat", nn.Flatten()),
                      ("fc", nn.Linear(2 * 81, 3))], (3, 9, 9))
    rf = te.explain.features.receptive_field
    assert rf(g, "b", 4, 4) == (2, 7, 2, 7) and rf(g, "a", 4, 4) == (3, 6, 3, 6)
    assert rf(g, "cat", 4, 4) == (2, 7, 2, 7) and rf(g, "c", 4, 4) == (1, 8, 1, 8) and rf(g, "c", 0, 0) == (0, 4, 0, 4)
