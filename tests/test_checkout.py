"""A source checkout imports without being installed: ``python -c "import tinygrad_explain"``
from a copy of the tree (the package and the top-level kernels/ beside it) uses that
copy's kernels and runs; without kernels/ the import fails with one clear line."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import numpy as np, tinygrad_explain as te; "
         "print(te.__file__); print(te.kernels.__file__); "
         "print(te.relu(te.Tensor(np.array([-1.0, 2.0]))).numpy().tolist())")


def _copy_tree(dest, with_kernels=True):
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "tinygrad_explain", dest / "tinygrad_explain", ignore=skip)
    if with_kernels:
        shutil.copytree(ROOT / "kernels", dest / "kernels", ignore=skip)


def _run(cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TE_FAKE_CUPY")}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_from_an_uninstalled_copy(tmp_path):
    _copy_tree(tmp_path)
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    pkg, kernels, out = r.stdout.strip().splitlines()
    assert Path(pkg).resolve().is_relative_to(tmp_path.resolve())        # this copy, not another checkout
    assert Path(kernels).resolve() == (tmp_path / "kernels" / "__init__.py").resolve()
    assert out == "[0.0, 2.0]"


def test_missing_kernels_folder_says_so(tmp_path):
    _copy_tree(tmp_path, with_kernels=False)
    r = _run(tmp_path)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: tinygrad_explain: the kernels package is missing")
    assert "pip install -e ." in last and "circular" not in r.stderr


@pytest.mark.skipif(not (ROOT / "kernels").is_dir(), reason="run from a checkout")
def test_this_checkout_maps_its_own_kernels():
    import tinygrad_explain as te
    if (Path(te.__file__).parent / "kernels").is_dir():
        pytest.skip("an installed wheel: the kernels are inside the package")
    assert Path(te.kernels.__file__).resolve() == (ROOT / "kernels" / "__init__.py").resolve()
