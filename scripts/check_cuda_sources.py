#!/usr/bin/env python3
"""Compile-check the CUDA kernel sources without a GPU.

    python scripts/check_cuda_sources.py [--arch 90]

For every ``kernels/*.cu`` listed in ``kernels/gpu.py`` (KERNELS):

* ``nvcc`` (if found on PATH or under /usr/local/cuda*/bin): the source plus a
  host stub that takes the address of every ``name<float>`` / ``name<double>``
  instantiation, compiled for ``sm_<arch>`` -- catches C++/CUDA errors;
* NVRTC through CuPy (if ``cupy`` and its NVRTC library import): exactly the
  options and ``name_expressions`` that ``kernels/gpu.py`` uses at run time,
  with ``-arch=compute_<arch>`` given explicitly so that no device is needed.

Nothing is run: this only proves that the sources compile.  Exit status 1 if
any compilation failed, 0 otherwise (also when neither compiler is there;
it says so).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_gpu_table():
    """kernels/gpu.py's KERNELS, OPTIONS and name_expressions, without importing the package
    (so that this runs from a checkout without an install)."""
    import importlib.util
    import types
    pkg = types.ModuleType("_te_kernels")
    pkg.__path__ = [str(ROOT / "kernels")]
    sys.modules["_te_kernels"] = pkg
    spec = importlib.util.spec_from_file_location("_te_kernels.gpu", ROOT / "kernels" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_te_kernels.gpu"] = mod
    spec.loader.exec_module(mod)
    return mod


def find_nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for d in sorted(glob.glob("/usr/local/cuda*/bin"), reverse=True):
        if os.access(os.path.join(d, "nvcc"), os.X_OK):
            return os.path.join(d, "nvcc")
    return None


def check_nvcc(nvcc, gpu, arch):
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for fname, names in gpu.KERNELS.items():
            refs = ",\n    ".join(f"(const void*)&{n}<{t}>" for n in names for t in gpu.CTYPES.values())
            stub = Path(tmp) / f"check_{fname}"
            stub.write_text(f'#include "{gpu.SOURCE_DIR / fname}"\n'
                            f"const void* te_instantiations[] = {{\n    {refs}\n}};\n")
            cmd = [nvcc, f"-arch=sm_{arch}", "-std=c++17", "--fmad=false", "-Werror", "all-warnings",
                   "-c", "-o", os.devnull, str(stub)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            status = "ok" if r.returncode == 0 else "FAILED"
            print(f"nvcc  sm_{arch}      {fname:12s} {status}")
            if r.returncode != 0 or r.stderr.strip():
                print(r.stdout + r.stderr)
            ok &= r.returncode == 0
    return ok


def check_nvrtc(gpu, arch):
    try:
        from cupy.cuda import compiler
    except Exception as e:                       # noqa: BLE001 - any import problem means "not available"
        print(f"NVRTC: CuPy not importable ({e.__class__.__name__}: {e}); skipped")
        return True
    ok = True
    for fname in gpu.KERNELS:
        code = (gpu.SOURCE_DIR / fname).read_text()
        names = gpu.name_expressions(fname)
        opts = tuple(gpu.OPTIONS) + (f"-arch=compute_{arch}", "--device-as-default-execution-space")
        try:
            prog = compiler._NVRTCProgram(code, fname, (), (), name_expressions=names, method="ptx")
            ptx, mapping = prog.compile(opts)
            missing = [n for n in names if n not in mapping]
            status = "ok" if not missing else f"FAILED (no mangled name for {missing})"
            ok &= not missing
        except Exception as e:                   # noqa: BLE001 - report every compile error
            status = f"FAILED\n{e}"
            ok = False
        print(f"NVRTC compute_{arch}  {fname:12s} {status}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="90", help="compute capability without the dot (H100/H200: 90)")
    args = ap.parse_args()
    gpu = load_gpu_table()
    ok = True
    nvcc = find_nvcc()
    if nvcc:
        ok &= check_nvcc(nvcc, gpu, args.arch)
    else:
        print("nvcc: not found; skipped")
    ok &= check_nvrtc(gpu, args.arch)
    print("all sources compile" if ok else "COMPILATION ERRORS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
