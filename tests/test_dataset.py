"""The dataset job (te.explain.dataset): results identical to the in-memory benchmark,
resumable after a kill (finished chunks kept, a half-written chunk never counted),
refusing another job's file, and the same numbers on a Dask cluster of two worker
processes started here with Dask's own commands -- one of them killed mid-job."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.data import scenes
from tinygrad_explain.explain import benchmark as B
from tinygrad_explain.explain import dataset as D

ROOT = Path(__file__).resolve().parent.parent
CHEAP = ("saliency", "gradcam", "smoothgrad", "random")
OPTS = dict(smoothgrad_samples=2, steps=2)


def need_test_scenes():
    try:
        scenes.SceneDataset("test")
    except (FileNotFoundError, OSError, ValueError) as e:
        pytest.skip(f"the Fashion-MNIST test split is not installed ({e})")


@pytest.fixture(scope="module")
def sample():
    d = scenes.load_sample()
    return {k: v[:6] for k, v in d.items() if k != "seed"}


def scores(res):
    return {(m, k): v for m, r in res["methods"].items() for k, v in r.items() if k != "seconds"}


def assert_same_results(a, b):
    sa, sb = scores(a), scores(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    for k in ("indices", "predicted", "targets", "hard"):
        assert np.array_equal(a[k], b[k]), k


def test_array_job_equals_the_in_memory_api(tmp_path, sample):
    """Pictures in an array, one label each: every score and (float64) map equal to the
    in-memory benchmark's, whatever the chunking."""
    model = te.load_model()
    out = D.run_dataset(None, sample["images"], CHEAP, out=tmp_path / "a.h5", labels=sample["labels"],
                        chunk_size=4, scheduler=None, map_dtype="float64", progress=False, seed=3, **OPTS)
    res = D.load(out)
    ref = B.evaluate(model, sample["images"], sample["masks"], sample["boxes"], sample["labels"], CHEAP,
                     batch_size=5, seed=3, progress=False, steps=2, smoothgrad_samples=2)
    for m in CHEAP:
        for k in ("deletion_auc", "insertion_auc"):
            assert np.array_equal(res["methods"][m][k], ref["methods"][m][k]), (m, k)
    x = np.concatenate([te.image.load(im, model) for im in sample["images"]])
    fns = B.map_functions(smoothgrad_samples=2)
    for m in CHEAP:
        assert np.array_equal(D.load_maps(out, m), fns[m](model, x, sample["labels"].astype(np.int64),
                                                          np.arange(6), 3)), m
    assert np.array_equal(res["targets"], sample["labels"])
    man = res["manifest"]
    assert man["model"]["sha256"] == D.sha256_file(D.model_file(None)) and man["seed"] == 3
    assert man["methods"] == list(CHEAP) and man["library"]["tinygrad_explain"] == te.__version__


def test_half_written_chunk_never_counts_and_resume_keeps_finished_chunks(tmp_path, sample, monkeypatch):
    kw = dict(methods=("saliency", "random"), labels=sample["labels"], chunk_size=2, scheduler=None,
              progress=False, **OPTS)
    full = D.load(D.run_dataset(None, sample["images"], out=tmp_path / "full.h5", **kw))
    real_mark = D._mark_done

    def crash_at_chunk_1(f, chunk):          # the process dies after chunk 1's data, before its mark
        if chunk == 1:
            raise KeyboardInterrupt("killed")
        real_mark(f, chunk)
    monkeypatch.setattr(D, "_mark_done", crash_at_chunk_1)
    out = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        D.run_dataset(None, sample["images"], out=out, **kw)
    with h5py.File(out, "r") as f:
        assert list(f["done"][:]) == [1, 0, 0]
    with pytest.raises(D.DatasetError, match="2 of 3 chunks not finished"):
        D.load(out)
    monkeypatch.setattr(D, "_mark_done", real_mark)
    ran = []
    real_chunk = D.explain_chunk
    monkeypatch.setattr(D, "explain_chunk", lambda job, part: ran.append(part.offset) or real_chunk(job, part))
    D.run_dataset(None, sample["images"], out=out, **kw)
    assert ran == [2, 4]                      # chunk 0 kept, chunk 1 (never marked) done again
    assert_same_results(D.load(out), full)


def test_resume_after_killing_the_process(tmp_path, sample):
    """A subprocess runs the job and is killed (SIGKILL) after its second chunk; the
    resumed job gives what an uninterrupted one gives."""
    images = tmp_path / "images.npy"
    np.save(images, sample["images"])
    out = tmp_path / "killed.h5"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from tinygrad_explain.explain import dataset as D
        def tell(c, n):
            print("chunk", c, flush=True)
        D.run_dataset(None, np.load({str(images)!r}), ("saliency", "gradcam"), out={str(out)!r},
                      target="predicted", chunk_size=1, scheduler=None, progress=False, steps=2, on_chunk=tell)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = [p.stdout.readline() for _ in range(2)]
        assert lines == ["chunk 0\n", "chunk 1\n"]
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with h5py.File(out, "r") as f:
        done = f["done"][:]
    assert done[:2].all() and not done.all()
    kw = dict(methods=("saliency", "gradcam"), target="predicted", chunk_size=1, scheduler=None, progress=False,
              steps=2)
    resumed = D.load(D.run_dataset(None, np.load(images), out=out, **kw))
    assert_same_results(resumed, D.load(D.run_dataset(None, np.load(images), out=tmp_path / "whole.h5", **kw)))


def test_refuses_another_jobs_file_and_never_overwrites_unasked(tmp_path, sample):
    kw = dict(labels=sample["labels"][:2], scheduler=None, progress=False, **OPTS)
    out = D.run_dataset(None, sample["images"][:2], ("saliency",), out=tmp_path / "j.h5", **kw)
    before = out.read_bytes()
    with pytest.raises(D.DatasetError, match=r"j.h5: written by a different job \(methods: "):
        D.run_dataset(None, sample["images"][:2], ("gradcam",), out=out, **kw)
    with pytest.raises(D.DatasetError, match="seed: file 0 vs job 1"):
        D.run_dataset(None, sample["images"][:2], ("saliency",), out=out, seed=1, **kw)
    assert out.read_bytes() == before
    D.run_dataset(None, sample["images"][:2], ("gradcam",), out=out, overwrite=True, **kw)
    assert D.load(out)["manifest"]["methods"] == ["gradcam"]
    other = tmp_path / "notes.h5"
    other.write_text("my notes")
    with pytest.raises(D.DatasetError, match="notes.h5: not a dataset job's file"):
        D.run_dataset(None, sample["images"][:2], ("saliency",), out=other, **kw)
    assert other.read_text() == "my notes"


def test_bad_inputs_are_one_line_errors(tmp_path, sample):
    with pytest.raises(D.DatasetError, match="nothing.png: no such image file"):
        D.run_dataset(None, [str(tmp_path / "nothing.png")], out=tmp_path / "x.h5", scheduler=None)
    with pytest.raises(D.DatasetError, match="needs labels"):
        D.run_dataset(None, sample["images"], out=tmp_path / "x.h5", scheduler=None)
    with pytest.raises(D.DatasetError, match=r"metrics \['pointing'\] not available for array"):
        D.run_dataset(None, sample["images"], metrics=("pointing",), target="predicted", out=tmp_path / "x.h5")
    with pytest.raises(D.DatasetError, match="no-such.h5: no such model file"):
        D.run_dataset(tmp_path / "no-such.h5", sample["images"], target="predicted", out=tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
    assert D.main([str(tmp_path / "y.h5"), "--folder", str(tmp_path / "none")]) == 2


def test_folder_of_files_through_the_command_line(tmp_path, sample, capsys):
    import cv2
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, im in enumerate(sample["images"][:3]):
        cv2.imwrite(str(folder / f"{i}.png"), im[:, :, ::-1])
    assert D.main([str(tmp_path / "f.h5"), "--folder", str(folder), "--methods", "saliency", "--workers", "0"]) == 0
    res = D.load(tmp_path / "f.h5")
    model = te.load_model()
    assert np.array_equal(res["predicted"], te.explain.predict(model, np.concatenate(
        [te.image.load(im, model) for im in sample["images"][:3]]))[1].argmax(1))
    assert "wrote" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dask_cluster_of_two_workers_one_killed(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1; a 40-scene job through
    them equals the in-process job, though one worker is killed after the first chunk:
    every scene is written once."""
    need_test_scenes()
    pytest.importorskip("distributed")
    dask = Path(sys.executable).with_name("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    try:
        procs.append(subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], env=env, stderr=subprocess.DEVNULL))
        for name in ("w1", "w2"):
            procs.append(subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--no-nanny",
                                           "--no-dashboard", "--name", name], env=env, stderr=subprocess.DEVNULL))
        from dask.distributed import Client
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        kw = dict(methods=("saliency", "gradcam", "random"), metrics=("pointing", "mask_iou", "deletion_auc"),
                  chunk_size=4, steps=2, progress=False)
        seen = []

        def kill_one(chunk, n):
            seen.append(chunk)
            if len(seen) == 1:
                procs[1].kill()                # worker w1 dies mid-job
        out = D.run_dataset(None, D.Scenes("test", 0, 40), out=tmp_path / "dist.h5", scheduler=address,
                            on_chunk=kill_one, **kw)
        assert procs[1].poll() is not None and sorted(seen) == list(range(10))
        res = D.load(out)
        assert np.array_equal(res["indices"], np.arange(40))
        local = D.load(D.run_dataset(None, D.Scenes("test", 0, 40), out=tmp_path / "here.h5", scheduler=None, **kw))
        assert_same_results(res, local)
        for m in kw["methods"]:
            assert np.array_equal(D.load_maps(out, m), D.load_maps(tmp_path / "here.h5", m))
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                p.terminate()
        for p in procs[::-1]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_same_seed_same_numbers_on_one_and_two_local_workers(tmp_path, sample):
    """The default local cluster (2 worker processes) gives the in-process numbers."""
    pytest.importorskip("distributed")
    kw = dict(methods=("smoothgrad", "random"), labels=sample["labels"], chunk_size=2, progress=False, seed=5, **OPTS)
    a = D.load(D.run_dataset(None, sample["images"], out=tmp_path / "one.h5", scheduler=None, **kw))
    b = D.load(D.run_dataset(None, sample["images"], out=tmp_path / "two.h5", workers=2, **kw))
    assert_same_results(a, b)
    assert not np.array_equal(a["methods"]["random"]["deletion_auc"],
                              D.load(D.run_dataset(None, sample["images"], out=tmp_path / "s6.h5", scheduler=None,
                                                   **dict(kw, seed=6)))["methods"]["random"]["deletion_auc"])


def test_sanity_checks_by_the_dataset_path_equal_one_in_memory_run(tmp_path, sample):
    """The sanity job's chunks (here 2 + 2 + 1 images) give the numbers of one sanity.run
    over all images -- the "other scene" floor included, which pairs each image with the
    next across chunk boundaries (the last with the first)."""
    from tinygrad_explain.explain import sanity
    model = te.load_model()
    images, labels = sample["images"][:5], sample["labels"][:5].astype(np.int64)
    kw = dict(methods=("saliency", "gradcam"), tests=("independent", "other_scene"))
    out = D.run_sanity(None, D.Array(images, labels), out=tmp_path / "s.h5", chunk_size=2, scheduler=None,
                       progress=False, seed=1, **kw)
    got = D.load_sanity(out).summary()
    x = np.concatenate([te.image.load(im, model) for im in images])
    ref = sanity.run(model, x, labels, seed=1, indices=np.arange(5), **kw).summary()
    assert got == ref
    assert got["other_scene"]["next scene"]["gradcam"]["spearman"]["n"] == 5
