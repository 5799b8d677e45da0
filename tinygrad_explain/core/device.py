"""Which devices exist, and explicit moves between them.

The CPU always exists; the GPU needs CuPy (``pip install -e .[gpu]``) and a
CUDA device.  CuPy is imported only when the GPU is asked for (or a CuPy
array is met), never when tinygrad_explain is imported.
"""
from __future__ import annotations

import numpy as np

DEVICES = ("cpu", "gpu")
_GPU_OK = False          # set once the GPU has been found usable


class DeviceUnavailable(RuntimeError):
    """The GPU was asked for but CuPy or a CUDA device is missing (the message says which)."""


def gpu_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and sees a CUDA device, else (False, why)."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install -e .[gpu])"
    except Exception as e:  # noqa: BLE001 - a broken CuPy install (missing CUDA libraries, ...)
        return False, f"CuPy failed to import ({e.__class__.__name__}: {e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no driver, no device
        return False, f"no CUDA device ({e.__class__.__name__}: {e})"
    return (n > 0, "" if n > 0 else "no CUDA device (CuPy sees 0 devices)")


def require(device: str):
    """Raise a clear error unless ``device`` can be used: ValueError for an unknown
    name, RuntimeError saying what is missing for an unusable GPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    global _GPU_OK
    if device == "gpu" and not _GPU_OK:
        ok, why = gpu_available()
        if not ok:
            raise DeviceUnavailable(f"device 'gpu' requested but {why}; use device='cpu'")
        _GPU_OK = True


def of(array) -> str:
    """"cpu" for a NumPy array (or anything else host-side), "gpu" for a CuPy array."""
    return "gpu" if type(array).__module__.startswith("cupy") else "cpu"


def move(array, device: str):
    """``array`` on ``device``: the same object if it is there already, else an explicit
    copy (``cupy.asarray`` to the GPU, ``.get()`` back to the host)."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    here = of(array)
    if here == device:
        return array
    if device == "cpu":
        return array.get()
    require("gpu")
    import cupy
    return cupy.asarray(np.asarray(array), order="C")   # (a frozen CPU fc weight is column-major)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; os.cpu_count() where
    the platform has no affinity)."""
    import os
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_num_threads(n: int, file=None) -> int:
    """Limit the CPU thread pools -- Numba's kernels and the BLAS -- to ``n`` threads
    (0 or None: leave them alone); returns the count set (0 for none).

    ``n`` is capped to the cores this process may use (:func:`usable_cores`), with
    a line on stderr (``file``) saying so: more threads than cores only make the
    pools fight over them, and each OpenBLAS thread reserves its own buffers --
    ``--threads 64`` under a memory limit crashed OpenBLAS.  The capped value is the
    only one that reaches Numba and the BLAS.  A negative or non-integer ``n``
    raises ValueError.

    The explainers run many small batches (a 64x64 network at batch 1); there one
    thread is fastest by far, and on a busy machine two pools of spinning threads
    (Numba's and OpenBLAS's) fighting each other and other processes made a
    class-model step 30x slower.  The scripts and the CLI use one thread unless
    told otherwise (--threads); large batches (AlexNet at batch 8, training) gain
    from more on an idle machine."""
    import sys
    if n is None:
        return 0
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"thread count must be an integer >= 0 (0: the library's default), got {n!r}")
    n = int(n)
    if n == 0:
        return 0
    import numba
    cap = max(1, min(usable_cores(), numba.config.NUMBA_NUM_THREADS))
    if n > cap:
        print(f"note: {n} threads requested, using {cap} (the CPU cores this process may use)",
              file=file or sys.stderr)
        n = cap
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:                     # a dependency; OPENBLAS_NUM_THREADS does it too
        pass
    return n


#: Environment variables that pin OpenBLAS to one processor's kernels.
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def rerun_without_blas_pins(keep_flag: str = "--keep-blas-env"):
    """Re-execute the running script without ``BLAS_PINS`` if any is set, unless
    ``keep_flag`` is on its command line.

    Some machines set OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) so that old
    OpenBLAS builds, which computed wrong results or crashed on their
    processors, pick a conservative kernel.  The OpenBLAS bundled with a
    current NumPy does not need that, and the pinned kernel (e.g. Haswell's on
    an AVX-512 processor) runs its matrix products ~1.6x slower.  The long CPU
    jobs (the benchmark, training) therefore run as on a machine without the
    pins, and say so; the library itself never touches the environment."""
    import os
    import sys
    found = [k for k in BLAS_PINS if k in os.environ]
    if not found or keep_flag in sys.argv:
        return
    print(f"(re-running without {', '.join(found)}, which pin OpenBLAS to a slower kernel; "
          f"{keep_flag} keeps them)", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in BLAS_PINS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
