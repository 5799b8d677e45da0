"""The teaching notebooks (notebooks/*.ipynb) run top to bottom, solutions and their checks
included, so that they cannot rot; and they are stored without outputs.

Needs the ``notebook`` extra (nbclient, nbformat, ipykernel): pip install -e ".[notebook]".
"""
import os
import time
from pathlib import Path

import _need as need
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _need_extra():
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as e:
        why = f"the notebooks need the 'notebook' extra ({e.name} is missing): pip install -e \".[notebook]\""
        need.missing(why)                          # in CI: a failure


def test_there_are_five_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_backprop_to_the_input.ipynb", "02_saliency_and_grabcut.ipynb",
                                           "03_class_models_and_inversion.ipynb",
                                           "04_deconvnet_guided_and_sanity.ipynb", "05_your_own_model.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    import json
    nb = json.loads(path.read_text(encoding="utf-8"))
    for k, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                f"{path.name} cell {k} has outputs: strip them (jupyter nbconvert --clear-output --inplace)"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, tmp_path):
    _need_extra()
    if path.name.startswith("05_"):          # it trains nothing, but exports a torch model to ONNX
        pytest.importorskip("torch", reason="notebook 05 needs torch (the 'reference' extra)")
    import nbclient
    import nbformat
    nb = nbformat.read(path, as_version=4)
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    if "solution" in tags:                       # every exercise has its check
        assert tags.count("solution") == tags.count("solution-check")
    env_threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONPATH")}
    t0 = time.perf_counter()
    try:
        # the kernel is a new process: one BLAS thread, as te.set_num_threads(1)
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[k] = "1"
        if env_threads["PYTHONPATH"]:            # the kernel runs in a temporary folder: PYTHONPATH=. must stay here
            os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in
                                                       env_threads["PYTHONPATH"].split(os.pathsep) if p)
        # from a folder outside the checkout: the notebooks need only the installed package
        client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        for k, v in env_threads.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if o.get("output_type") == "stream")
    assert "correct" in printed or "solution" not in tags
    print(f"{path.name}: {seconds:.1f} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_imports_only_the_installed_package(path):
    """No notebook edits sys.path or imports from the checkout's scripts/: each runs from any folder
    wherever the package is installed (test_runs_top_to_bottom runs them from a temporary folder)."""
    import json
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                     if c["cell_type"] == "code")
    assert "sys.path" not in code and "chdir" not in code
    imports = [line.split()[1] for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert "tinygrad_explain" in imports
    assert not [m for m in imports if m.split(".")[0] in ("scripts", "walkthrough", "tests", "_reference")]


def test_readme_and_ci_install_the_same_extras():
    """The README's test command and .ci/run stay in step."""
    import re
    want = 'pip install -e ".[test,reference,notebook]"'
    assert want in (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'pip install (-q )?-e "\.\[test,reference,notebook\]"', ci)


def test_student_copies_drop_the_solutions(tmp_path):
    _need_extra()
    import subprocess
    import sys

    import nbformat
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "student_notebooks.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for p in NOTEBOOKS:
        full = nbformat.read(p, as_version=4)
        student = nbformat.read(tmp_path / p.name, as_version=4)
        tags = lambda nb: [t for c in nb.cells for t in c.metadata.get("tags", [])]  # noqa: E731
        assert "solution" not in tags(student)
        assert tags(student).count("solution-check") == tags(full).count("solution-check")
        assert len(student.cells) == len(full.cells) - tags(full).count("solution")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "student_notebooks.py"), "--out",
                        str(ROOT / "notebooks")], capture_output=True, text=True)
    assert r.returncode == 2 and "own folder" in r.stderr            # never overwrites the originals
