"""Devices on a machine without a GPU (these always run, in CI too).

* asking for the GPU without CuPy, or without a CUDA device, is a clear error
  that says what is missing -- from ``device.require``, ``Network.to``,
  ``load_model(device=...)`` and the command line;
* unknown device names are a ValueError; ``Network.to("cpu")`` is a no-op;
* importing the package never imports CuPy;
* the GPU code path itself, run on the host: ``tests/test_gpu.py`` under
  ``tests/fake_cupy`` (a NumPy-backed CuPy stand-in whose kernels are the .cu
  sources compiled with g++, see tests/fake_cupy/README.md) -- skipped
  without g++.  The whole-AlexNet comparisons are left to the real GPU run.
"""
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from _reference import serial_kernels  # noqa: F401 (fixture)

import tinygrad_explain as te
from tinygrad_explain.core import device, nn

pytestmark = pytest.mark.usefixtures("serial_kernels")
HERE = Path(__file__).resolve().parent


@pytest.fixture
def no_cupy(monkeypatch):
    """As if CuPy were not installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
    monkeypatch.setattr(device, "_GPU_OK", False)


@pytest.fixture
def cupy_without_gpu(monkeypatch):
    """As if CuPy were installed on a machine with no CUDA device (or driver)."""
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(device, "_GPU_OK", False)


def tiny():
    te.manual_seed(0)
    return te.Network([("conv1", nn.Conv2d(1, 2, 3)), ("relu1", nn.ReLU()), ("flatten", nn.Flatten()),
                       ("fc1", nn.Linear(2 * 3 * 3, 3))], (1, 5, 5))


def test_gpu_without_cupy_is_a_clear_error(no_cupy, tmp_path):
    ok, why = device.gpu_available()
    assert not ok and "CuPy is not installed (pip install -e .[gpu])" in why
    for ask in (lambda: device.require("gpu"), lambda: tiny().to("gpu"),
                lambda: te.load_model(te.save_model(tiny(), tmp_path / "m.h5"), device="gpu"),
                lambda: te.Tensor(np.ones(2)).to("gpu")):
        with pytest.raises(device.DeviceUnavailable, match=r"CuPy is not installed \(pip install -e \.\[gpu\]\)"):
            ask()
    assert isinstance(device.DeviceUnavailable("x"), RuntimeError)


def test_gpu_without_a_cuda_device_is_a_clear_error(cupy_without_gpu):
    ok, why = device.gpu_available()
    assert not ok and "no CUDA device" in why
    with pytest.raises(device.DeviceUnavailable, match="no CUDA device"):
        tiny().to("gpu")


def test_unknown_device_is_a_value_error(tmp_path):
    path = te.save_model(tiny(), tmp_path / "m.h5")
    for ask in (lambda: device.require("tpu"), lambda: tiny().to("tpu"), lambda: te.load_model(path, device="cuda"),
                lambda: te.Tensor(np.ones(2)).to("tpu"), lambda: device.move(np.ones(2), "tpu")):
        with pytest.raises(ValueError, match="unknown device"):
            ask()


def test_to_cpu_is_a_no_op():
    m = tiny()
    before = [p.data for p in m.parameters()]
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = m(x).numpy()
    assert m.to("cpu") is m and m.device == "cpu"
    assert all(a is p.data for a, p in zip(before, m.parameters()))
    np.testing.assert_array_equal(m(x).numpy(), y)
    t = te.Tensor(x)
    assert t.to("cpu") is t and t.device == "cpu"
    assert device.of(x) == "cpu" and device.move(x, "cpu") is x


def test_load_model_on_cpu_is_unchanged(tmp_path):
    m = te.load_model(te.save_model(tiny(), tmp_path / "m.h5"), device="cpu")
    assert m.device == "cpu" and all(isinstance(p.data, np.ndarray) for p in m.parameters())


def test_cli_asks_for_the_gpu_without_cupy(no_cupy, capsys):
    from tinygrad_explain.__main__ import main
    assert main(["class-model", "--target", "0", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "CuPy is not installed" in err and "device='cpu'" in err


def test_import_does_not_import_cupy():
    code = "import sys, tinygrad_explain as te; te.models.alexnet('caffe'); print('cupy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.needs(shutil.which("g++") is not None, "needs g++ to compile the .cu sources for the host")
def test_gpu_code_path_on_the_host():
    """tests/test_gpu.py with the fake CuPy (everything but the full-size AlexNets)."""
    env = dict(os.environ, TE_FAKE_CUPY="1", NUMBA_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "test_gpu.py"),
                        "-k", "not alexnet"], capture_output=True, text=True, env=env, cwd=HERE, timeout=1200)
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-30:])
    assert r.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail.splitlines()[-1], tail
