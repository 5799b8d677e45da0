"""The ONNX reader on small hand-built graphs (the onnx package's helpers, no torch):
what it makes of each supported op, how nodes are named, and what it refuses --
before anything large is allocated, in one line naming the file and the node.
The torchvision architectures are checked against torch, onnxruntime and Captum in
test_onnx_torch.py."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core.graph import GraphNetwork
from tinygrad_explain.modelfiles.onnx_import import OnnxImportError, load_onnx, module_path

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def tiny_onnx(path, extra_nodes=(), extra_inits=(), *, op_fc="Gemm", opset=13, out="y"):
    """x (1, 2, 6, 6) -> Conv 3x3 pad 1 -> Relu -> Flatten -> Gemm (3 classes)."""
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(r.standard_normal((3, 144)).astype(np.float32), "fw"),
             numpy_helper.from_array(r.standard_normal(3).astype(np.float32), "fb")] + list(extra_inits)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="/conv1/Conv", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="/Flatten", axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="/fc/Gemm", transB=1)] + list(extra_nodes)
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(m, path)
    return path, {t.name: numpy_helper.to_array(t) for t in inits[:4]}


def test_a_small_graph_reads_and_computes_what_onnx_says(tmp_path):
    path, w = tiny_onnx(tmp_path / "t.onnx")
    net = te.load_model(path)
    assert isinstance(net, GraphNetwork) and net.layer_names == ["conv1", "relu", "flatten", "fc"]
    assert net.input_shape == (2, 6, 6) and net.num_classes == 3
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6))
    # an independent computation of the same graph, in float64
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    c = np.einsum("nchwij,ocij->nohw", np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3)),
                  w["w"].astype(np.float64)) + w["b"][:, None, None]
    y = np.maximum(c, 0).reshape(2, -1) @ w["fw"].T.astype(np.float64) + w["fb"]
    np.testing.assert_allclose(net.astype(np.float64)(x).numpy(), y, rtol=1e-6, atol=1e-6)


def test_matmul_plus_add_and_a_view_chain_fold_into_one_linear(tmp_path):
    """torch's x.view(x.size(0), -1) (Shape-Gather-Unsqueeze-Concat-Reshape) and a Linear
    exported as MatMul + Add become one flatten and one linear node."""
    r = np.random.default_rng(2)
    wt, b = r.standard_normal((144, 3)).astype(np.float32), r.standard_normal(3).astype(np.float32)
    inits = [numpy_helper.from_array(wt, "mw"), numpy_helper.from_array(b, "mb"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0")]
    nodes = [helper.make_node("Shape", ["r"], ["s"], name="/Shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="/Gather", axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="/Unsqueeze"),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], name="/Concat", axis=0),
             helper.make_node("Reshape", ["r", "shape"], ["v"], name="/Reshape"),
             helper.make_node("MatMul", ["v", "mw"], ["mm"], name="/fc2/MatMul"),
             helper.make_node("Add", ["mm", "mb"], ["y2"], name="/fc2/Add")]
    path, w = tiny_onnx(tmp_path / "t.onnx", nodes, inits, out="y2")
    net = load_onnx(path)
    assert net.layer_names == ["conv1", "relu", "reshape", "fc2"]
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    r_ = net(x, until="relu").numpy().reshape(2, -1)
    np.testing.assert_allclose(net(x).numpy(), r_ @ wt + b, rtol=1e-5, atol=1e-5)


def test_module_paths():
    assert module_path("/layer4/layer4.1/relu_1/Relu") == "layer4.1.relu_1"
    assert module_path("/features/features.1/conv/conv.0/conv.0.0/Conv") == "features.1.conv.0.0"
    assert module_path("/inception3a/branch2/branch2.0/conv/Conv") == "inception3a.branch2.0.conv"
    assert module_path("/Flatten") == ""


def test_unsupported_ops_are_all_named_in_one_line(tmp_path):
    nodes = [helper.make_node("Sigmoid", ["y"], ["s"], name="sig1"),
             helper.make_node("Resize", ["s"], ["t"], name="/up/Resize"),
             helper.make_node("Sigmoid", ["t"], ["u"], name="sig2")]
    path, _ = tiny_onnx(tmp_path / "u.onnx", nodes, out="u")
    with pytest.raises(OnnxImportError) as e:
        te.load_model(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "unsupported ONNX ops: Sigmoid (node 'sig1'), Resize (node '/up/Resize'), Sigmoid (node 'sig2')" in msg


def test_external_data_is_refused(tmp_path):
    path, _ = tiny_onnx(tmp_path / "e.onnx")
    m = onnx.load(path)
    onnx.save(m, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with pytest.raises(OnnxImportError, match=r"ext.onnx: initializer 'w' keeps its data in an external file "
                                              r"\('weights.bin'\)"):
        load_onnx(tmp_path / "ext.onnx")


def test_huge_declared_tensors_are_refused_before_allocation(tmp_path):
    t = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[10 ** 6, 10 ** 6])
    t.raw_data = b"\0" * 16
    path, _ = tiny_onnx(tmp_path / "h.onnx", extra_inits=[t])
    with pytest.raises(OnnxImportError, match=r"initializer 'huge' declares 1,000,000,000,000 values"):
        load_onnx(path)
    small = TensorProto(name="short", data_type=TensorProto.FLOAT, dims=[100])
    small.raw_data = b"\0" * 16
    path, _ = tiny_onnx(tmp_path / "s.onnx", extra_inits=[small])
    with pytest.raises(OnnxImportError, match=r"initializer 'short' has 16 bytes of data for shape \[100\]"):
        load_onnx(path)
    path, _ = tiny_onnx(tmp_path / "ok.onnx")
    with pytest.raises(OnnxImportError, match=r"initializer 'fw' declares 432 values .*more than the limit 100"):
        load_onnx(path, max_parameters=100)


def test_bad_files(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(OnnxImportError, match="junk.onnx: "):
        te.load_model(p)
    with pytest.raises(FileNotFoundError):
        te.load_model(tmp_path / "missing.onnx")


@pytest.mark.parametrize("node,message", [
    (helper.make_node("Conv", ["x", "w"], ["c"], name="/c/Conv", kernel_shape=[3, 3], pads=[1, 0, 1, 0]),
     r"node '/c/Conv' \(Conv\): pads \[1, 0, 1, 0\] are not the same on every side"),
    (helper.make_node("MaxPool", ["x"], ["c"], name="mp", kernel_shape=[3, 2]),
     r"node 'mp' \(MaxPool\): kernel_shape \[3, 2\] is not square"),
    (helper.make_node("Reshape", ["x", "tshape"], ["c"], name="rs"),
     r"node 'rs' \(Reshape\): a Reshape to \[-1, 2, 36\] of a \[2, 6, 6\] map; only the flatten kind"),
    (helper.make_node("Concat", ["x", "x"], ["c"], name="cat", axis=2),
     r"node 'cat' \(Concat\): only concatenation of maps along channels"),
    (helper.make_node("Add", ["x", "w"], ["c"], name="addc"),
     r"node 'addc' \(Add\): adds a constant to something other than a MatMul's output"),
])
def test_unsupported_uses_of_supported_ops(tmp_path, node, message):
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, 2, 36], np.int64), "tshape")]
    g = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)], inits)
    p = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
    with pytest.raises(OnnxImportError, match=message) as e:
        load_onnx(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_convert_onnx_stores_preprocessing_and_class_names(tmp_path):
    from tinygrad_explain.modelfiles.onnx_import import cli
    path, _ = tiny_onnx(tmp_path / "t.onnx")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    out = tmp_path / "t.h5"
    assert cli([str(path), str(out), "--mean", "0.5", "0.4", "--std", "0.2", "0.3",
                "--class-names", str(names)]) == 0
    m = te.load_model(out)
    assert m.class_names == ["cat", "dog", "bird"] and m.preprocessing["mean"] == [0.5, 0.4]
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(m(x).numpy(), load_onnx(path)(x).numpy())

def test_convert_onnx_refuses_preprocessing_of_the_wrong_length(tmp_path, capsys):
    from tinygrad_explain.modelfiles.onnx_import import cli
    path, _ = tiny_onnx(tmp_path / "t.onnx")
    assert cli([str(path), str(tmp_path / "u.h5"), "--mean", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: mean has 1 values; the network takes 2 input channels" in err and err.count("\n") == 1
    assert not (tmp_path / "u.h5").exists()


def test_batch_norm_is_folded_only_where_its_conv_feeds_it_alone(tmp_path):
    """Conv -> BN is folded; a BN whose conv output is also read elsewhere stays a node.
    Both equal an independent float64 computation of the ONNX formula."""
    r = np.random.default_rng(3)
    w = r.standard_normal((2, 2, 1, 1)).astype(np.float32)
    stats = [r.uniform(0.5, 1.5, 2), r.standard_normal(2), r.standard_normal(2), r.uniform(0.5, 2, 2)]
    inits = [numpy_helper.from_array(w, "w")] + [numpy_helper.from_array(v.astype(np.float32), k) for k, v in
                                                 zip(("g", "be", "mu", "var"), stats)]
    fw = numpy_helper.from_array(r.standard_normal((3, 2 * 36)).astype(np.float32), "fw")

    def graph(shared):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv", kernel_shape=[1, 1])]
        nodes += [helper.make_node("Identity", ["c"], ["ci"], name="/ci")] if shared else []  # BN reads an alias
        nodes += [helper.make_node("BatchNormalization", ["ci" if shared else "c", "g", "be", "mu", "var"], ["b"],
                                   name="/bn/BN", epsilon=1e-3)]
        nodes += [helper.make_node("Add", ["b", "c"], ["s"], name="/Add")] if shared else \
            [helper.make_node("Identity", ["b"], ["s"], name="/id")]
        nodes += [helper.make_node("Flatten", ["s"], ["f"], name="/Flatten"),
                  helper.make_node("Gemm", ["f", "fw"], ["y"], name="/fc/Gemm", transB=1)]
        g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits + [fw])
        p = tmp_path / f"bn{int(shared)}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
        return p

    x = r.standard_normal((2, 2, 6, 6))
    c = np.einsum("nihw,oi->nohw", x, w[:, :, 0, 0].astype(np.float64))
    g_, be, mu, var = (np.float32(v).astype(np.float64)[:, None, None] for v in stats)
    b = (c - mu) / np.sqrt(var + np.float64(np.float32(1e-3))) * g_ + be
    fwa = numpy_helper.to_array(fw).astype(np.float64)
    for shared, types in ((False, ["conv", "flatten", "linear"]),
                          (True, ["conv", "batchnorm", "add", "flatten", "linear"])):
        net = load_onnx(graph(shared))
        assert [net.layers[n].type for n in net.layer_names] == types
        s = b + c if shared else b
        np.testing.assert_allclose(net.astype(np.float64)(x).numpy(), s.reshape(2, -1) @ fwa.T, rtol=1e-5,
                                   atol=1e-5)


def test_gemm_bias_of_shape_1_by_o_and_training_dropout(tmp_path):
    r = np.random.default_rng(4)
    fb2 = numpy_helper.from_array(r.standard_normal((1, 3)).astype(np.float32), "fb2")
    nodes = [helper.make_node("Gemm", ["f", "fw", "fb2"], ["y2"], name="/fc2/Gemm", transB=1, beta=0.5)]
    path, w = tiny_onnx(tmp_path / "g.onnx", nodes, [fb2], out="y2")
    net = load_onnx(path)
    x = r.standard_normal((1, 2, 6, 6)).astype(np.float32)
    f = net(x, until="flatten").numpy()
    np.testing.assert_allclose(net(x).numpy(), f @ w["fw"].T + 0.5 * numpy_helper.to_array(fb2), rtol=1e-5,
                               atol=1e-5)
    true = numpy_helper.from_array(np.array(True), "train")
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    nodes = [helper.make_node("Dropout", ["y", "ratio", "train"], ["d"], name="/drop/Dropout")]
    path, _ = tiny_onnx(tmp_path / "d.onnx", nodes, [true, ratio], out="d")
    with pytest.raises(OnnxImportError, match=r"node '/drop/Dropout' \(Dropout\): in training mode"):
        load_onnx(path)


def test_convert_onnx_script(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    path, _ = tiny_onnx(tmp_path / "t.onnx")
    out = tmp_path / "t.h5"
    r = subprocess.run([sys.executable, str(root / "scripts" / "convert_onnx.py"), str(path), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "wrote" in r.stdout and "4 nodes, input (2, 6, 6), 3 classes" in r.stdout
    r = subprocess.run([sys.executable, str(root / "scripts" / "convert_onnx.py"), str(tmp_path / "no.onnx"),
                        str(tmp_path / "x.h5")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no.onnx does not exist" in r.stderr


def test_the_command_line_converts_onnx_like_the_api(tmp_path, capsys):
    """`tinygrad-explain convert onnx IN OUT` writes the model that te.load_model(IN) computes;
    a missing file is one line and status 2, naming the subcommand."""
    from tinygrad_explain.apps.cli import main
    path, _ = tiny_onnx(tmp_path / "t.onnx")
    out = tmp_path / "t.h5"
    assert main(["convert", "onnx", str(path), str(out), "--mean", "0.5", "0.4", "--std", "0.2", "0.3"]) == 0
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    m = te.load_model(out)
    np.testing.assert_array_equal(m(x).numpy(), te.load_model(path)(x).numpy())
    assert m.preprocessing["std"] == [0.2, 0.3]
    capsys.readouterr()
    assert main(["convert", "onnx", str(tmp_path / "no.onnx"), str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinygrad-explain convert onnx: error:") and err.count("\n") == 1
