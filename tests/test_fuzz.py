"""Fuzzing the loaders (issue #15): generated bad model files, checkpoints, caffemodels
and images must give the documented errors -- never another exception, a hang or a
huge allocation -- or load correctly.  Bounded: a fixed number of examples each, a
deadline per example, derandomised so CI runs the same cases every time.

Documented errors: ModelFileError (model files), ValueError and its subclasses
UnsafeCheckpointError / ConversionError (checkpoints, caffemodels), ValueError
(images), FileNotFoundError; for the .npz loaders (issue #32: training checkpoints,
the exemplar bank, the scene sample, benchmark results, safe_io.load_npz) ValueError
and its subclasses NpzError / CheckpointError / ExplainError, with a bound on the
memory they may take (tracemalloc's peak).
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile

import _need as need
import numpy as np
import pytest

hypothesis = need.module("hypothesis")
from _reference import tiny_network  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st

import tinygrad_explain as te  # noqa: E402
from tinygrad_explain.data import image as te_image  # noqa: E402
from tinygrad_explain.modelfiles import caffemodel as cm  # noqa: E402
from tinygrad_explain.modelfiles import torch_checkpoint as tc  # noqa: E402
from tinygrad_explain.modelfiles.convert import torchvision_to_state_dict  # noqa: E402

h5py = need.module("h5py")

# TGE_FUZZ_EXAMPLES=2000 TGE_FUZZ_RANDOM=1 for a longer, exploring run by hand
FUZZ = settings(max_examples=int(os.environ.get("TGE_FUZZ_EXAMPLES", 60)), deadline=5000,
                derandomize=not os.environ.get("TGE_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------
# model files: valid HDF5 containers with hostile contents
# --------------------------------------------------------------------------
scalars = st.one_of(st.integers(-2 ** 40, 2 ** 40), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=8)
sizes = st.one_of(st.integers(-3, 20), st.sampled_from([0, 10 ** 9, 2 ** 31, 2 ** 63 - 1]), scalars)
layer_specs = st.one_of(
    st.fixed_dictionaries({"type": st.just("conv"), "in_channels": sizes, "out_channels": sizes,
                           "kernel_size": sizes}, optional={"stride": sizes, "padding": sizes, "groups": sizes}),
    st.fixed_dictionaries({"type": st.just("linear"), "in_features": sizes, "out_features": sizes}),
    st.fixed_dictionaries({"type": st.sampled_from(["relu", "flatten", "maxpool", "lrn", "dropout",
                                                    "adaptive_avgpool", "softmax", "bogus"])},
                          optional={"kernel_size": sizes, "size": sizes, "p": scalars, "alpha": scalars,
                                    "output_size": values}),
    st.dictionaries(st.text(max_size=6), values, max_size=3),
)
archs = st.lists(st.tuples(st.one_of(st.text(min_size=1, max_size=6), scalars), layer_specs), max_size=5)
attr_values = st.one_of(scalars.filter(lambda v: v is not None), st.lists(st.integers(-5, 300), max_size=4),
                        st.lists(st.floats(allow_nan=True), min_size=1, max_size=4),
                        st.binary(max_size=6))


def _attr(v):
    return np.asarray(v) if isinstance(v, list) else (np.void(v) if isinstance(v, bytes) and False else v)


@FUZZ
@given(arch=archs, input_shape=st.lists(sizes, max_size=4), pre=st.dictionaries(
    st.sampled_from(["mean", "std", "crop", "resize", "pixel_scale", "channel_order", "other"]), attr_values,
    max_size=4), version=st.one_of(st.just(1), scalars), weights=st.lists(
    st.tuples(st.text("abcfonv12_-²é ", min_size=1, max_size=5), st.sampled_from(["weight", "bias", "x"]),
              st.lists(st.integers(0, 5), max_size=3), st.sampled_from(["f4", "f8", "f2", "i4", "S3"])), max_size=4))
def test_fuzz_model_file_contents(workdir, arch, input_shape, pre, version, weights):
    p = workdir / "fuzz.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "tinygrad-explain-model"
        try:
            f.attrs["format_version"] = version if version is not None else "none"
            f.attrs["input_shape"] = np.asarray(input_shape) if all(isinstance(v, int) and abs(v) < 2 ** 62
                                                                    for v in input_shape) else str(input_shape)
        except (TypeError, ValueError, OverflowError):
            f.attrs["input_shape"] = "unstorable"
        f.attrs["architecture"] = json.dumps([dict(spec, name=name) for name, spec in arch], default=str)
        g = f.create_group("preprocessing")
        for k, v in pre.items():
            try:
                g.attrs[k] = _attr(v)
            except (TypeError, ValueError):
                pass
        w = f.create_group("weights")
        for layer, param, shape, dt in weights:
            grp = w.require_group(layer) if layer not in w or isinstance(w[layer], h5py.Group) else None
            if grp is not None and param not in grp:
                grp.create_dataset(param, data=np.ones(shape, dtype=dt))
    try:
        model = te.load_model(p)
    except te.ModelFileError as e:
        assert "\n" not in str(e) and str(p) in str(e)
    else:
        assert model.num_classes >= 1


def corrupted(good: bytes, data) -> bytes:
    """``good`` with 1-8 bytes overwritten at drawn places, then (half the time) truncated."""
    b = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        b = b[:data.draw(st.integers(0, len(b)))]
    return bytes(b)


@pytest.fixture(scope="module")
def good_model_bytes(tmp_path_factory):
    p = tmp_path_factory.mktemp("good") / "m.h5"
    te.save_model(tiny_network(seed=2), p, class_names=["a", "b", "c"])
    return p.read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_model_file_bytes(workdir, good_model_bytes, data):
    """Corrupt a valid model file: byte flips (HDF5 metadata and weights) and truncation."""
    b = corrupted(good_model_bytes, data)
    p = workdir / "bytes.h5"
    p.write_bytes(bytes(b))
    try:
        te.load_model(p)
    except te.ModelFileError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------
# PyTorch checkpoints
# --------------------------------------------------------------------------
from test_convert import write_pth  # noqa: E402


@FUZZ
@given(tensors=st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.tuples(st.integers(0, 64), st.sampled_from([np.float32, np.float16, np.float64, np.int64]),
              st.integers(0, 2 ** 31 - 1), st.lists(st.integers(0, 2 ** 31 - 1), max_size=3),
              st.lists(st.integers(0, 2 ** 31 - 1), max_size=3)), max_size=3),
    flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=3))
def test_fuzz_torch_checkpoint(workdir, tensors, flips):
    spec = {}
    for name, (n, dt, off, size, stride) in tensors.items():
        strides = tuple(stride[:len(size)]) + (1,) * (len(size) - len(stride))
        spec[name] = (np.arange(n, dtype=dt), off, tuple(size), strides)
    p = write_pth(workdir / "f.pth", spec)
    b = bytearray(p.read_bytes())
    for at, v in flips:
        b[at % len(b)] = v
    p.write_bytes(bytes(b))
    try:
        sd = tc.load_torch_state_dict(p)
    except ValueError as e:
        assert "\n" not in str(e) and str(p) in str(e)
        return
    for v in sd.values():
        assert isinstance(v, np.ndarray) and v.nbytes <= 64 * 8         # never more than its storage
    try:
        torchvision_to_state_dict(sd, source=str(p))
    except ValueError as e:
        assert "\n" not in str(e)


@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(["archive/data.pkl", "archive/data/0", "archive/byteorder",
                                                   "data.pkl", "x/y/data.pkl"]),
                                  st.binary(max_size=300), st.booleans()), max_size=4))
def test_fuzz_checkpoint_archives(workdir, entries):
    """Arbitrary bytes as the pickle, storages and byteorder, stored or deflated."""
    p = workdir / "z.pth"
    with zipfile.ZipFile(p, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # duplicate names are part of the fuzz
        for name, payload, deflate in entries:
            z.writestr(name, payload, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    try:
        tc.load_torch_checkpoint(p)
    except ValueError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------
# caffemodels
# --------------------------------------------------------------------------
@FUZZ
@given(base=st.booleans(), data=st.binary(max_size=400), flips=st.lists(
    st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=6))
def test_fuzz_caffemodel(workdir, base, data, flips):
    if base:
        rng = np.random.default_rng(len(data))
        b = bytearray(cm.encode_caffemodel([("conv1", "Convolution", [rng.standard_normal((2, 1, 3, 3)),
                                                                       rng.standard_normal(2)]),
                                             ("fc8", "InnerProduct", [rng.standard_normal((3, 4))])],
                                            v1=len(data) % 2 == 1, legacy_shape=len(data) % 3 == 0))
        for at, v in flips:
            b[at % len(b)] = v
        data = bytes(b)
    p = workdir / "f.caffemodel"
    p.write_bytes(data)
    try:
        cm.load_caffemodel(p)
    except ValueError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------
MODEL_LIKE = [
    type("M", (), dict(input_shape=(3, 16, 16), preprocessing={}))(),
    type("M", (), dict(input_shape=(3, 24, 24), preprocessing=dict(resize=28, crop=24, mean=[0.4] * 3,
                                                                    std=[0.2] * 3)))(),
    type("M", (), dict(input_shape=(1, 12, 12), preprocessing=dict(pixel_scale=255.0)))(),
]


def _encode(mode, w, h, fmt, seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    if mode == "F":
        a = (rng.standard_normal((h, w)) * 10 ** rng.integers(-3, 6)).astype(np.float32)
        im = Image.fromarray(a, "F")
    elif mode == "I":
        im = Image.fromarray(rng.integers(-2 ** 31, 2 ** 31 - 1, (h, w), dtype=np.int64).astype(np.int32), "I")
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16), "I;16")
    else:
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@FUZZ
@given(mode=st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK", "LA", "1", "F", "I", "I;16"]),
       w=st.integers(1, 70), h=st.integers(1, 70), fmt=st.sampled_from(["PNG", "TIFF", "BMP", "JPEG", "GIF"]),
       flips=st.lists(st.tuples(st.integers(0, 10 ** 5), st.integers(0, 255)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 4000)), which=st.integers(0, len(MODEL_LIKE) - 1),
       seed=st.integers(0, 1000))
def test_fuzz_images(workdir, mode, w, h, fmt, flips, cut, which, seed):
    try:
        data = _encode(mode, w, h, fmt, seed)
    except (OSError, ValueError, KeyError):
        return                                      # Pillow cannot write this mode in this format
    b = bytearray(data)
    for at, v in flips:
        b[at % len(b)] = v
    if cut is not None:
        b = b[:cut]
    p = workdir / f"img.{fmt.lower()}"
    p.write_bytes(bytes(b))
    model = MODEL_LIKE[which]
    try:                                            # the explorer's way: in memory, under the upload budget
        x = te_image.load(io.BytesIO(bytes(b)), model, limits=te_image.UPLOAD_LIMITS)
        assert x.shape == (1, *model.input_shape) and x.dtype == np.float32 and np.isfinite(x).all()
    except ValueError as e:
        assert "\n" not in str(e) and "(uploaded data)" in str(e)
    try:
        x = te_image.load(p, model)
    except ValueError as e:
        assert "\n" not in str(e) and str(p) in str(e)
        return
    assert x.shape == (1, *model.input_shape) and x.dtype == np.float32 and np.isfinite(x).all()


@FUZZ
@given(shape=st.lists(st.integers(0, 40), min_size=1, max_size=4), seed=st.integers(0, 100))
def test_fuzz_image_arrays(shape, seed):
    a = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    try:
        x = te_image.load(a, MODEL_LIKE[1])
    except ValueError as e:
        assert "\n" not in str(e)
        return
    assert x.shape == (1, 3, 24, 24) and np.isfinite(x).all()


# --------------------------------------------------------------------------
# .npz loaders: training checkpoints, the exemplar bank, the scene sample, results
# --------------------------------------------------------------------------
NPZ_NAMES = ["images", "labels", "indices", "seed", "masks", "boxes", "epoch", "rng_states", "preprocessing",
             "extra", "opt/lr", "opt/steps", "opt/velocity.0", "model/conv1.weight", "model/conv1.bias",
             "tolerance", "steps", "blur_sigma", "saliency/pointing", "saliency/seconds"]
NPZ_DTYPES = ["|u1", "<f4", ">f8", "<i8", "|b1", "<U8", "|O", "<c16", "|V4", "<M8[s]"]


def _npz_loaders():
    from tinygrad_explain.core.safe_io import load_npz
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain import benchmark, exemplar
    from tinygrad_explain.training import checkpoint, optim
    model = tiny_network(dropout=False)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {"checkpoint": lambda p: checkpoint.load_checkpoint(p, model, opt), "bank": exemplar.load_bank,
            "sample": scenes.load_sample, "benchmark": __import__("functools").partial(benchmark.load),
            "npz": load_npz}


def _npz_check(path):
    """Every loader on ``path``: a documented one-line error naming the file, or a result;
    never more than 64 MB of memory (tracemalloc traces NumPy's allocations)."""
    import tracemalloc

    from tinygrad_explain.explain import exemplar
    for name, load in _npz_loaders().items():
        exemplar._banks.clear()                           # the bank is cached per path
        tracemalloc.start()
        try:
            load(path)
        except ValueError as e:
            assert "\n" not in str(e) and str(path) in str(e), (name, str(e))
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 64 << 20, (name, peak)


@FUZZ
@given(members=st.lists(st.tuples(
    st.sampled_from(NPZ_NAMES), st.lists(st.one_of(st.integers(0, 70), st.sampled_from([2 ** 31, 2 ** 40, 2 ** 62])),
                                         max_size=4),
    st.sampled_from(NPZ_DTYPES), st.booleans(), st.binary(max_size=200), st.booleans()), max_size=6),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))
def test_fuzz_npz_contents(workdir, members, version):
    """Archives of members whose .npy headers claim any shape (up to 2^62 values) and
    dtype (objects, strings, complex, void, datetimes included), with or without the
    data they claim, stored or deflated."""
    import struct
    p = workdir / "f.npz"
    with zipfile.ZipFile(p, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # duplicate names are part of the fuzz
        for name, shape, dtype, fortran, data, deflate in members:
            text = repr({"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}).encode()
            size = "<H" if version[0] == 1 else "<I"
            pad = -(10 + (2 if version[0] != 1 else 0) + len(text) + 1) % 64
            text += b" " * pad + b"\n"
            raw = b"\x93NUMPY" + bytes(version) + struct.pack(size, len(text)) + text
            count = int(np.prod(shape, dtype=np.float64))
            want = count * np.dtype(dtype).itemsize if np.dtype(dtype).itemsize else 0
            body = data if want > 4096 or not data else (data * (want // len(data) + 1))[:want]
            z.writestr(name + ".npy", raw + body, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    _npz_check(p)


@pytest.fixture(scope="module")
def good_npz_files(workdir):
    """A real checkpoint of the tiny network and a real (small) bank, to flip bytes in."""
    from tinygrad_explain.training import checkpoint, optim
    model = tiny_network(dropout=False)
    ck = checkpoint.save_checkpoint(workdir / "good_ck.npz", model, optim.SGD(model.parameters(), lr=0.1,
                                                                               momentum=0.9), 1)
    rng = np.random.default_rng(0)
    bank = workdir / "good_bank.npz"
    np.savez_compressed(bank, images=rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8),
                        labels=np.arange(4, dtype=np.uint8), indices=np.arange(4), seed=np.asarray(0))
    return ck, bank


@FUZZ
@given(which=st.booleans(), flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1,
                                            max_size=6), cut=st.one_of(st.none(), st.integers(0, 10 ** 5)))
def test_fuzz_npz_bytes(workdir, good_npz_files, which, flips, cut):
    """A real checkpoint or bank with bytes flipped (zip directory, .npy headers, deflate
    streams, CRCs) or cut short."""
    b = bytearray(good_npz_files[int(which)].read_bytes())
    for at, v in flips:
        b[at % len(b)] = v
    if cut is not None:
        b = b[:cut]
    p = workdir / "flipped_npz.npz"
    p.write_bytes(bytes(b))
    _npz_check(p)


# --------------------------------------------------------------------------
# ONNX files (tinygrad_explain/modelfiles/onnx_import.py)
# --------------------------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_onnx_import import tiny_onnx  # noqa: E402


@pytest.fixture(scope="module")
def good_onnx_bytes(tmp_path_factory):
    p, _ = tiny_onnx(tmp_path_factory.mktemp("onnx") / "t.onnx")
    return p.read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_onnx_bytes(workdir, good_onnx_bytes, data):
    """Corrupt a valid ONNX file: byte flips (protobuf tags, lengths, weights) and truncation."""
    b = corrupted(good_onnx_bytes, data)
    p = workdir / "bytes.onnx"
    p.write_bytes(bytes(b))
    try:
        m = te.load_model(p)
    except te.ModelFileError as e:
        assert "\n" not in str(e) and str(p) in str(e)
    else:
        assert m.num_classes >= 1


ONNX_OPS = ["Conv", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Concat", "Flatten",
            "Reshape", "Gemm", "MatMul", "Dropout", "Identity", "BatchNormalization", "Shape", "Gather",
            "Unsqueeze", "Constant", "Sigmoid", "Resize", "Loop"]
onnx_attrs = st.dictionaries(st.sampled_from(["kernel_shape", "strides", "pads", "group", "axis", "ceil_mode",
                                              "transB", "epsilon", "dilations", "auto_pad"]),
                             st.one_of(st.integers(-3, 2 ** 33), st.lists(st.integers(-2, 9), max_size=5),
                                       st.floats(allow_nan=True), st.text(max_size=4)), max_size=3)


@FUZZ
@given(nodes=st.lists(st.tuples(st.sampled_from(ONNX_OPS), st.lists(st.sampled_from(["x", "w", "v0", "v1", "v2",
                                                                                    "big", "ext", ""]),
                                                                   max_size=3), onnx_attrs), min_size=1, max_size=5),
       dims=st.lists(st.integers(-2, 2 ** 31), max_size=4), in_dims=st.lists(st.integers(-1, 70000), max_size=5),
       external=st.booleans())
def test_fuzz_onnx_graphs(workdir, nodes, dims, in_dims, external):
    """Generated graphs of supported and unsupported ops with random attributes, inputs,
    huge declared dims and external data: a clear one-line error naming the file, or a model."""
    inits = [numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")]
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=dims)
    big.raw_data = b"\0" * 8
    inits.append(big)
    if external:
        ext = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[2], data_location=TensorProto.EXTERNAL)
        ext.external_data.add(key="location", value="/etc/passwd")
        inits.append(ext)
    onodes = []
    for k, (op, ins, attrs) in enumerate(nodes):
        try:
            onodes.append(helper.make_node(op, ins, [f"v{k}"], name=f"n{k}", **attrs))
        except (ValueError, TypeError):
            onodes.append(helper.make_node(op, ins, [f"v{k}"], name=f"n{k}"))
    g = helper.make_graph(onodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
                          [helper.make_tensor_value_info(f"v{len(nodes) - 1}", TensorProto.FLOAT, None)], inits)
    p = workdir / "graph.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    try:
        m = te.load_model(p)
    except te.ModelFileError as e:
        assert "\n" not in str(e) and str(p) in str(e)
    else:
        assert m.num_classes >= 1


@FUZZ
@given(nodes=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "input", "a/b", ""]),
                                st.sampled_from([{"type": "add"}, {"type": "concat"}, {"type": "relu"},
                                                 {"type": "flatten"}, {"type": "add", "x": 1},
                                                 {"type": "conv", "in_channels": 2, "out_channels": 2,
                                                  "kernel_size": 1}]),
                                st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "c", "input", "zz"]),
                                                              max_size=3), st.text(max_size=3), st.integers())),
                      max_size=5))
def test_fuzz_graph_model_files(workdir, nodes):
    """Version-2 architectures with hostile node lists (unknown or later inputs, merge nodes
    with one input, reserved names, dead nodes): a ModelFileError naming the file, or a model."""
    p = workdir / "graph.h5"
    arch = [dict(spec, name=name, **({} if ins is None else {"inputs": ins})) for name, spec, ins in nodes]
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "tinygrad-explain-model"
        f.attrs["format_version"] = 2
        f.attrs["input_shape"] = np.array([2, 3, 3])
        f.attrs["architecture"] = json.dumps(arch)
        f.create_group("weights")
    try:
        m = te.load_model(p)
    except te.ModelFileError as e:
        assert "\n" not in str(e) and str(p) in str(e)
    else:
        assert m.num_classes >= 1
