"""Explanations at dataset scale: a job that explains every image of a data set with
several methods, scores the maps, and writes maps and scores to an HDF5 file chunk by
chunk -- resumable after a kill, and run on Dask distributed workers (a local cluster
started for the job, or an existing one).  See docs/dataset.md.

    import tinygrad_explain as te
    from tinygrad_explain.explain.dataset import run_dataset, Scenes, load
    run_dataset(None, Scenes("test", 0, 500), methods=("saliency", "gradcam"), out="test500.h5")
    res = load("test500.h5")        # {"methods": {m: {metric: (N,)}}, "hard", "predicted", ...}

``images``: the scenes (:class:`Scenes`, test split by index range: ground truth, so
every metric), an image folder or a list of image files (:class:`Files`), or an array
(:class:`Array`: uint8 pictures (N, H, W, 3) or model-space floats (N, C, H, W));
the last two get the metrics that need no ground truth (deletion, insertion).

The file (``out``):

    attrs["manifest"]          JSON: model file + sha256, methods, metrics, options, source,
                               library version, seed, chunk size -- what the results depend on
    done (chunks,) uint8       1 once a chunk's data are all written (the only commit mark)
    indices, predicted, targets (N,) int64; hard (N,) uint8 (scenes only)
    maps/<method> (N, H, W)    map_dtype (float32 by default; omitted with maps=False)
    scores/<method>/<metric> (N,) float64
    seconds/<method> (chunks,) the map's computation time per chunk
    seconds/all (chunks,)      the chunk's whole time on its worker (loading, maps, scores)

Every dataset is allocated in full when the file is created (HDF5's early allocation,
in a temporary file renamed into place), so writing a chunk changes data only, never
the file's structure: a kill at any moment leaves a readable file, and a chunk counts
only once ``done`` says so -- it is written after the chunk's data and flushed.

Same seed, same numbers: every random draw (SmoothGrad's noise, the random baseline) is
seeded from (job seed, image index), so neither the chunking nor the worker matter;
the explainers are bit-for-bit the same in any batch (tests/test_batching.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import benchmark as B
from .gradients import predict

FORMAT = "tinygrad-explain dataset job 1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_METHODS = tuple(B.METHODS)


class DatasetError(ValueError):
    """A dataset job that cannot run as asked (bad input, a file from another job)."""


# --------------------------------------------------------------------------
# sources: what a chunk loads on its worker
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenes:
    """Fashion-MNIST scenes ``start..stop-1`` of ``split`` (te.scenes; rendered on the worker
    from their index): pictures, masks, boxes and labels."""
    split: str = "test"
    start: int = 0
    stop: int | None = None
    seed: int = 0

    def __len__(self) -> int:
        return self._stop() - self.start

    def _stop(self) -> int:
        if self.stop is not None:
            return int(self.stop)
        from ..data import scenes
        return len(scenes.SceneDataset(self.split, self.seed).labels)

    def describe(self) -> dict:
        return {"kind": "scenes", "split": self.split, "start": int(self.start), "stop": self._stop(),
                "seed": int(self.seed)}

    def part(self, a: int, b: int) -> Scenes:
        return Scenes(self.split, self.start + a, self.start + b, self.seed)

    def load(self, model) -> dict:
        from ..data import image as te_image
        from ..data import scenes
        idx = np.arange(self.start, self._stop())
        pictures, masks, boxes, labels = scenes.SceneDataset(self.split, self.seed).batch(idx)
        x = np.concatenate([te_image.load(p, model) for p in pictures])
        return {"x": x, "pictures": pictures, "masks": masks, "boxes": boxes, "labels": labels.astype(np.int64),
                "indices": idx}


@dataclass(frozen=True)
class Files:
    """Image files (any format ``te.image.load`` reads), in this order; ``labels`` one
    class index per file (optional: without it the job explains the predicted class)."""
    paths: tuple[str, ...]
    labels: tuple[int, ...] | None = None
    offset: int = 0

    @classmethod
    def folder(cls, path: str | os.PathLike) -> Files:
        """Every image file directly in ``path``, sorted by name."""
        p = Path(path)
        if not p.is_dir():
            raise DatasetError(f"{p}: not a folder")
        files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise DatasetError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        return cls(tuple(files))

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        h = hashlib.sha256("\n".join(self.paths).encode()).hexdigest()
        return {"kind": "files", "n": len(self.paths), "first": self.paths[0] if self.paths else None,
                "paths_sha256": h, "labels": self.labels is not None}

    def part(self, a: int, b: int) -> Files:
        return Files(self.paths[a:b], None if self.labels is None else self.labels[a:b], self.offset + a)

    def load(self, model) -> dict:
        from ..data import image as te_image
        try:
            x = np.concatenate([te_image.load(p, model) for p in self.paths])
        except ValueError as e:
            raise DatasetError(str(e)) from None
        return {"x": x, "pictures": np.stack([te_image.to_display(v, model) for v in x]),
                "indices": self.offset + np.arange(len(x)),
                "labels": None if self.labels is None else np.asarray(self.labels, np.int64)}


@dataclass(frozen=True, eq=False)
class Array:
    """Images in memory: uint8 pictures (N, H, W, 3) or model-space floats (N, C, H, W);
    ``labels`` (N,) optional (else the predicted class is explained)."""
    data: np.ndarray
    labels: np.ndarray | None = None
    offset: int = 0

    def __len__(self) -> int:
        return len(self.data)

    def describe(self) -> dict:
        h = hashlib.sha256(np.ascontiguousarray(self.data).tobytes())
        if self.labels is not None:
            h.update(np.asarray(self.labels, np.int64).tobytes())
        return {"kind": "array", "shape": list(self.data.shape), "dtype": str(self.data.dtype),
                "sha256": h.hexdigest(), "labels": self.labels is not None}

    def part(self, a: int, b: int) -> Array:
        return Array(self.data[a:b], None if self.labels is None else self.labels[a:b], self.offset + a)

    def load(self, model) -> dict:
        from ..data import image as te_image
        d = np.asarray(self.data)
        if d.dtype == np.uint8:
            x = np.concatenate([te_image.load(p, model) for p in d]) if len(d) else np.zeros((0,) + model.input_shape)
            pictures = d
        else:
            x, pictures = d, np.stack([te_image.to_display(v, model) for v in d])
        return {"x": x, "pictures": pictures, "indices": self.offset + np.arange(len(d)),
                "labels": None if self.labels is None else np.asarray(self.labels, np.int64)}


Source = "Scenes | Files | Array"


def as_source(images, labels=None):
    """``images`` as a source: a :class:`Scenes`, :class:`Files` or :class:`Array` as it is;
    a folder; a list of image files; an ndarray."""
    if isinstance(images, (Scenes, Files, Array)):
        return images
    if isinstance(images, (str, os.PathLike)):
        src = Files.folder(images)
        return src if labels is None else Files(src.paths, tuple(int(v) for v in labels))
    if isinstance(images, np.ndarray):
        if not (images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] in (1, 3)) and \
                not (images.dtype.kind == "f" and images.ndim == 4):
            raise DatasetError(f"an image array must be uint8 (N, H, W, 3) pictures or float (N, C, H, W) in "
                               f"model space, got {images.dtype} {images.shape}")
        return Array(images, None if labels is None else np.asarray(labels, np.int64))
    if isinstance(images, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in images) and len(images):
        missing = [str(p) for p in images if not Path(p).is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: no such image file" + (f" (and {len(missing) - 1} more)"
                                                                         if len(missing) > 1 else ""))
        return Files(tuple(str(p) for p in images), None if labels is None else tuple(int(v) for v in labels))
    raise DatasetError(f"images must be Scenes(...), a folder, a list of image files or an array, got "
                       f"{type(images).__name__}")


# --------------------------------------------------------------------------
# the model: a file, identified by its checksum
# --------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_file(model) -> Path:
    """The model file a job runs: a path, a shipped name (``"embedded"``, ...) or None
    (the embedded model, or $TGE_WEIGHTS), as ``te.load_model`` resolves it."""
    from ..modelfiles.modelfile import DEFAULT_WEIGHTS, MODEL_NAMES
    if model is None:
        model = os.environ.get("TGE_WEIGHTS") or DEFAULT_WEIGHTS
    elif isinstance(model, str) and model in MODEL_NAMES:
        model = MODEL_NAMES[model]
    if not isinstance(model, (str, os.PathLike)):
        raise DatasetError("a dataset job takes the model as a file (a path, a shipped name or None): its "
                           f"workers load it and its manifest records its checksum; got {type(model).__name__}")
    p = Path(model).resolve()
    if not p.is_file():
        raise DatasetError(f"{p}: no such model file")
    return p


_MODELS: dict = {}


def worker_model(path: str, sha256: str):
    """The model, loaded once per worker process and checked against the job's checksum."""
    key = (path, sha256)
    if key not in _MODELS:
        from ..modelfiles.modelfile import load_model
        if not Path(path).is_file():
            raise DatasetError(f"{path}: model file missing on this worker (workers need the same file)")
        if sha256_file(path) != sha256:
            raise DatasetError(f"{path}: this worker's copy differs from the job's (sha256 {sha256[:12]}...)")
        if len(_MODELS) >= 4:
            _MODELS.clear()
        _MODELS[key] = load_model(path)
    return _MODELS[key]


# --------------------------------------------------------------------------
# one chunk: what a worker does
# --------------------------------------------------------------------------
def explain_chunk(job: dict, part) -> dict[str, np.ndarray]:
    """Explain and score one chunk of images (a module-level function: Dask ships it to
    its workers).  Returns {dataset name in the file: array}."""
    from ..core.device import set_num_threads
    t0 = time.perf_counter()
    set_num_threads(job["threads"])                  # Numba + BLAS threads of this worker
    model = worker_model(job["model_path"], job["model_sha256"])
    data = part.load(model)
    x, idx, o = data["x"], np.asarray(data["indices"], np.int64), job["options"]
    pred = predict(model, x, job["batch_size"])[1].argmax(1)
    targets = data["labels"] if o["target"] == "truth" else pred
    fns = B.map_functions(smoothgrad_samples=o["smoothgrad_samples"], occlusion_patch=o["occlusion_patch"],
                          occlusion_stride=o["occlusion_stride"], cam_layer=o["cam_layer"])
    maps, scores, seconds = B.score_batch(
        model, x, targets, idx, job["methods"], fns, pictures=data["pictures"], masks=data.get("masks"),
        boxes=data.get("boxes"), metrics=job["metrics"], steps=o["steps"], blur_sigma=o["blur_sigma"],
        seed=job["seed"], batch_size=job["batch_size"])
    out = {"indices": idx, "predicted": pred.astype(np.int64), "targets": np.asarray(targets, np.int64)}
    if data.get("masks") is not None:
        from .metrics import hard_scenes
        out["hard"] = hard_scenes(data["pictures"], data["masks"]).astype(np.uint8)
    for m in job["methods"]:
        if job["maps"]:
            out[f"maps/{m}"] = maps[m].astype(job["map_dtype"])
        for k, v in scores[m].items():
            out[f"scores/{m}/{k}"] = np.asarray(v, np.float64)
        out[f"seconds/{m}"] = np.float64(seconds[m])
    out["seconds/all"] = np.float64(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------
def _create(path: Path, manifest: dict, layout: dict[str, tuple[tuple, str, tuple | None]], chunks: int) -> None:
    """Write the file with every dataset allocated (early allocation) through
    ``safe_io.atomic_write``: a temporary file renamed into place, so the file exists
    complete or not at all."""
    import h5py

    from ..core.safe_io import atomic_write
    with atomic_write(path) as fobj, h5py.File(fobj, "w") as f:
        f.attrs["manifest"] = json.dumps(manifest, sort_keys=True)
        for name, (shape, dtype, chunk) in {"done": ((chunks,), "uint8", None), **layout}.items():
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            if chunk is not None:
                dcpl.set_chunk(chunk)
            f.create_dataset(name, shape, dtype=dtype, dcpl=dcpl)


def read_manifest(path: str | os.PathLike) -> dict:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["manifest"])
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"{path}: not a dataset job's file ({e})") from None


def _identity(manifest: dict) -> dict:
    """What the results depend on (not how they were computed: batch size, workers)."""
    return {k: v for k, v in manifest.items() if k != "run"}


def _check_resume(path: Path, manifest: dict) -> None:
    old = _identity(read_manifest(path))
    new = _identity(json.loads(json.dumps(manifest, sort_keys=True)))
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = "; ".join(f"{k}: file {json.dumps(old.get(k))[:80]} vs job {json.dumps(new.get(k))[:80]}"
                           for k in keys)
        raise DatasetError(f"{path}: written by a different job ({detail}); choose another file, or pass "
                           "overwrite=True (--overwrite) to replace it")


def _open_out(out: Path, manifest: dict, layout: dict, chunks: int, overwrite: bool) -> Path:
    """``out`` ready for the job: created (every dataset allocated), or checked to hold the
    same job (to resume), or -- only with ``overwrite`` -- replaced."""
    if out.exists() and overwrite:
        out.unlink()
    if out.exists():
        _check_resume(out, manifest)
    else:
        _create(out, manifest, layout, chunks)
    return out


def _write_chunk(f, sl: slice, chunk: int, result: dict) -> None:
    """A chunk's data, flushed, then its done mark, flushed: a chunk counts only whole."""
    for name, v in result.items():
        if name.startswith("seconds/"):
            f[name][chunk] = v
        else:
            f[name][sl] = v
    f.flush()
    _mark_done(f, chunk)


def _mark_done(f, chunk: int) -> None:
    f["done"][chunk] = 1
    f.flush()


# --------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------
def _client(scheduler, workers: int):
    """(Dask client, local cluster or None): ``scheduler`` None starts a local cluster of
    ``workers`` processes with one thread each; an address ("tcp://host:8786") connects."""
    import logging
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise DatasetError("Dask distributed is not installed: pip install 'tinygrad-explain[distributed]', or "
                           "run in this process (scheduler=None, --workers 0)") from None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="20s"), None
    except OSError as e:
        raise DatasetError(f"no Dask scheduler at {scheduler} ({e})") from None


def run_dataset(model, images, methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] | None = None,
                out: str | os.PathLike = "explanations.h5", *, labels=None, target: str = "truth",
                batch_size: int | None = None, chunk_size: int = 50, seed: int = 0, steps: int = 8,
                blur_sigma: float | None = None, smoothgrad_samples: int = 25, occlusion_patch: int = 10,
                occlusion_stride: int = 6, cam_layer: str | None = None, maps: bool = True,
                map_dtype: str = "float32", scheduler: str | None = "local", workers: int | None = None,
                threads: int | None = None, overwrite: bool = False, progress: bool = True,
                on_chunk: Callable[[int, int], None] | None = None) -> Path:
    """Explain every image of ``images`` with ``methods``, score the maps with ``metrics``
    and write both to ``out`` (HDF5), chunk by chunk; returns the file's path.

    model      a model file: path, shipped name or None (the embedded model)
    images     Scenes(split, start, stop), a folder, a list of image files or an array
               (``as_source``); ``labels`` the classes of files / arrays (else ``target``
               must be "predicted")
    methods    names of ``te.explain.benchmark.METHODS``; metrics: of ``benchmark.METRICS``
               (default: all for scenes, deletion and insertion for the others)
    batch_size images per pass of the explainers (default memory-bounded); chunk_size
               images per chunk (the unit of work, of writing and of resuming)
    seed       the job's seed; image i's draws are seeded from (seed, i)
    scheduler  "local" (default): a Dask cluster of ``workers`` processes started for the
               job; "tcp://host:port": an existing Dask scheduler; None: in this process
    workers    local workers (default: the cores, at most one per chunk); threads: Numba /
               BLAS threads per worker (default: cores // workers on a local cluster, else 1)
    maps       also store the maps (map_dtype, float32 by default; float64 for bit-equality)
    overwrite  replace ``out`` if it holds another job's results (never without)
    on_chunk   called as on_chunk(chunk, images done) after each chunk is committed

    An ``out`` with the same manifest resumes: finished chunks are kept, the others run.
    """
    import h5py

    from ..version import __version__
    source = as_source(images, labels)
    N = len(source)
    if N == 0:
        raise DatasetError("no images to explain")
    unknown = [m for m in methods if m not in B.METHODS]
    if unknown or not methods:
        raise DatasetError(f"unknown methods {unknown}; choose from {', '.join(B.METHODS)}")
    truth = isinstance(source, Scenes)
    metrics = tuple(B.METRICS if truth else ("deletion_auc", "insertion_auc")) if metrics is None else \
        tuple(metrics)
    bad = [m for m in metrics if m not in B.METRICS or (m in B.GROUND_TRUTH and not truth)]
    if bad:
        raise DatasetError(f"metrics {bad} not available for {source.describe()['kind']}; choose from "
                           f"{', '.join(B.METRICS if truth else ('deletion_auc', 'insertion_auc'))}")
    if target not in ("truth", "predicted"):
        raise DatasetError(f"target must be 'truth' or 'predicted', got {target!r}")
    if target == "truth" and not truth and getattr(source, "labels", None) is None:
        raise DatasetError("target='truth' needs labels for files or arrays; pass labels= or target='predicted'")
    if chunk_size < 1:
        raise DatasetError(f"chunk_size must be >= 1, got {chunk_size}")
    path_model = model_file(model)
    from ..modelfiles.modelfile import load_model
    net = load_model(path_model)
    C, H, W = net.input_shape
    options = {"target": target, "steps": int(steps), "blur_sigma": float(min(H, W) / 8 if blur_sigma is None
                                                                        else blur_sigma),
               "smoothgrad_samples": int(smoothgrad_samples), "occlusion_patch": int(occlusion_patch),
               "occlusion_stride": int(occlusion_stride), "cam_layer": cam_layer, "maps": bool(maps),
               "map_dtype": str(np.dtype(map_dtype))}
    manifest = {"format": FORMAT, "model": {"file": str(path_model), "sha256": sha256_file(path_model)},
                "methods": list(methods), "metrics": list(metrics), "options": options,
                "source": source.describe(), "n": N, "chunk_size": int(chunk_size), "seed": int(seed),
                "library": {"tinygrad_explain": __version__, "numpy": np.__version__, "h5py": h5py.__version__},
                "run": {"batch_size": batch_size, "scheduler": scheduler, "workers": workers}}
    chunks = [slice(s, min(N, s + chunk_size)) for s in range(0, N, chunk_size)]
    layout = {"indices": ((N,), "int64", None), "predicted": ((N,), "int64", None),
              "targets": ((N,), "int64", None)}
    if truth:
        layout["hard"] = ((N,), "uint8", None)
    for m in methods:
        if maps:
            layout[f"maps/{m}"] = ((N, H, W), options["map_dtype"], (min(chunk_size, N), H, W))
        layout.update({f"scores/{m}/{k}": ((N,), "float64", None) for k in metrics})
        layout[f"seconds/{m}"] = ((len(chunks),), "float64", None)
    layout["seconds/all"] = ((len(chunks),), "float64", None)
    out = _open_out(Path(out), manifest, layout, len(chunks), overwrite)
    job = {"model_path": str(path_model), "model_sha256": manifest["model"]["sha256"],
           "methods": list(methods), "metrics": list(metrics), "options": options, "seed": int(seed),
           "batch_size": batch_size, "maps": bool(maps), "map_dtype": options["map_dtype"], "threads": threads}
    return _execute(out, chunks, source, explain_chunk, job, scheduler, workers, progress, on_chunk, "explain")


def _execute(out: Path, chunks: list[slice], source, task: Callable, job: dict, scheduler, workers, progress: bool,
             on_chunk, what: str) -> Path:
    """Run ``task(job, part)`` for every chunk not yet done in ``out`` -- here, or on Dask
    workers -- and commit each result as it arrives (``_write_chunk``)."""
    import h5py
    from tqdm.auto import tqdm
    cores = os.cpu_count() or 1
    N = chunks[-1].stop
    with h5py.File(out, "r+") as f:
        done = f["done"][:].astype(bool)
        todo = [c for c in range(len(chunks)) if not done[c]]
        local_workers = max(1, min(cores if workers is None else int(workers), max(1, len(todo))))
        threads = job.get("threads")
        job = dict(job, threads=int(threads) if threads else (max(1, cores // local_workers)
                                                              if scheduler == "local" else 1))
        bar = tqdm(total=N, initial=sum(chunks[c].stop - chunks[c].start for c in range(len(chunks)) if done[c]),
                   desc=f"{what} -> {out.name}", unit="img", disable=not progress, smoothing=0.1)
        try:
            if todo and scheduler is None:
                for c in todo:
                    _write_chunk(f, chunks[c], c, task(job, source.part(chunks[c].start, chunks[c].stop)))
                    bar.update(chunks[c].stop - chunks[c].start)
                    if on_chunk is not None:
                        on_chunk(c, bar.n)
            elif todo:
                from dask.distributed import as_completed
                client, cluster = _client(None if scheduler == "local" else scheduler, local_workers)
                try:
                    token = job["model_sha256"][:8] + f"-{time.time_ns()}"
                    futures = {client.submit(task, job, source.part(chunks[c].start, chunks[c].stop),
                                             key=f"{what}-chunk-{token}-{c}", retries=3): c for c in todo}
                    for fut in as_completed(futures):
                        c = futures.pop(fut)
                        _write_chunk(f, chunks[c], c, fut.result())
                        bar.update(chunks[c].stop - chunks[c].start)
                        del fut
                        if on_chunk is not None:
                            on_chunk(c, bar.n)
                finally:
                    client.close()
                    if cluster is not None:
                        cluster.close()
        finally:
            bar.close()
    return out


# --------------------------------------------------------------------------
# the sanity checks (Adebayo et al. 2018) as a dataset job
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _WithNext:
    """A source whose chunk also loads the image after it (the first after the last): the
    sanity checks' "other_scene" floor compares each image with the next one."""
    source: object

    def __len__(self) -> int:
        return len(self.source)

    def part(self, a: int, b: int):
        n = len(self.source)
        return self.source.part(a, b), self.source.part(b % n, b % n + 1)


def sanity_chunk(job: dict, parts) -> dict[str, np.ndarray]:
    """The sanity checks of one chunk: {"sanity/<test>/<step>/<method>/<measure>": (n,)}."""
    from ..core.device import set_num_threads
    from . import sanity as S
    set_num_threads(job["threads"])
    model = worker_model(job["model_path"], job["model_sha256"])
    twin = worker_model(job["twin_path"], job["twin_sha256"]) if job["twin_path"] else None
    part, following = parts
    data, nxt = part.load(model), following.load(model)
    x, idx, t = data["x"], np.asarray(data["indices"], np.int64), data["labels"]
    tests = [k for k in job["tests"] if k != "other_scene"]
    res = S.run(model, x, t, job["methods"], tests, twin=twin, seed=job["seed"], indices=idx)
    if "other_scene" in job["tests"]:
        ref = S.explain(model, x, t, job["methods"], idx)
        after = S.explain(model, nxt["x"], nxt["labels"], job["methods"], nxt["indices"])
        S.compare(ref, {m: tuple(np.concatenate([ref[m][k][1:], after[m][k]]) for k in (0, 1)) for m in ref},
                  res, "other_scene", "next scene")
    return {f"sanity/{test}/{step}/{m}/{k}": np.asarray(v, np.float64)
            for test, steps in res.scores.items() for step, ms in steps.items() for m, ks in ms.items()
            for k, v in ks.items()}


def run_sanity(model, images, methods: Sequence[str] | None = None, tests: Sequence[str] | None = None,
               out: str | os.PathLike = "sanity.h5", *, twin="random_labels", seed: int = 0, chunk_size: int = 25,
               scheduler: str | None = "local", workers: int | None = None, threads: int | None = None,
               overwrite: bool = False, progress: bool = True,
               on_chunk: Callable[[int, int], None] | None = None) -> Path:
    """Adebayo et al.'s sanity checks (``te.explain.sanity.run``) over a data set, by the
    dataset job's path: chunks on Dask workers (or here, ``scheduler=None``), written to
    ``out`` as they finish, resumable, the same numbers on any number of workers.
    ``images`` need labels (the true class is explained): Scenes, or files / an array
    with ``labels``.  ``twin``: the model trained on permuted labels (the "data" test).
    Read back with :func:`load_sanity` (a ``SanityResult``)."""
    import h5py

    from ..version import __version__
    from . import sanity as S
    source = as_source(images)
    if getattr(source, "labels", None) is None and not isinstance(source, Scenes):
        raise DatasetError("the sanity checks explain the true class: give Scenes, or files / an array with labels")
    methods = tuple(S.METHODS if methods is None else methods)
    tests = tuple(S.TESTS if tests is None else tests)
    bad = [m for m in methods if m not in S.METHODS] + [t for t in tests if t not in S.TESTS]
    if bad:
        raise DatasetError(f"unknown methods or tests {bad}; methods: {', '.join(S.METHODS)}; tests: "
                           f"{', '.join(S.TESTS)}")
    N = len(source)
    path_model = model_file(model)
    twin_path = model_file(twin) if "data" in tests else None
    from ..modelfiles.modelfile import load_model
    loaded = load_model(path_model)
    if twin_path is not None and not S.twin_fits(loaded, load_model(twin_path)):
        raise DatasetError(f"the data test's twin {twin_path} has another architecture than the model "
                           f"{path_model}: it must be the same network trained on permuted labels")
    names = S.weight_layers(loaded)[::-1]
    steps = {"cascade": names, "independent": names, "data": ["random_labels"], "other_scene": ["next scene"]}
    manifest = {"format": FORMAT + " (sanity checks)", "model": {"file": str(path_model),
                                                                  "sha256": sha256_file(path_model)},
                "twin": None if twin_path is None else {"file": str(twin_path), "sha256": sha256_file(twin_path)},
                "methods": list(methods), "tests": list(tests), "source": source.describe(), "n": N,
                "chunk_size": int(chunk_size), "seed": int(seed),
                "library": {"tinygrad_explain": __version__, "numpy": np.__version__, "h5py": h5py.__version__},
                "run": {"scheduler": scheduler, "workers": workers}}
    chunks = [slice(s, min(N, s + chunk_size)) for s in range(0, N, chunk_size)]
    layout = {f"sanity/{t}/{st}/{m}/{k}": ((N,), "float64", None) for t in tests for st in steps[t] for m in methods
              for k in S.MEASURES}
    out = _open_out(Path(out), manifest, layout, len(chunks), overwrite)
    job = {"model_path": str(path_model), "model_sha256": manifest["model"]["sha256"],
           "twin_path": None if twin_path is None else str(twin_path),
           "twin_sha256": None if twin_path is None else manifest["twin"]["sha256"],
           "methods": list(methods), "tests": list(tests), "seed": int(seed), "threads": threads}
    return _execute(out, chunks, _WithNext(source), sanity_chunk, job, scheduler, workers, progress, on_chunk,
                    "sanity")


def load_sanity(path: str | os.PathLike):
    """A finished sanity job's file as a ``te.explain.sanity.SanityResult``."""
    import h5py

    from .sanity import SanityResult
    man = read_manifest(path)
    res = SanityResult(methods=tuple(man["methods"]), images=man["n"])
    with h5py.File(path, "r") as f:
        if not f["done"][:].all():
            raise DatasetError(f"{path}: the sanity job is not finished; run it again to resume it")

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith("sanity/"):
                _, test, step, m, k = name.split("/")
                res.scores.setdefault(test, {}).setdefault(step, {}).setdefault(m, {})[k] = list(obj[:])
        f.visititems(visit)
    return res


# --------------------------------------------------------------------------
# reading a job's results
# --------------------------------------------------------------------------
def load(path: str | os.PathLike, partial: bool = False) -> dict:
    """A job's scores as ``te.explain.benchmark.evaluate`` returns them ({"methods": {m:
    {metric: (N,), "seconds"}}, "hard", "predicted", "targets", "indices", "tolerance",
    "steps", "blur_sigma"}, plus "manifest" and "done"); an unfinished job raises unless
    ``partial`` (then only its finished chunks)."""
    import h5py

    from .metrics import pointing_tolerance
    man = read_manifest(path)
    with h5py.File(path, "r") as f:
        done = f["done"][:].astype(bool)
        if not done.all() and not partial:
            raise DatasetError(f"{path}: {int((~done).sum())} of {len(done)} chunks not finished; run the job "
                               "again to resume it, or load(partial=True)")
        cs, N = man["chunk_size"], man["n"]
        keep = np.zeros(N, bool)
        for c in np.flatnonzero(done):
            keep[c * cs:min(N, (c + 1) * cs)] = True
        res = {k: f[k][:][keep] for k in ("indices", "predicted", "targets")}
        res["hard"] = f["hard"][:][keep].astype(bool) if "hard" in f else np.zeros(int(keep.sum()), bool)
        res["methods"] = {m: {**{k: f[f"scores/{m}/{k}"][:][keep] for k in man["metrics"]},
                              "seconds": float(f[f"seconds/{m}"][:][done].sum())} for m in man["methods"]}
        if "seconds/all" in f:
            res["chunk_seconds"] = f["seconds/all"][:][done]
        any_map = next((f"maps/{m}" for m in man["methods"] if f"maps/{m}" in f), None)
        side = min(f[any_map].shape[1:]) if any_map else None
    o = man["options"]
    res.update(manifest=man, done=done, steps=o["steps"], blur_sigma=o["blur_sigma"],
               tolerance=pointing_tolerance(side) if side else pointing_tolerance(int(2 * 4 * o["blur_sigma"])))
    return res


def load_maps(path: str | os.PathLike, method: str, index: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Maps of ``method`` (N, H, W) from a job's file (a slice or index array of images)."""
    import h5py
    with h5py.File(path, "r") as f:
        if f"maps/{method}" not in f:
            raise DatasetError(f"{path}: no maps of {method!r} (run with maps=True)")
        return f[f"maps/{method}"][index]


# --------------------------------------------------------------------------
# command line (``tinygrad-explain dataset ...``)
# --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """The dataset job from the command line; returns the exit status."""
    ap = argparse.ArgumentParser(prog="tinygrad-explain dataset", description=(
        "Explain every image of a data set with several methods, score the maps, write maps and scores "
        "to an HDF5 file chunk by chunk (resumable; on Dask workers).  See docs/dataset.md."))
    ap.add_argument("out", help="the HDF5 file to write (an existing one from the same job is resumed)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenes", choices=("test", "train"), help="the Fashion-MNIST scenes of this split")
    src.add_argument("--folder", help="every image file in this folder")
    src.add_argument("--files", nargs="+", help="these image files")
    ap.add_argument("--first", type=int, default=0, help="--scenes: the first scene (default 0)")
    ap.add_argument("--limit", type=int, help="--scenes: this many scenes (default: to the end)")
    ap.add_argument("--methods", nargs="+", choices=B.METHODS, default=list(DEFAULT_METHODS))
    ap.add_argument("--metrics", nargs="+", choices=B.METRICS, help="default: all that the images allow")
    ap.add_argument("--weights", help="model file (default: the embedded model)")
    ap.add_argument("--target", choices=("truth", "predicted"), help="default: truth for scenes, else predicted")
    ap.add_argument("--batch-size", type=int, help="images per explainer pass (default: memory-bounded)")
    ap.add_argument("--chunk-size", type=int, default=50, help="images per chunk (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-maps", action="store_true", help="store the scores only")
    ap.add_argument("--scheduler", help="a Dask scheduler's address (tcp://host:8786); default: a local cluster")
    ap.add_argument("--workers", type=int, help="local workers (default: the cores); 0 = in this process")
    ap.add_argument("--threads", type=int, help="Numba/BLAS threads per worker (default: cores / workers)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it holds another job's results")
    args = ap.parse_args(argv)
    try:
        if args.scenes:
            stop = None if args.limit is None else args.first + args.limit
            images = Scenes(args.scenes, args.first, stop)
        else:
            images = as_source(args.folder if args.folder else args.files)
        target = args.target or ("truth" if args.scenes else "predicted")
        scheduler = args.scheduler or (None if args.workers == 0 else "local")
        path = run_dataset(args.weights, images, args.methods, args.metrics, args.out, target=target,
                           batch_size=args.batch_size, chunk_size=args.chunk_size, seed=args.seed,
                           maps=not args.no_maps, scheduler=scheduler, workers=args.workers or None,
                           threads=args.threads, overwrite=args.overwrite)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = load(path)
    print(f"wrote {path}: {len(res['indices'])} images")
    if res["methods"] and isinstance(images, Scenes):
        print(B.format_table(B.summarize(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
