"""The command line (tinygrad-explain, python -m tinygrad_explain) and the figure gallery, on a
small random-weight scene model: what the CLI writes is what the API computes (pixel for pixel,
number for number), and its error messages (mechanics, not quality)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tinygrad_explain as te
from tinygrad_explain.apps import cli, figures
from tinygrad_explain.apps import draw as D
from tinygrad_explain.apps.cli import explain as cli_explain
from tinygrad_explain.apps.figures import recipes
from tinygrad_explain.data.fashion_mnist import CLASS_NAMES
from tinygrad_explain.explain import methods

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    te.manual_seed(0)
    m = te.models.scene_alexnet(width=(8, 16, 16, 16, 16), fc=32)
    path = tmp_path_factory.mktemp("model") / "scene.h5"
    te.save_model(m, path, class_names=list(CLASS_NAMES), mean=[0.45, 0.45, 0.45], std=[0.25, 0.25, 0.25])
    return str(path)


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    from tinygrad_explain.data import scenes
    img = scenes.load_sample()["images"][3]
    d = tmp_path_factory.mktemp("img")
    Image.fromarray(img).save(d / "scene.png")
    Image.fromarray(img).convert("L").resize((100, 80)).save(d / "grey_big.png")
    (d / "notes.txt").write_text("not an image")
    return d


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


X = te.explain
API = {   # each subcommand's map, written with te.explain's own functions (not the registry's entries)
    "gradient": lambda m, x, t, o: X.gradient(m, x, t),
    "saliency": lambda m, x, t, o: X.saliency(m, x, t),
    "guided": lambda m, x, t, o: X.gradient(m, x, t, rule="guided"),
    "deconvnet": lambda m, x, t, o: X.gradient(m, x, t, rule="deconvnet"),
    "grabcut": lambda m, x, t, o: X.saliency(m, x, t),
    "smoothgrad": lambda m, x, t, o: X.smoothgrad(m, x, t, **o),
    "gradcam": lambda m, x, t, o: X.gradcam(m, x, t, **o),
    "guided-gradcam": lambda m, x, t, o: X.guided_gradcam(m, x, t),
    "occlusion": lambda m, x, t, o: X.occlusion(m, x, t, **o),
    "grad-x-input": lambda m, x, t, o: X.gradient_x_input(m, x, t),
}


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("method, options", [
    ("gradient", {}), ("saliency", {}), ("guided", {}), ("deconvnet", {}), ("grabcut", {}),
    ("smoothgrad", {"samples": 3}), ("gradcam", {}), ("gradcam", {"layer": "conv3"}), ("guided-gradcam", {}),
    ("occlusion", {"patch": 16, "stride": 16}), ("grad-x-input", {})])
def test_cli_gradient_methods(method, options, model_file, scene_png, tmp_path, capsys):
    """Each map subcommand writes the picture of what te.explain computes for the image and class,
    and prints the prediction the model makes."""
    out = tmp_path / f"{method}.png"
    extra = [a for k, v in options.items() for a in (f"--{k}", str(v))]
    rc, so, se = run_cli(capsys, method, "--image", str(scene_png / "scene.png"), "--target", "Bag",
                         "--weights", model_file, "--out", str(out), *extra)
    assert rc == 0, se
    model = te.load_model(model_file)
    x = te.image.load(str(scene_png / "scene.png"), model)
    picture = te.image.to_display(x, model)
    _, probs = X.predict(model, x)
    pred = int(probs[0].argmax())
    assert f"predicted: {X.class_names(model)[pred]} (index {pred}, softmax {probs[0, pred]:.3f})" in so
    bag = X.resolve_class(model, "Bag")
    assert f"target: Bag (index {bag})" in so
    values = API[method](model, x, bag, options)[0]
    if method == "grabcut":
        mask, box = X.grabcut_mask(picture, values)
        want = D.overlay(picture, mask, box)
        assert f"box (x0, y0, x1, y1): {tuple(int(v) for v in box)}; mask area {int(mask.sum())} px" in so
    else:
        want = D.upscale(D.method_picture(method, values, picture))
    np.testing.assert_array_equal(_pixels(out), D.as_rgb(np.asarray(want)))


@pytest.mark.parametrize("target, label", [("conv5:12", "target: conv5[12]"),
                                           ("conv5:12:3:4", "target: conv5[12,3,4]")])
def test_cli_channel_and_neuron_targets(target, label, model_file, scene_png, tmp_path, capsys):
    out = tmp_path / "g.png"
    rc, so, se = run_cli(capsys, "guided", "--image", str(scene_png / "scene.png"), "--target", target,
                         "--weights", model_file, "--out", str(out))
    assert rc == 0, se
    assert label in so and out.exists()


def test_cli_any_size_and_greyscale(model_file, scene_png, tmp_path, capsys):
    rc, so, se = run_cli(capsys, "saliency", "--image", str(scene_png / "grey_big.png"), "--weights", model_file,
                         "--out", str(tmp_path / "s.png"))
    assert rc == 0, se
    assert "predicted:" in so


def test_cli_optimisation_methods(model_file, scene_png, tmp_path, capsys):
    """class-model, maximize and invert write what te.explain's class_model, maximize and invert make
    (same seed, same steps), and print their scores and errors."""
    model = te.load_model(model_file)
    rc, so, se = run_cli(capsys, "class-model", "--target", "3", "--steps", "3", "--weights", model_file,
                         "--out", str(tmp_path / "c.png"))
    assert rc == 0, se
    v = X.class_model(model, 3, steps=3, seed=0, progress=False)
    assert f"class model of Dress: score {v.final[0]:.2f}, softmax {v.probability[0]:.4f}" in so
    np.testing.assert_array_equal(_pixels(tmp_path / "c.png"), D.as_rgb(D.upscale(v.display[0])))
    rc, so, se = run_cli(capsys, "maximize", "--layer", "conv3", "--unit", "2", "--steps", "3",
                         "--weights", model_file, "--out", str(tmp_path / "m.png"))
    assert rc == 0, se
    v = X.maximize(model, "conv3", 2, steps=3, seed=0, progress=False)
    assert f"conv3[2]: activation {v.final[0]:.3f}" in so
    np.testing.assert_array_equal(_pixels(tmp_path / "m.png"), D.as_rgb(D.upscale(v.display[0])))
    rc, so, se = run_cli(capsys, "invert", "--image", str(scene_png / "scene.png"), "--inits", "2", "--steps", "3",
                         "--weights", model_file, "--out", str(tmp_path / "i.png"))
    assert rc == 0, se
    inv = X.invert(model, te.image.load(str(scene_png / "scene.png"), model), layer="fc7", inits=2, steps=3,
                   seed=0, progress=False)
    assert "normalised errors: " + " ".join(f"{e:.4f}" for e in inv.errors) in so
    assert (tmp_path / "i.png").exists()


def test_cli_recipes(scene_png, tmp_path, capsys):
    """--recipe: the decoder start on the embedded model's pool5, retrieval from its fc7, the paper's class model; an
    unknown recipe and a layer without a decoder are refused in one line."""
    rc, so, se = run_cli(capsys, "invert", "--image", str(scene_png / "scene.png"), "--layer", "pool5", "--inits", "1",
                         "--steps", "2", "--recipe", "decoder", "--out", str(tmp_path / "d.png"))
    assert rc == 0, se
    assert (tmp_path / "d.png").exists()
    rc, so, se = run_cli(capsys, "invert", "--image", str(scene_png / "scene.png"), "--layer", "fc7", "--inits", "2",
                         "--recipe", "exemplar", "--out", str(tmp_path / "x.png"))
    assert rc == 0, se
    assert (tmp_path / "x.png").exists() and "normalised errors" in so
    rc, so, se = run_cli(capsys, "class-model", "--target", "Bag", "--steps", "2", "--recipe", "simonyan2014",
                         "--out", str(tmp_path / "c.png"))
    assert rc == 0, se
    rc, so, se = run_cli(capsys, "invert", "--image", str(scene_png / "scene.png"), "--layer", "conv3",
                         "--recipe", "decoder", "--steps", "2", "--out", str(tmp_path / "e.png"))
    assert rc != 0 and "no decoder for layer 'conv3'" in se and "Traceback" not in se
    rc, so, se = run_cli(capsys, "maximize", "--layer", "conv3", "--unit", "1", "--recipe", "fancy",
                         "--out", str(tmp_path / "f.png"))
    assert rc != 0 and "unknown recipe 'fancy'" in se and not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["saliency", "--target", "Sneakr"], "did you mean 'Sneaker'"),
    (["saliency", "--target", "12"], "out of range"),
    (["guided", "--target", "conv9:1"], "unknown layer 'conv9'"),
    (["guided", "--target", "conv5:16"], "channel 16 out of range for layer 'conv5'"),
    (["guided", "--target", "conv5:1:7:0"], "row 7 out of range"),
    (["guided", "--target", "conv5:1:x"], "integer indices"),
    (["maximize", "--layer", "conv9", "--unit", "1"], "unknown layer 'conv9'"),
    (["maximize", "--layer", "conv3", "--unit", "999"], "out of range"),
    (["maximize", "--layer", "conv3"], "maximize needs --unit"),
    (["maximize"], "maximize needs --layer and --unit"),
    (["saliency", "--image", "NOTES"], "not an image file"),
    (["saliency", "--image", "MISSING"], "no such file"),
    (["saliency", "--out", "/nonexistent-folder/x.png"], "cannot write"),
    (["class-model"], "needs --target"),
    (["gradcam", "--layer", "fc7"], "needs a layer with feature maps"),
    (["occlusion", "--patch", "99"], "need 1 <= patch <= 64"),
    (["smoothgrad", "--samples", "0"], "samples must be an integer >= 1"),
])
def test_cli_bad_input(argv, message, model_file, scene_png, tmp_path, capsys):
    argv = [a.replace("NOTES", str(scene_png / "notes.txt")).replace("MISSING", str(scene_png / "nope.png"))
            for a in argv]
    if argv[0] != "class-model" and argv[0] != "maximize" and "--image" not in argv:
        argv += ["--image", str(scene_png / "scene.png")]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.png")]
    rc, so, se = run_cli(capsys, *argv, "--weights", model_file)
    assert rc == 2
    assert message in se
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("method", list(methods.every()))
def test_cli_help_of_each_method(method, capsys):
    """Every registry entry is a subcommand whose --help gives its summary, paper and exactly its options."""
    with pytest.raises(SystemExit) as e:
        cli.main([method, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())           # argparse wraps lines
    entry = methods.every()[method]
    assert " ".join(entry.summary.split()) in text and entry.paper in text
    offered = {o for o in cli_explain.OPTIONS if f"--{o} " in text}
    assert offered == set(entry.options)


def test_every_registry_entry_is_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name in [*methods.every(), *cli.TOOLS]:
        assert f"    {name} " in text or f"    {name}\n" in text, name


def test_cli_missing_weights(tmp_path, capsys):
    rc, _, se = run_cli(capsys, "class-model", "--target", "0", "--weights", str(tmp_path / "none.h5"))
    assert rc == 2 and "does not exist" in se


def test_cli_runs_as_module(model_file, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tinygrad_explain", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "class-model" in r.stdout and "figures" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tinygrad_explain", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"tinygrad-explain {te.__version__}"


@pytest.mark.parametrize("argv, message", [
    (["lime"], "invalid choice: 'lime'"),
    (["saliency", "--bogus"], "unrecognized arguments: --bogus"),
    (["saliency", "--steps", "3"], "unrecognized arguments: --steps"),          # not an option of saliency
    (["figures"], "the following arguments are required: --out"),
    (["figures", "--out", "x", "--only", "nope"], "invalid choice: 'nope'"),
    (["convert"], "say which kind: torchvision, caffe"),
    (["convert", "keras"], "unknown kind 'keras'"),
    (["convert", "caffe"], "the following arguments are required: input, output"),
    (["bench", "gpu"], "unknown benchmark 'gpu'"),
    (["serve", "--port", "x"], "invalid int value: 'x'"),
    (["sanity", "--scenes", "0"], "--scenes must be >= 1"),
])
def test_cli_usage_error_is_one_line(argv, message, capsys):
    """A usage error of any subcommand: exit status 2 and one line naming the command, no traceback."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("tinygrad-explain"), err


@pytest.mark.parametrize("command", ["figures", "serve", "sanity", "eval", "walkthrough", "convert", "bench"])
def test_cli_help_of_each_tool(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: tinygrad-explain " + command)


def test_cli_figures_writes_what_the_api_draws(model_file, tmp_path, capsys):
    """`tinygrad-explain figures --only toy` writes the figure te's fig_toy draws, and a gallery page."""
    assert cli.main(["figures", "--out", str(tmp_path / "g"), "--weights", model_file, "--only", "toy"]) == 0
    (tmp_path / "api").mkdir()
    figures.fig_toy(None, tmp_path / "api", {})
    got, want = (tmp_path / "g" / "toy_relu_rules.png"), (tmp_path / "api" / "toy_relu_rules.png")
    assert got.read_bytes() == want.read_bytes()
    assert "toy_relu_rules.png" in (tmp_path / "g" / "index.html").read_text()


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------
EXPECTED = {"toy_relu_rules.png", "class_models.png", "neurons_conv3.png", "neurons_fc7.png", "saliency.png",
            "grabcut.png", "inversion_fc7.png", "inversion_layers.png", "rules.png", "methods.png",
            "sanity_cascade.png", "zeiler_fergus.png",
            "index.html", "summary.json"}


def test_reproduce_figures_small(model_file, tmp_path, capsys):
    out = tmp_path / "gallery"
    rc = figures.main(["--out", str(out), "--weights", model_file, "--steps-scale", "0.02", "--units", "2"])
    so = capsys.readouterr().out
    assert rc == 0
    assert EXPECTED <= {p.name for p in out.iterdir()}
    html = (out / "index.html").read_text()
    for f in EXPECTED - {"index.html", "summary.json"}:
        assert f in html
    assert "class-model softmax per class" in so and "[inversion]" in so
    assert [p.name for p in tmp_path.iterdir()] == ["gallery"]          # no partial folders left
    # a second run replaces only what it writes: the figures left out by --only stay
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = figures.main(["--out", str(out), "--weights", model_file, "--steps-scale", "0.02", "--units", "1",
                       "--only", "toy"])
    assert rc == 0 and {p.name for p in out.iterdir()} == set(before)
    assert (out / "saliency.png").read_bytes() == before["saliency.png"]
    assert (out / "index.html").read_bytes() != before["index.html"]          # the new gallery: toy only
    assert "toy_relu_rules.png" in (out / "index.html").read_text()
    assert "saliency.png" not in (out / "index.html").read_text()


def test_reproduce_figures_jobs_give_the_same_pictures(model_file, tmp_path, capsys):
    """Figures made side by side in worker processes (--jobs 2) are the same files as one after
    another in this process (--jobs 1): each figure is seeded and independent of the others."""
    only = ["--only", "toy", "class models", "saliency", "inversion"]
    common = ["--weights", model_file, "--steps-scale", "0.01", "--units", "1"] + only
    assert figures.main(["--out", str(tmp_path / "one"), "--jobs", "1"] + common) == 0
    assert figures.main(["--out", str(tmp_path / "two"), "--jobs", "2"] + common) == 0
    assert "worker processes" in capsys.readouterr().out
    pngs = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert pngs == sorted(p.name for p in (tmp_path / "two").glob("*.png")) and len(pngs) == 4
    for name in pngs:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert list(a["seconds"]) == list(b["seconds"]) == ["toy", "class models", "saliency", "inversion"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_reproduce_figures_sigterm_stops_the_workers(model_file, tmp_path):
    """A kill (SIGTERM) of the main job ends it and its worker processes at once -- not after
    the running figures finish -- and leaves no partial output folder."""
    import signal
    import time
    out = tmp_path / "figs"
    root = os.path.dirname(os.path.dirname(os.path.abspath(te.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + sys.path))
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from tinygrad_explain.apps.figures import main; "
                             "sys.exit(main(sys.argv[1:]))", "--out", str(out), "--weights", model_file,
                             "--jobs", "2", "--only", "class models", "inversion"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = ""
    for line in proc.stdout:            # wait until the workers have their figures
        seen += line
        if "worker processes" in line:
            break
    time.sleep(3)
    assert proc.poll() is None, seen    # full-length figures: still running
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the main job kept running after SIGTERM")
    assert proc.returncode != 0
    assert not out.exists() or not any(out.iterdir())


def test_plot_benchmark(tmp_path):
    from tinygrad_explain.explain.benchmark import COLUMNS, METHODS
    rows = {m: {c: 0.1 * k for c, _ in COLUMNS} for k, m in enumerate(METHODS)}
    report = {"rows": rows, "n": 3, "scenes": "sample", "hard": 1, "target": "truth"}
    figures.plot_benchmark(report, tmp_path / "b.png")
    w, h = Image.open(tmp_path / "b.png").size
    assert w > 800 and h > 400


def test_reproduce_figures_from_image_files(model_file, scene_png, tmp_path, capsys):
    out = tmp_path / "g"
    rc = figures.main(["--out", str(out), "--weights", model_file, "--only", "saliency", "grabcut", "rules",
                       "--images", str(scene_png / "scene.png"), str(scene_png / "grey_big.png")])
    assert rc == 0, capsys.readouterr().err
    assert {"saliency.png", "grabcut.png", "rules.png", "index.html"} <= {p.name for p in out.iterdir()}


def test_reproduce_figures_failure_leaves_nothing(model_file, tmp_path, monkeypatch, capsys):
    def boom(inp, out, summary):
        (out / "half.png").write_bytes(b"")
        raise te.explain.OptimizationError("NaN/Inf in the objective at step 3/10")

    monkeypatch.setattr(recipes, "FIGURES", [("toy", figures.fig_toy), ("class models", boom)])
    rc = figures.main(["--out", str(tmp_path / "g"), "--weights", model_file, "--jobs", "1"])
    assert rc == 2 and "NaN" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--images", "NOTES"], "not an image file"),
    (["--classes", "Sneakr"], "did you mean 'Sneaker'"),
    (["--conv-layer", "fc6"], "not a convolutional map"),
])
def test_reproduce_figures_bad_input(argv, message, model_file, scene_png, tmp_path, capsys):
    argv = [a.replace("NOTES", str(scene_png / "notes.txt")) for a in argv]
    rc = figures.main(["--out", str(tmp_path / "g"), "--weights", model_file] + argv)
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_reproduce_figures_unwritable(model_file, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc = figures.main(["--out", str(tmp_path / "afile" / "g"), "--weights", model_file])
    assert rc == 2 and "cannot write" in capsys.readouterr().err


def test_reproduce_figures_keeps_unrelated_files(model_file, tmp_path, capsys, monkeypatch):
    """--out may be a folder holding the user's files (even ``--out .``): they all survive, only
    the run's own files are replaced, no work folder is left, and new files get normal permissions."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"keep")
    (tmp_path / "toy_relu_rules.png").write_bytes(b"old figure")
    old_umask = os.umask(0o022)
    try:
        rc = figures.main(["--out", ".", "--weights", model_file, "--only", "toy"])
    finally:
        os.umask(old_umask)
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "sub" / "deep.png").read_bytes() == b"keep"
    assert (tmp_path / "toy_relu_rules.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in tmp_path.iterdir()} == {"notes.txt", "sub", "toy_relu_rules.png", "index.html",
                                                   "summary.json"}
    for name in ("toy_relu_rules.png", "index.html", "summary.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_reproduce_figures_failure_keeps_old_gallery(model_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "index.html").write_text("old gallery")
    (out / "notes.txt").write_text("mine")

    def boom(inp, out, summary):
        raise te.explain.OptimizationError("NaN/Inf in the objective at step 3/10")

    monkeypatch.setattr(recipes, "FIGURES", [("toy", figures.fig_toy), ("class models", boom)])
    assert figures.main(["--out", str(out), "--weights", model_file, "--jobs", "1"]) == 2
    assert {p.name for p in out.iterdir()} == {"index.html", "notes.txt"}       # no work folder left
    assert (out / "index.html").read_text() == "old gallery"


@pytest.mark.parametrize("argv, message", [
    (["--units", "0"], "--units must be at least 1"),
    (["--steps-scale", "-1"], "--steps-scale must be a positive number"),
    (["--steps-scale", "nan"], "--steps-scale must be a positive number"),
    (["--threads", "-1"], "--threads must be 0"),
])
def test_reproduce_figures_bad_options_fail_first(argv, message, tmp_path, capsys, monkeypatch):
    """Bad options are refused before the model is even loaded (no minutes of work first)."""
    monkeypatch.setattr(te, "load_model", lambda *a, **k: pytest.fail("loaded the model before checking options"))
    with pytest.raises(SystemExit) as e:
        figures.main(["--out", str(tmp_path / "g")] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_reproduce_figures_out_is_a_file(model_file, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert figures.main(["--out", str(tmp_path / "afile"), "--weights", model_file]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("argv, message", [
    (["--threads", "-1"], "--threads must be at least 0"),
    (["--steps", "-3"], "--steps must be at least 1"),
    (["--inits", "0"], "--inits must be at least 1"),
])
def test_cli_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["invert", "--image", "x.png"] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_out_is_a_directory(model_file, tmp_path, capsys):
    rc, _, se = run_cli(capsys, "class-model", "--target", "0", "--weights", model_file, "--out", str(tmp_path))
    assert rc == 2 and "is a directory" in se


def test_cli_png_permissions(model_file, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        rc, _, se = run_cli(capsys, "class-model", "--target", "0", "--steps", "2", "--weights", model_file,
                            "--out", str(tmp_path / "c.png"))
    finally:
        os.umask(old)
    assert rc == 0, se
    assert stat.S_IMODE((tmp_path / "c.png").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]
