#!/usr/bin/env python
"""Time the embedded model's training step as ``train_embedded.py`` runs it:
``scene_alexnet()``, AdamW, a batch of 64 shared by two single-threaded
processes (``parallel.DataParallel``), random uint8 scenes.

With ``--against DIR`` (another checkout of this project, e.g. an older
commit from ``git worktree add /tmp/old <commit>``) the two code trees are
timed side by side, alternating (this, other, this, other, ...), each in a
fresh process, and the ratio of the medians is printed (< 1: this checkout is
faster).  Timings on a shared machine drift; only the side-by-side ratio is
meant to be compared.

    python scripts/bench_train_step.py
    python scripts/bench_train_step.py --against /tmp/old --repeats 3

The other checkout must import its own kernels: ``tinygrad_explain.kernels``
is a ``package_dir`` mapping of ``kernels/``, so an uninstalled checkout needs
``ln -s ../kernels DIR/tinygrad_explain/kernels``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
root, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, root)
import numpy as np
import tinygrad_explain as te
from tinygrad_explain import kernels as K
from tinygrad_explain.training import optim, parallel, train
from tinygrad_explain.data import scenes
from pathlib import Path
kdir = Path(K.__file__).resolve().parent
if Path(root).resolve() not in kdir.parents:
    sys.exit(f"{root}: tinygrad_explain.kernels comes from {kdir}, not from this checkout "
             f"(link it: ln -s ../kernels {root}/tinygrad_explain/kernels)")
def main():
    te.manual_seed(0)
    model = te.models.scene_alexnet()
    train.he_init(model)
    model.requires_grad_(True).train()
    model.preprocessing.update(mean=[0.5] * 3, std=[0.25] * 3, pixel_scale=1.0)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.05)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * 4, 64, 64, 3), dtype=np.uint8)
    y = rng.integers(0, 10, batch * 4)
    with parallel.DataParallel(model, workers=2, threads=1) as par:
        for i in range(3):                                  # warm-up: compile, allocate
            par.grads(i, x[:batch], y[:batch], 0.1)
            opt.step()
        t = time.perf_counter()
        for i in range(steps):
            b = (i % 4) * batch
            xb = scenes.augment(x[b:b + batch], rng, flip=True, shift=0)
            par.grads(i, xb, y[b:b + batch], 0.1)
            opt.step()
        print(json.dumps({"ms": (time.perf_counter() - t) / steps * 1e3}))
if __name__ == "__main__":
    main()
"""


def run_child(root, steps, batch):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    r = subprocess.run([sys.executable, "-c", CHILD, str(root), str(steps), str(batch)],
                       capture_output=True, text=True, env=env, cwd=str(root))
    if r.returncode != 0:
        sys.exit(f"benchmark of {root} failed:\n{r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["ms"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--against", type=Path, default=None, help="another checkout to time side by side")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per run (default 40)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each code tree, alternating (default 3)")
    args = ap.parse_args(argv)
    if args.against is not None and not (args.against / "tinygrad_explain").is_dir():
        ap.error(f"--against {args.against}: not a checkout of this project (no tinygrad_explain/ in it)")
    trees = [("this", ROOT)] + ([("other", args.against)] if args.against else [])
    times = {name: [] for name, _ in trees}
    for r in range(args.repeats):
        for name, root in trees:
            ms = run_child(root, args.steps, args.batch)
            times[name].append(ms)
            print(f"run {r + 1}: {name} ({root}) {ms:.1f} ms per step of {args.batch}", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"\nmedian, {args.batch} scenes per step: this {med['this']:.1f} ms "
          f"({med['this'] / args.batch * 60000 / 1e3:.0f} s per 60,000-scene epoch of training steps)")
    if args.against:
        print(f"other ({args.against}): {med['other']:.1f} ms; ratio this/other {med['this'] / med['other']:.2f}")


if __name__ == "__main__":
    main()
