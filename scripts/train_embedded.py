#!/usr/bin/env python3
"""Train the embedded model (weights/fashion_scenes_alexnet.h5) with this engine only.

The network is ``te.models.scene_alexnet()`` (AlexNet-style, 64x64 RGB
"Fashion-MNIST scenes", 10 classes, conv2 3x3).  Recipe (defaults): He
initialisation, AdamW (Adam, decoupled weight decay 0.07), batch 64, 18 epochs
over the 60,000 training items, each epoch in freshly rendered scenes (new
backgrounds, tints, sizes and places; scene seed = epoch), learning rate
warmed up linearly over the first half epoch to 1.1e-3 and then
cosine-annealed to 0, label smoothing 0.1, random horizontal flips, early
dropout (0.1 in drop6/drop7 for the first 2 epochs, then off), two
single-threaded processes that share each batch (parameters and gradients in
shared memory), render each epoch's scenes half each and evaluate half each
(``--workers 2``).  On this project's 2-core machine it takes 38-40 minutes
(39.4 for the shipped model; docs/embedded_model.md).

Checkpoints (``--checkpoint-dir``, one ``epoch_NNN.npz`` per finished epoch,
no pickle) hold the weights, the optimiser state (Adam moments or SGD
momentum), the epoch, the training history and the state of every random
generator; ``--resume`` continues from the latest one and gives the same
weights as an uninterrupted run.

    python scripts/train_embedded.py                          # the shipped model
    python scripts/train_embedded.py --train-size 5000 --epochs 1 --out /tmp/m.h5
    python scripts/train_embedded.py --resume                 # after an interruption

Needs Fashion-MNIST (Debian package ``dataset-fashion-mnist`` or
``TGE_FASHION_MNIST``); the scenes are rendered on the fly (~8 s per epoch on
two processes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import tinygrad_explain as te  # noqa: E402
from tinygrad_explain.data import image, scenes  # noqa: E402
from tinygrad_explain.data.fashion_mnist import CLASS_NAMES  # noqa: E402
from tinygrad_explain.modelfiles.modelfile import DEFAULT_WEIGHTS  # noqa: E402
from tinygrad_explain.training import checkpoint, optim, parallel, train  # noqa: E402


def load_split(split, n, cache_dir, seed=0, progress=True, parallel=None):
    """Scenes of a split: rendered, or read from ``cache_dir`` (.npy) if given.
    With a ``parallel.DataParallel`` of several processes, each renders a part."""
    if cache_dir:
        p = Path(cache_dir)
        tag = f"scenes_{split}" + (f"_seed{seed}" if seed else "")
        fi, fl = p / f"{tag}_images.npy", p / f"{tag}_labels.npy"
        if fi.exists() and fl.exists():
            images, labels = np.load(fi, allow_pickle=False), np.load(fl, allow_pickle=False)
            if n is None or n <= len(images):
                return images[:n], labels[:n]
    if parallel is not None and parallel.workers > 1:
        labels = scenes.SceneDataset(split).labels[:n].copy()
        cuts = np.linspace(0, len(labels), parallel.workers + 1).astype(int)
        parts = parallel.map(scenes.render_images, [(split, seed, a, b, progress and k == 0)  # a bar for ours
                                                     for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))])
        d = {"images": np.concatenate(parts), "labels": labels}
    else:
        d = scenes.generate(split, n=n, seed=seed, progress=progress)
    if cache_dir:
        p.mkdir(parents=True, exist_ok=True)
        if n is None:
            from tinygrad_explain.core.safe_io import atomic_write
            for path, arr in ((fi, d["images"]), (fl, d["labels"])):
                with atomic_write(path) as f:
                    np.save(f, arr)
    return d["images"], d["labels"]


def build_model(args):
    width = tuple(int(v) for v in args.width.split(",")) if args.width else None
    kw = {}
    if width:
        kw["width"] = width
    if args.fc:
        kw["fc"] = args.fc
    if args.dropout is not None:
        kw["dropout"] = args.dropout
    if args.conv1:
        kw["conv1"] = tuple(int(v) for v in args.conv1.split(","))
    if args.conv2:
        kw["conv2"] = tuple(int(v) for v in args.conv2.split(","))
    return te.models.scene_alexnet(**kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.1e-3, help="peak learning rate")
    ap.add_argument("--momentum", type=float, default=0.9, help="sgd momentum (Nesterov)")
    ap.add_argument("--weight-decay", type=float, default=0.07,
                    help="decoupled (AdamW) weight decay for adam; L2 for sgd (use ~5e-4)")
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up length in epochs")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--shift", type=int, default=0, help="random translation (px) augmentation")
    ap.add_argument("--jitter", type=float, default=0.0, help="brightness/contrast jitter augmentation")
    ap.add_argument("--fresh-scenes", action=argparse.BooleanOptionalAction, default=True,
                    help="render the training scenes anew every epoch (scene seed = epoch number; default). "
                         "With the same scenes every epoch the model learns them by heart: 91%% on its own "
                         "training scenes, 87%% on the same items in new scenes")
    ap.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=None,
                    help="train on the first N training scenes (default: all 60,000)")
    ap.add_argument("--epoch-size", type=int, default=None,
                    help="scenes per epoch, drawn at random from the training set (default: all)")
    ap.add_argument("--eval-size", type=int, default=2000,
                    help="test scenes for the accuracy printed after each epoch (0: none)")
    ap.add_argument("--width", default=None, help="conv widths, e.g. 64,128,192,192,128 (default: scene_alexnet's)")
    ap.add_argument("--fc", type=int, default=None, help="fc6/fc7 width (default: scene_alexnet's)")
    ap.add_argument("--dropout", type=float, default=None, help="drop6/drop7 probability (default: scene_alexnet's)")
    ap.add_argument("--dropout-epochs", type=int, default=2,
                    help="early dropout: dropout in the first N epochs only, then off (default 2; "
                         "-1: in every epoch)")
    ap.add_argument("--conv1", default=None, help="conv1 kernel,stride,padding (default: scene_alexnet's)")
    ap.add_argument("--conv2", default=None, help="conv2 kernel,stride,padding (default: scene_alexnet's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "embedded")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    ap.add_argument("--cache-dir", default=None, help="keep the rendered scenes as .npy here")
    ap.add_argument("--workers", type=int, default=2,
                    help="data-parallel processes, each computing the gradient of part of every batch "
                         "(default 2, one per core: 1.75x the steps per second of one process with 2 threads, "
                         "whose Numba and OpenBLAS thread pools get in each other's way)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per process for kernels and BLAS (default 1: on a shared, busy machine "
                         "oversubscribed parallel kernels are many times slower)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--stop-after-epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE if set (by default the script re-runs itself "
                         "without them: they pin OpenBLAS to a ~1.6x slower kernel)")
    args = ap.parse_args(argv)
    if argv is None:
        te.device.rerun_without_blas_pins()

    t_start = time.perf_counter()
    images, labels = load_split("train", args.train_size, args.cache_dir, progress=not args.no_progress)
    test_images, test_labels = (load_split("test", args.eval_size, args.cache_dir, progress=not args.no_progress)
                                if args.eval_size
                                else (None, None))
    print(f"data: {len(images)} training scenes, {0 if test_images is None else len(test_images)} "
          f"test scenes for monitoring ({time.perf_counter() - t_start:.0f} s)", flush=True)

    te.manual_seed(args.seed)
    model = build_model(args)
    train.he_init(model)
    model.requires_grad_(True)
    mean, std = image.channel_stats(images)
    model.preprocessing.update(mean=mean.tolist(), std=std.tolist(), pixel_scale=1.0, channel_order="RGB")
    model.class_names = list(CLASS_NAMES)
    if args.optimizer == "sgd":
        opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                        weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    else:
        opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng([args.seed, 1])          # shuffling and augmentation

    per_epoch = args.epoch_size or len(images)
    steps_per_epoch = per_epoch // args.batch
    total = steps_per_epoch * args.epochs
    warm = int(args.warmup * steps_per_epoch)
    lr_at = lambda s: optim.cosine_lr(s, total, args.lr, warmup_steps=warm)  # noqa: E731

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    history, start_epoch = [], 0
    resumed = checkpoint.resume(args.checkpoint_dir, model, opt, config,
                                ("batch", "lr", "epochs", "seed", "train_size", "epoch_size", "width", "fc",
                                 "dropout", "dropout_epochs", "conv1", "conv2", "optimizer", "workers",
                                 "fresh_scenes")) if args.resume else None
    if resumed:
        start_epoch, rngs, extra = resumed
        rng, history = rngs["data"], extra.get("history", [])
    print(model)
    print(f"{sum(p.data.size for p in model.parameters()):,} parameters; {args.epochs} epochs x "
          f"{steps_per_epoch} steps of {args.batch}", flush=True)

    t_train = time.perf_counter()
    with parallel.DataParallel(model, workers=args.workers, threads=args.threads, seed=args.seed) as par:
        run_epochs(args, model, opt, images, labels, test_images, test_labels, rng, lr_at, steps_per_epoch,
                   start_epoch, history, config, par)
    return finish(args, model, t_start, t_train)


def run_epochs(args, model, opt, images, labels, test_images, test_labels, rng, lr_at, steps_per_epoch,
               start_epoch, history, config, par):
    nominal_p = max((layer.p for layer in model.layers.values() if isinstance(layer, te.nn.Dropout)), default=0.0)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        if args.dropout_epochs >= 0:      # early dropout: on for the first epochs only
            par.apply(train.set_dropout, nominal_p if epoch < args.dropout_epochs else 0.0)
        if args.fresh_scenes and epoch > 0:
            # the same training items in new scenes (scene seed = epoch): new
            # backgrounds, tints, sizes and places every epoch, labels unchanged
            images, _ = load_split("train", args.train_size, args.cache_dir, seed=epoch,
                                   progress=not args.no_progress, parallel=par)
        loss, acc = train.train_epoch(
            model, opt, images, labels, args.batch, rng, lr_at=lr_at, first_step=epoch * steps_per_epoch,
            smoothing=args.label_smoothing, flip=not args.no_flip, shift=args.shift, jitter=args.jitter,
            n=args.epoch_size, progress=not args.no_progress, desc=f"epoch {epoch + 1}/{args.epochs}",
            parallel=par)
        rec = {"epoch": epoch + 1, "loss": loss, "train_acc": acc, "seconds": time.perf_counter() - t0}
        if test_images is not None:
            rec["test_acc"] = train.evaluate(model, test_images, test_labels, parallel=par)
        history.append(rec)
        print(json.dumps(rec), flush=True)
        checkpoint.save_checkpoint(args.checkpoint_dir / f"epoch_{epoch + 1:03d}.npz", model, opt, epoch + 1,
                              rngs={"data": rng}, extra={"history": history, "config": config})
        if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
            print(f"stopping after epoch {epoch + 1} (--stop-after-epoch)", flush=True)
            sys.exit(3)
    par.apply(train.set_dropout, nominal_p)    # the saved file records the architecture's rate


def finish(args, model, t_start, t_train):
    model.eval()
    model.requires_grad_(False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    te.save_model(model, args.out, class_names=CLASS_NAMES, mean=model.preprocessing["mean"],
                  std=model.preprocessing["std"], pixel_scale=1.0, channel_order="RGB")
    wall = time.perf_counter() - t_start
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(f"training time {time.perf_counter() - t_train:.0f} s; wall time {wall:.0f} s ({wall / 60:.1f} min)")
    return model


if __name__ == "__main__":
    main()
