"""The one safe writer (tinygrad_explain/core/safe_io.py) and that every write uses it."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from _reference import tiny_network

import tinygrad_explain as te
from tinygrad_explain.core import safe_io
from tinygrad_explain.core.safe_io import OutputPathError, atomic_write, check_output, write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_writes_and_replaces(tmp_path, umask022):
    p = tmp_path / "a.txt"
    write_text(p, "one")
    assert p.read_text() == "one" and stat.S_IMODE(p.stat().st_mode) == 0o644     # umask honoured, not 0600
    os.chmod(p, 0o600)
    write_text(p, "two")
    assert p.read_text() == "two" and stat.S_IMODE(p.stat().st_mode) == 0o600     # a replaced file keeps its mode
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_other_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"new half")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["m.bin"]
    with pytest.raises(KeyboardInterrupt):          # Ctrl-C too
        with atomic_write(tmp_path / "n.bin") as f:
            raise KeyboardInterrupt
    assert [q.name for q in tmp_path.iterdir()] == ["m.bin"]


def test_planted_symlinks_are_not_followed(tmp_path):
    """A symlink at the old fixed temporary name (<out>.tmp) or at any name a
    writer might use must not redirect the write to the file it points at."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("out.h5.tmp", ".out.h5.tmp", "tmp_out.h5"):
        (tmp_path / name).symlink_to(victim)
    te.save_model(tiny_network(seed=1), tmp_path / "out.h5")
    assert victim.read_text() == "precious"
    assert te.load_model(tmp_path / "out.h5").num_classes == 3
    # the output itself a symlink: the link is replaced, its target never written through
    (tmp_path / "link.txt").symlink_to(victim)
    write_text(tmp_path / "link.txt", "new")
    assert victim.read_text() == "precious" and (tmp_path / "link.txt").read_text() == "new"
    assert not (tmp_path / "link.txt").is_symlink()


def test_temporary_name_is_unpredictable(tmp_path, monkeypatch):
    names = []
    real = safe_io.tempfile.mkstemp

    def spy(*a, **k):
        fd, name = real(*a, **k)
        names.append(Path(name).name)
        return fd, name
    monkeypatch.setattr(safe_io.tempfile, "mkstemp", spy)
    write_text(tmp_path / "a", "1")
    write_text(tmp_path / "a", "2")
    assert len(set(names)) == 2 and all(n.startswith(".a.") and len(n) > len(".a..tmp") + 5 for n in names)


def test_refuses_directory_missing_folder_and_input(tmp_path):
    with pytest.raises(OutputPathError, match="is a directory"):
        write_text(tmp_path, "x")
    with pytest.raises(OutputPathError, match="does not exist"):
        write_text(tmp_path / "no" / "a.txt", "x")
    src = tmp_path / "in.bin"
    src.write_bytes(b"input")
    with pytest.raises(OutputPathError, match="is the input file"):
        check_output(src, inputs=[src])
    (tmp_path / "alias").symlink_to(src)
    with pytest.raises(OutputPathError, match="is the input file"):
        check_output(tmp_path / "alias", inputs=[src])
    os.link(src, tmp_path / "hard")
    with pytest.raises(OutputPathError, match="is the input file"):
        check_output(tmp_path / "hard", inputs=[src])
    assert src.read_bytes() == b"input"


def test_save_model_to_a_directory(tmp_path):
    with pytest.raises(OutputPathError, match="is a directory"):
        te.save_model(tiny_network(seed=1), tmp_path)


def test_converter_refuses_its_input_as_output(tmp_path, capsys):
    from tinygrad_explain.modelfiles.convert import cli
    pth = tmp_path / "a.pth"
    pth.write_bytes(b"PK\x03\x04 not really a checkpoint, but it must survive")
    before = pth.read_bytes()
    assert cli("torchvision", "x\nconvert", [str(pth), str(pth)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert pth.read_bytes() == before
    assert cli("caffe", "x\nconvert", [str(pth), str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_failed_conversion_leaves_no_temporary(tmp_path, monkeypatch):
    """A conversion that fails while writing (here: the disk 'fills up') leaves neither output nor temporary."""
    from tinygrad_explain.modelfiles import convert, modelfile
    m = te.models.alexnet("caffe", num_classes=4)
    state = {k: v.copy() for k, v in m.state_dict().items()}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    real = modelfile.save_model

    def failing_save(model, path, **kw):
        import h5py
        monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
        return real(model, path, **kw)
    monkeypatch.setattr(modelfile, "save_model", failing_save)
    with pytest.raises(OSError, match="No space"):
        convert._build_and_save("caffe", state, tmp_path / "out.h5", convert.CAFFE_PREPROCESSING,
                                [f"c{i}" for i in range(4)], "test")
    assert list(tmp_path.iterdir()) == []


# Direct writes that bypass atomic_write.  Exempt: safe_io itself, scratch files in
# private temporary folders (not outputs), /proc control files.
_WRITE = re.compile(r"""\.write_(text|bytes)\(|open\([^)]*['"][wax]b?\+?['"]|np\.save(z|z_compressed)?\((?!\s*f\b)"""
                    r"""|h5py\.File\([^)]*['"][wax]-?['"]|\.save\((?!\s*f\b)[^)]*\.(png|jpg)"""
                    r"""|savefig\((?!\s*f\b)|nbformat\.write\(\w+,(?!\s*f\))""")
_EXEMPT = {"tinygrad_explain/core/safe_io.py": "the helper itself",
           "scripts/check_cuda_sources.py": "compile stubs in a fresh temporary folder",
           "scripts/bench_cpu.py": "writes /proc/self/clear_refs",
           "scripts/sweep_recipes_torch.py": "scratch arrays of a torch-only sweep in its own scratch folder"}


def test_every_write_goes_through_atomic_write():
    found = []
    for p in sorted([*ROOT.glob("tinygrad_explain/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("kernels/*.py")]):
        rel = p.relative_to(ROOT).as_posix()
        if rel in _EXEMPT:
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if _WRITE.search(line) and "atomic_write" not in line:
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "writes that bypass safe_io.atomic_write:\n" + "\n".join(found)


def test_every_npz_is_read_through_load_npz():
    """One reader of .npz archives in the package (safe_io.load_npz: regular file, no
    pickles, sizes from the zip directory and the .npy headers checked before reading)."""
    found = []
    for p in sorted(ROOT.glob("tinygrad_explain/**/*.py")):
        rel = p.relative_to(ROOT).as_posix()
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"\bnp\.load\(|numpy\.load\(", line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "npz reads that bypass safe_io.load_npz:\n" + "\n".join(found)
