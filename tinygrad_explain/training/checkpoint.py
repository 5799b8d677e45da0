"""Training checkpoints: an ``.npz`` without pickle.

:func:`save_checkpoint` / :func:`load_checkpoint` hold the weights, the
optimiser state, the epoch and the state of every random generator
(``bit_generator.state`` as JSON), so a resumed run continues exactly where the
interrupted one stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core import engine
from ..core.safe_io import atomic_write


def save_checkpoint(path, model, optimizer, epoch, rngs=None, extra=None):
    """Write a checkpoint after ``epoch`` finished epochs.

    Holds ``model/<layer>.<param>``, ``opt/<key>`` (momentum buffers, lr, step
    count), ``epoch``, the state of each generator in ``rngs`` (a dict name ->
    Generator; the engine's own generator -- dropout masks -- is always
    saved as ``engine``) as JSON, ``preprocessing`` as JSON, and ``extra``
    (a JSON-able dict, e.g. the training history).  Written through
    :func:`~tinygrad_explain.core.safe_io.atomic_write`, so an interruption never
    leaves a half-written checkpoint.
    """
    path = Path(path)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"opt/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["epoch"] = np.asarray(int(epoch), np.int64)
    states = {"engine": engine.rng().bit_generator.state}
    for name, g in (rngs or {}).items():
        states[name] = g.bit_generator.state
    arrays["rng_states"] = np.asarray(json.dumps(states))
    arrays["preprocessing"] = np.asarray(json.dumps(_jsonable(model.preprocessing)))
    arrays["extra"] = np.asarray(json.dumps(extra or {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


# the bit generators a checkpoint may name (the state's "bit_generator" field)
BIT_GENERATORS = {cls.__name__: cls for cls in
                  (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64)}


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and the key."""


def _max_checkpoint_bytes(model, optimizer) -> int:
    """What a checkpoint of ``model`` may hold: the weights and every optimiser buffer at
    8 bytes a value (float64 at worst), plus 64 MiB of generator states and history --
    and never less than the default .npz limit; the environment's TGE_MAX_NPZ_BYTES,
    if set, instead."""
    import os

    from ..core.safe_io import npz_limit
    if os.environ.get("TGE_MAX_NPZ_BYTES"):
        return npz_limit(None)
    values = sum(int(np.prod(v.shape)) for v in model.state_dict().values())
    buffers = 1 + len(optimizer._buffers())
    return max(npz_limit(None), 8 * values * buffers + (64 << 20))


def _json_of(z, key, path):
    if key not in z:
        raise CheckpointError(f"checkpoint {path}: has no {key!r}; not a checkpoint written by save_checkpoint")
    a = z[key]
    if a.dtype.kind != "U" or a.ndim != 0:
        raise CheckpointError(f"checkpoint {path}: {key!r} must be a JSON string, got {a.dtype} of shape {a.shape}")
    try:
        return json.loads(str(a), parse_constant=lambda c: float(c))
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {key!r} is not valid JSON ({e})") from None


def _check_config(cfg, path):
    """The training settings saved in ``extra["config"]``: those that must be numbers in
    a range are checked (a resumed run would otherwise train with NaN momentum)."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"checkpoint {path}: extra['config'] must be a dict, got {type(cfg).__name__}")
    rules = {"lr": (lambda v: 0 < v < float("inf"), "a finite number > 0"),
             "momentum": (lambda v: 0 <= v < 1, "a finite number in [0, 1)"),
             "weight_decay": (lambda v: 0 <= v < float("inf"), "a finite number >= 0")}
    for key, (ok, want) in rules.items():
        if key in cfg:
            v = cfg[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(float(v)):
                raise CheckpointError(f"checkpoint {path}: extra['config'][{key!r}] must be {want}, got {v!r}")


def load_checkpoint(path, model, optimizer):
    """Restore a checkpoint written by :func:`save_checkpoint` into ``model``
    and ``optimizer`` (in place) and the engine's generator.

    All or nothing: the file is read through :func:`~tinygrad_explain.core.safe_io.load_npz`
    (a regular file, no pickles, sizes checked from the zip directory and the .npy
    headers before reading; the bound follows from the model's size), and every part
    -- weights (shapes, finite), optimiser state (lr finite and > 0, steps >= 0,
    buffers shaped and finite), epoch, generator states, preprocessing (as
    ``te.image`` checks it: std > 0, ...) and the saved settings (lr > 0,
    0 <= momentum < 1) -- is checked before anything is assigned; on any failure
    ``model``, ``optimizer`` and the engine's generator are untouched.  Errors are
    :class:`CheckpointError` (a ValueError) naming the file and the key.

    Returns ``(epoch, rngs, extra)``: the number of finished epochs, the
    other saved generators (name -> Generator) and the ``extra`` dict.
    """
    from ..core.safe_io import load_npz
    from ..data.image import preprocessing_of
    z = load_npz(path, "checkpoint", max_bytes=_max_checkpoint_bytes(model, optimizer))

    # -- weights: checked by a dry run of load_state_dict's own checks
    weights = {k[6:]: v for k, v in z.items() if k.startswith("model/")}
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: " + (f"missing weights {missing}" if missing else
                              f"unexpected weights {unexpected}; this network has {list(own)}"))
    for k, v in weights.items():
        if v.shape != own[k].shape or v.dtype.kind != "f" or not np.isfinite(v).all():
            raise CheckpointError(f"checkpoint {path}: 'model/{k}' must be finite floats of shape {own[k].shape}, "
                                  f"got {v.dtype} {v.shape}" + ("" if v.dtype.kind != "f" or v.shape != own[k].shape
                                                                 else " with NaN or Inf"))

    # -- optimiser state
    opt = {k[4:]: v for k, v in z.items() if k.startswith("opt/")}
    want = optimizer.state_dict()
    for k, ref in want.items():
        if k not in opt:
            raise CheckpointError(f"checkpoint {path}: has no 'opt/{k}' (was it written for another optimiser?)")
        v = opt[k]
        if v.shape != np.shape(ref) or v.dtype.kind not in "fiu" or not np.isfinite(v).all():
            raise CheckpointError(f"checkpoint {path}: 'opt/{k}' must be finite numbers of shape {np.shape(ref)}, "
                                  f"got {v.dtype} {v.shape}")
    lr, steps = opt["lr"].item(), opt["steps"].item()
    if not 0 < lr < float("inf"):
        raise CheckpointError(f"checkpoint {path}: 'opt/lr' must be a finite number > 0, got {lr!r}")
    if opt["steps"].dtype.kind not in "iu" or steps < 0:
        raise CheckpointError(f"checkpoint {path}: 'opt/steps' must be an integer >= 0, got {steps!r}")

    # -- epoch, generators, preprocessing, extra
    if "epoch" not in z or z["epoch"].ndim != 0 or z["epoch"].dtype.kind not in "iu" or int(z["epoch"]) < 0:
        raise CheckpointError(f"checkpoint {path}: 'epoch' must be one integer >= 0, got "
                              f"{z['epoch'] if 'epoch' in z else 'nothing'!r}")
    epoch = int(z["epoch"])
    states = _json_of(z, "rng_states", path)
    pre = _json_of(z, "preprocessing", path)
    extra = _json_of(z, "extra", path)
    if not isinstance(states, dict) or "engine" not in states:
        raise CheckpointError(f"checkpoint {path}: 'rng_states' must map names to generator states, "
                              "the engine's included")
    if not isinstance(pre, dict):
        raise CheckpointError(f"checkpoint {path}: 'preprocessing' must be a JSON object, got {type(pre).__name__}")
    if not isinstance(extra, dict):
        raise CheckpointError(f"checkpoint {path}: 'extra' must be a JSON object, got {type(extra).__name__}")
    _check_config(extra.get("config", {}), path)
    merged = dict(model.preprocessing, **pre)
    try:
        preprocessing_of(type("Candidate", (), {"preprocessing": merged, "input_shape": model.input_shape})())
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: 'preprocessing': {e}") from None
    rngs = {}
    for name, st in states.items():
        kind = st.get("bit_generator") if isinstance(st, dict) else None
        if kind not in BIT_GENERATORS:          # a name from the file: never looked up in np.random freely
            raise CheckpointError(f"checkpoint {path}: generator {name!r} has bit generator {kind!r}; "
                                  f"expected one of {', '.join(BIT_GENERATORS)}")
        bg = BIT_GENERATORS[kind]()
        try:
            bg.state = st
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise CheckpointError(f"checkpoint {path}: generator {name!r} has an unusable state: {e}") from None
        rngs[name] = np.random.Generator(bg)

    # -- everything checked: now assign (these can no longer fail on the file's contents)
    model.load_state_dict(weights)
    optimizer.load_state_dict(opt)
    model.preprocessing.update(pre)
    engine.set_rng(rngs.pop("engine"))
    return epoch, rngs, extra


def warn_changed_settings(saved: dict, now: dict, keys, file=None):
    """One warning line (on stderr) for each of ``keys`` whose value in ``now`` (the
    resumed run's command-line settings) differs from ``saved`` (the checkpoint's
    ``extra["config"]``); returns the keys that differ."""
    import sys
    changed = [k for k in keys if k in saved and saved[k] != now[k]]
    for k in changed:
        print(f"warning: --{k.replace('_', '-')} is {now[k]!r}, the checkpoint was trained with {saved[k]!r}",
              file=file or sys.stderr)
    return changed


def resume(directory, model, optimizer, config: dict, watched, fresh: str = "starting from scratch"):
    """``--resume`` for a training script: load the latest checkpoint of ``directory`` into
    ``model`` and ``optimizer`` and warn about each of ``watched`` whose setting in ``config``
    (this run's) differs from the checkpoint's.  Returns (start_epoch, rngs, extra), or
    None (with a line saying ``fresh``) when the folder holds no checkpoint."""
    ck = latest_checkpoint(directory)
    if ck is None:
        print(f"--resume: no checkpoint in {directory}, {fresh}")
        return None
    start_epoch, rngs, extra = load_checkpoint(ck, model, optimizer)
    warn_changed_settings(extra.get("config", {}), config, watched)
    print(f"resumed from {ck} after epoch {start_epoch}", flush=True)
    return start_epoch, rngs, extra


def latest_checkpoint(directory):
    """The checkpoint with the highest epoch number in ``directory`` (files
    ``epoch_NNN.npz``), or None."""
    import re
    d = Path(directory)
    found = [(int(m.group(1)), p) for p in (d.iterdir() if d.is_dir() else ())
             if (m := re.fullmatch(r"epoch_(\d+)\.npz", p.name))]
    return max(found)[1] if found else None


def _jsonable(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
