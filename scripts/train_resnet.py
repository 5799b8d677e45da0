#!/usr/bin/env python3
"""Train the scene ResNet (weights/fashion_scenes_resnet.h5) with PyTorch, export it to ONNX.

PyTorch is a training-only tool here (the ``reference`` extra), used the way a
user of this project would use it: train in a framework, export to ONNX with
``torch.onnx.export(..., dynamo=False)``, bring the ONNX file in with
``scripts/convert_onnx.py`` (or ``te.load_model("net.onnx")``).  Nothing in
the shipped model file depends on torch.

The network (:func:`scene_resnet`, names after torchvision's ResNet) on 64x64
RGB "Fashion-MNIST scenes", 10 classes:

    conv1 5x5/2, 24 -> bn1 -> relu -> maxpool 3x3/2        24 x 16 x 16
    layer1: BasicBlock 48 (1x1 projection shortcut)        48 x 16 x 16
    layer2: BasicBlock 96, stride 2                        96 x  8 x  8
    layer3: BasicBlock 192, stride 2                      192 x  4 x  4
    global average pool -> fc 10

A BasicBlock is conv3x3-bn-relu-conv3x3-bn, plus the shortcut (identity, or
conv1x1-bn where the shape changes), then relu: torchvision's.

Recipe (defaults): the data of ``scripts/train_embedded.py`` -- the 60,000
training items in freshly rendered scenes every epoch (scene seed = epoch),
random horizontal flips, label smoothing 0.1, pixels scaled to [0, 1] then
per-channel mean/std of the epoch-0 training scenes -- with SGD (Nesterov
momentum 0.9, weight decay 5e-4 on the weights, not on batch norm or biases),
batch 128, learning rate warmed up linearly over half an epoch to 0.1 then
cosine-annealed to 0, 5 epochs, seed 0, four processes of one thread; the
shipped model then had three more cosine cycles (below; docs/resnet.md).  One
checkpoint per epoch (``--out-dir``, default /tmp/train_resnet; torch's ``.pt`` files, not shipped),
the final model exported to ``<out-dir>/fashion_scenes_resnet.onnx`` (eval
mode, opset 17, batch axis dynamic) with the class names and preprocessing in
its ``metadata_props``, its accuracy on the 10,000 test scenes (torch), and
then the conversion to ``--out`` (default weights/fashion_scenes_resnet.h5) by
the project's ONNX importer with those class names and that preprocessing.

    python scripts/train_resnet.py --out /tmp/train_resnet/cycle1.h5     # epochs 1-5 (86.47 %)
    python scripts/train_resnet.py --init-from /tmp/train_resnet/epoch_005.pt --first-epoch 5 --epochs 2 \
        --lr 0.03 --warmup 0 --out /tmp/train_resnet/cycle2.h5                                   # 6-7 (87.09 %)
    python scripts/train_resnet.py --init-from /tmp/train_resnet/epoch_007.pt --first-epoch 7 --epochs 10 \
        --lr 0.05 --warmup 0 --out-dir /tmp/train_resnet3 --out /tmp/train_resnet3/cycle3.h5    # 8-17 (89.41 %)
    python scripts/train_resnet.py --init-from /tmp/train_resnet3/epoch_017.pt --first-epoch 17 --epochs 8 \
        --lr 0.03 --weight-decay 1e-4 --warmup 0 --out-dir /tmp/train_resnet4   # 18-25: the shipped model (90.12 %)
    python scripts/train_resnet.py --convert /tmp/train_resnet/fashion_scenes_resnet.onnx   # convert only
    python scripts/train_resnet.py --epochs 1 --train-size 5000 --out-dir /tmp/r

Needs Fashion-MNIST (Debian package ``dataset-fashion-mnist`` or
``TGE_FASHION_MNIST``) and torch + onnx (``pip install -e .[reference]``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tinygrad_explain.core.safe_io import atomic_write, write_text  # noqa: E402
from tinygrad_explain.data import image, scenes  # noqa: E402
from tinygrad_explain.data.fashion_mnist import CLASS_NAMES  # noqa: E402

WIDTHS = (48, 96, 192)
STEM = 24


def scene_resnet(stem=STEM, widths=WIDTHS, blocks=(1, 1, 1), classes=10):
    """The scene ResNet as a torch module (see the module docstring)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class SceneResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, stem, 5, 2, 2, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU(inplace=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = stem
            for i, (c, n) in enumerate(zip(widths, blocks)):
                layer = []
                for j in range(n):
                    layer.append(BasicBlock(cin, c, 2 if (i > 0 and j == 0) else 1))
                    cin = c
                setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            self.n_layers = len(widths)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(self.n_layers):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    model = SceneResNet()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():       # zero-init the last BN of each block (each block starts as identity)
        if hasattr(m, "bn2"):
            nn.init.zeros_(m.bn2.weight)
    return model


def to_tensor(images_uint8, mean, std):
    """uint8 NHWC -> float32 NCHW torch tensor, (x/255 - mean) / std."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).float().div_(255.0)
    x = (x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)
    return x.permute(0, 3, 1, 2).contiguous()


def accuracy(model, images, labels, mean, std, batch=500):
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out = model(to_tensor(images[s:s + batch], mean, std))
            correct += int((out.argmax(1).numpy() == np.asarray(labels[s:s + batch])).sum())
    return correct / len(images)


def render(split, n, seed):
    labels = np.asarray(scenes.SceneDataset(split).labels)
    n = len(labels) if n is None else n
    return scenes.render_images(split, seed, 0, n), labels[:n].astype(np.int64)


def export_onnx(model, path, mean, std, size=64):
    """Export ``model`` (eval mode) to ONNX at ``path`` (opset 17, dynamic batch),
    class names and preprocessing in ``metadata_props`` as JSON."""
    import onnx
    import torch
    model.eval()
    x = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(str(path))
    meta = {"class_names": json.dumps(list(CLASS_NAMES)), "mean": json.dumps([float(v) for v in mean]),
            "std": json.dumps([float(v) for v in std]), "pixel_scale": "1.0", "channel_order": "RGB",
            "input_size": json.dumps([size, size])}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))
    return path


def convert(onnx_path, out):
    """The exported ONNX file -> the model file, through the project's ONNX importer
    (``onnx_import.convert_onnx``, what ``scripts/convert_onnx.py`` runs), with the class
    names and preprocessing that :func:`export_onnx` stored in the file's metadata."""
    import onnx

    from tinygrad_explain.modelfiles.onnx_import import convert_onnx
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return convert_onnx(onnx_path, out, class_names=json.loads(meta["class_names"]), mean=json.loads(meta["mean"]),
                        std=json.loads(meta["std"]), pixel_scale=float(meta["pixel_scale"]),
                        channel_order=meta["channel_order"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up length in epochs")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=None, help="first N training scenes (default: all 60,000)")
    ap.add_argument("--eval-size", type=int, default=2000, help="test scenes scored after each epoch")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this checkpoint (an epoch_NNN.pt of this script) instead of a fresh network")
    ap.add_argument("--first-epoch", type=int, default=0,
                    help="number of the first epoch (its scene seed; with --init-from, the checkpoint's epoch)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: on the shared 2-core machine two threads ran 2-3x slower)")
    ap.add_argument("--workers", type=int, default=4,
                    help="training processes, each with a share of every batch (default 4; gradients "
                         "averaged by DistributedDataParallel over gloo)")
    ap.add_argument("--port", type=int, default=29517, help="local port of the processes' rendezvous")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/train_resnet"),
                    help="checkpoints, the ONNX export and the log (not shipped)")
    ap.add_argument("--convert", type=Path, metavar="ONNX",
                    help="only convert this export (with its stored class names and preprocessing) to --out")
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "fashion_scenes_resnet.h5",
                    help="the model file written from the ONNX export (default: the shipped one)")
    args = ap.parse_args(argv)
    if args.convert:
        net = convert(args.convert, args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(net.layer_names)} nodes")
        return net

    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.workers == 1:
        train_worker(0, args)
    else:
        import torch.multiprocessing as mp
        mp.spawn(train_worker, args=(args,), nprocs=args.workers, join=True)
    summary = json.loads((args.out_dir / "summary.json").read_text())
    net = convert(summary["onnx"], args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); scripts/eval_embedded.py --model {args.out} "
          "scores it with this engine")
    return net


def train_worker(rank, args):
    """One training process: renders its share of each epoch's scenes (a contiguous part of
    the split), draws its share of every batch from it, and averages the gradients with
    the others (torch's DistributedDataParallel, gloo); rank 0 monitors, saves and exports."""
    import os

    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    world = args.workers
    if world > 1:
        import torch.distributed as dist
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(args.port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    t_start = time.perf_counter()
    n_all = len(scenes.SceneDataset("train").labels) if args.train_size is None else args.train_size
    cuts = np.linspace(0, n_all, world + 1).astype(int)
    lo, hi = int(cuts[rank]), int(cuts[rank + 1])
    labels_all = np.asarray(scenes.SceneDataset("train").labels)[:n_all].astype(np.int64)
    labels = labels_all[lo:hi]
    images = scenes.render_images("train", 0, lo, hi)
    # preprocessing: channel statistics of the first 10,000 epoch-0 training scenes (rank 0's part)
    stats = torch.zeros(6, dtype=torch.float64)
    if rank == 0:
        mean, std = image.channel_stats(images)
        stats[:3], stats[3:] = torch.from_numpy(mean), torch.from_numpy(std)
    if world > 1:
        dist.broadcast(stats, 0)
    mean, std = stats[:3].numpy(), stats[3:].numpy()
    if rank == 0:
        test_images, test_labels = render("test", None, 0)
        print(f"data: {n_all} training scenes in {world} parts, {len(test_images)} test scenes "
              f"({time.perf_counter() - t_start:.0f} s); mean {mean.round(4).tolist()} std {std.round(4).tolist()}",
              flush=True)

    model = scene_resnet()
    if args.init_from:                       # a second cycle: go on from a checkpoint of this script
        ck = torch.load(args.init_from, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        if not np.allclose(ck["mean"].numpy(), mean) or not np.allclose(ck["std"].numpy(), std):
            raise SystemExit(f"{args.init_from}: its preprocessing differs from these scenes'")
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(model)
        print(f"{n_params:,} parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=args.momentum, nesterov=True)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    rng = np.random.default_rng([args.seed, 1, rank] + ([args.first_epoch] if args.first_epoch else []))
    part = args.batch // world
    steps_per_epoch = n_all // args.batch
    total, warm = steps_per_epoch * args.epochs, int(args.warmup * steps_per_epoch)

    def lr_at(step):
        if step < warm:
            return args.lr * (0.1 + 0.9 * step / warm)
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    history = []
    t_train = time.perf_counter()
    for epoch in range(args.first_epoch, args.first_epoch + args.epochs):
        t0 = time.perf_counter()
        if epoch > 0:     # the same items in new scenes (scene seed = epoch), as scripts/train_embedded.py
            images = scenes.render_images("train", epoch, lo, hi)
        t_data = time.perf_counter() - t0
        model.train()
        order = rng.permutation(len(images))
        tot_loss = tot_correct = seen = 0
        for k in range(steps_per_epoch):
            idx = np.sort(order[k * part:(k + 1) * part])
            xb = scenes.augment(images[idx], rng, flip=True, shift=0)
            x, y = to_tensor(xb, mean, std), torch.from_numpy(labels[idx])
            for g in opt.param_groups:
                g["lr"] = lr_at((epoch - args.first_epoch) * steps_per_epoch + k)
            out = net(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += int((out.argmax(1) == y).sum())
            seen += len(idx)
            if rank == 0 and k % 50 == 0:
                print(f"  epoch {epoch + 1} step {k}/{steps_per_epoch} loss {tot_loss / seen:.4f} "
                      f"acc {tot_correct / seen:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if rank == 0:
            rec = {"epoch": epoch + 1, "loss": tot_loss / seen, "train_acc": tot_correct / seen,
                   "test_acc_monitor": accuracy(model, test_images[:args.eval_size], test_labels[:args.eval_size],
                                                mean, std),
                   "seconds": time.perf_counter() - t0, "render_seconds": t_data}
            history.append(rec)
            print(json.dumps(rec), flush=True)
            with atomic_write(args.out_dir / f"epoch_{epoch + 1:03d}.pt") as f:    # a kill leaves no half file
                torch.save({"model": model.state_dict(), "epoch": epoch + 1, "mean": torch.from_numpy(mean),
                            "std": torch.from_numpy(std)}, f)
    if rank != 0:
        return
    train_s = time.perf_counter() - t_train
    acc = accuracy(model, test_images, test_labels, mean, std)
    onnx_path = export_onnx(model, args.out_dir / "fashion_scenes_resnet.onnx", mean, std)
    wall = time.perf_counter() - t_start
    summary = {"test_acc_10k": acc, "parameters": n_params, "train_seconds": train_s, "wall_seconds": wall,
               "onnx": str(onnx_path), "history": history, "config": {k: str(v) for k, v in vars(args).items()}}
    write_text(args.out_dir / "summary.json", json.dumps(summary, indent=1))
    print(f"top-1 on the {len(test_images)} test scenes: {100 * acc:.2f} %")
    print(f"exported {onnx_path}; training {train_s / 60:.1f} min, wall {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
