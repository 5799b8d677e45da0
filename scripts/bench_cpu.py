#!/usr/bin/env python
"""CPU benchmark: this engine against PyTorch's CPU build, measured side by side.

For each AlexNet variant and batch size it alternates the two engines
(te, torch, te, torch, ...) after a warm-up, and prints the median of
``--repeats`` runs and the ratio te/torch (< 1 means this engine is faster):

    forward               scores = model(x)
    fwd+grad backprop     dS_c/dx with the true gradient
    fwd+grad guided       dS_c/dx with guided backpropagation

It also reports peak memory of batch-8 forward+input-gradient (each engine in
a fresh child process), cold and warm start-up to a first input gradient
(a child process with an empty / a filled Numba cache), and the time of one
training step of the embedded model at batch 128.

    python scripts/bench_cpu.py                       # everything
    python scripts/bench_cpu.py --variants torchvision --batches 1 --no-memory --no-startup
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return ", ".join(f"{d['internal_api']} {d.get('version')} ({d['num_threads']} threads)"
                         for d in threadpool_info() if d["user_api"] == "blas")
    except ImportError:
        cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{b.get('name', '?')} {b.get('version', '')}"


def te_setup(variant, batch):
    import tinygrad_explain as te
    te.manual_seed(0)
    model = te.models.alexnet(variant)
    x = np.random.default_rng(0).standard_normal((batch,) + model.input_shape).astype(np.float32)
    onehot = np.zeros((batch, 1000), np.float32)
    onehot[:, 3] = 1

    def fwd():
        with te.no_grad():
            return model(x).data

    def grad(rule):
        def run():
            xt = te.Tensor(x, requires_grad=True)
            s = model(xt)
            with te.relu_backward(rule):
                s.backward(onehot)
            return xt.grad
        return run
    return model, fwd, grad("backprop"), grad("guided")


def torch_setup(variant, batch, te_model):
    import torch
    from tinygrad_explain.torch_reference import build
    tm = build(variant, te_model.state_dict())
    for p in tm.parameters():                # input gradient only, as in this engine
        p.requires_grad_(False)
    x = torch.tensor(np.random.default_rng(0).standard_normal((batch,) + te_model.input_shape).astype(np.float32))

    def fwd():
        with torch.no_grad():
            return tm(x)

    def grad(guided):
        hooks = []
        if guided:
            for m in tm.modules():
                if isinstance(m, torch.nn.ReLU):
                    hooks.append(m.register_full_backward_hook(lambda mod, gi, go: (gi[0].clamp(min=0),)))

        def run():
            xt = x.clone().requires_grad_(True)
            tm(xt)[:, 3].sum().backward()
            return xt.grad
        run.hooks = hooks
        return run
    g1 = grad(False)
    return fwd, g1, grad


def timeit(fn, warm=2):
    for _ in range(warm):
        fn()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(name, fa, fb, repeats):
    """Median times of fa and fb, measured alternately: each round runs fa twice
    and times the second call, then fb likewise.  The untimed call lets the other
    library's thread pool go idle first (OpenBLAS and OpenMP workers spin for a
    while after a parallel region), so neither engine is timed against the
    other's spinning threads."""
    fa(), fb() if fb is not None else None      # warm-up: compile, allocate
    ta, tb = [], []
    for _ in range(repeats):
        for f, ts in ((fa, ta), (fb, tb)):
            if f is None:
                continue
            f()
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    a = statistics.median(ta) * 1e3
    b = statistics.median(tb) * 1e3 if tb else float("nan")
    return name, a, b


def run_speed(args, have_torch):
    rows = []
    for variant in args.variants:
        for batch in args.batches:
            model, fwd, gb, gg = te_setup(variant, batch)
            if have_torch:
                import torch
                tfwd, tgb, tgrad = torch_setup(variant, batch, model)
                rows.append((variant, batch) + compare("forward", fwd, tfwd, args.repeats))
                rows.append((variant, batch) + compare("fwd+grad backprop", gb, tgb, args.repeats))
                # guided in torch: hooks on a fresh copy so backprop timings above are hook-free
                tfwd2, _, tgrad2 = torch_setup(variant, batch, model)
                rows.append((variant, batch) + compare("fwd+grad guided", gg, tgrad2(True), args.repeats))
            else:
                for name, f in (("forward", fwd), ("fwd+grad backprop", gb), ("fwd+grad guided", gg)):
                    rows.append((variant, batch) + compare(name, f, None, args.repeats))
            del model
            print_row(rows[-3:])
    return rows


def print_row(rows):
    for variant, batch, name, a, b in rows:
        print(f"{variant:<12} {batch:>5}  {name:<18} {a:9.1f} {b:9.1f}   {a / b if b == b else float('nan'):6.2f}x",
              flush=True)


CHILD = r"""
import gc, sys, numpy as np
engine, variant, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
def status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key): return int(line.split()[1]) * 1024
import tinygrad_explain as te
te.manual_seed(0)
m = te.models.alexnet(variant)
shape = m.input_shape
if engine == 'te':
    def step(b):
        x = np.random.default_rng(0).standard_normal((b,) + shape).astype(np.float32)
        oh = np.zeros((b, 1000), np.float32); oh[:, 3] = 1
        xt = te.Tensor(x, requires_grad=True); m(xt).backward(oh); return xt.grad
else:
    import torch; torch.set_num_threads(%d)
    from tinygrad_explain.torch_reference import build
    tm = build(variant, m.state_dict()); del m
    for p in tm.parameters(): p.requires_grad_(False)
    def step(b):
        xt = torch.tensor(np.random.default_rng(0).standard_normal((b,) + shape).astype(np.float32)).requires_grad_(True)
        tm(xt)[:, 3].sum().backward(); return xt.grad
step(1); gc.collect()                      # compile / load kernels at batch 1 only
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')                           # reset the peak RSS (VmHWM) to the current RSS
base = status('VmRSS')
g = step(batch)
print(status('VmHWM') - base)
"""


def run_memory(variant, batch, threads):
    out = {}
    for engine in ("te", "torch"):
        r = subprocess.run([sys.executable, "-c", CHILD % threads, engine, variant, str(batch)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            out[engine] = None
            print(f"memory child ({engine}) failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
        else:
            out[engine] = int(r.stdout.strip().splitlines()[-1])
    return out


STARTUP = r"""
import time; t0 = time.perf_counter()
import numpy as np, tinygrad_explain as te
m = te.models.alexnet('torchvision')
x = te.Tensor(np.zeros((1, 3, 224, 224), np.float32), requires_grad=True)
m(x)[0, 0].backward()
print(time.perf_counter() - t0)
"""


def run_startup():
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        times = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            times.append(float(r.stdout.strip().splitlines()[-1]))
    return times


def run_train_step(repeats):
    import tinygrad_explain as te
    from tinygrad_explain import train
    te.manual_seed(0)
    model = te.models.scene_alexnet().requires_grad_(True).train()
    opt = train.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = np.random.default_rng(0).standard_normal((128,) + model.input_shape).astype(np.float32)
    y = np.random.default_rng(1).integers(0, model.num_classes, 128)

    def step():
        loss = te.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ts = [timeit(step, warm=0) for _ in range(repeats + 1)][1:]
    return statistics.median(ts) * 1e3


def main():
    # Measure as a user's machine would run: without this machine's OpenBLAS
    # kernel pins, unless --keep-blas-env.
    sys.path.insert(0, os.path.dirname(HERE))
    from tinygrad_explain.device import rerun_without_blas_pins
    rerun_without_blas_pins()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["torchvision", "caffe"], choices=["torchvision", "caffe"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-startup", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--keep-blas-env", action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE as set")
    args = ap.parse_args()
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")
    try:
        import torch
        torch.set_num_threads(args.threads)
        have_torch = True
        tinfo = f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.mkldnn.is_available() and 'oneDNN' or 'no oneDNN'}"
    except ImportError:
        have_torch, tinfo = False, "torch not installed: this engine's numbers only"
    import numba
    print(f"this engine: numpy {np.__version__} BLAS {blas_info()}, numba {numba.__version__} "
          f"({numba.config.NUMBA_NUM_THREADS} threads, layer {numba.config.THREADING_LAYER})")
    print(f"reference:   {tinfo}")
    print(f"\nmedian of {args.repeats} runs, milliseconds (te / torch)\n")
    print(f"{'variant':<12} {'batch':>5}  {'measure':<18} {'te':>9} {'torch':>9}   {'ratio':>6}")
    run_speed(args, have_torch)

    if not args.no_memory and have_torch:
        mem = run_memory("torchvision", 8, args.threads)
        if None not in mem.values():
            print(f"\npeak memory, batch-8 fwd+grad (torchvision), above the loaded model: "
                  f"te {mem['te'] / 2**20:.0f} MiB, torch {mem['torch'] / 2**20:.0f} MiB, "
                  f"ratio {mem['te'] / mem['torch']:.2f}x")
    if not args.no_startup:
        cold, warm = run_startup()
        print(f"\nstart-up to first input gradient (new process): cold cache {cold:.1f} s, warm cache {warm:.1f} s")
    if not args.no_train:
        try:
            ms = run_train_step(5)
            print(f"\ntraining step of the embedded model, batch 128: {ms:.0f} ms")
        except (ImportError, AttributeError) as e:
            print(f"\ntraining step: skipped ({e})")


if __name__ == "__main__":
    main()
