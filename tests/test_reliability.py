"""Model files, images and inputs as an attacker or a careless user would make them:
each gets one clear error line naming the file / layer / key / value, never a
traceback, a hang, a huge allocation or a silently wrong answer (issue #15)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import _need as need
import numpy as np
import pytest
from _reference import edit, tiny_network
from PIL import Image

import tinygrad_explain as te
from tinygrad_explain.data import image as te_image

h5py = need.module("h5py")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return tiny_network(seed=1)


# ``saved`` (the module's ``model`` written to tiny.h5) is a fixture of conftest.py


def load_error(path, match, **kw):
    with pytest.raises(te.ModelFileError, match=match) as e:
        te.load_model(path, **kw)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    return str(e.value)


# --------------------------------------------------------------------------
# HDF5 features that reach outside the file
# --------------------------------------------------------------------------
def test_external_storage_refused(saved, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())

    def fn(f):
        del f["weights/conv1/bias"]
        f["weights/conv1"].create_dataset("bias", shape=(4,), dtype=np.float32, external=[(str(secret), 0, 16)])
    edit(saved, fn)
    load_error(saved, r"weights/conv1/bias has external storage.*secret.*self-contained")


def _file_with_b(path):
    """A second HDF5 file holding a dataset "b" of four float32 zeros."""
    with h5py.File(path, "w") as g:
        g.create_dataset("b", data=np.zeros(4, np.float32))
    return path


def test_external_link_refused(saved, tmp_path):
    other = _file_with_b(tmp_path / "other.h5")

    def fn(f):
        del f["weights/conv1/bias"]
        f["weights/conv1/bias"] = h5py.ExternalLink(str(other), "/b")
    edit(saved, fn)
    load_error(saved, r"weights/conv1/bias is an external link to .*other.h5")


def test_virtual_dataset_refused(saved, tmp_path):
    other = _file_with_b(tmp_path / "src.h5")

    def fn(f):
        del f["weights/conv1/bias"]
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "b", shape=(4,))
        f["weights/conv1"].create_virtual_dataset("bias", layout)
    edit(saved, fn)
    load_error(saved, r"weights/conv1/bias is a virtual dataset")


def test_soft_link_refused(saved):
    def fn(f):
        del f["weights/conv1/bias"]
        f["weights/conv1/bias"] = h5py.SoftLink("/weights/conv2/bias")
    edit(saved, fn)
    load_error(saved, r"soft link")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_refused_without_hanging(tmp_path):
    """Run in a subprocess with a timeout: opening a FIFO for reading would block forever."""
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        import tinygrad_explain as te
        try:
            te.load_model({str(fifo)!r})
        except te.ModelFileError as e:
            print("ERR", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=120)
    assert "not a regular file (a FIFO)" in r.stdout, r.stdout + r.stderr
    with pytest.raises(te.ModelFileError, match="not a regular file \\(a directory\\)"):
        te.load_model(tmp_path)


# --------------------------------------------------------------------------
# size limits before allocation
# --------------------------------------------------------------------------
def _tiny_file(tmp_path, arch, input_shape=(3, 8, 8)):
    p = tmp_path / "huge.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "tinygrad-explain-model"
        f.attrs["format_version"] = 1
        f.attrs["architecture"] = json.dumps(arch)
        f.attrs["input_shape"] = np.asarray(input_shape)
        f.create_group("weights")
    return p


def test_parameter_count_checked_before_allocation(tmp_path):
    arch = [{"name": "conv1", "type": "conv", "in_channels": 3, "out_channels": 10 ** 9, "kernel_size": 3},
            {"name": "flat", "type": "flatten"}]
    p = _tiny_file(tmp_path, arch)
    assert p.stat().st_size < 10_000
    msg = load_error(p, r"asks for 28,000,000,000 parameters, more than the limit 300,000,000")
    assert "max_parameters" in msg
    small = [{"name": "fc", "type": "linear", "in_features": 192, "out_features": 10}]
    p2 = _tiny_file(tmp_path, small)
    load_error(p2, r"1,930 parameters, more than the limit 1,000", max_parameters=1000)


def test_parameter_limit_from_environment(tmp_path, monkeypatch):
    p = _tiny_file(tmp_path, [{"name": "fc", "type": "linear", "in_features": 192, "out_features": 10}])
    monkeypatch.setenv("TGE_MAX_PARAMETERS", "100")
    load_error(p, r"more than the limit 100 ")


def test_huge_activations_refused(tmp_path):
    arch = [{"name": "conv1", "type": "conv", "in_channels": 3, "out_channels": 64, "kernel_size": 1,
             "padding": 100_000}]
    load_error(_tiny_file(tmp_path, arch), r"layer 'conv1' would output .* values per image")
    load_error(_tiny_file(tmp_path, [{"name": "f", "type": "flatten"}], input_shape=(3, 100_000, 100_000)),
               r"input_shape .* more than")


# --------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------
def test_weight_overflowing_float32_refused(saved):
    def fn(f):
        w = f["weights/fc1/weight"][()].astype(np.float64)
        w[0, 0] = 1e300
        del f["weights/fc1/weight"]
        f["weights/fc1"].create_dataset("weight", data=w)
    edit(saved, fn)
    load_error(saved, r"layer 'fc1': weight contains NaN or Inf \(after the cast from float64 to float32\)")


@pytest.mark.parametrize("key,value,match", [
    ("std", np.array([0.0, 1.0]), "std must be at least"),
    ("std", np.array([1e-30, 1.0]), "std must be at least"),
    ("std", np.array([-1.0, 1.0]), "std must be at least"),
    ("mean", np.array([np.nan, 0.0]), "mean must be finite"),
    ("mean", "abc", "mean must be numbers"),
    ("crop", "abc", "crop must be a whole number"),
    ("crop", -3, "crop must be between 0 and"),
    ("crop", 10 ** 9, "crop must be between 0 and"),
    ("crop", 2.5, "crop must be a whole number"),
    ("resize", np.array([1, 2, 3]), "resize must be an int or"),
    ("pixel_scale", "x", "pixel_scale must be numbers"),
    ("pixel_scale", -1.0, "pixel_scale must be positive"),
    ("channel_order", 7, "channel_order must be a string"),
    ("channel_order", b"\xff\xfe", "channel_order is not UTF-8"),
])
def test_bad_preprocessing_attributes(saved, key, value, match):
    edit(saved, lambda f: f["preprocessing"].attrs.__setitem__(key, value))
    load_error(saved, r"tiny.h5: .*" + match)


@pytest.mark.parametrize("value,match", [
    (1.0, "format_version' must be an integer, got 1.0"),
    (1.9, "format_version' must be an integer"),
    ("1", "format_version' must be an integer"),
    (np.array([1, 1]), "format_version' must be an integer"),
    (True, "format_version' must be an integer"),
])
def test_format_version_must_be_a_known_integer(saved, value, match):
    edit(saved, lambda f: f.attrs.__setitem__("format_version", value))
    load_error(saved, match)


def test_empty_architecture(saved):
    edit(saved, lambda f: f.attrs.__setitem__("architecture", "[]"))
    load_error(saved, r"'architecture' is an empty list")


def test_deeply_nested_architecture(saved):
    edit(saved, lambda f: f.attrs.__setitem__("architecture", "[" * 100_000 + "]" * 100_000))
    load_error(saved, r"'architecture' is not valid JSON")


def test_weight_stored_as_group(saved):
    def fn(f):
        del f["weights/fc1/weight"]
        f["weights/fc1"].create_group("weight")
    edit(saved, fn)
    load_error(saved, r"layer 'fc1': weights/fc1/weight is a group, expected a dataset")


def test_layer_stored_as_dataset(saved):
    def fn(f):
        del f["weights/fc1"]
        f["weights"].create_dataset("fc1", data=np.zeros(3, np.float32))
    edit(saved, fn)
    load_error(saved, r"layer 'fc1': missing weights/fc1/weight")


def test_format_attribute_is_an_array(saved):
    edit(saved, lambda f: f.attrs.__setitem__("format", np.array([1, 2, 3])))
    load_error(saved, r"attribute 'format' must be a string, got ndarray")


def test_class_names_not_utf8(saved):
    def fn(f):
        del f["class_names"]
        f.create_dataset("class_names", data=np.array([b"cat", b"\xff\xfedog", b"emu"], dtype="S6"))
    edit(saved, fn)
    load_error(saved, r"class name 1 is not UTF-8")


def test_class_names_not_strings(saved):
    def fn(f):
        del f["class_names"]
        f.create_dataset("class_names", data=np.arange(3))
    edit(saved, fn)
    load_error(saved, r"'class_names' must be a 1-D dataset of strings")


def test_good_file_still_loads(saved, model):
    back = te.load_model(saved)
    assert back.class_names == ["cat", "dog", "emu"]
    x = np.random.default_rng(0).standard_normal((2, 2, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())


# --------------------------------------------------------------------------
# PyTorch checkpoints and caffemodels: bounded before decompression
# --------------------------------------------------------------------------
from test_convert import write_pth  # noqa: E402  (the torch-free .pth writer)

from tinygrad_explain.modelfiles import torch_checkpoint as tc  # noqa: E402
from tinygrad_explain.modelfiles.convert import ConversionError, convert_caffe, convert_torchvision  # noqa: E402


def test_stride_zero_tensor_refused(tmp_path):
    """A few hundred bytes claiming a (4096, 9216) tensor over ONE float (stride 0) would expand to 151 MB."""
    p = write_pth(tmp_path / "s0.pth", {"classifier.1.weight": (np.ones(1, np.float32), 0, (4096, 9216), (0, 0))})
    assert p.stat().st_size < 1000
    with pytest.raises(ValueError, match=r"s0.pth: .*stride-0 or overlapping"):
        tc.load_torch_state_dict(p)


def test_storage_length_must_match_its_entry(tmp_path):
    p = write_pth(tmp_path / "lie.pth", {"w": (np.ones(4, np.float32), 0, (4,), (1,))})
    import zipfile
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(tmp_path / "lie2.pth", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):                                   # numel 4 -> 2^28
                data = data.replace(b"J\x04\x00\x00\x00", b"J\x00\x00\x00\x10", 1)
            dst.writestr(name, data)
    with pytest.raises(ValueError, match=r"lie2.pth: storage .* should hold 268435456 elements"):
        tc.load_torch_state_dict(tmp_path / "lie2.pth")


def test_zip_bomb_refused_before_decompression(tmp_path, monkeypatch):
    import zipfile
    p = tmp_path / "bomb.pth"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        body = (b"\x80\x02" + b"c" + b"collections\nOrderedDict\n" + b")R(" + b"X\x01\x00\x00\x00w"
                + b"ctorch._utils\n_rebuild_tensor_v2\n" + b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
                + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\x00\x00\x40\x01tQK\x00(J\x00\x00\x40\x01tK\x01t"
                + b"\x89)tRu.")
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/data/0", bytes(80 << 20))                         # 80 MB of zeros, ~80 kB stored
    assert p.stat().st_size < 200_000
    monkeypatch.setattr(tc._RestrictedUnpickler, "_read_entry",
                        lambda *a: pytest.fail("decompressed a storage before refusing the archive"))
    with pytest.raises(ValueError, match=r"bomb.pth: archive entry .* would expand .* zip bomb"):
        tc.load_torch_state_dict(p)


def test_total_size_limit(tmp_path):
    p = write_pth(tmp_path / "big.pth", {"w": (np.ones(1000, np.float32), 0, (1000,), (1,))})
    with pytest.raises(ValueError,
                       match=r"big.pth: the checkpoint's tensors hold 4,000 bytes, more than the limit 100"):
        tc.load_torch_checkpoint(p, max_bytes=100)


def test_converter_checks_shapes_before_reading_any_storage(tmp_path, monkeypatch):
    p = write_pth(tmp_path / "notalex.pth", {
        "features.0.weight": (np.ones(4, np.float32), 0, (2, 2), (2, 1)),
        "classifier.6.weight": (np.ones(4096 * 10, np.float32), 0, (10, 4096), (4096, 1))})
    monkeypatch.setattr(tc._RestrictedUnpickler, "_read_entry",
                        lambda *a: pytest.fail("read a storage of a checkpoint with the wrong shapes"))
    with pytest.raises(ConversionError, match=r"'features.0.weight' has shape \(2, 2\), torchvision AlexNet needs"):
        convert_torchvision(p, tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()


def test_checkpoint_reader_refuses_fifo(tmp_path):
    fifo = tmp_path / "x.pth"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"x.pth: not a regular file \(a FIFO\)"):
        tc.load_torch_state_dict(fifo)
    with pytest.raises(ValueError, match=r"x.pth: not a regular file \(a FIFO\)"):
        convert_caffe(fifo, tmp_path / "o.h5")


def test_deeply_nested_caffemodel(tmp_path):
    from tinygrad_explain.modelfiles import caffemodel as cm
    depth = 200_000                                        # far past Python's recursion limit
    start, stop = cm._key(50, cm.SGROUP), cm._key(50, cm.EGROUP)
    p = tmp_path / "deep.caffemodel"
    p.write_bytes(start * depth + stop * depth)
    assert cm.load_caffemodel(p) == {}                      # skipped like any unknown field: no RecursionError
    with pytest.raises(ConversionError, match=r"deep.caffemodel: layers .* not found"):
        convert_caffe(p, tmp_path / "o.h5")
    p.write_bytes(start * depth + stop * (depth - 1))
    with pytest.raises(ValueError, match=r"deep.caffemodel: not a valid caffemodel: unterminated group"):
        cm.load_caffemodel(p)


def test_caffemodel_blob_shape_overflow(tmp_path):
    """dims whose int64 product wraps to 0 must not pass as an empty blob."""
    from tinygrad_explain.modelfiles import caffemodel as cm
    data = cm.encode_caffemodel([("conv1", "Convolution", [np.zeros(0, np.float32)])])
    dims = cm._varint(1 << 32) * 2
    blob = cm._len_field(7, cm._len_field(1, dims))
    layer = cm._len_field(1, b"conv1") + cm._len_field(2, b"Convolution") + cm._len_field(7, blob)
    p = tmp_path / "wrap.caffemodel"
    p.write_bytes(data[:0] + cm._len_field(100, layer))
    with pytest.raises(ValueError, match=r"wrap.caffemodel: .*shape \(4294967296, 4294967296\)"):
        cm.load_caffemodel(p)


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------
from types import SimpleNamespace  # noqa: E402

TORCHVISION_LIKE = SimpleNamespace(input_shape=(3, 224, 224),
                                   preprocessing=dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                                                      resize=256, crop=224))


@pytest.mark.parametrize("w,h", [(2, 20000), (60000, 1)])
def test_elongated_image_refused_before_resizing(tmp_path, w, h):
    p = tmp_path / f"strip{w}x{h}.png"
    Image.new("L", (w, h), 128).save(p)
    assert p.stat().st_size < 200_000
    with pytest.raises(ValueError, match=rf"strip{w}x{h}.png.*{w}x{h} is more elongated than .*MAX_ASPECT"):
        te_image.load(p, TORCHVISION_LIKE)


def test_pixel_limit(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(p)
    monkeypatch.setattr(te_image, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"big.png.*40x30 is 1,200 pixels, more than te.image.MAX_PIXELS = 1,000"):
        te_image.load(p, TORCHVISION_LIKE)
    monkeypatch.setattr(te_image, "MAX_PIXELS", 60_000)        # the file fits, its resize (256x341) does not
    with pytest.raises(ValueError, match=r"resizing the 40x30 image to 341x256 would make"):
        te_image.load(p, TORCHVISION_LIKE)


def test_empty_images_refused():
    with pytest.raises(ValueError, match=r"it is empty \(5x0 pixels\)"):
        te_image.load(np.zeros((0, 5, 3), np.uint8), TORCHVISION_LIKE)
    with pytest.raises(ValueError, match=r"it is empty \(0x0 pixels\)"):
        te_image.load(Image.new("RGB", (0, 0)), TORCHVISION_LIKE)


def test_float_tiff_converted_not_black(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random((16, 16), dtype=np.float32)                      # a float image in [0, 1]
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    got = np.asarray(te_image.load_pil(tmp_path / "f.tif"))[:, :, 0].astype(int)
    np.testing.assert_allclose(got, np.round(a * 255), atol=1)
    assert got.max() > 200                                           # PIL's own convert: all 0 or 1


def test_32bit_integer_tiff_scaled_not_saturated(tmp_path):
    a = np.linspace(0, 60000, 256, dtype=np.int32).reshape(16, 16)  # a 16-bit range stored as 32-bit
    Image.fromarray(a, "I").save(tmp_path / "i.tif")
    got = np.asarray(te_image.load_pil(tmp_path / "i.tif"))[:, :, 0].astype(int)
    np.testing.assert_allclose(got, np.round(a / 65535 * 255), atol=1)
    assert (got < 255).mean() > 0.9                                  # PIL's own convert: almost all 255


def test_nan_float_image_refused(tmp_path):
    a = np.full((4, 4), np.nan, np.float32)
    Image.fromarray(a, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"nan.tif.*NaN or Inf"):
        te_image.load_pil(tmp_path / "nan.tif")


def test_image_fifo_refused(tmp_path):
    fifo = tmp_path / "pic.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pic.png.*not a regular file \(a FIFO\)"):
        te_image.load(fifo, TORCHVISION_LIKE)


def test_non_numeric_crop_at_load_time():
    bad = SimpleNamespace(input_shape=(3, 8, 8), preprocessing=dict(crop="eight"))
    with pytest.raises(ValueError, match=r"preprocessing crop must be a whole number of pixels.*'eight'"):
        te_image.load(np.zeros((8, 8, 3), np.uint8), bad)


# --------------------------------------------------------------------------
# inputs and targets
# --------------------------------------------------------------------------
def test_empty_batch(model):
    with pytest.raises(ValueError, match=r"empty batch \(0 images\)"):
        model(np.zeros((0, 2, 9, 9), np.float32))
    with pytest.raises(ValueError, match=r"empty batch"):
        te.explain.saliency(model, np.zeros((0, 2, 9, 9), np.float32), 0)


def test_float16_input(model):
    with pytest.raises(TypeError, match=r"input dtype float16 is not supported.*astype\(np.float32\)"):
        model(np.zeros((1, 2, 9, 9), np.float16))


@pytest.mark.parametrize("target", ["²", "½", "-²", "1²"])
def test_unicode_digit_targets(target):
    """str.isdigit() is True for '²' but int('²') fails: such a target is a (missing) class name."""
    named = SimpleNamespace(num_classes=3, class_names=["cat", "dog", "emu"])
    with pytest.raises(te.explain.ExplainError, match=f"unknown class name '{target}'"):
        te.explain.resolve_class(named, target)
    with pytest.raises(te.explain.ExplainError, match="no class names"):
        te.explain.resolve_class(SimpleNamespace(num_classes=3, class_names=None), target)


# --------------------------------------------------------------------------
# non-finite numbers never become finite answers
# --------------------------------------------------------------------------
def _mlp(w1, w2, w3=None):
    """fc1 -> relu1 -> fc2 [-> relu2 -> fc3]: a vector network with chosen weights."""
    from tinygrad_explain.core import nn
    layers = [("fc1", nn.Linear(4, 4)), ("relu1", nn.ReLU()), ("fc2", nn.Linear(4, len(w2)))]
    if w3 is not None:
        layers += [("relu2", nn.ReLU()), ("fc3", nn.Linear(len(w2), len(w3)))]
    m = te.Network(layers, (4,), class_names=[f"c{i}" for i in range(len(w3 if w3 is not None else w2))])
    for name, w in (("fc1", w1), ("fc2", w2), ("fc3", w3)):
        if w is not None:
            m.layers[name].weight.data[...] = np.asarray(w, np.float32)
            m.layers[name].bias.data[...] = 0
    return m


X4 = np.ones((1, 4), np.float32)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_scores_overflowing_in_the_last_linear_layer():
    m = _mlp(np.eye(4), np.full((3, 4), 3e38))                      # scores = 4 * 3e38 -> inf
    for explain in (lambda: te.explain.saliency(m, X4, 0), lambda: te.explain.gradient(m, X4, 1, rule="guided"),
                    lambda: te.explain.predict(m, X4), lambda: te.explain.gradient_x_input(m, X4, 0)):
        with pytest.raises(te.explain.ExplainError, match=r"contains NaN or Inf: the network overflowed"):
            explain()


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_gradient_overflowing():
    """Finite scores (about 2e20), but the gradient at fc2's input, 4 * 3e38, overflows."""
    m = _mlp(np.full((4, 4), 1e-20), np.ones((4, 4)), np.full((3, 4), 3e38))
    assert np.isfinite(m(X4).numpy()).all()
    with pytest.raises(te.explain.ExplainError, match=r"the gradient contains NaN or Inf"):
        te.explain.saliency(m, X4, 0)


def _relu_propagates_nan():
    from tinygrad_explain.kernels import relu
    return bool(np.isnan(relu.forward(np.array([np.nan], np.float32))[0]))


@pytest.mark.skipif(not _relu_propagates_nan(), reason="the ReLU kernel still maps NaN to 0 (issue #13)")
def test_nan_inside_the_network_is_not_hidden_by_relu():
    """fc1 gives +inf and -inf, fc2 adds them (NaN), ReLU must pass the NaN on, so the
    plausible-looking finite scores a NaN->0 ReLU would give never reach the user."""
    w1 = [[1e38] * 4, [-1e38] * 4, [0] * 4, [0] * 4]
    m = _mlp(w1, np.ones((4, 4)), np.ones((3, 4)))
    with pytest.raises(te.explain.ExplainError, match=r"NaN or Inf"):
        te.explain.saliency(m, X4, 0)
    with pytest.raises(te.explain.ExplainError, match=r"NaN or Inf"):
        te.explain.predict(m, X4)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_cli_reports_overflow_in_one_line(tmp_path, capsys):
    from tinygrad_explain import __main__ as cli
    m = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)
    m.layers["fc8"].weight.data[...] = 3e38
    p = te.save_model(m, tmp_path / "m.h5", class_names=[f"c{i}" for i in range(10)])
    Image.new("RGB", (64, 64), (200, 100, 50)).save(tmp_path / "x.png")
    rc = cli.main(["saliency", "--image", str(tmp_path / "x.png"), "--weights", str(p),
                   "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "NaN or Inf" in err, err
    assert not (tmp_path / "s.png").exists()


# --------------------------------------------------------------------------
# .npz loaders under one rule (issue #32): checkpoints, the bank, the sample
# --------------------------------------------------------------------------
def _npy_member(z, name, shape, dtype="<u1", data=b""):
    """A member ``name.npy`` whose header claims ``shape`` of ``dtype``, followed by ``data``."""
    from numpy.lib import format as npy
    buf = __import__("io").BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    z.writestr(name + ".npy", buf.getvalue() + data)


def _loaders():
    """(name, a function reading an .npz path, the error it must raise) for every loader."""
    from tinygrad_explain.core.safe_io import NpzError, load_npz
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain import ExplainError, benchmark, exemplar
    from tinygrad_explain.training import checkpoint, optim
    model = tiny_network(dropout=False)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return [("checkpoint", lambda p: checkpoint.load_checkpoint(p, model, opt), ValueError),
            ("exemplar bank", lambda p: exemplar.load_bank(p), ExplainError),
            ("scene sample", scenes.load_sample, ValueError),
            ("benchmark result", benchmark.load, ValueError),
            ("file", load_npz, NpzError)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_npz_loaders_refuse_a_fifo_without_hanging(tmp_path):
    """A FIFO named like a checkpoint, bank or sample: refused without being opened for
    reading (which blocks forever); --resume's latest checkpoint too.  In a subprocess
    with a timeout, so that a regression fails instead of hanging the suite."""
    (tmp_path / "ck").mkdir()
    os.mkfifo(tmp_path / "ck" / "epoch_001.npz")
    os.mkfifo(tmp_path / "x.npz")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_reliability import _loaders
        from tinygrad_explain.training import checkpoint, optim
        from _reference import tiny_network
        for name, load, err in _loaders():
            try:
                load({str(tmp_path / 'x.npz')!r})
            except err as e:
                print("ERR", name, e)
        m = tiny_network(dropout=False)
        try:
            checkpoint.resume({str(tmp_path / 'ck')!r}, m, optim.SGD(m.parameters(), lr=0.1), {{}}, ())
        except ValueError as e:
            print("ERR resume", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("ERR")]
    assert len(lines) == 6 and all("not a regular file (a FIFO)" in ln for ln in lines), r.stdout + r.stderr


def test_npz_bombs_are_refused_before_reading(tmp_path, monkeypatch):
    """Sizes come from the zip directory and the .npy headers, checked before a byte is
    decompressed: a 1 TiB header, a member bigger than the archive says, a zip bomb
    (deflated zeros; here a 2 MB one under a 1 MB limit, the environment's override) and
    an object array (a pickle) are each one line naming the file and the member."""
    import zipfile
    cases = {}
    with zipfile.ZipFile(tmp_path / "tib.npz", "w") as z:
        _npy_member(z, "images", (1 << 40,))
    cases["tib.npz"] = "1,099,511,627,776 bytes"
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:
        _npy_member(z, "images", (1000,), "<f8", b"\0" * 16)
    cases["short.npz"] = "the file is damaged"
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        _npy_member(z, "images", (2 << 20,), "<u1", b"\0" * (2 << 20))
    cases["bomb.npz"] = "declare"
    with zipfile.ZipFile(tmp_path / "pickle.npz", "w") as z:
        _npy_member(z, "images", (1,), "|O", b"\x80\x04N.")
    cases["pickle.npz"] = "pickle"
    assert (tmp_path / "bomb.npz").stat().st_size < 20_000
    monkeypatch.setenv("TGE_MAX_NPZ_BYTES", str(1 << 20))
    for name, load, err in _loaders():
        for fname, want in cases.items():
            with pytest.raises(err) as e:
                load(tmp_path / fname)
            msg = str(e.value)
            assert fname in msg and want in msg and "\n" not in msg, (name, msg)
            assert "'images'" in msg or fname == "bomb.npz", (name, msg)


def _checkpoint_state(model, opt):
    from tinygrad_explain.core import engine
    return ({k: v.copy() for k, v in model.state_dict().items()}, opt.lr, opt.steps,
            [v.copy() for v in opt.velocity], json.dumps(model.preprocessing, default=list),
            json.dumps(engine.rng().bit_generator.state))


def test_a_bad_checkpoint_changes_nothing(tmp_path):
    """All or nothing: every part of a checkpoint is checked before anything is assigned,
    so one that fails late (bad preprocessing, a bad generator) leaves the model's
    weights, the optimiser and the generator as they were; values are checked (lr > 0,
    0 <= momentum < 1, std > 0, finite weights), and errors name the file and the key."""
    from tinygrad_explain.training import checkpoint, optim
    from tinygrad_explain.training.checkpoint import CheckpointError
    src = tiny_network(seed=1, dropout=False)
    src_opt = optim.SGD(src.parameters(), lr=0.05, momentum=0.9)
    good = checkpoint.save_checkpoint(tmp_path / "good.npz", src, src_opt, 3, extra={"config": {"lr": 0.05,
                                                                                             "momentum": 0.9}})
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def js(key, **change):
        return np.asarray(json.dumps(dict(json.loads(str(arrays[key])), **change)))
    w0 = next(k for k in arrays if k.startswith("model/"))
    v0 = next(k for k in arrays if k.startswith("opt/velocity"))
    bad = {
        "lr_nan": ({"opt/lr": np.asarray(np.nan)}, "'opt/lr'"),
        "lr_negative": ({"opt/lr": np.asarray(-0.1)}, "'opt/lr'"),
        "steps_negative": ({"opt/steps": np.asarray(-1)}, "'opt/steps'"),
        "momentum_nan": ({"extra": js("extra", config={"momentum": float("nan")})}, "'momentum'"),
        "momentum_one": ({"extra": js("extra", config={"momentum": 1.0})}, "'momentum'"),
        "std_zero": ({"preprocessing": js("preprocessing", std=[0.0, 0.0])}, "std"),
        "weight_nan": ({w0: np.full_like(arrays[w0], np.nan)}, w0),
        "velocity_shape": ({v0: np.zeros(3, np.float32)}, v0),
        "epoch_negative": ({"epoch": np.asarray(-2)}, "'epoch'"),
        "bad_json": ({"rng_states": np.asarray("{not json")}, "'rng_states'"),
        "bad_generator": ({"rng_states": js("rng_states", engine={"bit_generator": "seed"})}, "'seed'"),
        "missing_extra": ({"extra": None}, "'extra'"),
        "missing_weight": ({w0: None}, "missing weights"),
    }
    model = tiny_network(seed=2, dropout=False)
    model.preprocessing["std"] = [0.5, 0.5]
    opt = optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    for name, (change, key) in bad.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, **{k: v for k, v in {**arrays, **change}.items() if v is not None})
        before = _checkpoint_state(model, opt)
        with pytest.raises(CheckpointError) as e:
            checkpoint.load_checkpoint(p, model, opt)
        msg = str(e.value)
        assert f"{name}.npz" in msg and key in msg and "\n" not in msg, (name, msg)
        after = _checkpoint_state(model, opt)
        for k in before[0]:
            np.testing.assert_array_equal(before[0][k], after[0][k], err_msg=name)
        assert before[1:3] == after[1:3] and before[4:] == after[4:], name
        for a, b in zip(before[3], after[3]):
            np.testing.assert_array_equal(a, b)
    # and the good one loads whole
    epoch, _, extra = checkpoint.load_checkpoint(good, model, opt)
    assert epoch == 3 and opt.lr == 0.05 and extra["config"]["momentum"] == 0.9
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v)


def test_upload_limits_decide_before_decoding(tmp_path):
    """te.image.UPLOAD_LIMITS (the explorer's uploads): formats and pixel modes from an
    allow-list, the pixel cap from the header -- a large JPEG decoded at a reduced scale
    by the decoder itself, anything else over the cap refused before its raster exists."""
    import io
    import tracemalloc
    lim = te_image.UPLOAD_LIMITS
    buf = io.BytesIO()
    Image.new("RGB", (6000, 4000), (200, 10, 10)).save(buf, format="JPEG")
    im = te_image.load_pil(io.BytesIO(buf.getvalue()), limits=lim)
    assert im.size == (3000, 2000) and im.getpixel((5, 5))[0] > 150            # 1/2 scale: 6 M pixels
    assert te_image.load_pil(io.BytesIO(buf.getvalue())).size == (6000, 4000)   # without limits: whole
    buf = io.BytesIO()
    Image.new("I;16", (5000, 4000)).save(buf, format="PNG")                    # 20 M pixels, not a JPEG
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="5000x4000 is 20,000,000 pixels, more than this decoder's limit"):
            te_image.load_pil(io.BytesIO(buf.getvalue()), limits=lim)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
    (tmp_path / "fake.png").write_bytes(eps)
    with pytest.raises(te_image.UnsupportedImageError, match="not a PNG, JPEG, WEBP, BMP, GIF, TIFF image"):
        te_image.load_pil(tmp_path / "fake.png", limits=lim)
    buf = io.BytesIO()
    Image.new("LAB", (8, 8)).save(buf, format="TIFF")
    with pytest.raises(te_image.UnsupportedImageError, match="pixel mode 'LAB'"):
        te_image.load_pil(io.BytesIO(buf.getvalue()), limits=lim)
