#!/usr/bin/env python
"""CPU benchmark: this engine against PyTorch's CPU build, measured side by side.

For each AlexNet variant -- "embedded" (the shipped 64x64 scene model),
"torchvision" (224) and "caffe" (227, with LRN and groups; both ImageNet shapes
with random weights) -- and batch size it alternates the two engines (te, torch,
te, torch, ...) after a warm-up, and prints the median of ``--repeats`` runs,
the ratio te/torch (< 1 means this engine is faster) and the 1-minute load
average at the time (the machine may be shared; the ratios are what count):

    forward                scores = model(x)
    fwd+grad <rule>        dS_c/dx, the ReLUs passing back by ``--rules``
                           (backprop: the true gradient; deconvnet; guided)

``--fc`` times the fully connected kernel against BLAS at growing batch (the
crossover, ``ops.Linear.SKINNY_MAX_ROWS``) and fc6's batch-8 forward against
one read of its weights.  ``--loops`` times one step of the explainers' loops on the
embedded model -- a class model at batch 10 and an fc7 inversion at batch 5, recipe
"natural", through ``class_model`` / ``invert`` -- against the same loop written in
torch.  ``--reduced`` prints the score and gradient error of bfloat16 fully connected
weights (an option, ``nn.Linear.storage``) against float32, beside float32's
error against torch, and their times.  ``--profile`` adds a per-layer table for each variant and batch: every layer's
forward and its backward to the layer input, this engine against the same
torch module, timed alternately on the same recorded input (the layers of the
two AlexNets correspond one to one, see ``torch_reference``).

It also reports peak memory of forward+input-gradient at ``--mem-batches``
for each variant (each engine in a fresh child process), cold and warm start-up to a first input gradient
(a child process with an empty / a filled Numba cache), and the time of one
training step of the embedded model at batch 128.

    python scripts/bench_cpu.py                       # everything
    python scripts/bench_cpu.py --variants torchvision --batches 1 --no-memory --no-startup
    python scripts/bench_cpu.py --profile --variants torchvision --batches 8 --no-memory --no-startup --no-train
    python scripts/bench_cpu.py --fc --no-speed --no-memory --no-startup --no-train
    python scripts/bench_cpu.py --loops --no-speed --no-memory --no-startup --no-train
    python scripts/bench_cpu.py --reduced --no-speed --batches 1 8 --no-memory --no-startup --no-train
    python scripts/bench_cpu.py --variants resnet50 vgg16 --batches 1 8 --no-startup --no-train

``--variants resnet50 vgg16`` times torchvision's ResNet-50 and VGG16 (224 px, random
weights; ``torch_graph_net``), exported to ONNX (once per run) and loaded as graph
networks, against the torch modules they were exported from (issue 28), at
``--graph-batches`` (default 1 and 8; the AlexNets at ``--batches``).  With them,
``--profile`` prints where this engine's time goes by node type and the slowest nodes.

``--threads`` sets both engines' threads (torch's, and this engine's Numba and BLAS
pools through ``te.set_num_threads``).  After the ratio rows comes one table --
model, batch, measure, ms te / torch, ratio with its spread (the lowest and highest
ratio of a single round), peak MB te / torch and their ratio, load average -- and
``--json PATH`` writes it, with the threads, versions and load averages, for the
docs (docs/bench_cpu_graphs.json).  Calls longer than ``LONG_S`` are timed after a
pause instead of an untimed call (``compare``), so the whole set

    python scripts/bench_cpu.py --variants resnet50 vgg16 torchvision --batches 1 8 32 \
        --threads 2 --repeats 5 --no-startup --no-train --json docs/bench_cpu_graphs.json

is sized for about 8 minutes on a quiet 2-core machine (ResNet-50 / VGG16 at 1 and 8,
the torchvision AlexNet at 1, 8, 32, peak memory at each) -- an estimate from the
per-call times; the JSON's "seconds" says what a run took.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

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


ALEXNETS = ("embedded", "torchvision", "caffe")
GRAPH_VARIANTS = ("resnet50", "vgg16")          # graph networks, brought in through ONNX
VARIANTS = ALEXNETS + GRAPH_VARIANTS


def torch_graph_net(variant):
    """torchvision's ResNet-50 or VGG16 (224 px, 1000 classes) written out in plain torch
    (torchvision need not be installed), torchvision's random initialisation (seed 0),
    eval mode.  Every ReLU is a module of its own, used once, so that the backward hooks
    of the deconvnet / guided rules (``TORCH_RULES``) see each call."""
    import torch
    from torch import nn as T
    torch.manual_seed(0)
    if variant == "vgg16":
        layers, cin = [], 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            layers += [T.MaxPool2d(2, 2)] if v == "M" else [T.Conv2d(cin, v, 3, padding=1), T.ReLU()]
            cin = cin if v == "M" else v
        net = T.Sequential(*layers, T.AdaptiveAvgPool2d(7), T.Flatten(), T.Linear(512 * 49, 4096), T.ReLU(),
                           T.Dropout(), T.Linear(4096, 4096), T.ReLU(), T.Dropout(), T.Linear(4096, 1000))
    else:
        class Bottleneck(T.Module):
            def __init__(self, cin, planes, stride):
                super().__init__()
                cout = planes * 4
                self.body = T.Sequential(
                    T.Conv2d(cin, planes, 1, bias=False), T.BatchNorm2d(planes), T.ReLU(),
                    T.Conv2d(planes, planes, 3, stride, 1, bias=False), T.BatchNorm2d(planes), T.ReLU(),
                    T.Conv2d(planes, cout, 1, bias=False), T.BatchNorm2d(cout))
                self.downsample = (T.Sequential(T.Conv2d(cin, cout, 1, stride, bias=False), T.BatchNorm2d(cout))
                                   if stride != 1 or cin != cout else None)
                self.relu = T.ReLU()

            def forward(self, x):
                return self.relu(self.body(x) + (x if self.downsample is None else self.downsample(x)))

        blocks, cin = [], 64
        for planes, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(n):
                blocks.append(Bottleneck(cin, planes, stride if i == 0 else 1))
                cin = planes * 4
        net = T.Sequential(T.Conv2d(3, 64, 7, 2, 3, bias=False), T.BatchNorm2d(64), T.ReLU(), T.MaxPool2d(3, 2, 1),
                           *blocks, T.AdaptiveAvgPool2d(1), T.Flatten(), T.Linear(2048, 1000))
    for m in net.modules():                     # torchvision's initialisation
        if isinstance(m, T.Conv2d):
            T.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                T.init.zeros_(m.bias)
        elif isinstance(m, T.Linear):
            T.init.normal_(m.weight, 0, 0.01)
            T.init.zeros_(m.bias)
    return net.eval()


def te_model(variant):
    """"embedded": the shipped scene model (64x64, trained); "torchvision" (224) / "caffe"
    (227): the ImageNet AlexNets with random weights (seed 0); "resnet50" / "vgg16":
    ``torch_graph_net`` exported to ONNX and loaded as a user does (``te.load_model``,
    batch norm folded into the convolutions), the torch module kept as ``torch_source``."""
    import tinygrad_explain as te
    te.manual_seed(0)
    if variant in GRAPH_VARIANTS:
        tm = torch_graph_net(variant)
        model = te.load_model(onnx_file(variant, tm))
        model.torch_source = tm
        return model
    return te.load_model() if variant == "embedded" else te.models.alexnet(variant)


#: where the ONNX exports of one run are kept (the memory children load them too)
ONNX_DIR = os.environ.get("BENCH_CPU_ONNX_DIR")


def onnx_file(variant, tm):
    """The ONNX file of ``torch_graph_net(variant)`` (``tm``), exported once per run into
    ``ONNX_DIR`` (VGG16's export takes longer than its benchmark at batch 1)."""
    import torch
    global ONNX_DIR
    if ONNX_DIR is None:                        # made here: removed when this process ends (VGG16's is 528 MB)
        import atexit
        import shutil
        ONNX_DIR = os.environ["BENCH_CPU_ONNX_DIR"] = tempfile.mkdtemp(prefix="bench_cpu_")
        atexit.register(shutil.rmtree, ONNX_DIR, True)
    path = os.path.join(ONNX_DIR, f"{variant}.onnx")
    if not os.path.exists(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # the legacy exporter's deprecation notice
            torch.onnx.export(tm, (torch.zeros(1, 3, 224, 224),), path + ".part", dynamo=False, opset_version=17,
                              input_names=["input"], dynamic_axes={"input": {0: "batch"}})
        os.replace(path + ".part", path)
    return path


def torch_twin(te_model):
    """The same network in torch: the module a graph network was exported from (a fresh
    copy), else one module per layer (torch_reference.from_network)."""
    if hasattr(te_model, "torch_source"):
        import copy
        return copy.deepcopy(te_model.torch_source)
    from tinygrad_explain.testing.torch_reference import from_network
    return from_network(te_model)


def te_setup(variant, batch, model=None):
    """(model, fwd, grad): ``grad(rule)`` is a run of forward + input gradient under ``rule``;
    ``model`` (default: a new ``te_model(variant)``) is reused across batches."""
    import tinygrad_explain as te
    model = te_model(variant) if model is None else model
    x = np.random.default_rng(0).standard_normal((batch,) + model.input_shape).astype(np.float32)
    onehot = np.zeros((batch, model.num_classes), np.float32)
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
    return model, fwd, grad


# what a ReLU passes back under each rule, as a torch backward hook's replacement of
# grad_input (gi = go * [x > 0]); None: torch's own backward (the true gradient)
TORCH_RULES = {"backprop": None,
               "guided": lambda mod, gi, go: (gi[0].clamp(min=0),),         # go * [x > 0] * [go > 0]
               "deconvnet": lambda mod, gi, go: (go[0].clamp(min=0),)}      # go * [go > 0]


def torch_setup(variant, batch, te_model):
    """(fwd, grad): ``grad(rule)`` is a run of forward + input gradient under ``rule`` on
    a fresh torch twin (the rule's hooks on its ReLUs; so backprop runs hook-free)."""
    import torch
    x = torch.tensor(np.random.default_rng(0).standard_normal((batch,) + te_model.input_shape).astype(np.float32))

    def twin():
        tm = torch_twin(te_model)
        for p in tm.parameters():                # input gradient only, as in this engine
            p.requires_grad_(False)
        return tm
    tm = twin()

    def fwd():
        with torch.no_grad():
            return tm(x)

    def grad(rule):
        tr = twin()
        if TORCH_RULES[rule] is not None:
            for m in tr.modules():
                if isinstance(m, torch.nn.ReLU):
                    m.register_full_backward_hook(TORCH_RULES[rule])

        def run():
            xt = x.clone().requires_grad_(True)
            tr(xt)[:, 3].sum().backward()
            return xt.grad
        return run
    return fwd, grad


def timeit(fn, warm=2):
    for _ in range(warm):
        fn()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


LONG_S = 0.5        # a call this long (seconds, at warm-up) is timed after a pause instead of an untimed call
PAUSE_S = 0.3       # the pause: longer than OpenBLAS's and OpenMP's workers spin after a parallel region

#: the last ``compare``'s per-round times (ms), for the spread in the table and the JSON
last_rounds = {}


def compare(name, fa, fb, repeats):
    """Median times of fa and fb, measured alternately: each round runs fa twice
    and times the second call, then fb likewise.  The untimed call lets the other
    library's thread pool go idle first (OpenBLAS and OpenMP workers spin for a
    while after a parallel region), so neither engine is timed against the
    other's spinning threads.  A call that took longer than ``LONG_S`` at warm-up
    (VGG16 and ResNet-50 at batch 8) is timed after a pause of ``PAUSE_S`` instead of
    an untimed call, which would double the benchmark's time for nothing: its own
    arrays are far larger than any cache.  The rounds' times are left in
    ``last_rounds`` ("te", "torch": lists of ms)."""
    pauses = []
    for f in (fa, fb):                          # warm-up: compile, allocate
        if f is not None:
            t = time.perf_counter(); f(); pauses.append(time.perf_counter() - t >= LONG_S)
    ta, tb = [], []
    for _ in range(repeats):
        for f, ts, pause in zip((fa, fb), (ta, tb), pauses):
            if f is None:
                continue
            if pause:
                time.sleep(PAUSE_S)
            else:
                f()
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    last_rounds.clear()
    last_rounds.update(te=[t * 1e3 for t in ta], torch=[t * 1e3 for t in tb])
    a = statistics.median(ta) * 1e3
    b = statistics.median(tb) * 1e3 if tb else float("nan")
    return name, a, b


def batches_of(args, variant):
    """The batches timed for ``variant``: ``--graph-batches`` for ResNet-50 / VGG16, else ``--batches``."""
    return args.graph_batches if variant in GRAPH_VARIANTS else args.batches


def run_speed(args, have_torch):
    """The ratio table: one row (a dict) per variant, batch and measure, printed as it comes."""
    rows = []
    for variant in args.variants:
        model = te_model(variant)
        for batch in batches_of(args, variant):
            model, fwd, grad = te_setup(variant, batch, model)
            tfwd, tgrad = torch_setup(variant, batch, model) if have_torch else (None, lambda rule: None)
            if have_torch and variant in GRAPH_VARIANTS:        # the same network: its scores agree
                a, b = np.asarray(fwd(), np.float64), tfwd().double().numpy()
                print(f"{variant:<12} {batch:>5}  scores: max |te - torch| / max |torch| = "
                      f"{np.abs(a - b).max() / np.abs(b).max():.1e}", flush=True)
            for measure, fa, fb in [("forward", fwd, tfwd)] + [(f"fwd+grad {rule}", grad(rule), tgrad(rule))
                                                               for rule in args.rules]:
                _, a, b = compare(measure, fa, fb, args.repeats)
                ratios = [x / y for x, y in zip(last_rounds["te"], last_rounds["torch"])]
                rows.append(dict(model=variant, batch=batch, measure=measure, te_ms=round(a, 2),
                                 torch_ms=round(b, 2) if b == b else None,
                                 ratio=round(a / b, 3) if b == b else None,
                                 ratio_min=round(min(ratios), 3) if ratios else None,
                                 ratio_max=round(max(ratios), 3) if ratios else None,
                                 te_rounds_ms=[round(t, 2) for t in last_rounds["te"]],
                                 torch_rounds_ms=[round(t, 2) for t in last_rounds["torch"]],
                                 load=round(uptime(), 2)))
                print_row(rows[-1:])
        del model
    return rows


def uptime():
    """The 1-minute load average (how busy the machine was)."""
    return os.getloadavg()[0]


def read_once_ms(w, repeats):
    """Median time of one pass over the array ``w`` that reads every element
    (rows summed into one row, the rows split over Numba's threads): what
    reading the weights once costs on this machine now."""
    from numba import njit, prange

    @njit(parallel=True, nogil=True)
    def read(a, parts):
        R, C = a.shape
        out = np.zeros((parts, C), a.dtype)
        for p in prange(parts):
            acc = out[p]
            for r in range(p * R // parts, (p + 1) * R // parts):
                row = a[r]
                for c in range(C):
                    acc[c] += row[c]
        return out
    import numba
    parts = numba.get_num_threads()
    read(w[:8], parts)
    return compare("read", lambda: read(w, parts), None, repeats)[1]


def run_fc(args):
    """Fully connected products, the streaming kernel against BLAS, forward
    (x @ W.T, from the forward layout Wt = W.T) and backward to the input
    (g @ W: the kernel on a C-ordered W; BLAS on Wt.T, the frozen layer's
    weight, which is what that layer runs), for fc6's and fc7's shapes at
    growing batch; and fc6's forward at batch 8 against one pass over its
    weights."""
    from tinygrad_explain import kernels as K
    r = np.random.default_rng(0)
    print("\nfully connected products: streaming kernel vs BLAS, median ms "
          "(inputs half zero, as after a ReLU; 'dense' = no zeros)")
    print(f"{'layer':<6} {'batch':>5}  {'fwd kernel':>10} {'BLAS':>8} {'ratio':>6}   "
          f"{'bwd kernel':>10} {'BLAS':>8} {'ratio':>6}")
    for name, (O, I) in (("fc6", (4096, 9216)), ("fc7", (4096, 4096))):
        w = r.standard_normal((O, I), dtype=np.float32)
        wt = K.linear.pack(w)
        for n in args.fc_batches:
            x = np.maximum(r.standard_normal((n, I), dtype=np.float32), 0)
            g = np.maximum(r.standard_normal((n, O), dtype=np.float32), 0)
            _, fa, fb = compare("fwd", lambda: K.linear.rows_times(x, wt), lambda: x @ w.T, args.repeats)
            _, ba, bb = compare("bwd", lambda: K.linear.rows_times(g, w), lambda: K.linear.backward(g, wt.T),
                                args.repeats)
            print(f"{name:<6} {n:>5}  {fa:10.2f} {fb:8.2f} {fa / fb:5.2f}x   {ba:10.2f} {bb:8.2f} {ba / bb:5.2f}x",
                  flush=True)
        if name == "fc6":
            x8 = r.standard_normal((8, I), dtype=np.float32)
            _, k8, b8 = compare("fc6 b8", lambda: K.linear.rows_times(x8, wt), lambda: x8 @ w.T, args.repeats)
            rd = read_once_ms(w, args.repeats)
            print(f"fc6 forward, batch 8, dense input: kernel {k8:.2f} ms, BLAS {b8:.2f} ms; one read of its "
                  f"151 MB weights {rd:.2f} ms: kernel {k8 / rd:.2f}x, BLAS {b8 / rd:.2f}x the read", flush=True)


def run_reduced(args, have_torch):
    """bfloat16 storage of the fully connected weights (nn.Linear.storage)
    against float32: scores' and input gradient's relative error (max |diff| /
    max |float32|), beside float32's own error against float64 (this engine)
    and against torch, and the time of fwd+grad with each, alternately."""
    import tinygrad_explain as te
    print("\nbfloat16 fc weights vs float32 (fwd + backprop gradient): relative errors "
          "(max |diff| / max |ref|), median ms")
    print(f"{'variant':<12} {'batch':>5}  {'scores bf16':>11} {'grad bf16':>10}   {'f32 vs f64':>10} {'grad':>9}   "
          f"{'f32 vs torch':>12} {'grad':>9}   {'f32 ms':>7} {'bf16 ms':>7} {'ratio':>6}")
    for variant in args.variants:
        for batch in args.batches:
            model, _, _ = te_setup(variant, batch)
            x = np.random.default_rng(0).standard_normal((batch,) + model.input_shape).astype(np.float32)
            onehot = np.zeros((batch, model.num_classes), np.float32)
            onehot[:, 3] = 1
            fcs = [l for l in model.layers.values() if isinstance(l, te.nn.Linear)]

            def run(storage):
                for l in fcs:
                    l.storage = storage
                xt = te.Tensor(x, requires_grad=True)
                s = model(xt)
                s.backward(onehot)
                return s.numpy().copy(), xt.grad

            def err(a, b):
                return float(np.abs(a - b).max() / np.abs(b).max())
            s32, g32 = run(None)
            s16, g16 = run("bfloat16")
            m64 = te_model(variant)
            m64.load_state_dict(model.state_dict())
            m64.astype(np.float64)
            x64 = te.Tensor(x.astype(np.float64), requires_grad=True)
            s64 = m64(x64)
            s64.backward(onehot.astype(np.float64))
            s64, g64 = s64.numpy(), x64.grad
            del m64
            ts, tg = float("nan"), float("nan")
            if have_torch:
                import torch
                tm = torch_twin(model)
                xt = torch.tensor(x, requires_grad=True)
                sc = tm(xt)
                sc.backward(torch.from_numpy(onehot))
                ts, tg = err(s32, sc.detach().numpy()), err(g32, xt.grad.numpy())
            _, a, b = compare("bf16", lambda: run(None), lambda: run("bfloat16"), args.repeats)
            for l in fcs:
                l.storage = None
            print(f"{variant:<12} {batch:>5}  {err(s16, s32):11.2e} {err(g16, g32):10.2e}   {err(s32, s64):10.2e} "
                  f"{err(g32, g64):9.2e}   {ts:12.2e} {tg:9.2e}   {a:7.1f} {b:7.1f} {b / a:5.2f}x", flush=True)


def _torch_image_map(P, colour):
    """torch versions of transforms.Parameterization("fourier", colour) for the loops:
    image(p) differentiable, from_image(x) its inverse (the same formulas as te's)."""
    import torch
    w = torch.from_numpy(np.asarray(P.w, np.float32))
    M = torch.from_numpy(np.asarray(colour, np.float32))
    Minv = torch.from_numpy(np.linalg.inv(np.asarray(colour, np.float64)).astype(np.float32))
    hw = P.hw

    def image(p):
        x = torch.fft.irfft2(torch.complex(p[..., 0], p[..., 1]) * w, s=hw, norm="ortho")
        return torch.einsum("ij,njhw->nihw", M, x)

    def from_image(x):
        z = torch.fft.rfft2(torch.einsum("ij,njhw->nihw", Minv, x), norm="ortho") / w
        return torch.stack([z.real, z.imag], dim=-1)
    return image, from_image


def _torch_start(model, n, recipe, init_std, seed):
    """For the torch loops: the image map of a "natural" ``recipe`` (Fourier with its
    decay, natural colour), the parameter of ``n`` random starts of std ``init_std`` B,
    and Adam at the recipe's lr (in B)."""
    import torch

    from tinygrad_explain.data.image import data_scale
    from tinygrad_explain.explain import transforms as T
    from tinygrad_explain.explain.visualize import natural_colour
    C, H, W = model.input_shape
    B = data_scale(model)
    colour = natural_colour(model)
    P = T.Parameterization("fourier", (H, W), decay=recipe.get("decay", 1.0), colour=colour)
    image, from_image = _torch_image_map(P, colour)
    x0 = (init_std * B * np.random.default_rng(seed).standard_normal((n, C, H, W))).astype(np.float32)
    p = from_image(torch.from_numpy(x0)).detach().requires_grad_(True)
    return image, from_image, p, torch.optim.Adam([p], lr=recipe["lr"] * B), B


def _torch_transform(x, dy, dx, s, a):
    """transforms.RandomTransform.apply in torch: a roll, or the same bilinear taps gathered."""
    import torch

    from tinygrad_explain.explain import transforms as T
    if s == 1.0 and a == 0.0:
        return torch.roll(x, (dy, dx), dims=(2, 3)) if (dy or dx) else x
    N, C, H, W = x.shape
    idx, wt = T.affine_taps(H, W, s, a, dy, dx)
    flat = x.reshape(N, C, H * W)
    idx, wt = torch.from_numpy(idx), torch.from_numpy(wt.astype(np.float32))
    return sum(flat[:, :, idx[k]] * wt[k] for k in range(4)).reshape(N, C, H, W)


def torch_class_model(seq, model, targets, steps, seed=0):
    """explain.visualize.class_model's loop (recipe "natural": Fourier image, decorrelated
    colour, jitter / scale / rotation, Adam, l2, clipping) written in torch; seconds per step."""
    import torch

    from tinygrad_explain.data.image import pixel_bounds
    from tinygrad_explain.explain import transforms as T
    from tinygrad_explain.explain.visualize import CLASS_MODEL_RECIPES
    r = CLASS_MODEL_RECIPES["natural"]
    C, H, W = model.input_shape
    n = len(targets)
    image, from_image, p, opt, B = _torch_start(model, n, r, r["init_noise"], seed)
    l2 = r["l2"] / (B * B)
    lo, hi = (torch.from_numpy(b) for b in pixel_bounds(model))
    transform = T.RandomTransform(max(1, int(round(r["jitter"] * max(H, W)))), r["scales"], r["angles"])
    rng = np.random.default_rng(seed)
    rows, idx = np.arange(n), np.asarray(targets)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        x = image(p)
        scores = seq(_torch_transform(x, *transform.sample(rng)))
        sd = scores.detach().double().numpy()
        _ = np.exp(sd - sd.max(1, keepdims=True))                     # the history's probabilities, as te
        f = scores[rows, idx]
        reg = (x * x).sum((1, 2, 3))
        (-f + l2 * reg).sum().backward()
        assert torch.isfinite(p.grad).all()
        opt.step()
        with torch.no_grad():
            p.copy_(from_image(image(p).clamp(lo, hi)))
    return (time.perf_counter() - t0) / steps


def torch_inversion(seq, model, code, upto, steps, inits=5, seed=0):
    """explain.inversion.invert's loop (recipe "natural": Fourier image, decorrelated colour,
    jitter, Adam, alpha-norm and TV priors) written in torch; seconds per step."""
    import torch

    from tinygrad_explain.explain import transforms as T
    from tinygrad_explain.explain.inversion import INVERT_RECIPES
    from tinygrad_explain.explain.regularizers import TV_RATIO
    r = INVERT_RECIPES["natural"]
    C, H, W = model.input_shape
    image, _, p, opt, B = _torch_start(model, inits, r, r["init_std"], seed)
    target = torch.from_numpy(code.reshape(1, -1))
    inv_norm = 1.0 / float((code.astype(np.float64) ** 2).sum())
    V2, hw, alpha = (B / TV_RATIO) ** 2, float(H * W), r["alpha"]
    transform = T.RandomTransform(max(1, int(round(r["jitter"] * max(H, W)))))
    rng = np.random.default_rng(seed)
    head = seq[:upto + 1]
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        x = image(p)
        d = head(_torch_transform(x, *transform.sample(rng))) - target
        f = (d * d).sum(1) * inv_norm
        an = ((x / B).abs() ** alpha).reshape(inits, -1).sum(1) / hw
        c = x[:, :, :-1, :-1]
        tv = (((x[:, :, :-1, 1:] - c) ** 2 + (x[:, :, 1:, :-1] - c) ** 2) / V2).reshape(inits, -1).sum(1) / hw
        (f + r["alpha_norm"] * an + r["tv"] * tv).sum().backward()
        assert torch.isfinite(p.grad).all()
        opt.step()
    return (time.perf_counter() - t0) / steps


def run_loops(args):
    """One step of the explainers' loops on the embedded model (the main job's), this
    engine's own code (``class_model`` / ``invert``, recipe "natural", timed by their
    ``seconds``) against the same loop written in torch, alternately: a class-model step
    at batch 10 (one image per class) and an fc7 inversion step at batch 5 (five starts)."""
    import tinygrad_explain as te
    from tinygrad_explain.data import scenes
    from tinygrad_explain.explain.inversion import feature_code
    from tinygrad_explain.testing.torch_reference import from_network
    model = te.load_model()
    seq = from_network(model)
    for prm in seq.parameters():
        prm.requires_grad_(False)
    targets = list(range(model.num_classes))[:10]
    x = te.image.load(scenes.load_sample()["images"][0], model)
    code = feature_code(model, x, "fc7")
    upto = list(model.layers).index("fc7")
    S = args.loop_steps
    te_cm = lambda: te.explain.class_model(model, targets, steps=S, progress=False).seconds / S     # noqa: E731
    te_inv = lambda: te.explain.invert(model, x, "fc7", 5, steps=S, progress=False).seconds / S    # noqa: E731
    print(f"\nexplainer loops, embedded model {model.input_shape}, ms per step (median of {args.repeats} runs "
          f"of {S} steps, alternately; te / torch)")
    for name, fa, fb in (("class model, batch 10", te_cm, lambda: torch_class_model(seq, model, targets, S)),
                         ("fc7 inversion, batch 5", te_inv, lambda: torch_inversion(seq, model, code, upto, S))):
        fa(), fb()
        ta, tb = [], []
        for _ in range(args.repeats):
            ta.append(fa())
            tb.append(fb())
        a, b = statistics.median(ta) * 1e3, statistics.median(tb) * 1e3
        print(f"{name:<24} {a:8.2f} {b:8.2f}   {a / b:5.2f}x", flush=True)


TRIVIAL = ("flatten", "dropout")


def profile_layers(variant, batch, repeats):
    """Per-layer times, this engine against torch: (name, fwd te, fwd torch, bwd te, bwd torch) in ms.

    Each layer runs on the input it gets in the network (recorded once).  The
    forward is timed as ``layer(x)``; the backward as that layer's own backward
    alone (``Function.backward`` for this engine, ``torch.autograd.grad`` of the
    layer output for torch), with a random upstream gradient, to the layer
    input only (frozen weights).  Dropout and flatten (views) are left out."""
    import torch

    import tinygrad_explain as te
    model = te_model(variant)
    seq = torch_twin(model)
    for p in seq.parameters():
        p.requires_grad_(False)
    x = np.random.default_rng(0).standard_normal((batch,) + model.input_shape).astype(np.float32)
    rows = []
    for (name, layer), tmod in zip(model.layers.items(), seq):
        xt = te.Tensor(x, requires_grad=True)
        y = layer(xt)
        if layer.type not in TRIVIAL and y._ctx is not None:
            g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
            ctx = y._ctx
            tx = torch.from_numpy(x).requires_grad_(True)
            ty = tmod(tx)
            tg = torch.from_numpy(g)

            def te_fwd():
                return layer(te.Tensor(x, requires_grad=True))

            def torch_fwd():
                return tmod(torch.from_numpy(x).requires_grad_(True))
            _, fa, fb = compare(name, te_fwd, torch_fwd, repeats)
            _, ba, bb = compare(name, lambda: ctx.backward(g),
                                lambda: torch.autograd.grad(ty, tx, tg, retain_graph=True), repeats)
            rows.append((name, fa, fb, ba, bb))
        x = y.data
    return rows


def profile_graph(variant, batch, repeats):
    """Where a graph network's fwd+grad (backprop) time goes, node by node: each node's
    forward and its backward (its ``Function``'s), median over ``repeats`` runs of the
    nodes in the graph's order, in ms; and the whole run's time in this engine and in
    torch (alternately, ``compare``).  Returns [(name, type, fwd, bwd)], (te ms, torch ms)."""
    import tinygrad_explain as te
    model, fwd, grad = te_setup(variant, batch)
    tfwd, tgrad = torch_setup(variant, batch, model)
    _, a, b = compare("fwd+grad", grad("backprop"), tgrad("backprop"), repeats)
    times = {n: ([], []) for n in model.layer_names}
    x = np.random.default_rng(0).standard_normal((batch,) + model.input_shape).astype(np.float32)
    onehot = np.zeros((batch, model.num_classes), np.float32)
    onehot[:, 3] = 1

    def timed(name, layer, xs):
        t = time.perf_counter()
        y = layer(*xs)
        times[name][0].append(time.perf_counter() - t)
        backward = y._ctx.backward

        def timed_backward(g):
            t = time.perf_counter()
            out = backward(g)
            times[name][1].append(time.perf_counter() - t)
            return out
        y._ctx.backward = timed_backward
        return y
    inputs = getattr(model, "inputs", None) or {n: (p,) for n, p in zip(model.layer_names,
                                                                        ["input"] + model.layer_names)}
    for _ in range(repeats):
        values = {"input": te.Tensor(x, requires_grad=True)}
        for name, layer in model.layers.items():
            values[name] = timed(name, layer, [values[i] for i in inputs[name]])
        values[model.layer_names[-1]].backward(onehot)
        del values
    rows = [(n, model.layers[n].type, statistics.median(f) * 1e3 if f else 0.0,
             statistics.median(g) * 1e3 if g else 0.0) for n, (f, g) in times.items()]
    return rows, (a, b)


def print_graph_profile(variant, batch, rows, whole):
    """Per node type: count, forward and backward ms (sums of medians), share; the ten slowest nodes."""
    a, b = whole
    print(f"\nper-node profile, {variant} batch {batch} (this engine, fwd+grad backprop; whole run "
          f"{a:.0f} ms, torch {b:.0f} ms, {a / b:.2f}x)")
    by = {}
    for _, t, f, g in rows:
        c, sf, sg = by.get(t, (0, 0.0, 0.0))
        by[t] = (c + 1, sf + f, sg + g)
    total = sum(f + g for _, _, f, g in rows) or 1.0
    print(f"{'type':<16} {'nodes':>5} {'fwd ms':>8} {'bwd ms':>8} {'share':>6}")
    for t, (c, f, g) in sorted(by.items(), key=lambda kv: -(kv[1][1] + kv[1][2])):
        print(f"{t:<16} {c:>5} {f:8.1f} {g:8.1f} {100 * (f + g) / total:5.1f}%")
    print("slowest nodes: " + ", ".join(f"{n} ({t}) {f:.1f}+{g:.1f}" for n, t, f, g in
                                         sorted(rows, key=lambda r: -(r[2] + r[3]))[:10]), flush=True)


def print_profile(variant, batch, rows):
    print(f"\nper-layer profile, {variant} batch {batch}: median ms (te / torch)")
    print(f"{'layer':<9} {'fwd te':>8} {'torch':>8} {'ratio':>6}   {'bwd te':>8} {'torch':>8} {'ratio':>6}")
    tot = np.zeros(4)
    for name, fa, fb, ba, bb in rows:
        print(f"{name:<9} {fa:8.2f} {fb:8.2f} {fa / fb:5.2f}x   {ba:8.2f} {bb:8.2f} {ba / bb:5.2f}x")
        tot += (fa, fb, ba, bb)
    fa, fb, ba, bb = tot
    print(f"{'sum':<9} {fa:8.2f} {fb:8.2f} {fa / fb:5.2f}x   {ba:8.2f} {bb:8.2f} {ba / bb:5.2f}x", flush=True)


def print_row(rows):
    for r in rows:
        b = r["torch_ms"] if r["torch_ms"] is not None else float("nan")
        spread = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}" if r["ratio_min"] is not None else ""
        print(f"{r['model']:<12} {r['batch']:>5}  {r['measure']:<20} {r['te_ms']:9.1f} {b:9.1f}   "
              f"{r['te_ms'] / b:6.2f}x {spread:>10}   {r['load']:5.1f}", flush=True)


CHILD = r"""
import gc, sys, numpy as np
engine, variant, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
def status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key): return int(line.split()[1]) * 1024
import tinygrad_explain as te
sys.path.insert(0, %r)
from bench_cpu import GRAPH_VARIANTS, te_model, torch_graph_net, torch_twin
threads = %d
if engine == 'te' or variant not in GRAPH_VARIANTS:
    m = te_model(variant)
    shape = m.input_shape
if engine == 'te':
    te.set_num_threads(threads)
    def step(b):
        x = np.random.default_rng(0).standard_normal((b,) + shape).astype(np.float32)
        oh = np.zeros((b, m.num_classes), np.float32); oh[:, 3] = 1
        xt = te.Tensor(x, requires_grad=True); m(xt).backward(oh); return xt.grad
else:
    import torch; torch.set_num_threads(threads)
    if variant in GRAPH_VARIANTS:
        tm, shape = torch_graph_net(variant), (3, 224, 224)
    else:
        tm = torch_twin(m); del m
    for p in tm.parameters(): p.requires_grad_(False)
    def step(b):
        x0 = np.random.default_rng(0).standard_normal((b,) + shape).astype(np.float32)
        xt = torch.tensor(x0).requires_grad_(True)
        tm(xt)[:, 3].sum().backward(); return xt.grad
step(1); gc.collect()                      # compile / load kernels at batch 1 only
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')                           # reset the peak RSS (VmHWM) to the current RSS
base = status('VmRSS')
g = step(batch)
# copies of the fully connected weights besides the weights themselves (the
# bfloat16 option's; made at the batch-1 step above, so inside base) would count
# as this engine's memory: add them.  Frozen fc weights are held once, in the
# forward layout, so by default there are none.
extra = sum(getattr(l, 'packed_nbytes', 0) for l in m.layers.values()) if engine == 'te' else 0
fc = sum(l.weight.data.nbytes for l in m.layers.values() if type(l).__name__ == 'Linear') if engine == 'te' else 0
print(status('VmHWM') - base + extra, extra, fc)
"""


#: the memory children's environment: a fixed mmap threshold, so that every large array
#: (of either engine) is mapped and unmapped on its own and the peak RSS is the peak of the
#: arrays alive (glibc otherwise raises the threshold as large blocks are freed and keeps
#: later ones on its heap, whose high-water mark then depends on the order of frees).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 17)}


def run_memory(variant, batch, threads):
    """Peak RSS of one fwd+grad (backprop) at ``batch`` above the loaded model after a warm-up
    at batch 1, each engine in a fresh process on ``threads`` threads (``CHILD``); bytes."""
    out = {}
    if variant in GRAPH_VARIANTS:               # exported once, here, for both children and every batch
        onnx_file(variant, torch_graph_net(variant))
    env = dict(os.environ, **MEMORY_ENV)
    for engine in ("te", "torch"):
        r = subprocess.run([sys.executable, "-c", CHILD % (HERE, threads), engine, variant, str(batch)],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            out[engine] = None
            print(f"memory child ({engine}) failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
        else:
            peak, extra, fc = map(int, r.stdout.strip().splitlines()[-1].split())
            out[engine] = peak
            out[engine + " extra"], out[engine + " fc"] = extra, fc
    return out


STARTUP = r"""
import time; t0 = time.perf_counter()
import numpy as np, tinygrad_explain as te
m = te.models.alexnet('torchvision')
x = te.Tensor(np.zeros((1, 3, 224, 224), np.float32), requires_grad=True)
m(x)[0, 0].backward()
print(time.perf_counter() - t0)
"""

# the same in PyTorch: torchvision's AlexNet written out (torchvision need not be installed)
STARTUP_TORCH = r"""
import time; t0 = time.perf_counter()
import torch, torch.nn as nn
torch.set_num_threads(%d)
m = nn.Sequential(
    nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
    nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
    nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6), nn.Flatten(),
    nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
    nn.Linear(4096, 1000)).eval()
x = torch.zeros((1, 3, 224, 224), requires_grad=True)
m(x)[0, 0].backward()
print(time.perf_counter() - t0)
"""


def run_startup(threads, repeats=3):
    """Seconds from a new process to a first input gradient of a random torchvision AlexNet:
    (this engine with an empty Numba cache, this engine warm (median), PyTorch (median) or None
    without torch).  The warm runs and PyTorch's alternate, so that both see the same load."""
    def child(code, env=None):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return float(r.stdout.strip().splitlines()[-1])
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        cold, warm, ref = child(STARTUP, env), [], []
        for _ in range(repeats):
            warm.append(child(STARTUP, env))
            if have_torch:
                ref.append(child(STARTUP_TORCH % threads))
    return cold, statistics.median(warm), (statistics.median(ref) if ref else None)


def run_train_step(repeats):
    import tinygrad_explain as te
    from tinygrad_explain.training import optim
    te.manual_seed(0)
    model = te.models.scene_alexnet().requires_grad_(True).train()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = np.random.default_rng(0).standard_normal((128,) + model.input_shape).astype(np.float32)
    y = np.random.default_rng(1).integers(0, model.num_classes, 128)

    def step():
        loss = te.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ts = [timeit(step, warm=0) for _ in range(repeats + 1)][1:]
    return statistics.median(ts) * 1e3


def table_rows(rows, memory):
    """The speed rows with the peak memory of their variant and batch (fwd+grad rows only;
    the memory children run backprop's fwd+grad, and the rules need the same arrays)."""
    out = []
    for r in rows:
        mem = memory.get((r["model"], r["batch"]), {}) if r["measure"] != "forward" else {}
        te_mb, torch_mb = ((mem[k] / 2**20 if mem.get(k) is not None else None) for k in ("te", "torch"))
        out.append(dict(r, peak_mb_te=None if te_mb is None else round(te_mb, 1),
                        peak_mb_torch=None if torch_mb is None else round(torch_mb, 1),
                        peak_ratio=round(te_mb / torch_mb, 3) if te_mb and torch_mb else None))
    return out


def print_table(rows, memory):
    """The summary: model, batch, measure, ms te / torch, ratio (and its spread), peak MB te / torch, ratio."""
    def f(v, fmt, unit=""):
        return format(v, fmt) + unit if v is not None else "-"
    print(f"\n{'model':<12} {'batch':>5}  {'measure':<20} {'ms te':>9} {'ms torch':>9} {'ratio':>6} "
          f"{'spread':>10}  {'MB te':>7} {'MB torch':>8} {'ratio':>6}  {'load':>5}")
    for r in table_rows(rows, memory):
        spread = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}" if r["ratio_min"] is not None else "-"
        print(f"{r['model']:<12} {r['batch']:>5}  {r['measure']:<20} {r['te_ms']:9.1f} {f(r['torch_ms'], '9.1f'):>9} "
              f"{f(r['ratio'], '5.2f', 'x'):>6} {spread:>10}  {f(r['peak_mb_te'], '7.0f'):>7} "
              f"{f(r['peak_mb_torch'], '8.0f'):>8} {f(r['peak_ratio'], '5.2f', 'x'):>6}  {r['load']:5.1f}")


def write_json(args, rows, memory, versions, load0, started):
    """The table (``table_rows``), the memory of every variant and batch measured, and how it
    was taken: threads, repeats, versions, the load average before and after."""
    import json
    import platform
    doc = dict(command="python scripts/bench_cpu.py " + " ".join(sys.argv[1:]),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
               seconds=round(time.time() - started), threads=args.threads, repeats=args.repeats,
               machine=f"{platform.machine()}, {os.cpu_count()} cores", versions=versions,
               load_before=[round(v, 2) for v in load0], load_after=[round(v, 2) for v in os.getloadavg()],
               rows=table_rows(rows, memory),
               memory=[dict(model=v, batch=b, te_mb=round(m["te"] / 2**20, 1) if m.get("te") else None,
                            torch_mb=round(m["torch"] / 2**20, 1) if m.get("torch") else None)
                       for (v, b), m in memory.items()])
    from tinygrad_explain.safe_io import atomic_write
    with atomic_write(args.json, mode="w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    print(f"\nwritten: {args.json}")


def main():
    # Measure as a user's machine would run: without this machine's OpenBLAS
    # kernel pins, unless --keep-blas-env.
    sys.path.insert(0, os.path.dirname(HERE))
    from tinygrad_explain.core.device import rerun_without_blas_pins
    rerun_without_blas_pins()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(ALEXNETS), choices=VARIANTS,
                    help="networks to time (default: the AlexNets); resnet50, vgg16: 224 px graph networks "
                         "through ONNX")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32], help="batches of the AlexNets")
    ap.add_argument("--graph-batches", nargs="+", type=int, default=[1, 8],
                    help="batches of resnet50 / vgg16 (default 1 8: the issue's targets)")
    ap.add_argument("--rules", nargs="+", default=["backprop", "deconvnet", "guided"], choices=list(TORCH_RULES))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads of both engines: torch's, and this engine's Numba and BLAS pools "
                         "(te.set_num_threads); default: all cores")
    ap.add_argument("--profile", action="store_true", help="per-layer forward/backward table against torch")
    ap.add_argument("--no-speed", action="store_true", help="skip the whole-network ratio table")
    ap.add_argument("--fc", action="store_true", help="fully connected kernel vs BLAS by batch (the crossover)")
    ap.add_argument("--reduced", action="store_true", help="bfloat16 fc weights: error and time against float32")
    ap.add_argument("--loops", action="store_true", help="one class-model and one inversion step against torch")
    ap.add_argument("--loop-steps", type=int, default=5, help="steps per timed run of --loops")
    ap.add_argument("--fc-batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 24, 32, 64])
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--mem-batches", nargs="+", type=int, default=None,
                    help="batches of the peak-memory table (default: those timed; 8 with --no-speed)")
    ap.add_argument("--json", metavar="PATH", help="write the ratio and memory table, the load averages, the "
                    "threads and the versions to PATH (e.g. docs/bench_cpu_graphs.json)")
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
        onednn = "oneDNN" if torch.backends.mkldnn.is_available() else "no oneDNN"
        tinfo = f"torch {torch.__version__}, {torch.get_num_threads()} threads, {onednn}"
    except ImportError:
        have_torch, tinfo = False, "torch not installed: this engine's numbers only"
    import numba

    import tinygrad_explain as te
    te.set_num_threads(args.threads)            # the same threads as torch's
    started, load0 = time.time(), os.getloadavg()
    teinfo = (f"numpy {np.__version__} BLAS {blas_info()}, numba {numba.__version__} "
              f"({numba.get_num_threads()} threads, layer {numba.config.THREADING_LAYER})")
    print(f"this engine: {teinfo}")
    print(f"reference:   {tinfo}")
    print(f"\nmedian of {args.repeats} runs, milliseconds (te / torch); spread: the lowest and highest "
          "ratio of one round; load: the 1-minute load average\n")
    rows, memory = [], {}
    if not args.no_speed:
        print(f"{'variant':<12} {'batch':>5}  {'measure':<20} {'te':>9} {'torch':>9}   {'ratio':>6} "
              f"{'spread':>10}   {'load':>5}")
        rows = run_speed(args, have_torch)
    if args.fc:
        run_fc(args)
    if args.reduced:
        run_reduced(args, have_torch)
    if args.loops and have_torch:
        run_loops(args)
    if args.profile and have_torch:
        for variant in args.variants:
            for batch in batches_of(args, variant):
                if variant in GRAPH_VARIANTS:
                    print_graph_profile(variant, batch, *profile_graph(variant, batch, args.repeats))
                else:                           # the AlexNets' layers match torch's one to one
                    print_profile(variant, batch, profile_layers(variant, batch, args.repeats))

    if not args.no_memory and have_torch:
        print(f"\npeak memory of fwd+grad, above the loaded model (each engine in a fresh process, load "
              f"{uptime():.1f})")
        for variant in args.variants:
            mem_batches = args.mem_batches or ([8] if args.no_speed else batches_of(args, variant))
            for batch in mem_batches:
                mem = memory[variant, batch] = run_memory(variant, batch, args.threads)
                if None not in mem.values():
                    print(f"{variant:<12} {batch:>5}  te {mem['te'] / 2**20:6.0f} MiB (with "
                          f"{mem['te extra'] / 2**20:.0f} MiB of fc weight copies; its "
                          f"{mem['te fc'] / 2**20:.0f} MiB of fc weights are held once, in the kernel's layout, "
                          f"in the loaded model), torch {mem['torch'] / 2**20:6.0f} MiB, "
                          f"ratio {mem['te'] / max(mem['torch'], 1):.2f}x", flush=True)
    if rows:
        print_table(rows, memory)
    if args.json:
        write_json(args, rows, memory, dict(te=teinfo, torch=tinfo), load0, started)
    if not args.no_startup:
        cold, warm, ref = run_startup(args.threads)
        vs = f"; PyTorch {ref:.2f} s, ratio {warm / ref:.2f}x" if ref else ""
        print(f"\nstart-up to a first input gradient of a random torchvision AlexNet (new process, median of 3, "
              f"load {uptime():.1f}): cold cache {cold:.1f} s, warm cache {warm:.2f} s{vs}")
    if not args.no_train:
        try:
            ms = run_train_step(5)
            print(f"\ntraining step of the embedded model, batch 128: {ms:.0f} ms")
        except (ImportError, AttributeError) as e:
            print(f"\ntraining step: skipped ({e})")


if __name__ == "__main__":
    main()
