"""pytest setup shared by every test module.

``TE_FAKE_CUPY=1`` puts ``tests/fake_cupy`` (a NumPy-backed stand-in for
CuPy whose kernels are the .cu sources compiled for the host) first on the
import path, so that ``tests/test_gpu.py`` runs its GPU code path on a
machine without a GPU.  See tests/fake_cupy/README.md for what that does and
does not check.
"""
import os
import sys

if os.environ.get("TE_FAKE_CUPY"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_cupy"))
