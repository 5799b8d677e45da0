"""What a test needs beyond the runtime dependencies -- an extra (torch, captum, scipy, ...), a data
set (Debian's Fashion-MNIST), a tool (g++, Chromium) -- said in one place.

When it is missing the test is skipped with the reason; under ``CI=true`` (``.ci/run``, which
installs all of them) it FAILS instead, so that a green CI never hides tests that did not run.

    torch = need.module("torch")                       # instead of pytest.importorskip
    @pytest.mark.needs(have_fashion_mnist(), "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    need.missing("the browser test needs chromium")    # imperative, in a fixture or a test

(``pytest.mark.needs(ok, why)`` is checked by tests/conftest.py before the test runs.)
"""
from __future__ import annotations

import importlib
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

#: which extra of setup.cfg installs a module the tests import
EXTRA = {"torch": "reference", "captum": "reference", "scipy": "reference", "skimage": "reference",
         "hypothesis": "test", "selenium": "test", "nbclient": "notebook", "nbformat": "notebook",
         "ipykernel": "notebook"}


def missing(why: str):
    """Skip the calling test (or module) because ``why``; in CI, fail it."""
    if IN_CI:
        pytest.fail(f"in CI this must be present: {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


def module(name: str):
    """``import name``, or skip (in CI: fail) naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        extra = EXTRA.get(name.split(".")[0])
        missing(f"needs {name} ({e})" + (f": pip install -e \".[{extra}]\"" if extra else ""))


def have_fashion_mnist() -> bool:
    """Whether Debian's Fashion-MNIST (or TGE_FASHION_MNIST) can be read."""
    try:
        from tinygrad_explain.data.fashion_mnist import load_fashion_mnist
        load_fashion_mnist("test")
        return True
    except (FileNotFoundError, ValueError):
        return False


FASHION_MNIST = "needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"
