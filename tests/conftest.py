"""pytest setup shared by every test module.

``TE_FAKE_CUPY=1`` puts ``tests/fake_cupy`` (a NumPy-backed stand-in for
CuPy whose kernels are the .cu sources compiled for the host) first on the
import path, so that ``tests/test_gpu.py`` runs its GPU code path on a
machine without a GPU.  See tests/fake_cupy/README.md for what that does and
does not check.

``@pytest.mark.needs(ok, why)``: the test needs something that may be missing (tests/_need.py):
skipped when ``ok`` is false, failed instead under ``CI=true``.
"""
import os
import sys

import pytest

if os.environ.get("TE_FAKE_CUPY"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_cupy"))


def pytest_runtest_setup(item):
    """``@pytest.mark.needs(ok, why)``: skip (in CI: fail) a test whose data set, tool or extra is missing."""
    for mark in item.iter_markers("needs"):
        ok, why = mark.args
        if not ok:
            from _need import missing
            missing(why)


@pytest.fixture(scope="module")
def one_thread():
    """One Numba and one BLAS thread for a module of small-batch tests (the
    explainers): fastest there, and no fight with other processes (see
    te.set_num_threads); the previous limits are restored afterwards."""
    import numba
    prev = numba.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(1)
    except ImportError:
        blas = None
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(prev)
    if blas is not None:
        blas.restore_original_limits()


@pytest.fixture
def saved(tmp_path, model):
    """The requesting module's ``model`` fixture saved as tmp_path/tiny.h5 (classes cat, dog, emu)."""
    import tinygrad_explain as te
    p = tmp_path / "tiny.h5"
    te.save_model(model, p, class_names=["cat", "dog", "emu"])
    return p
