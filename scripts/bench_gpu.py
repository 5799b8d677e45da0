#!/usr/bin/env python
"""GPU benchmark: this engine (CUDA kernels through CuPy, cuBLAS GEMMs) against
PyTorch CUDA (cuDNN) on the same GPU, in one process, measured alternately.

For each AlexNet variant and batch size, after a warm-up, the two engines run
in turn (te, torch, te, torch, ...) and the table gives the median of
``--repeats`` runs (wall time of the call plus a device synchronisation) and
the ratio te/torch (< 1: this engine is faster):

    forward        scores = model(x)                               (no graph)
    fwd+grad       dS_c/dx: forward, then backward to the input     (frozen weights)
    class model    te.explain.class_model(model, c, steps=200, optimizer="sgd") against the same
                   loop in torch (zero image + faint noise, gradient ascent on S_c - l2 ||x||^2,
                   the scores copied to the host every step as te records them), batch 1

Targets (the GPU issue): fwd+grad <= 1.5x PyTorch at batch 1, <= 1.2x at batch 32.
Both engines compute in exact float32: TF32 is off for cuBLAS and cuDNN
(``--tf32`` gives PyTorch its default, TF32 convolutions); cuDNN picks its
fastest algorithms (``cudnn.benchmark``).

    python scripts/bench_gpu.py                          # everything
    python scripts/bench_gpu.py --variants torchvision --batches 1 --no-class-model
    python scripts/bench_gpu.py --layers                 # + per-layer forward/backward times (sync after each)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

TARGETS = {1: 1.5, 32: 1.2}


def sync_all():
    import cupy
    import torch
    cupy.cuda.Device().synchronize()
    torch.cuda.synchronize()


def timed(fn):
    sync_all()
    t = time.perf_counter()
    fn()
    sync_all()
    return time.perf_counter() - t


def compare(fa, fb, repeats, warm=2):
    for _ in range(warm):
        fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(fa))
        tb.append(timed(fb))
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def setups(variant, batch):
    import cupy
    import torch

    import tinygrad_explain as te
    from tinygrad_explain.testing.torch_reference import build
    te.manual_seed(0)
    model = te.models.alexnet(variant)
    tm = build(variant, model.state_dict()).cuda()
    for p in tm.parameters():
        p.requires_grad_(False)
    model.to("gpu")
    x_host = np.random.default_rng(0).standard_normal((batch,) + model.input_shape).astype(np.float32)
    onehot_host = np.zeros((batch, 1000), np.float32)
    onehot_host[:, 3] = 1
    x, onehot = cupy.asarray(x_host), cupy.asarray(onehot_host)
    xt_t, onehot_t = torch.from_numpy(x_host).cuda(), torch.from_numpy(onehot_host).cuda()

    def te_fwd():
        with te.no_grad():
            return model(x).data

    def te_grad():
        xt = te.Tensor(x, requires_grad=True)
        model(xt).backward(onehot)
        return xt.grad

    def torch_fwd():
        with torch.no_grad():
            return tm(xt_t)

    def torch_grad():
        xi = xt_t.clone().requires_grad_(True)
        tm(xi).backward(onehot_t)
        return xi.grad

    return model, tm, (te_fwd, torch_fwd), (te_grad, torch_grad), (x, xt_t, onehot, onehot_t)


def check_agreement(te_grad, torch_grad):
    a = te_grad().get().astype(np.float64)
    b = torch_grad().cpu().numpy().astype(np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def class_model_pair(model, tm, steps, lr=0.01, l2=1e-3, target=3):
    import torch

    import tinygrad_explain as te
    from tinygrad_explain.data.image import data_scale
    from tinygrad_explain.explain.visualize import CLASS_MODEL_DEFAULTS
    noise = CLASS_MODEL_DEFAULTS.get("init_noise", 0.0) * data_scale(model)

    def te_run():
        return te.explain.class_model(model, target, steps=steps, lr=lr, l2=l2, optimizer="sgd", progress=False).image

    def torch_run():
        C, H, W = model.input_shape
        x0 = np.zeros((1, C, H, W), np.float32)
        if noise:
            x0 += (noise * np.random.default_rng(0).standard_normal(x0.shape)).astype(np.float32)
        x = torch.from_numpy(x0).cuda()
        hist = []
        for _ in range(steps):
            xi = x.clone().requires_grad_(True)
            s = tm(xi)
            hist.append(s.detach().cpu())                      # te records scores on the host every step
            (s[0, target] - l2 * (xi * xi).sum()).backward()
            x = x + lr * xi.grad
        with torch.no_grad():
            tm(x).cpu()                                        # te predicts the final image's scores
        return x.cpu().numpy()
    return te_run, torch_run


def layer_times(model, tm, x, xt_t, repeats):
    """Per layer: forward (sync after each layer) for both engines; te's backward per layer too."""
    import cupy
    import torch

    import tinygrad_explain as te
    names = model.layer_names
    mods = list(tm)
    rows = []
    for _ in range(2):                                          # warm
        h = te.Tensor(x)
        with te.no_grad():
            for layer in model.layers.values():
                h = layer(h)
    te_t = {n: [] for n in names}
    th_t = {n: [] for n in names}
    te_b = {n: [] for n in names}
    for _ in range(repeats):
        h = te.Tensor(x, requires_grad=True)
        outs = []
        for n, layer in model.layers.items():
            cupy.cuda.Device().synchronize()
            t = time.perf_counter()
            h = layer(h)
            cupy.cuda.Device().synchronize()
            te_t[n].append(time.perf_counter() - t)
            outs.append((n, h))
        g = cupy.ones(h.shape, h.dtype)
        for n, out in reversed(outs):                           # backward one node at a time
            if out._ctx is None:
                continue
            cupy.cuda.Device().synchronize()
            t = time.perf_counter()
            gi = out._ctx.backward(g)
            cupy.cuda.Device().synchronize()
            te_b[n].append(time.perf_counter() - t)
            g = gi[0] if isinstance(gi, tuple) else gi
        with torch.no_grad():
            h = xt_t
            for n, m in zip(names, mods):
                torch.cuda.synchronize()
                t = time.perf_counter()
                h = m(h)
                torch.cuda.synchronize()
                th_t[n].append(time.perf_counter() - t)
    for n in names:
        rows.append((n, statistics.median(te_t[n]) * 1e3, statistics.median(th_t[n]) * 1e3,
                     statistics.median(te_b[n]) * 1e3 if te_b[n] else float("nan")))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["torchvision", "caffe"], choices=["torchvision", "caffe"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=200, help="class-model steps")
    ap.add_argument("--class-repeats", type=int, default=5)
    ap.add_argument("--no-class-model", action="store_true")
    ap.add_argument("--layers", action="store_true", help="per-layer times (torchvision, each batch)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in PyTorch (its default for convolutions)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.repeats < 5 or args.class_repeats < 5:
        ap.error("--repeats and --class-repeats must be at least 5")

    from tinygrad_explain.core import device
    ok, why = device.gpu_available()
    if not ok:
        print(f"bench_gpu: no GPU ({why})")
        return 2
    try:
        import torch
    except ImportError:
        print("bench_gpu: PyTorch is not installed (the reference)")
        return 2
    if not torch.cuda.is_available():
        print("bench_gpu: PyTorch sees no CUDA device")
        return 2
    import cupy
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"GPU: {name}; CuPy {cupy.__version__} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}), "
          f"torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}), TF32 {'on' if args.tf32 else 'off'}")
    print(f"\nmedian of {args.repeats} alternating runs, milliseconds (te / torch)\n")
    print(f"{'variant':<12} {'batch':>5}  {'measure':<12} {'te':>9} {'torch':>9}   {'ratio':>6}  target")
    results = {"gpu": name, "tf32": args.tf32, "rows": [], "layers": {}}

    def report(variant, batch, measure, a, b, target=None):
        r = a / b
        verdict = "" if target is None else (f"<= {target:.1f}x  {'MET' if r <= target else 'MISSED'}")
        print(f"{variant:<12} {batch:>5}  {measure:<12} {a:9.2f} {b:9.2f}   {r:6.2f}x  {verdict}", flush=True)
        results["rows"].append(dict(variant=variant, batch=batch, measure=measure, te_ms=a, torch_ms=b, ratio=r,
                                    target=target))

    for variant in args.variants:
        for batch in args.batches:
            model, tm, fwd, grad, data = setups(variant, batch)
            err = check_agreement(*grad)
            report(variant, batch, "forward", *compare(*fwd, args.repeats))
            report(variant, batch, "fwd+grad", *compare(*grad, args.repeats), TARGETS.get(batch))
            results["rows"][-1]["grad_rel_err_vs_torch"] = err
            if err > 1e-3:
                print(f"  (warning: te and torch input gradients differ by {err:.2g} of the largest)")
            if args.layers and variant == "torchvision":
                print(f"\n  per layer, batch {batch}, ms (te fwd, torch fwd, te bwd):")
                rows = layer_times(model, tm, data[0], data[1], args.repeats)
                for n, a, b, c in rows:
                    print(f"    {n:<8} {a:8.3f} {b:8.3f} {c:8.3f}")
                results["layers"][f"{variant}-{batch}"] = rows
                print()
            del model, tm, fwd, grad, data
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()

    if not args.no_class_model:
        try:
            model, tm, *_ = setups("torchvision", 1)
            te_run, torch_run = class_model_pair(model, tm, args.steps)
            a, b = compare(te_run, torch_run, args.class_repeats, warm=1)
            report("torchvision", 1, f"class {args.steps}", a, b)
        except Exception as e:                      # noqa: BLE001 - keep the table above
            print(f"class model: failed ({e.__class__.__name__}: {e})")
    if args.json:
        from tinygrad_explain.core.safe_io import atomic_write
        with atomic_write(args.json, mode="w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
