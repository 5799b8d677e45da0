#!/usr/bin/env python3
"""Train the data-randomisation twin of the embedded model on randomly permuted labels.

Adebayo et al. (2018, "Sanity Checks for Saliency Maps", section 4) compare a
model's explanations with those of the same architecture trained on the same
inputs with the labels randomly permuted: a network that memorised noise has
learnt nothing about the classes, so an explanation that still looks the same
does not depend on the relation between the data and the labels.

This script builds that twin with this engine only:

* architecture: ``te.models.scene_alexnet()``, exactly the embedded model's
  (weights/fashion_scenes_alexnet.h5), its preprocessing (mean/std) copied
  from the embedded file so both models see the same input;
* data: the first ``--train-size`` (default 500) training scenes, rendered
  once with scene seed 0 and kept fixed (memorising needs the same images
  every epoch: no fresh scenes, no flips, no dropout, no label smoothing, no
  weight decay);
* labels: the scenes' labels permuted by ``np.random.default_rng([seed, 2])``
  (a permutation keeps the class frequencies; about 10 % still match);
* Adam (batch 32) at a constant learning rate (``--lr``, default 1e-3) after
  half an epoch of warm-up, until the accuracy on the training scenes (eval
  mode, with the permuted labels) reaches ``--target`` (default 0.99) or
  ``--max-epochs`` / ``--max-minutes`` run out (whatever was reached is
  printed and the model saved).  The eval-mode accuracy is measured every
  5th epoch and whenever the running accuracy nears the target.

The shipped twin: 100 % of its 500 training scenes after 30 epochs (13.2 % on
their true labels), 14.5 minutes of training on the 2 cores of a machine with
a load average of 10-15 (other jobs running).

    nice python scripts/train_random_labels.py                 # the shipped twin (15 min on 2 very busy cores)
    python scripts/train_random_labels.py --train-size 256 --max-epochs 2 --out /tmp/r.h5

The result is ``weights/fashion_scenes_alexnet_random_labels.h5``, loaded by
``te.load_model("random_labels")``.  Needs Fashion-MNIST (Debian package
``dataset-fashion-mnist`` or ``TGE_FASHION_MNIST``).
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
from tinygrad_explain.data import scenes  # noqa: E402
from tinygrad_explain.data.fashion_mnist import CLASS_NAMES  # noqa: E402
from tinygrad_explain.modelfiles.modelfile import DEFAULT_WEIGHTS, MODEL_NAMES  # noqa: E402
from tinygrad_explain.training import optim, parallel, train  # noqa: E402


def permuted_labels(labels, seed):
    """``labels`` in a random order drawn from ``default_rng([seed, 2])``."""
    return np.asarray(labels, np.int64)[np.random.default_rng([int(seed), 2]).permutation(len(labels))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--train-size", type=int, default=500, help="fixed training scenes (the first N)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--target", type=float, default=0.99, help="stop at this training accuracy")
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--max-minutes", type=float, default=30.0, help="stop after this many minutes of training")
    ap.add_argument("--seed", type=int, default=0, help="label permutation, initialisation and batch order")
    ap.add_argument("--out", type=Path, default=MODEL_NAMES["random_labels"])
    parallel.add_arguments(ap)
    args = ap.parse_args(argv)
    if argv is None:
        te.device.rerun_without_blas_pins()

    t_start = time.perf_counter()
    data = scenes.generate("train", n=args.train_size, seed=0, progress=not args.no_progress)
    images = data["images"]
    true_labels = np.asarray(data["labels"], np.int64)
    labels = permuted_labels(true_labels, args.seed)
    print(f"data: {len(images)} fixed training scenes; {np.mean(labels == true_labels):.1%} of the permuted "
          f"labels equal the true ones ({time.perf_counter() - t_start:.0f} s)", flush=True)

    reference = te.load_model(DEFAULT_WEIGHTS)
    te.manual_seed(args.seed)
    model = te.models.scene_alexnet()
    assert model.architecture() == reference.architecture(), "scene_alexnet() no longer matches the embedded model"
    train.he_init(model)
    train.set_dropout(model, 0.0)            # memorise: no dropout while training (the file keeps the rate)
    model.requires_grad_(True)
    model.preprocessing.update(reference.preprocessing)
    model.class_names = list(CLASS_NAMES)
    opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng([args.seed, 1])

    steps_per_epoch = len(images) // args.batch
    warm = steps_per_epoch // 2
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / max(warm, 1))  # noqa: E731
    history, acc = [], 0.0
    t_train = time.perf_counter()
    with parallel.DataParallel(model, workers=args.workers, threads=args.threads, seed=args.seed) as par:
        par.apply(train.set_dropout, 0.0)
        for epoch in range(args.max_epochs):
            t0 = time.perf_counter()
            loss, run_acc = train.train_epoch(
                model, opt, images, labels, args.batch, rng, lr_at=lr_at, first_step=epoch * steps_per_epoch,
                flip=False, progress=not args.no_progress, desc=f"epoch {epoch + 1}", parallel=par)
            rec = {"epoch": epoch + 1, "loss": round(loss, 5), "running_acc": round(run_acc, 4)}
            out_of_time = (time.perf_counter() - t_train) / 60 > args.max_minutes
            # the eval-mode pass costs a third of an epoch: only near the target, every 5th epoch and at the end
            if run_acc >= args.target - 0.03 or (epoch + 1) % 5 == 0 or out_of_time \
                    or epoch + 1 == args.max_epochs:
                acc = rec["train_acc"] = round(train.evaluate(model, images, labels, parallel=par), 4)
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            history.append(rec)
            print(json.dumps(rec), flush=True)
            if acc >= args.target:
                break
            if out_of_time:
                print(f"stopping: --max-minutes {args.max_minutes} reached", flush=True)
                break
    train_minutes = (time.perf_counter() - t_train) / 60
    train.set_dropout(model, reference.layers["drop6"].p)
    model.eval()
    model.requires_grad_(False)
    true_acc = train.evaluate(model, images, true_labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    te.save_model(model, args.out, class_names=CLASS_NAMES)
    wall = (time.perf_counter() - t_start) / 60
    summary = {"train_size": len(images), "epochs": len(history), "train_acc_permuted_labels": acc,
               "acc_on_true_labels": true_acc, "train_minutes": round(train_minutes, 2),
               "wall_minutes": round(wall, 2), "seed": args.seed, "lr": args.lr, "batch": args.batch}
    print(json.dumps(summary))
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {acc:.2%} on its {len(images)} training "
          f"scenes with permuted labels ({true_acc:.1%} on their true labels) after {len(history)} epochs, "
          f"{train_minutes:.1f} min of training, {wall:.1f} min in all")
    return model, summary


if __name__ == "__main__":
    main()
