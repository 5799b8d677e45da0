#!/usr/bin/env python
"""Images per second of the explainers that batch their own work -- before (the code at a
git revision, run in a subprocess from an extracted copy), after (this checkout), and
Captum on the same network as a torch module (``torch_reference.from_network``), at the
same batch, all measured in one run side by side (ratios are what to read on a busy
machine).

    python scripts/bench_batching.py                      # before = 9ce4642 (the parent of this work)
    python scripts/bench_batching.py --before HEAD~3 --images 16 --repeats 5
    python scripts/bench_batching.py --no-before --json out.json

Methods and their Captum counterparts (one thread each: Numba / BLAS / torch):

    saliency        Saliency                       max_c |dS/dx|
    guided          GuidedBackprop                 guided backprop, max_c |.|
    smoothgrad      NoiseTunnel(Saliency)          25 noisy copies, 15% noise
    gradcam         LayerGradCam (last conv ReLU)  Captum's map stays at the layer's size
    guided-gradcam  GuidedGradCam
    occlusion       Occlusion                      10 px patch, stride 6
    deletion        --                             deletion + insertion curves, 8 steps

Each time is the best of ``--repeats`` calls on the same ``--images`` scenes; the three
columns are measured alternately, method by method (before in a subprocess that times a
call when asked), so that a change of load hits them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("saliency", "guided", "smoothgrad", "gradcam", "guided-gradcam", "occlusion", "deletion")
CAPTUM = {"saliency": "Saliency", "guided": "GuidedBackprop", "smoothgrad": "NoiseTunnel(Saliency)",
          "gradcam": "LayerGradCam", "guided-gradcam": "GuidedGradCam", "occlusion": "Occlusion"}


def te_functions(n):
    """{method: a call on n sample scenes} with the tinygrad_explain importable here."""
    import tinygrad_explain as te
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain import metrics as M
    te.set_num_threads(1)
    model = te.load_model()
    d = scenes.load_sample()
    x = np.concatenate([te.image.load(im, model) for im in d["images"][:n]])
    t = np.asarray(d["labels"][:n], np.int64)
    E = te.explain
    sal = E.saliency(model, x, t)
    base = M.blur(x, 8.0)
    return {"saliency": lambda: E.saliency(model, x, t),
            "guided": lambda: E.saliency(model, x, t, rule="guided"),
            "smoothgrad": lambda: E.smoothgrad(model, x, t, samples=25),
            "gradcam": lambda: E.gradcam(model, x, t),
            "guided-gradcam": lambda: E.guided_gradcam(model, x, t),
            "occlusion": lambda: E.occlusion(model, x, t, patch=10, stride=6),
            "deletion": lambda: M.deletion_insertion(model, x, t, sal, base, 8)}


def captum_functions(n):
    import torch
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerGradCam, NoiseTunnel, Occlusion, Saliency

    import tinygrad_explain as te
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain.attribution import default_cam_layer
    from tinygrad_explain.testing.torch_reference import from_network
    torch.set_num_threads(1)
    model = te.load_model()
    net = from_network(model)
    layer = net[model.layer_names.index(default_cam_layer(model))]
    d = scenes.load_sample()
    x = torch.from_numpy(np.concatenate([te.image.load(im, model) for im in d["images"][:n]]))
    t = torch.as_tensor(np.asarray(d["labels"][:n], np.int64))
    sd = float(0.15 * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).mean())

    def probs(z):
        return torch.softmax(net(z), 1)
    return {"saliency": lambda: Saliency(net).attribute(x.clone().requires_grad_(True), target=t),
            "guided": lambda: GuidedBackprop(net).attribute(x.clone().requires_grad_(True), target=t),
            "smoothgrad": lambda: NoiseTunnel(Saliency(net)).attribute(
                x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=25, nt_samples_batch_size=4,
                stdevs=sd, target=t),
            "gradcam": lambda: LayerGradCam(net, layer).attribute(x, target=t),
            "guided-gradcam": lambda: GuidedGradCam(net, layer).attribute(x.clone().requires_grad_(True), target=t),
            "occlusion": lambda: Occlusion(probs).attribute(x, sliding_window_shapes=(3, 10, 10),
                                                            strides=(3, 6, 6), target=t, perturbations_per_eval=32)}


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def serve(n):
    """The 'before' side: read a method name per line, answer the seconds of one call."""
    import warnings
    warnings.filterwarnings("ignore")
    fns = te_functions(n)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(timed(fns[line.strip()])), flush=True)


class Before:
    """The code at git revision ``rev``, extracted to a temporary folder, timing calls in a
    subprocess on request -- so that before, after and Captum alternate in time."""

    def __init__(self, rev, n):
        self.tmp = tempfile.TemporaryDirectory()
        tmp = self.tmp.name
        archive = Path(tmp) / "src.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "tinygrad_explain", "kernels",
                        "weights"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        code = f"import sys; sys.path.insert(1, {str(ROOT / 'scripts')!r}); import bench_batching as b; b.serve({n})"
        self.p = subprocess.Popen([sys.executable, "-c", code], cwd=tmp, env=dict(os.environ, PYTHONPATH=tmp),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.p.stdout.readline().strip() != "ready":
            raise SystemExit(f"before ({rev}) failed to start")

    def time(self, method):
        self.p.stdin.write(method + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait(30)
        self.tmp.cleanup()


def dask_overhead(tasks=200, workers=2):
    """Seconds per task of Dask distributed itself: ``tasks`` no-op tasks, each with a chunk's
    description as argument, through a local cluster of ``workers`` processes (after start-up),
    and the cluster's start-up time."""
    import logging

    from dask.distributed import Client, LocalCluster, wait

    from tinygrad_explain.explain.dataset import Scenes
    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        start = time.perf_counter() - t0
        wait(client.map(len, [Scenes("test", i, i + 50) for i in range(20)], pure=False))    # warm
        t1 = time.perf_counter()
        wait(client.map(len, [Scenes("test", i, i + 50) for i in range(tasks)], pure=False))
        per = (time.perf_counter() - t1) / tasks
    return {"startup_s": start, "per_task_s": per, "tasks": tasks, "workers": workers}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="images per call (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="calls per measurement, the best counts (default 3)")
    ap.add_argument("--before", default="9ce4642", help="git revision of the 'before' column (default 9ce4642)")
    ap.add_argument("--no-before", action="store_true")
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--json", help="write the table to this JSON file")
    ap.add_argument("--dask-overhead", action="store_true",
                    help="only: Dask distributed's own time per task and start-up (local cluster, 2 workers)")
    args = ap.parse_args(argv)
    if args.dask_overhead:
        o = dask_overhead()
        print(f"Dask local cluster of {o['workers']} workers: start-up {o['startup_s']:.1f} s, "
              f"{1000 * o['per_task_s']:.1f} ms per no-op task ({o['tasks']} tasks)")
        return 0
    n = args.images
    after = te_functions(n)
    captum = {}
    if not args.no_captum:
        try:
            captum = captum_functions(n)
        except ImportError as e:
            print(f"(no Captum column: {e})")
    before = None if args.no_before else Before(args.before, n)
    sides = {"before": (lambda m: before.time(m)) if before else None, "after": lambda m: timed(after[m]),
             "captum": (lambda m: timed(captum[m])) if captum else None}
    best = {side: {} for side in sides}
    try:
        for r in range(args.repeats + 1):             # round 0 warms up (compilation, caches)
            for m in args.methods:
                for side, run in sides.items():       # the three side by side, alternating
                    if run is None or (side == "captum" and m not in captum):
                        continue
                    t = run(m)
                    if r:
                        best[side][m] = min(t, best[side].get(m, float("inf")))
    finally:
        if before:
            before.close()
    before, after, captum = best["before"], best["after"], best["captum"]
    rate = lambda s: n / s if s else float("nan")  # noqa: E731
    print(f"{n} images per call, best of {args.repeats}, 1 thread each; images / second "
          f"(before = {args.before}; under whatever load the machine has -- read the ratios)")
    print("| method | before | after | after / before | Captum | after / Captum |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for m in args.methods:
        b, a, c = before.get(m), after[m], captum.get(m)
        rows[m] = {"before": rate(b) if b else None, "after": rate(a), "captum": rate(c) if c else None,
                   "captum_method": CAPTUM.get(m)}
        fmt = lambda v: f"{v:.1f}" if v else "--"  # noqa: E731
        print(f"| {m} | {fmt(rows[m]['before'])} | {fmt(rate(a))} | {fmt(b / a if b else None)} | "
              f"{fmt(rows[m]['captum'])} {'(' + CAPTUM[m] + ')' if m in CAPTUM else ''} | "
              f"{fmt(c / a if c else None)} |")
    if args.json:
        sys.path.insert(0, str(ROOT))
        from tinygrad_explain.core.safe_io import write_text
        write_text(args.json, json.dumps({"images": n, "repeats": args.repeats, "before": args.before,
                                          "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
