"""Every bad input gets a clear error: the right exception type, and a message
that names the offending thing (the layer, the key, the file, the value).
Plus save -> load round trips of the HDF5 model file."""
import json

import _need as need
import numpy as np
import pytest
from _reference import edit, rng, serial_kernels, tiny_network  # noqa: F401 (fixture)

import tinygrad_explain as te
from tinygrad_explain.core import nn
from tinygrad_explain.core.models import Network, alexnet

pytestmark = pytest.mark.usefixtures("serial_kernels")

h5py = need.module("h5py")


@pytest.fixture(scope="module")
def model():
    return tiny_network(seed=1)


def good_input(n=1):
    return rng(0).standard_normal((n, 2, 9, 9)).astype(np.float32)


# --------------------------------------------------------------------------
# network input
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape,match", [
    ((2, 9, 9), r"rank 3 shape \(2, 9, 9\)"),
    ((1, 1, 2, 9, 9), r"rank 5"),
    ((1, 3, 9, 9), r"channels mismatch.*\(N, 2, 9, 9\).*\(1, 3, 9, 9\)"),
    ((1, 2, 8, 9), r"size mismatch.*\(N, 2, 9, 9\).*\(1, 2, 8, 9\).*9x9"),
    ((1, 2, 9, 10), r"size mismatch"),
])
def test_wrong_input_shape(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(np.zeros(shape, np.float32))


def test_wrong_input_shape_as_tensor(model):
    with pytest.raises(ValueError, match="size mismatch"):
        model(te.Tensor(np.zeros((1, 2, 10, 10), np.float32), requires_grad=True))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_input(model, dtype):
    with pytest.raises(TypeError, match=f"dtype {np.dtype(dtype).name} is not floating point"):
        model(np.zeros((1, 2, 9, 9), dtype))


def test_not_an_array(model):
    with pytest.raises(TypeError, match="list"):
        model([[[[0.0]]]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input(model, bad):
    x = good_input(2)
    x[1, 1, 4, 4] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(x)


def test_unknown_layer_in_until(model):
    with pytest.raises(KeyError, match=r"unknown layer 'fc9'.*did you mean.*fc1.*layers: \['conv1', 'relu1'"):
        model(good_input(), until="fc9")
    with pytest.raises(KeyError, match=r"unknown layer 'zzz'; layers: \[.*'pool1'.*'fc2'\]"):
        model(good_input(), until="zzz")


def test_unknown_layer_in_until_alexnet():
    m = alexnet("caffe")
    with pytest.raises(KeyError, match=r"'pool3'.*pool1.*pool2.*pool5"):
        m(np.zeros((1, 3, 227, 227), np.float32), until="pool3")


def test_unknown_alexnet_variant():
    with pytest.raises(ValueError, match=r"unknown AlexNet variant 'vgg'.*'torchvision'.*'caffe'"):
        alexnet("vgg")


# --------------------------------------------------------------------------
# building networks
# --------------------------------------------------------------------------
def test_network_construction_errors():
    with pytest.raises(ValueError, match="duplicate layer name 'a'"):
        Network([("a", nn.ReLU()), ("a", nn.ReLU())], (1, 4, 4))
    with pytest.raises(ValueError, match=r"layer 'c2' expects 5 input channels, gets 4"):
        Network([("c1", nn.Conv2d(3, 4, 3)), ("c2", nn.Conv2d(5, 4, 3))], (3, 8, 8))
    with pytest.raises(ValueError, match=r"layer 'fc' expects 10 input features, gets shape \(16,\)"):
        Network([("f", nn.Flatten()), ("fc", nn.Linear(10, 2))], (1, 4, 4))
    with pytest.raises(ValueError, match=r"layer 'fc' expects 16 input features, gets shape \(1, 4, 4\)"):
        Network([("fc", nn.Linear(16, 2))], (1, 4, 4))
    with pytest.raises(ValueError, match=r"layer 'pool' would output an empty map"):
        Network([("pool", nn.MaxPool2d(3, 2))], (1, 2, 2))
    with pytest.raises(ValueError, match=r"not divisible by groups=2"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"dropout probability.*1.0"):
        nn.Dropout(1.0)


# --------------------------------------------------------------------------
# state dicts
# --------------------------------------------------------------------------
@pytest.fixture
def fresh():
    return tiny_network(seed=2)


def _assert_unchanged(net, before):
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")


def test_state_dict_missing_key(fresh):
    sd = fresh.state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    del sd["fc2.bias"]
    with pytest.raises(KeyError, match=r"missing \['fc2.bias'\]"):
        fresh.load_state_dict(sd)
    _assert_unchanged(fresh, before)


def test_state_dict_extra_key(fresh):
    sd = fresh.state_dict()
    sd["fc3.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(KeyError, match=r"unexpected keys \['fc3.weight'\]"):
        fresh.load_state_dict(sd)


def test_state_dict_misshaped(fresh):
    sd = {k: v.copy() for k, v in fresh.state_dict().items()}
    before = {k: v.copy() for k, v in sd.items()}
    sd["conv2.weight"] = np.zeros((6, 4, 3, 3), np.float32)     # ignores groups=2
    with pytest.raises(ValueError, match=r"conv2.weight: shape \(6, 4, 3, 3\) does not match .*\(6, 2, 3, 3\)"):
        fresh.load_state_dict(sd)
    _assert_unchanged(fresh, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_state_dict_nonfinite(fresh, bad):
    sd = {k: v.copy() for k, v in fresh.state_dict().items()}
    before = {k: v.copy() for k, v in sd.items()}
    sd["conv1.weight"] = sd["conv1.weight"] + 1          # a valid change that must not be applied ...
    sd["fc1.bias"][3] = bad                              # ... because another key is bad
    with pytest.raises(ValueError, match=r"fc1.bias: contains NaN or Inf"):
        fresh.load_state_dict(sd)
    _assert_unchanged(fresh, before)


def test_state_dict_integer_dtype(fresh):
    sd = fresh.state_dict()
    sd["fc1.bias"] = np.zeros(sd["fc1.bias"].shape, np.int32)
    with pytest.raises(ValueError, match=r"fc1.bias: dtype int32 is not floating point"):
        fresh.load_state_dict(sd)


def test_state_dict_round_trip(fresh):
    other = tiny_network(seed=3)
    other.load_state_dict({k: v.astype(np.float64) for k, v in fresh.state_dict().items()})
    for k, v in other.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, fresh.state_dict()[k])


# --------------------------------------------------------------------------
# HDF5 model file: broken files
# --------------------------------------------------------------------------
# ``saved`` (the module's ``model`` written to tiny.h5) is a fixture of conftest.py


def test_missing_file(tmp_path):
    p = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        te.load_model(p)


def test_not_hdf5(tmp_path):
    p = tmp_path / "noise.h5"
    p.write_bytes(rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(te.ModelFileError, match=r"noise.h5: not a readable HDF5 file"):
        te.load_model(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.h5"
    p.write_bytes(b"")
    with pytest.raises(te.ModelFileError, match="empty.h5"):
        te.load_model(p)


@pytest.mark.parametrize("frac", [0.5, 0.1, 0.95])
def test_truncated_file(saved, frac):
    data = saved.read_bytes()
    cut = saved.with_name("cut.h5")
    cut.write_bytes(data[:int(len(data) * frac)])
    with pytest.raises(te.ModelFileError, match="cut.h5"):
        te.load_model(cut)


def test_wrong_format_name(saved):
    edit(saved, lambda f: f.attrs.__setitem__("format", "keras"))
    with pytest.raises(te.ModelFileError, match=r"tiny.h5: not a tinygrad-explain-model file.*'keras'"):
        te.load_model(saved)


def test_missing_format_attribute(saved):
    edit(saved, lambda f: f.attrs.__delitem__("format"))
    with pytest.raises(te.ModelFileError, match="not a tinygrad-explain-model file"):
        te.load_model(saved)


def test_wrong_version(saved):
    edit(saved, lambda f: f.attrs.__setitem__("format_version", 3))
    with pytest.raises(te.ModelFileError, match=r"format_version 3 is not supported.*knows 1, 2"):
        te.load_model(saved)


def _set_weight(name, arr):
    def fn(f):
        layer, p = name.split("/")
        del f["weights"][layer][p]
        f["weights"][layer].create_dataset(p, data=arr)
    return fn


def test_weight_of_wrong_shape(saved):
    edit(saved, _set_weight("conv2/weight", np.zeros((6, 4, 3, 3), np.float32)))
    with pytest.raises(te.ModelFileError, match=r"layer 'conv2': weight has shape \(6, 4, 3, 3\).*\(6, 2, 3, 3\)"):
        te.load_model(saved)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_weights(saved, bad):
    def fn(f):
        f["weights/fc1/weight"][2, 3] = bad
    edit(saved, fn)
    with pytest.raises(te.ModelFileError, match=r"layer 'fc1': weight contains NaN or Inf"):
        te.load_model(saved)


def test_integer_weights(saved):
    edit(saved, _set_weight("conv1/bias", np.zeros(4, np.int32)))
    with pytest.raises(te.ModelFileError, match=r"layer 'conv1': bias has dtype int32"):
        te.load_model(saved)


def test_missing_weight(saved):
    edit(saved, lambda f: f["weights/fc2"].__delitem__("bias"))
    with pytest.raises(te.ModelFileError, match=r"layer 'fc2': missing weights/fc2/bias"):
        te.load_model(saved)


def test_missing_weights_group(saved):
    edit(saved, lambda f: f.__delitem__("weights"))
    with pytest.raises(te.ModelFileError, match="no 'weights' group"):
        te.load_model(saved)


def test_extra_weights_layer(saved):
    edit(saved, lambda f: f["weights"].create_group("ghost").create_dataset("weight", data=np.zeros(3, np.float32)))
    with pytest.raises(te.ModelFileError, match=r"not in the architecture: \['ghost'\]"):
        te.load_model(saved)


def test_extra_weight_in_known_layer(saved):
    """ENGINE BUG (modelfile.py, load_model): only extra *layer groups* are
    rejected; an extra dataset inside a known layer (here weights/fc1/extra,
    or e.g. a BatchNorm's running_mean) is silently ignored."""
    edit(saved, lambda f: f["weights/fc1"].create_dataset("extra", data=np.zeros(3, np.float32)))
    with pytest.raises(te.ModelFileError, match=r"fc1.*extra"):
        te.load_model(saved)


def _set_arch(arch):
    return lambda f: f.attrs.__setitem__("architecture", arch if isinstance(arch, str) else json.dumps(arch))


def test_architecture_not_json(saved):
    edit(saved, _set_arch("[{'name': 'conv1',"))
    with pytest.raises(te.ModelFileError, match=r"tiny.h5: 'architecture' is not valid JSON"):
        te.load_model(saved)


def test_architecture_not_a_list(saved):
    edit(saved, _set_arch({"conv1": {"type": "conv"}}))
    with pytest.raises(te.ModelFileError, match="must be a list of layer objects"):
        te.load_model(saved)


def test_missing_architecture(saved):
    edit(saved, lambda f: f.attrs.__delitem__("architecture"))
    with pytest.raises(te.ModelFileError, match="missing 'architecture'"):
        te.load_model(saved)


def _arch_edit(saved, model, layer, **changes):
    arch = model.architecture()
    for spec in arch:
        if spec["name"] == layer:
            spec.update(changes)
            for k, v in list(spec.items()):
                if v is None:
                    del spec[k]
    return edit(saved, _set_arch(arch))


@pytest.mark.parametrize("layer,changes,match", [
    ("conv1", {"type": "deconv"}, r"layer 'conv1': unknown layer type 'deconv'.*known"),
    ("conv1", {"type": None}, r"layer 'conv1': unknown layer type None"),
    ("conv1", {"kernel_sz": 3}, r"layer 'conv1': bad arguments.*kernel_sz"),
    ("conv1", {"in_channels": 3}, r"layer 'conv1' expects 3 input channels, gets 2"),
    ("fc1", {"in_features": 7}, r"layer 'fc1' expects 7 input features"),
    ("drop", {"p": 1.5}, r"layer 'drop': dropout probability"),
    ("conv1", {"kernel_size": -1}, r"layer 'conv1'"),
], ids=["unknown-type", "no-type", "bad-argument", "channels", "features", "dropout-p", "negative-kernel"])
def test_bad_architecture_entries(saved, model, layer, changes, match):
    _arch_edit(saved, model, layer, **changes)
    with pytest.raises(te.ModelFileError, match="tiny.h5: " + match):
        te.load_model(saved)


def test_architecture_entry_without_name(saved, model):
    arch = model.architecture()
    del arch[4]["name"]
    edit(saved, _set_arch(arch))
    with pytest.raises(te.ModelFileError, match="architecture entry 4 has no 'name'"):
        te.load_model(saved)


@pytest.mark.parametrize("layer,changes", [
    ("conv1", {"stride": 0}),
    ("conv1", {"in_channels": 0, "out_channels": 0}),
    ("conv1", {"groups": 0}),
    ("pool1", {"stride": 0}),
    ("pool1", {"kernel_size": 0}),
    ("norm1", {"size": 0}),
    ("conv1", {"name": ["conv", 1]}),
], ids=["conv-stride-0", "conv-channels-0", "conv-groups-0", "pool-stride-0", "pool-kernel-0", "lrn-size-0",
        "name-not-a-string"])
def test_malformed_architecture_values(saved, model, layer, changes):
    """ENGINE BUG (models.py/nn.py via modelfile.load_model): non-positive
    sizes or strides and non-string layer names in a file's architecture
    escape as ZeroDivisionError / TypeError from the layer constructors or
    shape inference (conv stride 0, in_channels 0, groups 0, maxpool stride 0),
    or are accepted and only fail at forward time (maxpool kernel_size 0, LRN
    size 0) -- instead of a ModelFileError naming the file and the layer."""
    _arch_edit(saved, model, layer, **changes)
    with pytest.raises(te.ModelFileError, match=r"tiny.h5: .*(conv1|pool1|norm1|name)"):
        te.load_model(saved)


@pytest.mark.parametrize("attr,value", [("input_shape", "abc"), ("format_version", "x")])
def test_malformed_header_attributes(saved, attr, value):
    """ENGINE BUG (modelfile.py, load_model): a non-numeric ``input_shape`` or
    ``format_version`` raises a bare ValueError from int() ("invalid literal
    for int()") that names neither the file nor the attribute."""
    edit(saved, lambda f: f.attrs.__setitem__(attr, value))
    with pytest.raises(te.ModelFileError, match=f"tiny.h5: .*{attr}"):
        te.load_model(saved)


def test_wrong_input_shape_attribute(saved):
    edit(saved, lambda f: f.attrs.__setitem__("input_shape", np.array([2, 9, 9, 1])))
    with pytest.raises(te.ModelFileError, match=r"input_shape must be \[C, H, W\], got \[2, 9, 9, 1\]"):
        te.load_model(saved)


def test_class_names_count_mismatch(saved):
    def fn(f):
        del f["class_names"]
        f.create_dataset("class_names", data=["a", "b"], dtype=h5py.string_dtype("utf-8"))
    edit(saved, fn)
    with pytest.raises(te.ModelFileError, match="2 class names for 3 outputs"):
        te.load_model(saved)


def test_preprocessing_mean_length(saved):
    edit(saved, lambda f: f["preprocessing"].attrs.__setitem__("mean", np.zeros(3)))
    with pytest.raises(te.ModelFileError, match="preprocessing mean must have 2 values"):
        te.load_model(saved)


def test_save_model_errors(tmp_path, model):
    with pytest.raises(ValueError, match="2 class names for 3 outputs"):
        te.save_model(model, tmp_path / "a.h5", class_names=["a", "b"])
    with pytest.raises(ValueError, match="mean and std must have 2 values"):
        te.save_model(model, tmp_path / "b.h5", mean=[0.1, 0.2, 0.3])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# HDF5 model file: round trips
# --------------------------------------------------------------------------
PRE = dict(mean=[0.25, 0.5], std=[0.2, 0.3], channel_order="BGR", pixel_scale=255.0, resize=12, crop=9)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype == np.float32, k
        assert sa[k].shape == sb[k].shape, k
        assert sa[k].tobytes() == sb[k].tobytes(), f"{k} not bit-identical"


def test_round_trip_small(tmp_path, model):
    p = tmp_path / "m.h5"
    assert te.save_model(model, p, class_names=["cat", "dog", "émù"], **PRE) == p
    assert [f.name for f in tmp_path.iterdir()] == ["m.h5"]             # no temporary left behind
    back = te.load_model(p)
    assert back.architecture() == model.architecture()
    assert back.input_shape == model.input_shape
    _assert_same_weights(back, model)
    assert back.class_names == ["cat", "dog", "émù"]
    assert back.preprocessing == PRE
    assert back.path == str(p)
    x = good_input(2)
    np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())


def test_round_trip_defaults_and_model_attributes(tmp_path):
    m = tiny_network(seed=4)
    m.class_names = ["x", "y", "z"]
    m.preprocessing = {"mean": [1.0, 2.0], "std": [3.0, 4.0]}
    p = te.save_model(m, tmp_path / "d.h5")
    back = te.load_model(str(p))
    assert back.class_names == ["x", "y", "z"]
    assert back.preprocessing == {"mean": [1.0, 2.0], "std": [3.0, 4.0], "channel_order": "RGB",
                                  "pixel_scale": 1.0, "resize": 0, "crop": 0}
    # no class names at all
    m.class_names = None
    back = te.load_model(te.save_model(m, tmp_path / "n.h5"))
    assert back.class_names is None


def test_round_trip_overwrites(tmp_path, model):
    p = tmp_path / "m.h5"
    te.save_model(tiny_network(seed=9), p)
    te.save_model(model, p)
    _assert_same_weights(te.load_model(p), model)


def test_round_trip_alexnet_caffe(tmp_path):
    """The full caffe AlexNet (~240 MB), once."""
    te.manual_seed(11)
    m = alexnet("caffe")
    p = te.save_model(m, tmp_path / "alexnet.h5", class_names=[f"c{i}" for i in range(1000)],
                      mean=[104.0, 117.0, 123.0], channel_order="BGR", pixel_scale=255.0, resize=256, crop=227)
    back = te.load_model(p)
    assert back.architecture() == m.architecture()
    assert back.input_shape == (3, 227, 227)
    _assert_same_weights(back, m)
    assert back.class_names[999] == "c999"
    assert back.preprocessing["channel_order"] == "BGR" and back.preprocessing["crop"] == 227


# --------------------------------------------------------------------------
# arguments checked against the machine (issue #32)
# --------------------------------------------------------------------------
def test_thread_count_is_capped_to_the_cores():
    """--threads 64 must not reach Numba or the BLAS: capped, with a line saying so."""
    import io

    import numba
    from threadpoolctl import threadpool_info

    from tinygrad_explain.core.device import set_num_threads, usable_cores
    prev, blas = numba.get_num_threads(), [i["num_threads"] for i in threadpool_info()]
    note = io.StringIO()
    try:
        got = set_num_threads(10_000, file=note)
        assert got == min(usable_cores(), numba.config.NUMBA_NUM_THREADS)
        assert numba.get_num_threads() == got
        assert all(i["num_threads"] <= got for i in threadpool_info() if i["user_api"] == "blas")
        assert "10000 threads requested, using" in note.getvalue()
        quiet = io.StringIO()
        assert set_num_threads(1, file=quiet) == 1 and quiet.getvalue() == ""
        for bad in (-1, 2.5, "4", True):
            with pytest.raises(ValueError, match="thread count"):
                set_num_threads(bad)
    finally:
        numba.set_num_threads(prev)
        from threadpoolctl import threadpool_limits
        threadpool_limits(max(blas) if blas else None)


def test_absurd_sample_and_step_counts_are_refused_before_work():
    """SmoothGrad with 10^8 samples (9 TiB of noise before) and an optimisation of
    3x10^11 steps are refused at once, in one line, before anything is allocated."""
    import time

    from tinygrad_explain import explain as X
    m = tiny_network()
    x = np.zeros((1, 2, 9, 9), np.float32)
    t0 = time.perf_counter()
    with pytest.raises(X.ExplainError, match="samples must be at most"):
        X.smoothgrad(m, x, 0, samples=100_000_000)
    with pytest.raises(ValueError, match="steps must be at most"):
        X.optimize(lambda t: t.sum(), x, steps=300_000_000_000)
    assert time.perf_counter() - t0 < 5


def test_reproduce_figures_refuses_an_absurd_steps_scale(capsys):
    from tinygrad_explain.apps import figures
    with pytest.raises(SystemExit) as e:
        figures.main(["--out", "/nonexistent/never-written", "--steps-scale", "1e9"])
    assert e.value.code == 2 and "--steps-scale 1e+09 makes" in capsys.readouterr().err
