"""Converters: torch checkpoints (no torch needed to read), caffemodels, AlexNet end to end.

The full-size end-to-end tests (~250 MB each) are few: one torchvision
conversion (needs torch), one V1 and one V2 caffemodel.  Everything else
uses tiny hand-made files.
"""
import importlib.util
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import _need as need
import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.data.imagenet import CAFFE_MEAN_BGR, IMAGENET_CLASSES, TORCHVISION_MEAN, TORCHVISION_STD
from tinygrad_explain.modelfiles import caffemodel as cm
from tinygrad_explain.modelfiles.convert import (
    ConversionError,
    caffe_to_state_dict,
    convert_caffe,
    convert_torchvision,
    torchvision_to_state_dict,
)
from tinygrad_explain.modelfiles.torch_checkpoint import (
    UnsafeCheckpointError,
    load_torch_checkpoint,
    load_torch_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# A torch.save-compatible writer that needs no torch: pickle opcodes by hand.
# ---------------------------------------------------------------------------
def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i):
    return b"J" + struct.pack("<i", i)


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage"}


def write_pth(path, tensors, prefix="archive", byteorder="little", extra_pickle=b""):
    """Write ``{name: (storage_array, offset, size, stride)}`` the way torch.save does.

    Every tensor gets its own storage ``data/<i>``; ``extra_pickle`` is spliced
    in as one more dict entry's value (to smuggle in hostile opcodes).
    """
    body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
    storages = {}
    for i, (name, (storage, offset, size, stride)) in enumerate(tensors.items()):
        storage = np.ascontiguousarray(storage).reshape(-1)
        key = str(i)
        storages[key] = storage
        pid = _tuple([_str("storage"), _global("torch", _STORAGE_NAMES[storage.dtype]),
                      _str(key), _str("cpu"), _int(storage.size)]) + b"Q"
        args = _tuple([pid, _int(offset), _tuple([_int(s) for s in size]),
                       _tuple([_int(s) for s in stride]), b"\x89",
                       _global("collections", "OrderedDict") + b")R"])
        body += _str(name) + _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    if extra_pickle:
        body += _str("extra") + extra_pickle
    body += b"u."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", body)
        z.writestr(f"{prefix}/byteorder", byteorder)
        for key, arr in storages.items():
            dt = arr.dtype.newbyteorder("<" if byteorder == "little" else ">")
            z.writestr(f"{prefix}/data/{key}", arr.astype(dt).tobytes())
        z.writestr(f"{prefix}/version", "3\n")
    return path


def write_state_dict_pth(path, sd):
    """Plain contiguous tensors (the common case) through :func:`write_pth`."""
    return write_pth(path, {k: (v, 0, v.shape, _c_strides(v.shape)) for k, v in sd.items()})


def _c_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


# ---------------------------------------------------------------------------
# torch_checkpoint: parsing
# ---------------------------------------------------------------------------
def test_handwritten_pth_parses_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(24).astype(np.float32)
    half = rng.standard_normal(5).astype(np.float16)
    dbl = rng.standard_normal(4)
    lng = np.arange(7, dtype=np.int64)
    path = write_pth(tmp_path / "hand.pth", {
        "contig": (base, 0, (4, 6), (6, 1)),
        "transposed": (base, 0, (6, 4), (1, 6)),            # a .t() view
        "offset_view": (base, 5, (2, 3), (6, 2)),           # base[5:] stepped
        "half": (half, 1, (4,), (1,)),
        "double": (dbl, 0, (2, 2), (2, 1)),
        "long": (lng, 0, (7,), (1,)),
        "scalar": (base, 3, (), ()),
        "empty": (base, 0, (0, 3), (3, 1)),
    })
    sd = load_torch_state_dict(path)
    grid = base.reshape(4, 6)
    np.testing.assert_array_equal(sd["contig"], grid)
    np.testing.assert_array_equal(sd["transposed"], grid.T)
    np.testing.assert_array_equal(sd["offset_view"], [[base[5 + 6 * i + 2 * j] for j in range(3)]
                                                      for i in range(2)])
    np.testing.assert_array_equal(sd["half"], half[1:])
    np.testing.assert_array_equal(sd["double"], dbl.reshape(2, 2))
    np.testing.assert_array_equal(sd["long"], lng)
    assert sd["scalar"].shape == () and sd["scalar"] == base[3]
    assert sd["empty"].shape == (0, 3)
    assert sd["half"].dtype == np.float16 and sd["double"].dtype == np.float64
    assert sd["long"].dtype == np.int64 and sd["contig"].dtype == np.float32
    assert all(v.flags.c_contiguous and v.flags.owndata for v in sd.values() if v.size)


def test_big_endian_archive(tmp_path):
    a = np.arange(6, dtype=np.float32)
    path = write_pth(tmp_path / "be.pth", {"w": (a, 0, (2, 3), (3, 1))}, byteorder="big",
                     prefix="some_other_name")
    np.testing.assert_array_equal(load_torch_state_dict(path)["w"], a.reshape(2, 3))


def test_torch_saved_file_matches_torch(tmp_path):
    torch = need.module("torch")
    base = torch.randn(4, 5, 6)
    sd = {"w": torch.randn(3, 4).t(), "half": torch.randn(5).half(), "long": torch.arange(4),
          "param": torch.nn.Parameter(torch.randn(2, 2)), "view": base[1:3, ::2, 1],
          "bf16": torch.randn(3).bfloat16(), "f64": torch.randn(2, dtype=torch.float64)}
    torch.save(sd, tmp_path / "t.pth")
    out = load_torch_state_dict(tmp_path / "t.pth")
    for k, v in sd.items():
        ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        assert out[k].dtype == ref.dtype and out[k].shape == ref.shape, k
        np.testing.assert_array_equal(out[k], ref)
    # training checkpoints nest the state dict; DataParallel prefixes "module."
    torch.save({"epoch": 3, "state_dict": {"module.a": torch.ones(2)}}, tmp_path / "ckpt.pth")
    assert list(load_torch_state_dict(tmp_path / "ckpt.pth")) == ["a"]


# ---------------------------------------------------------------------------
# torch_checkpoint: hostile and broken files
# ---------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _zip_with_pickle(path, payload, prefix="archive"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", payload)
        z.writestr(f"{prefix}/version", "3\n")
    return path


# protocol 2 imports with the GLOBAL opcode, protocol 4 with STACK_GLOBAL
@pytest.mark.parametrize("evil_cls, protocol, refused",
                         [(_Evil, 2, "system"), (_EvilEval, 4, "builtins.eval")])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, evil_cls, protocol, refused):
    marker = tmp_path / "pwned"
    path = _zip_with_pickle(tmp_path / "evil.pth", pickle.dumps(evil_cls(marker), protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=refused) as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # ... also through the converter and its script (exit 2, one line, no traceback)
    with pytest.raises(UnsafeCheckpointError):
        convert_torchvision(path, tmp_path / "out.h5")
    assert not marker.exists() and not (tmp_path / "out.h5").exists()


def test_malicious_global_after_valid_tensors_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker), protocol=2)[2:-1]      # strip PROTO and STOP
    a = np.ones(3, np.float32)
    path = write_pth(tmp_path / "mixed.pth", {"w": (a, 0, (3,), (1,))}, extra_pickle=evil)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|nt.system"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_build_onto_allowed_stand_in_is_refused(tmp_path):
    # GLOBAL an allowed name, then BUILD (setstate) onto it: must not mutate our stand-ins.
    payload = (b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2")
               + b"}" + _str("__defaults__") + b"N" + b"s" + b"b.")
    path = _zip_with_pickle(tmp_path / "build.pth", payload)
    with pytest.raises(UnsafeCheckpointError):
        load_torch_checkpoint(path)
    a = np.arange(3, dtype=np.float32)          # the real stand-in still works
    ok = write_pth(tmp_path / "ok.pth", {"w": (a, 0, (3,), (1,))})
    np.testing.assert_array_equal(load_torch_state_dict(ok)["w"], a)


def test_legacy_and_non_checkpoint_files(tmp_path):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(_Evil(marker), protocol=2))   # raw pickle, not a zip
    with pytest.raises(ValueError, match=r"legacy.*not supported.*torch >= 1\.6"):
        load_torch_state_dict(legacy)
    assert not marker.exists()
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_torch_state_dict(text)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_torch_state_dict(empty)
    with pytest.raises(FileNotFoundError):
        load_torch_state_dict(tmp_path / "missing.pth")


def test_legacy_torch_format_is_explained(tmp_path):
    torch = need.module("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy") as info:
        load_torch_state_dict(tmp_path / "old.pth")
    assert "old.pth" in str(info.value)


def test_truncated_and_incomplete_archives(tmp_path):
    a = np.arange(1000, dtype=np.float32)
    good = write_pth(tmp_path / "good.pth", {"w": (a, 0, (1000,), (1,))})
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|corrupt") as info:
            load_torch_state_dict(bad)
        assert str(bad) in str(info.value)
    nopkl = tmp_path / "nopkl.pth"
    with zipfile.ZipFile(nopkl, "w") as z:
        z.writestr("archive/version", "3\n")
    with pytest.raises(ValueError, match="no data.pkl") as info:
        load_torch_state_dict(nopkl)
    assert str(nopkl) in str(info.value)
    # data.pkl present, storage missing / too short
    nostore = tmp_path / "nostore.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(nostore, "w") as dst:
        for n in src.namelist():
            if not n.endswith("data/0"):
                dst.writestr(n, src.read(n))
    with pytest.raises(ValueError, match="missing"):
        load_torch_state_dict(nostore)
    short = write_pth(tmp_path / "short.pth", {"w": (a[:10], 0, (20,), (1,))})
    with pytest.raises(ValueError, match="past the end|should hold"):
        load_torch_state_dict(short)


# ---------------------------------------------------------------------------
# torchvision mapping
# ---------------------------------------------------------------------------
TV_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


def _zeros_like_shapes(shapes):
    # np.zeros is lazily allocated by the OS: cheap even for fc6.
    return {k: np.zeros(s, np.float32) for k, s in shapes.items()}


def test_torchvision_mapping_names_keys():
    sd = torchvision_to_state_dict(_zeros_like_shapes(TV_SHAPES))
    assert sorted(sd) == sorted(te.models.alexnet("torchvision").state_dict())
    bad = _zeros_like_shapes(TV_SHAPES)
    bad["features.0.weight"] = np.zeros((96, 3, 11, 11), np.float32)
    with pytest.raises(ConversionError, match=r"features\.0\.weight.*\(96, 3, 11, 11\)"):
        torchvision_to_state_dict(bad)
    extra = _zeros_like_shapes(TV_SHAPES)
    extra["layer1.0.conv1.weight"] = np.zeros((64, 64, 3, 3), np.float32)
    with pytest.raises(ConversionError, match="layer1.0.conv1.weight"):
        torchvision_to_state_dict(extra)
    missing = _zeros_like_shapes(TV_SHAPES)
    del missing["features.8.bias"]
    with pytest.raises(ConversionError, match=r"features\.8\.bias"):
        torchvision_to_state_dict(missing)
    with pytest.raises(ConversionError, match="classifier.6.weight"):
        torchvision_to_state_dict({"fc.weight": np.zeros((10, 512), np.float32)})


def test_wrong_architecture_file_and_script_exit_code(tmp_path, capsys):
    sd = {"classifier.6.weight": np.zeros((1000, 4096), np.float32),
          "classifier.6.bias": np.zeros(1000, np.float32),
          "features.0.weight": np.zeros((64, 3, 7, 7), np.float32)}
    path = write_state_dict_pth(tmp_path / "resnetish.pth", sd)
    with pytest.raises(ConversionError, match=r"features\.0\.weight.*\(64, 3, 7, 7\)"):
        convert_torchvision(path, tmp_path / "o.h5")
    main = _script("convert_torchvision").main
    assert main([str(path), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "features.0.weight" in err and "Traceback" not in err
    assert not (tmp_path / "o.h5").exists()
    assert main([str(tmp_path / "nope.pth"), str(tmp_path / "o.h5")]) == 2
    assert "nope.pth" in capsys.readouterr().err


def test_script_subprocess_bad_input_exit_2(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_torchvision.py"),
                        str(bad), str(tmp_path / "o.h5")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "bad.pth" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------
# torchvision end to end (full size, needs torch)
# ---------------------------------------------------------------------------
def _torch_alexnet(torch):
    nn = torch.nn

    class AlexNet(nn.Module):          # torchvision.models.AlexNet's layout and key names
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, 1000))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet().eval()


@pytest.mark.slow
def test_torchvision_end_to_end_scores_match_torch(tmp_path):
    torch = need.module("torch")
    torch.manual_seed(0)
    net = _torch_alexnet(torch)
    # Larger biases than the default init so the class scores are not all ~0.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.1, 0.1)
    pth = tmp_path / "alexnet.pth"
    torch.save(net.state_dict(), pth)
    out = tmp_path / "weights" / "alexnet_torchvision.h5"
    assert _script("convert_torchvision").main([str(pth), str(out)]) == 0

    model = te.load_model(out)
    assert model.input_shape == (3, 224, 224)
    assert model.class_names == IMAGENET_CLASSES and len(model.class_names) == 1000
    pre = model.preprocessing
    assert pre["channel_order"] == "RGB" and pre["pixel_scale"] == 1.0
    assert (pre["resize"], pre["crop"]) == (256, 224)
    np.testing.assert_allclose(pre["mean"], TORCHVISION_MEAN)
    np.testing.assert_allclose(pre["std"], TORCHVISION_STD)

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    with te.no_grad():
        got = model(x).numpy()
    assert got.shape == (1, 1000)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


# ---------------------------------------------------------------------------
# caffemodel parser
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("v1", [False, True])
@pytest.mark.parametrize("legacy_shape, packed, double",
                         [(False, True, False), (True, True, False), (False, False, False),
                          (False, True, True), (True, False, True)])
def test_caffemodel_roundtrip(v1, legacy_shape, packed, double):
    rng = np.random.default_rng(1)
    layers = [("data", "Data", []),
              ("conv", "Convolution", [rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)]),
              ("relu", "ReLU", []),
              ("fc", "InnerProduct", [rng.standard_normal((5, 36)), rng.standard_normal(5)])]
    parsed = cm.parse_caffemodel(cm.encode_caffemodel(layers, v1=v1, legacy_shape=legacy_shape,
                                                      packed=packed, double=double))
    assert [(l.name, l.type) for l in parsed] == [(n, t) for n, t, _ in layers]
    for (_, _, blobs), layer in zip(layers, parsed):
        assert len(layer.blobs) == len(blobs)
        for want, got in zip(blobs, layer.blobs):
            expect_shape = (1,) * (4 - want.ndim) + want.shape if legacy_shape else want.shape
            assert got.shape == expect_shape
            assert got.dtype == (np.float64 if double else np.float32)
            np.testing.assert_array_equal(got.reshape(-1),
                                          want.reshape(-1).astype(got.dtype))


def test_caffemodel_malformed_inputs_name_the_offset(tmp_path):
    blob = [np.ones((3, 3), np.float32)]
    data = cm.encode_caffemodel([("conv1", "Convolution", blob)])
    with pytest.raises(ValueError, match="byte offset"):
        cm.parse_caffemodel(data[:-5])                     # truncated inside a layer
    with pytest.raises(ValueError, match="byte offset 0"):
        cm.parse_caffemodel(b"\x0f\x01")                   # wire type 7 does not exist
    with pytest.raises(ValueError, match="truncated varint"):
        cm.parse_caffemodel(b"\x08\xff\xff")
    # a blob whose shape disagrees with its data
    bad = cm._len_field(100, cm._len_field(1, b"x") + cm._len_field(
        7, cm._len_field(7, cm._len_field(1, cm._varint(5))) + cm._len_field(5, b"\0" * 8)))
    with pytest.raises(ValueError, match=r"shape \(5,\).*2 data values"):
        cm.parse_caffemodel(bad)
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.caffemodel.*byte offset"):
        cm.load_caffemodel(path)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        cm.load_caffemodel(empty)


def test_caffemodel_skips_unknown_fields():
    # unknown top-level fields of every wire type, before and after the layer
    junk = (cm._key(50, cm.VARINT) + cm._varint(300) + cm._key(51, cm.I64) + b"\0" * 8
            + cm._key(52, cm.I32) + b"\0" * 4 + cm._len_field(53, b"abc"))
    data = junk + cm.encode_caffemodel([("fc", "InnerProduct", [np.ones(2)])]) + junk
    assert list(cm.parse_caffemodel(data)[0].blobs[0]) == [1.0, 1.0]


# ---------------------------------------------------------------------------
# caffe mapping and end to end (full size)
# ---------------------------------------------------------------------------
_CAFFE_GRAPH = [("data", "Data"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("norm1", "LRN"),
                ("pool1", "Pooling"), ("conv2", "Convolution"), ("relu2", "ReLU"),
                ("norm2", "LRN"), ("pool2", "Pooling"), ("conv3", "Convolution"),
                ("relu3", "ReLU"), ("conv4", "Convolution"), ("relu4", "ReLU"),
                ("conv5", "Convolution"), ("relu5", "ReLU"), ("pool5", "Pooling"),
                ("fc6", "InnerProduct"), ("relu6", "ReLU"), ("drop6", "Dropout"),
                ("fc7", "InnerProduct"), ("relu7", "ReLU"), ("drop7", "Dropout"),
                ("fc8", "InnerProduct"), ("prob", "Softmax")]


@pytest.fixture(scope="module")
def caffe_weights():
    te.manual_seed(123)
    sd = te.models.alexnet("caffe").state_dict()
    rng = np.random.default_rng(5)
    # non-trivial biases so every layer matters
    return {k: (v + rng.uniform(-0.1, 0.1, v.shape).astype(np.float32)) if k.endswith("bias")
            else v for k, v in sd.items()}


def _caffe_layers(sd):
    return [(name, ltype, [sd[f"{name}.weight"], sd[f"{name}.bias"]] if f"{name}.weight" in sd
             else []) for name, ltype in _CAFFE_GRAPH]


@pytest.mark.slow
def test_caffe_v1_end_to_end_scores_match_direct_load(tmp_path, caffe_weights):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_bytes(cm.encode_caffemodel(_caffe_layers(caffe_weights), v1=True, legacy_shape=True))
    out = tmp_path / "alexnet_caffe.h5"
    assert _script("convert_caffe").main([str(path), str(out)]) == 0

    model = te.load_model(out)
    assert model.input_shape == (3, 227, 227)
    assert model.class_names == IMAGENET_CLASSES
    pre = model.preprocessing
    assert pre["channel_order"] == "BGR" and pre["pixel_scale"] == 255.0
    assert (pre["resize"], pre["crop"]) == (256, 227)
    np.testing.assert_allclose(pre["mean"], CAFFE_MEAN_BGR)
    np.testing.assert_allclose(pre["std"], [1, 1, 1])

    direct = te.models.alexnet("caffe")
    direct.load_state_dict(caffe_weights)
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32) * 50
    with te.no_grad():
        got, ref = model(x).numpy(), direct(x).numpy()
    assert np.abs(ref).max() > 0
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.slow
def test_caffe_v2_converts_to_identical_weights(tmp_path, caffe_weights):
    path = tmp_path / "v2.caffemodel"
    path.write_bytes(cm.encode_caffemodel(_caffe_layers(caffe_weights), v1=False))
    model = convert_caffe(path, tmp_path / "v2.h5")
    for k, v in te.load_model(tmp_path / "v2.h5").state_dict().items():
        np.testing.assert_array_equal(v, caffe_weights[k], err_msg=k)
    assert model.preprocessing["channel_order"] == "BGR"


def test_caffe_wrong_architecture(tmp_path, capsys):
    blobs = {n: [np.zeros(s, np.float32) for s in shapes] for n, shapes in {
        "conv1": [(96, 3, 11, 11), (96,)], "conv2": [(256, 48, 5, 5), (256,)],
        "conv3": [(384, 256, 3, 3), (384,)], "conv4": [(384, 192, 3, 3), (384,)],
        "conv5": [(256, 192, 3, 3), (256,)], "fc6": [(4096, 9216), (4096,)],
        "fc7": [(4096, 4096), (4096,)], "fc8": [(1000, 4096), (1000,)]}.items()}
    assert sorted(caffe_to_state_dict(blobs)) == sorted(te.models.alexnet("caffe").state_dict())
    wrong = dict(blobs, conv2=[np.zeros((256, 96, 5, 5), np.float32), np.zeros(256, np.float32)])
    with pytest.raises(ConversionError, match=r"conv2.*\(256, 96, 5, 5\)"):   # ungrouped conv2
        caffe_to_state_dict(wrong)
    with pytest.raises(ConversionError, match="fc8"):
        caffe_to_state_dict({k: v for k, v in blobs.items() if k != "fc8"})
    with pytest.raises(ConversionError, match="conv1_1"):
        caffe_to_state_dict(dict(blobs, conv1_1=[np.zeros((1,), np.float32)]))
    with pytest.raises(ConversionError, match="conv3.*1 blobs"):
        caffe_to_state_dict(dict(blobs, conv3=blobs["conv3"][:1]))

    small = tmp_path / "vgg.caffemodel"
    small.write_bytes(cm.encode_caffemodel([("conv1_1", "Convolution",
                                             [np.zeros((64, 3, 3, 3)), np.zeros(64)])]))
    main = _script("convert_caffe").main
    assert main([str(small), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vgg.caffemodel" in err and "Traceback" not in err
    trunc = tmp_path / "trunc.caffemodel"
    trunc.write_bytes(small.read_bytes()[:40])
    assert main([str(trunc), str(tmp_path / "o.h5")]) == 2
    assert "byte offset" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# fetch_alexnet: offline failure is fast and clear; download path verified locally
# ---------------------------------------------------------------------------
def test_fetch_fails_fast_when_server_does_not_answer(tmp_path, capsys):
    import socket
    import time
    fetch = _script("fetch_alexnet")
    with socket.socket() as s:                     # accepts connections, never replies
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/alexnet-owt-7be5be79.pth"
        t0 = time.monotonic()
        rc = fetch.main(["--out", str(tmp_path / "a.h5"), "--url", url, "--timeout", "1",
                         "--no-progress"])
        assert time.monotonic() - t0 < 10
    assert rc == 1
    err = capsys.readouterr().err
    assert "timed out" in err and "--pth" in err and "Traceback" not in err
    # nothing listening: connection refused, immediately
    rc = fetch.main(["--out", str(tmp_path / "a.h5"), "--url", url, "--timeout", "1",
                     "--no-progress"])
    assert rc == 1 and "cannot reach" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_fetch_download_verifies_sha256(tmp_path):
    import hashlib
    import http.server
    import threading
    fetch = _script("fetch_alexnet")
    payload = os.urandom(3000)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.pth").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "srv"), **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/f.pth"
        dest = fetch.download(url, tmp_path / "dl" / "f.pth", timeout=5,
                              expected_sha256=hashlib.sha256(payload).hexdigest(), progress=False)
        assert dest.read_bytes() == payload
        with pytest.raises(fetch.BadFileError, match="checksum mismatch"):
            fetch.download(url, tmp_path / "dl" / "g.pth", timeout=5,
                           expected_sha256="0" * 64, progress=False)
        assert not (tmp_path / "dl" / "g.pth").exists()
        assert not (tmp_path / "dl" / "g.pth.part").exists()
        # the real SHA-256 is the published one: the checksum check refuses a random file
        rc = fetch.main(["--out", str(tmp_path / "a.h5"), "--url", url, "--no-progress"])
        assert rc == 2 and not (tmp_path / "a.h5").exists()
    finally:
        srv.shutdown()
        srv.server_close()


def test_fetch_constants():
    fetch = _script("fetch_alexnet")
    assert fetch.URL == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert fetch.SHA256.startswith("7be5be79") and len(fetch.SHA256) == 64
    assert fetch.DEFAULT_OUT.name == "alexnet_torchvision.h5"
