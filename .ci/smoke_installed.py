"""Smoke test of an installed wheel, as a user runs it: from a folder outside the checkout, with the
package from site-packages.  Loads every named model and decoder, makes one saliency map, runs
`tinygrad-explain --version`, one method subcommand and `tinygrad-explain figures --only toy`.
Exits non-zero (with the reason) on the first problem.  Used by .ci/run; a minute or so."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import tinygrad_explain as te
from tinygrad_explain.explain import decoder, exemplar
from tinygrad_explain.modelfiles.modelfile import MODEL_NAMES


def check(cond, what):
    if not cond:
        sys.exit(f"smoke test FAILED: {what}")
    print(f"ok  {what}", flush=True)


here = Path.cwd().resolve()
pkg = Path(te.__file__).resolve().parent
check("site-packages" in str(pkg) and not (here / "tinygrad_explain").exists(),
      f"the installed package is imported ({pkg}), not a checkout")
check(te.__version__ and (pkg / "weights").is_dir(), f"version {te.__version__}; weights inside the package")
for name in MODEL_NAMES:
    m = te.load_model(name)
    check(Path(m.path).resolve().is_relative_to(pkg), f"load_model({name!r}): {m.input_shape}, {m.num_classes} classes")
model = te.load_model()
for layer in ("pool5", "fc6", "fc7"):
    d = decoder.load_decoder(model, layer)
    check(Path(d.path).resolve().is_relative_to(pkg), f"the {layer} decoder loads")
check(len(exemplar.load_bank()["images"]) > 0, "the retrieval bank loads")
sample = te.scenes.load_sample()
x = te.image.load(sample["images"][0], model)
s = te.explain.saliency(model, x, int(sample["labels"][0]))
check(s.shape == (1, 64, 64) and np.isfinite(s).all() and s.max() > 0, "one saliency map")
from tinygrad_explain.apps import figures  # noqa: E402

check(Path(figures.DOCS).resolve().is_relative_to(pkg) and figures.bench_json("bench_explainers.json") is not None,
      "the benchmarks' JSON files that the captions quote are installed")
check((pkg / "apps" / "explorer_static" / "index.html").is_file() and list((pkg / "kernels").glob("*.cu")),
      "the explorer's page and the CUDA sources are installed")

exe = shutil.which("tinygrad-explain")
check(exe is not None, f"the console script is on PATH ({exe})")
with tempfile.TemporaryDirectory() as tmp:
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.strip() == f"tinygrad-explain {te.__version__}", f"--version: {r.stdout.strip()}")
    from PIL import Image
    Image.fromarray(sample["images"][0]).save(os.path.join(tmp, "scene.png"))
    r = subprocess.run([exe, "saliency", "--image", "scene.png", "--out", "s.png"], cwd=tmp, capture_output=True,
                       text=True)
    check(r.returncode == 0 and os.path.isfile(os.path.join(tmp, "s.png")), "tinygrad-explain saliency: "
          + (r.stdout.strip().splitlines() or ["?"])[-1] + ("" if r.returncode == 0 else r.stderr[-500:]))
    r = subprocess.run([exe, "figures", "--only", "toy", "--out", "figs"], cwd=tmp, capture_output=True, text=True)
    check(r.returncode == 0 and {"toy_relu_rules.png", "index.html"} <= set(os.listdir(os.path.join(tmp, "figs"))),
          "tinygrad-explain figures --only toy --out figs" + ("" if r.returncode == 0 else r.stderr[-1000:]))
    r = subprocess.run([exe, "nope"], capture_output=True, text=True)
    check(r.returncode == 2 and r.stderr.count("\n") == 1, "a usage error is one line, status 2")
print("smoke test passed", flush=True)
