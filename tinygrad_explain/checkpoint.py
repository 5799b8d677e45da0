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

from . import engine
from .safe_io import atomic_write


def save_checkpoint(path, model, optimizer, epoch, rngs=None, extra=None):
    """Write a checkpoint after ``epoch`` finished epochs.

    Holds ``model/<layer>.<param>``, ``opt/<key>`` (momentum buffers, lr, step
    count), ``epoch``, the state of each generator in ``rngs`` (a dict name ->
    Generator; the engine's own generator -- dropout masks -- is always
    saved as ``engine``) as JSON, ``preprocessing`` as JSON, and ``extra``
    (a JSON-able dict, e.g. the training history).  Written through
    :func:`~tinygrad_explain.safe_io.atomic_write`, so an interruption never
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


def load_checkpoint(path, model, optimizer):
    """Restore a checkpoint written by :func:`save_checkpoint` into ``model``
    and ``optimizer`` (in place) and the engine's generator.

    Returns ``(epoch, rngs, extra)``: the number of finished epochs, the
    other saved generators (name -> Generator) and the ``extra`` dict.
    """
    with np.load(path, allow_pickle=False) as z:
        model.load_state_dict({k[6:]: z[k] for k in z.files if k.startswith("model/")})
        optimizer.load_state_dict({k[4:]: z[k] for k in z.files if k.startswith("opt/")})
        epoch = int(z["epoch"])
        states = json.loads(str(z["rng_states"]))
        model.preprocessing.update(json.loads(str(z["preprocessing"])))
        extra = json.loads(str(z["extra"]))
    rngs = {}
    for name, st in states.items():
        kind = st.get("bit_generator") if isinstance(st, dict) else None
        if kind not in BIT_GENERATORS:          # a name from the file: never looked up in np.random freely
            raise ValueError(f"{path}: generator {name!r} has bit generator {kind!r}; "
                             f"expected one of {', '.join(BIT_GENERATORS)}")
        bg = BIT_GENERATORS[kind]()
        try:
            bg.state = st
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: generator {name!r} has an unusable state: {e}") from None
        rngs[name] = np.random.Generator(bg)
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
