"""Research tool: sweep training recipes of the embedded model with a PyTorch
twin of ``scene_alexnet`` on a GPU.

This is *not* how the shipped model is trained (``scripts/train_embedded.py``
uses this engine alone, on the CPU).  It answers, in minutes on a GPU, the
question a 40-minute CPU run cannot: which architecture, recipe and number of
epochs reach what accuracy on the 10,000 test scenes.  The twin copies the
recipe of train_embedded.py: the same layers (LRN 5/1e-4/0.75/1, max-pool 3/2
floor mode), He-normal init (fc8 N(0, 0.01), biases 0), AdamW (decoupled
weight decay), linear warm-up from 0.1x over half an epoch then cosine to 0,
label smoothing, random flips, channel mean/std of the training scenes,
batch drop-last, and an epoch's scenes rendered with scene seed = epoch
(cycled over ``NSEEDS`` pre-rendered seeds).  Calibration: the twin's
``base11`` (the recipe of the model shipped before, 11 epochs) scored 87.94%,
this engine's run of the same recipe 87.96%.

    # a machine with a GPU, torch and this package (pip install -e .); Fashion-MNIST
    # installed or where TGE_FASHION_MNIST points
    SCRATCH=/dev/shm/scenes python scripts/sweep_recipes_torch.py --render
    OUT=results python scripts/sweep_recipes_torch.py --drive --concurrency 9 --deadline 440
    OUT=results python scripts/sweep_recipes_torch.py --drive --only k2x3_do0_16,k2x3_16

Each config is one process (concurrency configs share the GPU); every epoch's
test accuracy goes to ``$OUT/results.jsonl``, a table is printed at the end.
The results of the run on an H200 are in docs/embedded_model.md.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SCRATCH = Path(os.environ.get("SCRATCH", "/dev/shm/scenes"))
OUT = Path(os.environ.get("OUT", "/tmp/sweep_out"))
NSEEDS = int(os.environ.get("NSEEDS", "12"))
NTRAIN = int(os.environ.get("NTRAIN", "60000"))
NTEST = int(os.environ.get("NTEST", "10000"))

BASE = dict(width=[64, 128, 192, 192, 128], fc=512, dropout=0.1, conv1=[5, 2, 2], k2=5, lrn=True,
            epochs=11, batch=64, lr=2e-3, wd=0.05, ls=0.1, warmup=0.5, seed=0, flip=True, pool5=True)


def C(name, **kw):
    d = dict(BASE)
    d.update(kw)
    d["name"] = name
    return d


# priority order: launched first to last while time allows
CONFIGS = [
    C("base32", epochs=32),
    C("base22", epochs=22),
    C("base16", epochs=16),
    C("base11"),
    C("k2x3_22", k2=3, epochs=22),
    C("k2x3_16", k2=3, epochs=16),
    C("k2x3_11", k2=3),
    C("base44", epochs=44),
    C("fc1024_11", fc=1024),
    C("k2x3_w96_16", k2=3, width=[96, 192, 256, 256, 192], epochs=16),
    C("lr3e3_11", lr=3e-3),
    C("bs128_lr3e3_11", batch=128, lr=3e-3),
    C("ls0_11", ls=0.0),
    C("do0_11", dropout=0.0),
    C("wd01_11", wd=0.1),
    C("lr1e3_11", lr=1e-3),
    C("base11_s1", seed=1),
    C("w_narrow_16", width=[48, 96, 144, 144, 96], epochs=16),
    C("fc1024_16", fc=1024, epochs=16),
    C("nolrn_11", lrn=False),
    C("lr4e3_16", lr=4e-3, epochs=16),
    C("bs32_11", batch=32, lr=1.4e-3),
    C("wide96_k5_11", width=[96, 192, 288, 288, 192]),
    C("base11_s2", seed=2),
    C("k2x3_ls0_16", k2=3, ls=0.0, epochs=16),
    C("k2x3_lr3e3_16", k2=3, lr=3e-3, epochs=16),
    C("k2x3_bs128_16", k2=3, batch=128, lr=4e-3, epochs=16),
    C("k2x3_do0_16", k2=3, dropout=0.0, epochs=16),
    C("k2x3_w96_22", k2=3, width=[96, 192, 256, 256, 192], epochs=22),
]


# ---------------------------------------------------------------- rendering
def _render(task):
    split, seed, a, b = task
    from tinygrad_explain.data import scenes
    return split, seed, a, scenes.render_images(split, seed, a, b)


def render():
    from multiprocessing import Pool

    from tinygrad_explain.data import scenes
    SCRATCH.mkdir(parents=True, exist_ok=True)
    jobs = [("test", 0, NTEST)] + [("train", s, NTRAIN) for s in range(NSEEDS)]
    mm = {}
    tasks = []
    for split, seed, n in jobs:
        mm[(split, seed)] = np.lib.format.open_memmap(SCRATCH / f"{split}_{seed}.npy", "w+", np.uint8, (n, 64, 64, 3))
        np.save(SCRATCH / f"{split}_labels.npy", scenes.SceneDataset(split).labels[:n])
        for a in range(0, n, 2500):
            tasks.append((split, seed, a, min(n, a + 2500)))
    t = time.time()
    with Pool(os.cpu_count()) as p:
        for split, seed, a, img in p.imap_unordered(_render, tasks):
            mm[(split, seed)][a:a + len(img)] = img
    for m in mm.values():
        m.flush()
    print(f"rendered {len(tasks)} chunks in {time.time() - t:.1f} s", flush=True)


# ---------------------------------------------------------------- training
def build(cfg):
    import torch.nn as tnn
    w1, w2, w3, w4, w5 = cfg["width"]
    k1, s1, p1 = cfg["conv1"]
    k2 = cfg["k2"]
    L = (lambda: tnn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)) if cfg["lrn"] else (lambda: tnn.Identity())
    feats = [tnn.Conv2d(3, w1, k1, s1, p1), tnn.ReLU(), L(), tnn.MaxPool2d(3, 2),
             tnn.Conv2d(w1, w2, k2, 1, k2 // 2), tnn.ReLU(), L(), tnn.MaxPool2d(3, 2),
             tnn.Conv2d(w2, w3, 3, 1, 1), tnn.ReLU(),
             tnn.Conv2d(w3, w4, 3, 1, 1), tnn.ReLU(),
             tnn.Conv2d(w4, w5, 3, 1, 1), tnn.ReLU(), tnn.MaxPool2d(3, 2), tnn.Flatten()]
    import torch
    f = tnn.Sequential(*feats)
    with torch.no_grad():
        s = f(torch.zeros(1, 3, 64, 64)).shape[1]
    fc, p = cfg["fc"], cfg["dropout"]
    net = tnn.Sequential(*feats, tnn.Linear(s, fc), tnn.ReLU(), tnn.Dropout(p),
                         tnn.Linear(fc, fc), tnn.ReLU(), tnn.Dropout(p), tnn.Linear(fc, 10))
    lin = [m for m in net.modules() if isinstance(m, (tnn.Conv2d, tnn.Linear))]
    g = torch.Generator().manual_seed(cfg["seed"])
    for i, m in enumerate(lin):
        fan_in = m.weight[0].numel()
        std = 0.01 if i == len(lin) - 1 else math.sqrt(2.0 / fan_in)
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            m.bias.zero_()
    return net


def train(cfg):
    import torch

    from tinygrad_explain.training.optim import cosine_lr  # the schedule train_embedded.py uses
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = os.environ.get("DEV", "cuda")
    torch.manual_seed(cfg["seed"])
    E = cfg["epochs"]
    seeds = list(range(min(E, NSEEDS)))
    t0 = time.time()
    train_imgs = [torch.from_numpy(np.load(SCRATCH / f"train_{s}.npy", mmap_mode="r")[:NTRAIN].copy()).to(dev)
                  for s in seeds]
    ytr = torch.from_numpy(np.load(SCRATCH / "train_labels.npy")[:NTRAIN].astype(np.int64)).to(dev)
    test = torch.from_numpy(np.load(SCRATCH / "test_0.npy")[:NTEST].copy()).to(dev)
    yte = torch.from_numpy(np.load(SCRATCH / "test_labels.npy")[:NTEST].astype(np.int64)).to(dev)
    x0 = train_imgs[0][:10000].float() / 255
    mean = x0.mean((0, 1, 2)).view(1, 3, 1, 1)
    std = x0.std((0, 1, 2)).view(1, 3, 1, 1)
    del x0

    def prep(u8):
        return (u8.permute(0, 3, 1, 2).float() / 255 - mean) / std

    net = build(cfg).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"], eps=1e-8, foreach=True)
    lossf = torch.nn.CrossEntropyLoss(label_smoothing=cfg["ls"])
    B = cfg["batch"]
    spe = NTRAIN // B
    total, warm = spe * E, int(cfg["warmup"] * spe)
    g = torch.Generator(device=dev).manual_seed(cfg["seed"] + 1000)
    step = 0
    print(json.dumps({"name": cfg["name"], "event": "loaded", "sec": round(time.time() - t0, 1)}), flush=True)
    for ep in range(E):
        te0 = time.time()
        net.train()
        X = train_imgs[ep % len(train_imgs)]
        perm = torch.randperm(NTRAIN, device=dev, generator=g)
        tl = torch.zeros((), device=dev)
        tc = torch.zeros((), device=dev)
        for i in range(spe):
            idx = perm[i * B:(i + 1) * B]
            xb = prep(X[idx])
            if cfg["flip"]:
                fl = torch.rand(B, device=dev, generator=g) < 0.5
                xb = torch.where(fl.view(-1, 1, 1, 1), xb.flip(3), xb)
            yb = ytr[idx]
            for pg in opt.param_groups:
                pg["lr"] = cosine_lr(step, total, cfg["lr"], warmup_steps=warm)
            out = net(xb)
            loss = lossf(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tl += loss.detach()
            tc += (out.argmax(1) == yb).sum()
        net.eval()
        with torch.no_grad():
            correct = 0
            for a in range(0, NTEST, 1000):
                correct += (net(prep(test[a:a + 1000])).argmax(1) == yte[a:a + 1000]).sum().item()
        rec = {"name": cfg["name"], "epoch": ep + 1, "loss": round(tl.item() / spe, 4),
               "train_acc": round(tc.item() / (spe * B), 4), "test_acc": correct / NTEST,
               "sec": round(time.time() - te0, 2)}
        print(json.dumps(rec), flush=True)
    print(json.dumps({"name": cfg["name"], "event": "done", "final": correct / NTEST, "cfg": cfg,
                      "sec": round(time.time() - t0, 1)}), flush=True)


# ---------------------------------------------------------------- driver
def drive(concurrency, deadline_s, launch_until_s, only=None):
    OUT.mkdir(parents=True, exist_ok=True)
    res = open(OUT / "results.jsonl", "a")
    t0 = time.time()
    todo = [c for c in CONFIGS if not only or c["name"] in only]
    running = {}
    finals = {}
    import selectors
    sel = selectors.DefaultSelector()
    while todo or running:
        now = time.time() - t0
        while todo and len(running) < concurrency and now < launch_until_s:
            cfg = todo.pop(0)
            p = subprocess.Popen([sys.executable, __file__, "--train", json.dumps(cfg)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1)
            running[p.stdout.fileno()] = (p, cfg)
            sel.register(p.stdout, selectors.EVENT_READ)
            print(f"[{now:6.1f}s] launch {cfg['name']}", flush=True)
        if now >= launch_until_s:
            todo = []
        if now >= deadline_s:
            for p, cfg in running.values():
                p.kill()
                print(f"killed {cfg['name']} at deadline", flush=True)
            break
        for key, _ in sel.select(timeout=1.0):
            p, cfg = running[key.fd]
            line = key.fileobj.readline()
            if not line:
                sel.unregister(key.fileobj)
                p.wait()
                del running[key.fd]
                print(f"[{time.time() - t0:6.1f}s] exit {cfg['name']} rc={p.returncode}", flush=True)
                continue
            line = line.rstrip()
            res.write(line + "\n")
            res.flush()
            try:
                r = json.loads(line)
                if "epoch" in r:
                    finals[cfg["name"]] = r
                    if r["epoch"] in (1, cfg["epochs"]) or r["epoch"] % 4 == 0:
                        print(f"[{time.time() - t0:6.1f}s] {line}", flush=True)
            except json.JSONDecodeError:
                print(f"{cfg['name']}: {line}", flush=True)
    print("\nname                 epochs_done/epochs  test_acc  train_acc  s/epoch")
    for c in CONFIGS:
        r = finals.get(c["name"])
        if r:
            print(f"{c['name']:20s} {r['epoch']:3d}/{c['epochs']:<3d}            {r['test_acc']:.4f}    "
                  f"{r['train_acc']:.4f}   {r['sec']:.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--drive", action="store_true")
    ap.add_argument("--train", default=None)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=400)
    ap.add_argument("--launch-until", type=float, default=250)
    ap.add_argument("--only", default=None)
    a = ap.parse_args()
    if a.render:
        render()
    if a.train:
        train(json.loads(a.train))
    if a.drive:
        drive(a.concurrency, a.deadline, a.launch_until, a.only.split(",") if a.only else None)
