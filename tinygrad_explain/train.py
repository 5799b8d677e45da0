"""Training with the engine itself: optimisers, schedules, data, checkpoints.

Everything the embedded model's training script (``scripts/train_embedded.py``)
needs, in plain NumPy on top of :mod:`tinygrad_explain.engine`:

* :class:`SGD` (momentum, Nesterov, weight decay) and :class:`Adam` (its
  update one Numba pass, ``kernels/adam.py``), each with ``step()``,
  ``zero_grad()``, ``state_dict()`` / ``load_state_dict()``;
* learning-rate schedules (:func:`cosine_lr`, :func:`step_lr`) as functions of
  the step number;
* :func:`preprocess` (uint8 NHWC -> normalised float32 NCHW, with the mean/std
  that the model file stores), :func:`augment` (random flips, shifts and
  brightness/contrast jitter on uint8 batches), :func:`evaluate`;
* :func:`smoothed_cross_entropy` (label smoothing);
* :func:`save_checkpoint` / :func:`load_checkpoint`: an ``.npz`` without
  pickle holding the weights, the optimiser state, the epoch and the
  state of every random generator (``bit_generator.state`` as JSON), so a
  resumed run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import engine, ops
from . import kernels as K
from .device import set_num_threads
from .engine import Tensor, no_grad
from .safe_io import atomic_write


# --------------------------------------------------------------------------
# optimisers
# --------------------------------------------------------------------------
class Optimizer:
    """Base class: a list of parameter Tensors and a learning rate."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = float(lr)
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _buffers(self) -> dict:
        """name -> list of arrays (one per parameter), the state to checkpoint."""
        return {}

    def state_dict(self) -> dict:
        """Plain arrays only: ``{"lr": ..., "steps": ..., "<buffer>.<i>": array}``."""
        out = {"lr": np.asarray(self.lr, np.float64), "steps": np.asarray(self.steps, np.int64)}
        for name, bufs in self._buffers().items():
            for i, b in enumerate(bufs):
                out[f"{name}.{i}"] = np.asarray(b)
        return out

    def load_state_dict(self, state: dict):
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name, bufs in self._buffers().items():
            for i, p in enumerate(self.params):
                key = f"{name}.{i}"
                if key not in state:
                    raise KeyError(f"optimizer state is missing {key!r}")
                arr = np.asarray(state[key])
                if arr.shape != p.data.shape:
                    raise ValueError(f"optimizer state {key!r} has shape {arr.shape}, parameter has {p.data.shape}")
                bufs[i][...] = arr
        return self


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's formulation).

        g = grad + weight_decay * w
        v = momentum * v + g
        w -= lr * (g + momentum * v)   if nesterov   else   lr * v

    Parameters whose ``grad`` is None are skipped.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)
        self.velocity = [engine._xp(p.data).zeros_like(p.data) for p in self.params]

    def _buffers(self):
        return {"velocity": self.velocity} if self.momentum else {}

    def step(self):
        self.steps += 1
        lr, mu, wd = np.float32(self.lr), np.float32(self.momentum), np.float32(self.weight_decay)
        for p, v in zip(self.params, self.velocity):
            if p.grad is None:
                continue
            g = p.grad.astype(p.data.dtype, copy=True)
            if wd:
                g += wd * p.data
            if mu:
                v *= mu
                v += g
                g = g + mu * v if self.nesterov else v
            p.data -= lr * g
            p.mark_changed()


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015); ``weight_decay`` is decoupled (AdamW) when
    ``decoupled=True``, otherwise added to the gradient (L2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=True):
        super().__init__(params, lr)
        self.b1, self.b2 = map(float, betas)
        self.eps, self.weight_decay, self.decoupled = float(eps), float(weight_decay), bool(decoupled)
        self.m = [engine._xp(p.data).zeros(p.data.shape, p.data.dtype) for p in self.params]
        self.v = [engine._xp(p.data).zeros(p.data.shape, p.data.dtype) for p in self.params]

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def step(self):
        self.steps += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            if engine._xp(p.data) is np:
                K.adam.step(p.data, p.grad, m, v, self.lr, self.b1, self.b2, self.eps, self.weight_decay,
                            self.decoupled, self.steps)
            else:                                   # a GPU (CuPy) array: the same formula, element-wise
                _adam_step_xp(p.data, p.grad, m, v, self.lr, self.b1, self.b2, self.eps, self.weight_decay,
                              self.decoupled, self.steps)
            p.mark_changed()


def _adam_step_xp(w, g, m, v, lr, b1, b2, eps, weight_decay, decoupled, t):
    """``kernels/adam.py``'s update written with array operations (for CuPy arrays)."""
    f = w.dtype.type
    g = g.astype(w.dtype, copy=False)
    if weight_decay and not decoupled:
        g = g + f(weight_decay) * w
    m *= f(b1)
    m += f(1 - b1) * g
    v *= f(b2)
    v += f(1 - b2) * g * g
    if weight_decay and decoupled:
        w -= f(lr * weight_decay) * w
    w -= f(lr / (1 - b1 ** t)) * m / (engine._xp(w).sqrt(v / f(1 - b2 ** t)) + f(eps))


# --------------------------------------------------------------------------
# learning-rate schedules: step (0-based) -> learning rate
# --------------------------------------------------------------------------
def cosine_lr(step, total_steps, base_lr, warmup_steps=0, final_lr=0.0, warmup_from=0.1):
    """Linear warm-up from ``warmup_from * base_lr`` over ``warmup_steps``,
    then half a cosine from ``base_lr`` down to ``final_lr`` at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        f = step / warmup_steps
        return base_lr * (warmup_from + (1 - warmup_from) * f)
    span = max(1, total_steps - warmup_steps)
    f = min(1.0, (step - warmup_steps) / span)
    return final_lr + (base_lr - final_lr) * 0.5 * (1 + math.cos(math.pi * f))


def step_lr(step, base_lr, milestones, gamma=0.1):
    """``base_lr * gamma ** (number of milestones <= step)``."""
    return base_lr * gamma ** sum(step >= m for m in milestones)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def channel_stats(images_uint8, pixel_scale=1.0, max_images=10000):
    """Per-channel mean and std of uint8 NHWC images, with pixels scaled to
    [0, ``pixel_scale``] (the values the model file's preprocessing stores)."""
    x = np.asarray(images_uint8[:max_images], np.float64) * (pixel_scale / 255.0)
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def preprocess(images_uint8, mean, std, pixel_scale=1.0):
    """uint8 (N, H, W, C) -> float32 (N, C, H, W): ``(pixel * pixel_scale/255 - mean) / std``."""
    x = np.asarray(images_uint8)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, H, W, C), got shape {x.shape}")
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    out = x.transpose(0, 3, 1, 2).astype(np.float32)
    out *= np.float32(pixel_scale / 255.0)
    out -= mean
    out /= std
    return out


def model_preprocess(model, images_uint8):
    """:func:`preprocess` with the model's own stored mean/std/pixel_scale."""
    pre = model.preprocessing
    C = model.input_shape[0]
    return preprocess(images_uint8, pre.get("mean", [0.0] * C), pre.get("std", [1.0] * C),
                      float(pre.get("pixel_scale", 1.0)))


def augment(images_uint8, rng, flip=True, shift=4, jitter=0.0):
    """Random training augmentation of a uint8 (N, H, W, C) batch (returns a new array).

    flip    mirror left-right with probability 1/2
    shift   translate by up to ``shift`` px in x and y (edge pixels replicated),
            i.e. a random crop of the edge-padded image
    jitter  brightness/contrast jitter: each image x -> (x - m) * c + m + b with
            c in [1-jitter, 1+jitter], b in [-jitter, jitter]*255 (m = its mean)
    """
    x = np.asarray(images_uint8)
    n, h, w, _ = x.shape
    out = np.empty_like(x)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    dys = rng.integers(-shift, shift + 1, n) if shift else np.zeros(n, int)
    dxs = rng.integers(-shift, shift + 1, n) if shift else np.zeros(n, int)
    if shift:
        padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    for i in range(n):
        img = padded[i, shift + dys[i]:shift + dys[i] + h, shift + dxs[i]:shift + dxs[i] + w] if shift else x[i]
        out[i] = img[:, ::-1] if flips[i] else img
    if jitter:
        c = rng.uniform(1 - jitter, 1 + jitter, (n, 1, 1, 1)).astype(np.float32)
        b = rng.uniform(-jitter, jitter, (n, 1, 1, 1)).astype(np.float32) * 255
        f = out.astype(np.float32)
        m = f.mean(axis=(1, 2, 3), keepdims=True)
        out = np.clip((f - m) * c + m + b + 0.5, 0, 255).astype(np.uint8)
    return out


def smoothed_cross_entropy(scores: Tensor, labels, smoothing=0.0) -> Tensor:
    """Cross-entropy with label smoothing: the target puts ``1 - smoothing``
    on the true class and ``smoothing / K`` on every class.  ``smoothing=0``
    is exactly :func:`ops.cross_entropy`."""
    labels = np.asarray(labels)
    if not smoothing:
        return ops.cross_entropy(scores, labels)
    n, k = scores.shape
    target = np.full((n, k), smoothing / k, dtype=scores.dtype)
    target[np.arange(n), labels] += 1 - smoothing
    return (ops.log_softmax(scores) * Tensor(target)).sum() * (-1.0 / n)


def predict(model, images_uint8, batch=256, progress=False):
    """Class scores (N, K) float32 of uint8 NHWC images, in eval mode, no graph."""
    was_training = any(l.training for l in model.layers.values())
    model.eval()
    out = []
    it = range(0, len(images_uint8), batch)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="batch", leave=False)
    try:
        with no_grad():
            for i in it:
                out.append(model(model_preprocess(model, images_uint8[i:i + batch])).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def evaluate(model, images_uint8, labels, batch=256, progress=False, parallel=None):
    """Top-1 accuracy (0..1) of ``model`` on uint8 NHWC images, preprocessed
    with the mean/std stored in ``model.preprocessing``.  ``parallel``: a
    :class:`DataParallel` of ``model`` that shares the images between its
    processes (no progress bar then)."""
    scores = (parallel.predict(images_uint8, batch) if parallel is not None
              else predict(model, images_uint8, batch, progress))
    return float((scores.argmax(1) == np.asarray(labels)).mean())


# --------------------------------------------------------------------------
# checkpoints: .npz, no pickle
# --------------------------------------------------------------------------
def rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def rng_from_json(s: str) -> np.random.Generator:
    state = json.loads(s)
    bg = getattr(np.random, state["bit_generator"])()
    bg.state = state
    return np.random.Generator(bg)


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
        bg = getattr(np.random, st["bit_generator"])()
        bg.state = st
        rngs[name] = np.random.Generator(bg)
    engine._RNG = rngs.pop("engine")
    return epoch, rngs, extra


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


def reuse_freed_memory():
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse rather
    than hand them back to the OS.

    A training step allocates and frees the same large activations every time.
    By default glibc serves each block over 128 kB with a fresh ``mmap`` and
    unmaps it on free, so every step pays a page fault and the kernel's
    zero-filling for every page it touches (the LRN forward at batch 64 ran 4x
    faster without that).  A no-op where the C library is not glibc."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------
# initialisation and the training loop
# --------------------------------------------------------------------------
def he_init(model, rng=None, last_std=0.01, bias=0.0):
    """Re-initialise conv/linear weights with He (Kaiming) normal init,
    ``std = sqrt(2 / fan_in)`` -- right for ReLU nets without batch norm, whose
    signal would shrink layer by layer with PyTorch's default uniform init --
    the last layer with ``N(0, last_std)``, biases with ``bias``."""
    from . import nn
    rng = engine.rng() if rng is None else rng
    layers = [l for l in model.layers.values() if isinstance(l, (nn.Conv2d, nn.Linear))]
    for i, l in enumerate(layers):
        he_init_layer(l, rng, last_std if i == len(layers) - 1 else None, bias)
    return model


def he_init_layer(layer, rng, std=None, bias=0.0):
    """He normal initialisation of one conv/linear layer in place: weight
    ``N(0, std^2)`` with ``std = sqrt(2 / fan_in)`` unless given, bias ``bias``
    (float32, on the host)."""
    w = layer.weight.data
    if std is None:
        std = math.sqrt(2.0 / int(np.prod(w.shape[1:])))
    layer.weight.data = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(std)
    layer.bias.data = np.full(layer.bias.data.shape, bias, np.float32)
    return layer


def set_dropout(model, p):
    """Set the probability of every Dropout layer of ``model`` to ``p``
    (an early-dropout schedule switches it off after the first epochs);
    ``nn.Dropout`` checks the value."""
    from . import nn
    for layer in model.layers.values():
        if isinstance(layer, nn.Dropout):
            layer.p = p
    return model


def _batch_grads(model, xb, yb, smoothing):
    """Forward + backward of one (part of a) batch; returns (loss, #correct);
    the gradients are left in the parameters' ``.grad``."""
    scores = model(model_preprocess(model, xb))
    loss = smoothed_cross_entropy(scores, yb, smoothing)
    model.zero_grad()
    loss.backward()
    return float(loss.data), int((scores.data.argmax(1) == yb).sum())


def _worker_main(conn, model, threads, shared, k):
    """A data-parallel helper process (number ``k``).  Messages: ``("grads",
    seed, images, labels, smoothing)`` -> ``(loss, correct)``, with the
    parameters read from row 0 of the shared buffer and the gradients written
    to row ``k``; ``("predict", images, batch)`` -> their class scores, with
    the parameters of row 0 (:meth:`DataParallel.predict`); ``("call", fn,
    list of argument tuples)`` -> the list of ``fn(*args)``
    (:meth:`DataParallel.map`); ``("model", fn, args)`` -> ``fn(model,
    *args)`` (:meth:`DataParallel.apply`); ``None`` ends it."""
    set_num_threads(threads)
    reuse_freed_memory()
    params = model.parameters()
    flat = np.frombuffer(shared, dtype=np.float32).reshape(-1, sum(p.data.size for p in params))
    model.requires_grad_(True).train()
    while True:
        msg = conn.recv()
        if msg is None:
            break
        if msg[0] == "call":
            _, fn, arglist = msg
            conn.send([fn(*a) for a in arglist])
            continue
        if msg[0] == "model":
            _, fn, args = msg
            conn.send(fn(model, *args))
            continue
        if msg[0] == "predict":
            _, xb, batch = msg
            _unflatten_into(flat[0], params)
            conn.send(predict(model, xb, batch))
            continue
        _, seed, xb, yb, smoothing = msg
        _unflatten_into(flat[0], params)
        engine.manual_seed(seed)
        loss, correct = _batch_grads(model, xb, yb, smoothing)
        _flatten([p.grad for p in params], flat[k])
        conn.send((loss, correct))
    conn.close()


def _flatten(arrays, out):
    """The arrays, as float32, one after the other in the vector ``out``."""
    o = 0
    for a in arrays:
        out[o:o + a.size] = np.asarray(a).reshape(-1)
        o += a.size
    return out


def _unflatten_into(flat, params):
    """Inverse of :func:`_flatten`: the vector's pieces into each parameter's ``.data``, in place."""
    o = 0
    for p in params:
        n = p.data.size
        p.data[...] = flat[o:o + n].reshape(p.data.shape)
        p.mark_changed()
        o += n


class DataParallel:
    """Split every batch between this process and ``workers - 1`` helper
    processes (spawned, each with its own copy of the model and ``threads``
    threads), average the gradients, step in this process.

    On a shared 2-core machine two single-threaded processes use both cores
    without the collapse of oversubscribed parallel kernels.  Dropout masks
    come from a generator seeded by (seed, step, part), so a run is exactly
    reproducible and resumable whatever the load.  The helpers are spawned,
    not forked (OpenMP does not survive a fork).  Use as a context manager;
    ``workers=1`` runs everything in-process.
    """

    def __init__(self, model, workers=2, threads=1, seed=0):
        import multiprocessing as mp
        self.model, self.workers, self.seed = model, int(workers), int(seed)
        self.conns, self.procs = [], []
        ctx = mp.get_context("spawn")
        # Parameters and gradients travel through shared memory, not the pipe:
        # row 0 holds the parameters (written here before every step), row k
        # helper k's gradient.  The pipe carries only the batch and two numbers.
        n = sum(p.data.size for p in model.parameters())
        shared = ctx.RawArray("f", n * self.workers) if self.workers > 1 else None
        self.flat = np.frombuffer(shared, dtype=np.float32).reshape(self.workers, n) if shared else None
        for k in range(1, self.workers):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(b, model, threads, shared, k), daemon=True)
            p.start()
            b.close()
            self.conns.append(a)
            self.procs.append(p)
        set_num_threads(threads)
        reuse_freed_memory()

    def _parts(self, n):
        """``n`` items as one contiguous slice per process (this one's first)."""
        cuts = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), self.workers)])
        return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]

    def grads(self, step, xb, yb, smoothing=0.0):
        """Gradients of the mean loss over the whole batch into ``.grad``;
        returns (mean loss, #correct).  Each part's gradient is weighted by
        its share of the batch and added into this process's ``.grad``
        arrays in place (``g0*w0 + g1*w1 + ...``, in that order)."""
        parts = self._parts(len(yb))
        params = self.model.parameters()
        if self.conns:
            _flatten([p.data for p in params], self.flat[0])
        for k, conn in enumerate(self.conns, start=1):
            conn.send(("grads", [self.seed, step, k], xb[parts[k]], yb[parts[k]], smoothing))
        engine.manual_seed([self.seed, step, 0])
        loss, correct = _batch_grads(self.model, xb[parts[0]], yb[parts[0]], smoothing)
        if not self.conns:
            return loss, correct
        n = len(yb)
        w0 = len(yb[parts[0]]) / n
        loss *= w0
        for k, conn in enumerate(self.conns, start=1):
            l, c = conn.recv()
            w = len(yb[parts[k]]) / n
            self.flat[k] *= np.float32(w)          # the helper rewrites its row next step
            loss += l * w
            correct += c
        o = 0
        for p in params:
            g = p.grad.astype(np.float32, copy=False)
            g *= np.float32(w0)
            for k in range(1, self.workers):
                g += self.flat[k, o:o + g.size].reshape(g.shape)
            p.grad = g
            o += g.size
        return loss, correct

    def predict(self, images_uint8, batch=256):
        """:func:`predict` with this process's current parameters, the images
        split into one contiguous part per process (this one takes the first)."""
        if not self.conns:
            return predict(self.model, images_uint8, batch)
        _flatten([p.data for p in self.model.parameters()], self.flat[0])
        parts = self._parts(len(images_uint8))
        for k, conn in enumerate(self.conns, start=1):
            conn.send(("predict", images_uint8[parts[k]], batch))
        out = [predict(self.model, images_uint8[parts[0]], batch)]
        out += [conn.recv() for conn in self.conns]
        return np.concatenate(out)

    def map(self, fn, arglist):
        """``[fn(*args) for args in arglist]``, the list split into one
        contiguous part per process and the parts computed side by side (this
        process takes the first).  ``fn`` must be a module-level function
        (it is pickled by name).  Used to render each epoch's scenes on all
        cores."""
        arglist = list(arglist)
        parts = self._parts(len(arglist))
        for k, conn in enumerate(self.conns, start=1):
            conn.send(("call", fn, arglist[parts[k]]))
        out = [fn(*a) for a in arglist[parts[0]]]
        for conn in self.conns:
            out += conn.recv()
        return out

    def apply(self, fn, *args):
        """``fn(model, *args)`` on the model of every process (this one's
        first), e.g. :func:`set_dropout` between epochs; returns this
        process's result."""
        for conn in self.conns:
            conn.send(("model", fn, args))
        out = fn(self.model, *args)
        for conn in self.conns:
            conn.recv()
        return out

    def close(self):
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def train_epoch(model, optimizer, images, labels, batch, rng, lr_at=None, first_step=0,
                smoothing=0.0, flip=True, shift=0, jitter=0.0, n=None, progress=True, desc="train",
                parallel=None):
    """One epoch of minibatch training over a random permutation (from ``rng``)
    of ``images`` (uint8 NHWC; the first ``n`` of the permutation if given).

    ``lr_at(step)`` sets ``optimizer.lr`` before each step (global step
    numbers start at ``first_step``).  ``parallel``: a :class:`DataParallel`
    that computes the gradients (dropout seeded per step); without it the
    engine's generator draws the dropout masks.  Returns ``(mean loss,
    accuracy)`` over the epoch's training batches (dropout and augmentation on).
    """
    model.train()
    order = rng.permutation(len(images))
    if n is not None:
        order = order[:n]
    starts = range(0, len(order) - batch + 1, batch)     # drop the ragged last batch
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(starts), desc=desc, unit="batch", dynamic_ncols=True)
    tot_loss = tot_correct = seen = 0.0
    for k, s in enumerate(starts):
        idx = np.sort(order[s:s + batch])
        xb = augment(images[idx], rng, flip=flip, shift=shift, jitter=jitter)
        yb = np.asarray(labels[idx], np.int64)
        if lr_at is not None:
            optimizer.lr = lr_at(first_step + k)
        if parallel is not None:
            lv, correct = parallel.grads(first_step + k, xb, yb, smoothing)
        else:
            lv, correct = _batch_grads(model, xb, yb, smoothing)
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss became {lv} at step {first_step + k}; lower the learning rate")
        optimizer.step()
        tot_loss += lv * len(idx)
        tot_correct += correct
        seen += len(idx)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_correct / seen:.4f}", refresh=False,
                            lr=f"{optimizer.lr:.4g}")
    if bar is not None:
        bar.close()
    return tot_loss / max(seen, 1), tot_correct / max(seen, 1)


def plain_scenes(items28, size=64, item_size=48):
    """Plain Fashion-MNIST items as background-free "scenes": each grey 28x28
    item resized (bilinear, cv2) to ``item_size`` px, centred on a black
    ``size`` x ``size`` frame and replicated to RGB.  uint8 (N, size, size, 3)."""
    import cv2
    items28 = np.asarray(items28, np.uint8)
    out = np.zeros((len(items28), size, size, 3), np.uint8)
    o = (size - item_size) // 2
    for i, it in enumerate(items28):
        big = cv2.resize(it, (item_size, item_size), interpolation=cv2.INTER_LINEAR)
        out[i, o:o + item_size, o:o + item_size] = big[..., None]
    return out
