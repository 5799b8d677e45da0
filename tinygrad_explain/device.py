"""Which devices exist.  The CPU always does; the GPU needs CuPy and a CUDA device."""
from __future__ import annotations

DEVICES = ("cpu", "gpu")


def gpu_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and sees a CUDA device, else (False, why)."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install -e .[gpu])"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        return False, f"CuPy found no usable CUDA device ({e})"
    return (n > 0, "" if n > 0 else "CuPy found no CUDA device")


def require(device: str):
    """Raise a clear error unless ``device`` can be used."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    if device == "gpu":
        ok, why = gpu_available()
        if not ok:
            raise RuntimeError(f"device 'gpu' requested but {why}; use device='cpu'")
        raise NotImplementedError("the GPU backend (CuPy kernels) is not part of this build yet; use device='cpu'")
