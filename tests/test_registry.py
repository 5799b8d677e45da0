"""One registry of methods (te.explain.methods): a map method registered there -- one function,
one entry -- is offered by the command line, the explorer, the benchmark, the sanity checks, the
methods figure and the drawing without another edit; and no other list of method names exists
in the package (docs/adding_a_method.md)."""
from __future__ import annotations

import ast
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinygrad_explain as te
from tinygrad_explain.apps import draw as D
from tinygrad_explain.apps import explorer
from tinygrad_explain.apps.cli import main as cli_main
from tinygrad_explain.apps.figures import inputs as fig_inputs
from tinygrad_explain.apps.figures import recipes
from tinygrad_explain.explain import benchmark, methods, sanity

pytestmark = pytest.mark.usefixtures("one_thread")
PACKAGE = Path(te.__file__).resolve().parent


def twice_saliency(model, x, target):
    """The dummy method: twice the saliency map (a map the drawing scales back to the saliency's)."""
    return 2 * te.explain.saliency(model, x, target)


@pytest.fixture
def dummy():
    """A map method added to the registry for one test, removed afterwards."""
    entry = methods.register(methods.Method("twice-saliency", twice_saliency, "Twice the saliency map",
                                            "a test", label="twice saliency", sanity=True))
    try:
        yield entry
    finally:
        del methods.METHODS[entry.name]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    te.manual_seed(0)
    m = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)
    path = tmp_path_factory.mktemp("model") / "scene.h5"
    te.save_model(m, path, class_names=[f"c{i}" for i in range(10)], mean=[0.45] * 3, std=[0.25] * 3)
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    img = te.scenes.load_sample()["images"][3]
    p = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(img).save(p)
    return p


def test_a_registered_method_is_everywhere(dummy, model_file, scene, tmp_path, capsys):
    model = te.load_model(model_file)
    x = te.image.load(str(scene), model)
    picture = te.image.to_display(x, model)
    want = 2 * te.explain.saliency(model, x, 4)

    # the command line: a subcommand that writes the picture of the map
    out = tmp_path / "cli.png"
    assert cli_main(["twice-saliency", "--image", str(scene), "--target", "c4", "--weights", model_file,
                     "--out", str(out)]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")),
                                  D.as_rgb(D.upscale(D.heat(want[0]))))
    # the drawing: the entry's picture ("heat") -- the saliency's picture, as a heat map scales
    np.testing.assert_array_equal(D.method_picture("twice-saliency", want[0], picture),
                                  D.method_picture("saliency", want[0] / 2, picture))

    # the explorer: in the menu, and computed on request
    assert "twice-saliency" in explorer.menu() and "twice-saliency" in explorer.METHODS
    ex = explorer.Explorer(weights=model_file, scenes=1)
    try:
        assert "twice-saliency" in [m["id"] for m in ex.info()["methods"]]
        buf = io.BytesIO()
        Image.open(scene).save(buf, format="PNG")
        ref = ex.add_upload(buf.getvalue())
        res = ex.explain({"image": ref, "method": "twice-saliency", "target": {"class": 4}, "layers": False})
    finally:
        ex.close()
    v = res["values"]
    values = np.frombuffer(base64.b64decode(v["float32_base64"]), "<f4").reshape(v["shape"])
    np.testing.assert_allclose(values, want[0], rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))

    # the benchmark and the sanity checks: in their sets, computed through the registry's function
    assert "twice-saliency" in benchmark.METHODS and "twice-saliency" in methods.benchmarked()
    fn = benchmark.map_functions()["twice-saliency"]
    np.testing.assert_allclose(fn(model, x, np.array([4]), [0], 0), np.abs(want).astype(np.float64), rtol=1e-6)
    assert "twice-saliency" in sanity.METHODS
    maps = sanity.explain(model, x, 4)
    assert list(maps) == list(methods.sanity_checked()) and "twice-saliency" in maps
    np.testing.assert_allclose(maps["twice-saliency"][1], np.abs(want), rtol=1e-6)

    # the methods figure: one more column (64 px tiles drawn 3x as large, 192 px, 6 px apart)
    assert "twice-saliency" in methods.in_figure()
    inp = fig_inputs.file_inputs(model, [str(scene)])
    recipes.fig_methods(inp, tmp_path, {})
    assert Image.open(tmp_path / "methods.png").width == 6 + (len(methods.in_figure()) + 1) * 198


def test_register_refuses_a_taken_name():
    with pytest.raises(te.explain.ExplainError, match="'saliency' is registered already"):
        methods.register(methods.Method("saliency", twice_saliency, "again", "a test"))
    with pytest.raises(ValueError, match="picture 'sparkles' is not one of"):
        methods.Method("x", twice_saliency, "x", "a test", picture="sparkles")


def test_the_dummy_is_gone_afterwards():
    assert "twice-saliency" not in methods.METHODS and "twice-saliency" not in benchmark.METHODS


# ---------------------------------------------------------------------------
# no list of method names outside the registry
# ---------------------------------------------------------------------------
def _names() -> set[str]:
    """Every registered name as the command line writes it, and the map methods with underscores
    too (``guided_gradcam``).  (The optimisations' underscore spellings are the recipe table's
    explainer names, ``class_model``: te.explain.recipes, not a list of methods.)"""
    return set(methods.every()) | {n.replace("-", "_") for n in methods.METHODS}


#: (file, function) -> why a list of method names there is not a list of *the* methods
ALLOWED = {
    ("tinygrad_explain/apps/figures_resnet.py", "_panels"):
        "the ResNet figure's own three panels (saliency, guided backprop, Grad-CAM), a figure's choice",
}


def method_lists(source: str, names: set[str], least: int = 3) -> list[tuple[int, str]]:
    """(line, enclosing function) of the list, tuple or set literals, and of the dicts' keys, that
    hold ``least`` or more of ``names`` in ``source`` (``__all__``, the names a module exports,
    is not one)."""
    found = []

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return
        items = (node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else
                 [k for k in node.keys if k is not None] if isinstance(node, ast.Dict) else [])
        if len({e.value for e in items if isinstance(e, ast.Constant) and e.value in names}) >= least:
            found.append((node.lineno, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)
    visit(ast.parse(source), "")
    return found


def test_no_list_of_method_names_outside_the_registry():
    names = _names()
    registry = PACKAGE / "explain" / "methods.py"
    found = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE.parent).as_posix()
        if p != registry:
            found += [f"{rel}:{line}" for line, fn in method_lists(p.read_text(encoding="utf-8"), names)
                      if (rel, fn) not in ALLOWED]
    assert not found, ("lists of method names outside te.explain.methods (derive them from the registry: "
                       f"docs/adding_a_method.md): {', '.join(found)}")


def test_the_scan_finds_the_lists_there_were():
    """The check above can fail: the lists as they were (before the registry) are found."""
    old = ('METHODS = ("gradient", "saliency", "deconvnet", "guided", "smoothgrad", "gradcam", "guided_gradcam")\n'
           'SANITY_LABELS = {"gradient": "gradient", "guided": "guided backprop", "gradcam": "Grad-CAM"}\n'
           'def f(method):\n'
           '    if method in ("gradient", "backprop", "guided", "deconvnet", "guided-gradcam"):\n'
           '        return 1\n'
           'RULES = ("backprop", "deconvnet", "guided")\n')
    assert [line for line, _ in method_lists(old, _names())] == [1, 2, 4]
    assert method_lists("__all__ = ['gradient', 'saliency', 'guided_gradcam']", _names()) == []


# ---------------------------------------------------------------------------
# the README's method table is the registry's
# ---------------------------------------------------------------------------
def test_readme_method_table_is_the_registry():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- methods table: generated by te.explain.methods.markdown_table() -->\n")
    end = readme.index("<!-- end of the methods table -->", start)
    table = readme[start:end].split("\n", 1)[1].strip()
    assert table == methods.markdown_table(), "README's method table differs: paste te.explain.methods.markdown_table()"
    assert all(f"| `{name}` |" in table for name in methods.every())
