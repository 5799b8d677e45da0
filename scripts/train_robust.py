#!/usr/bin/env python3
"""Fine-tune the embedded model with PGD adversarial training: its robust twin.

Adversarially trained networks have input gradients that look like the
object (Tsipras et al. 2019, "Robustness may be at odds with accuracy";
Santurkar et al. 2019, "Image synthesis with a single robust classifier"):
saliency maps, class models and inversions of such a network show shapes a
person recognises, where the standard network's show high-frequency
patterns.  This script makes that twin of the embedded model with this engine
only (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks"):

* start: the embedded model (weights/fashion_scenes_alexnet.h5), whose
  architecture is ``te.models.scene_alexnet()`` and whose preprocessing
  (mean/std) the twin keeps, so both see the same input;
* attack (``tinygrad_explain.training.adversarial.pgd``): L2 PGD on pixels scaled to
  [0, 1] (the gradient goes through ``image.to_model``, the one pixel <->
  model-space path), radius ``--eps`` 0.5 (an image change of Euclidean length
  0.5: e.g. 0.5/sqrt(64*64*3) = 1.15 grey levels of 255 on every one of the
  64x64x3 values, or one value changed by 128 levels), ``--steps`` 3 of length 2.5 eps / 3,
  random start on the sphere, projection onto the ball and onto [0, 1] after
  every step, the attacked model in training mode (dropout off);
* training: every batch replaced by its attack (no clean images), Adam
  (batch 64, learning rate warmed up over 30 steps to ``--lr`` 2e-4 and
  cosine-annealed to 0 at the end of ``--epochs``, decoupled weight decay
  0.07 as for the embedded model, no label smoothing, random flips), dropout
  off as in the embedded model's last epochs;
* data: the first ``--train-size`` (20,000) training items in new scenes
  (scene seed 18; the embedded model saw seeds 0-17), ``--epoch-size``
  (2,048) of them per epoch in a random order, ``--epochs`` 6 (12,288
  adversarial scenes, 192 steps), a checkpoint after every epoch
  (``--checkpoint-dir``, ``--resume``);
* stop: after ``--epochs`` or ``--max-minutes`` of training, whichever
  first (the model is always saved; stopped early, the learning rate has not
  reached 0 and the run depends on the machine's speed).

The shipped twin: 6 epochs, 16.5 minutes of training (25.2 min in all with
the rendering and the evaluation) on the 2 cores of a machine with a load
average of 8-10 (other jobs running; 4.2-5.7 s per step of 64).  Its table
(``--eval-only`` prints it again)::

    model      clean (2000)    PGD-3 (500)   PGD-10 (500)   attack: L2 eps=0.5
    embedded          90.9%          55.0%          50.4%
    robust            87.1%          69.0%          66.6%

At the end it prints, for the embedded model and the twin side by side, the
clean accuracy on ``--eval-size`` test scenes (seed 0, as the other scripts)
and the accuracy under PGD at the training radius on the first
``--robust-eval-size`` of them: the training attack (3 steps) and a stronger
one (``--eval-steps``, 10 steps of 2.5 eps / 10), random start from seed 0.
``--eval-only`` prints that table for the shipped files without training.

    nice -n 5 python scripts/train_robust.py                # the shipped twin
    python scripts/train_robust.py --eval-only              # its table
    python scripts/train_robust.py --epochs 1 --epoch-size 128 --eval-size 200 \\
        --robust-eval-size 50 --out /tmp/r.h5 --checkpoint-dir /tmp/rck   # a tiny run

Writes ``weights/fashion_scenes_alexnet_robust.h5`` (``te.load_model("robust")``);
the scenes are rendered from Fashion-MNIST (``dataset-fashion-mnist``, or the
folder ``TGE_FASHION_MNIST`` names).
"""
from __future__ import annotations

import argparse
import functools
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
from tinygrad_explain.training import adversarial, checkpoint, optim, parallel, train  # noqa: E402


def robust_correct(model_path, images, labels, eps, norm, steps, seed):
    """Helper-process part of the robust evaluation: #images of the part that
    the model at ``model_path`` still classifies correctly after PGD."""
    model = te.load_model(model_path)
    return round(adversarial.robust_accuracy(model, images, labels, eps, norm, steps, seed=seed) * len(images))


def evaluate(paths, args, par, progress=True):
    """{name: {clean_acc, pgd<steps>_acc ...}} for the model files ``paths`` (name -> path)."""
    d = scenes.generate("test", n=args.eval_size, seed=0, progress=progress)
    images, labels = d["images"], np.asarray(d["labels"], np.int64)
    n_rob = min(args.robust_eval_size, len(images))
    out = {}
    for name, path in paths.items():
        model = te.load_model(path)
        rec = {"clean_acc": round(train.evaluate(model, images, labels), 4)}
        for steps in sorted({args.steps, args.eval_steps}):
            t0 = time.perf_counter()
            # each process attacks a contiguous half with its own seed (seed, part): reproducible
            cuts = np.linspace(0, n_rob, par.workers + 1).astype(int)
            parts = par.map(robust_correct, [(str(path), images[a:b], labels[a:b], args.eps, args.norm, steps,
                                              [0, k]) for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))])
            rec[f"pgd{steps}_acc"] = round(sum(parts) / max(n_rob, 1), 4)
            rec[f"pgd{steps}_seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = rec
        print(f"{name}: {json.dumps(rec)}", flush=True)
    unit = f"L2 eps={args.eps:g}" if args.norm == "l2" else f"Linf eps={args.eps * 255:g}/255"
    print(f"\n{'model':<10} {'clean (' + str(len(images)) + ')':>12} "
          + " ".join(f"{'PGD-' + str(s) + ' (' + str(n_rob) + ')':>14}" for s in sorted({args.steps, args.eval_steps}))
          + f"   attack: {unit} on [0,1] pixels, step 2.5*eps/steps, random start")
    for name, rec in out.items():
        print(f"{name:<10} {rec['clean_acc']:>12.1%} "
              + " ".join(f"{rec[f'pgd{s}_acc']:>14.1%}" for s in sorted({args.steps, args.eval_steps})))
    return out


def fraction(text):
    """A float, or a fraction such as ``2/255``."""
    if "/" in text:
        a, b = text.split("/", 1)
        return float(a) / float(b)
    return float(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--norm", choices=adversarial.NORMS, default="l2")
    ap.add_argument("--eps", type=fraction, default=0.5,
                    help="attack radius on [0,1] pixels (L2 length, or per value for linf, e.g. 2/255)")
    ap.add_argument("--steps", type=int, default=3, help="PGD steps while training (step 2.5*eps/steps)")
    ap.add_argument("--train-size", type=int, default=20000, help="training items (the first N)")
    ap.add_argument("--scene-seed", type=int, default=18, help="scene seed of the training scenes")
    ap.add_argument("--epoch-size", type=int, default=2048, help="scenes per epoch (a checkpoint after each)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (cosine to 0)")
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--weight-decay", type=float, default=0.07, help="decoupled (AdamW), as the embedded model")
    ap.add_argument("--max-minutes", type=float, default=40.0, help="stop after this many minutes of training")
    ap.add_argument("--seed", type=int, default=0, help="batch order, flips and random starts")
    ap.add_argument("--eval-size", type=int, default=2000, help="test scenes (seed 0) for the clean accuracy")
    ap.add_argument("--robust-eval-size", type=int, default=500, help="the first N of them attacked")
    ap.add_argument("--eval-steps", type=int, default=10, help="steps of the stronger evaluation attack")
    ap.add_argument("--eval-only", action="store_true", help="only print the table for the shipped files")
    ap.add_argument("--out", type=Path, default=MODEL_NAMES["robust"])
    ap.add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "robust")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parallel.add_arguments(ap)
    args = ap.parse_args(argv)
    if argv is None:
        te.device.rerun_without_blas_pins()
    progress = not args.no_progress

    if args.eval_only:
        with parallel.DataParallel(te.load_model(DEFAULT_WEIGHTS), workers=args.workers,
                                   threads=args.threads) as par:
            return evaluate({"embedded": DEFAULT_WEIGHTS, "robust": args.out}, args, par, progress)

    t_start = time.perf_counter()
    data = scenes.generate("train", n=args.train_size, seed=args.scene_seed, progress=progress)
    images, labels = data["images"], np.asarray(data["labels"], np.int64)
    print(f"data: {len(images)} training scenes (scene seed {args.scene_seed}, "
          f"{time.perf_counter() - t_start:.0f} s)", flush=True)

    reference = te.models.scene_alexnet()
    model = te.load_model(DEFAULT_WEIGHTS)
    assert model.architecture() == reference.architecture(), "scene_alexnet() no longer matches the embedded model"
    model.class_names = list(CLASS_NAMES)
    nominal_p = model.layers["drop6"].p
    model.requires_grad_(True)
    opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng([args.seed, 1])
    te.manual_seed(args.seed)
    attack = functools.partial(adversarial.pgd, eps=args.eps, norm=args.norm, steps=args.steps)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    history, start_epoch = [], 0
    resumed = checkpoint.resume(args.checkpoint_dir, model, opt, config,
                                ("norm", "eps", "steps", "train_size", "scene_seed", "epoch_size", "epochs",
                                 "batch", "lr", "warmup_steps", "seed"),
                                fresh="starting from the embedded model") if args.resume else None
    if resumed:
        start_epoch, rngs, extra = resumed
        rng, history = rngs["data"], extra.get("history", [])

    steps_per_epoch = args.epoch_size // args.batch
    total = steps_per_epoch * args.epochs
    lr_at = lambda s: optim.cosine_lr(s, total, args.lr, warmup_steps=args.warmup_steps)  # noqa: E731
    unit = f"L2 eps={args.eps:g}" if args.norm == "l2" else f"Linf eps={args.eps * 255:g}/255"
    print(f"PGD training: {unit} on [0,1] pixels, {args.steps} steps of {2.5 * args.eps / args.steps:.4g}, "
          f"{steps_per_epoch} steps of {args.batch} per epoch, at most {args.epochs} epochs / "
          f"{args.max_minutes} min", flush=True)
    t_train = time.perf_counter() - sum(r["seconds"] for r in history)
    with parallel.DataParallel(model, workers=args.workers, threads=args.threads, seed=args.seed) as par:
        par.apply(train.set_dropout, 0.0)
        for epoch in range(start_epoch, args.epochs):
            t0 = time.perf_counter()
            loss, acc = train.train_epoch(
                model, opt, images, labels, args.batch, rng, lr_at=lr_at, first_step=epoch * steps_per_epoch,
                flip=True, shift=0, n=args.epoch_size, progress=progress, desc=f"epoch {epoch + 1}",
                parallel=par, attack=attack)
            rec = {"epoch": epoch + 1, "adv_loss": round(loss, 5), "adv_acc": round(acc, 4),
                   "seconds": round(time.perf_counter() - t0, 1)}
            history.append(rec)
            print(json.dumps(rec), flush=True)
            checkpoint.save_checkpoint(args.checkpoint_dir / f"epoch_{epoch + 1:03d}.npz", model, opt, epoch + 1,
                                       rngs={"data": rng}, extra={"history": history, "config": config})
            if (time.perf_counter() - t_train) / 60 > args.max_minutes:
                print(f"stopping: --max-minutes {args.max_minutes} reached", flush=True)
                break
        train_minutes = (time.perf_counter() - t_train) / 60
        par.apply(train.set_dropout, nominal_p)     # the file records the architecture's rate
        model.eval()
        model.requires_grad_(False)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        te.save_model(model, args.out, class_names=CLASS_NAMES)
        print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after {len(history)} epochs "
              f"({len(history) * steps_per_epoch * args.batch} adversarial scenes), {train_minutes:.1f} min "
              f"of training", flush=True)
        table = evaluate({"embedded": DEFAULT_WEIGHTS, "robust": args.out}, args, par, progress)
    summary = {"epochs": len(history), "train_minutes": round(train_minutes, 2),
               "wall_minutes": round((time.perf_counter() - t_start) / 60, 2), "eval": table, "config": config}
    print(json.dumps(summary))
    return model, summary


if __name__ == "__main__":
    main()
