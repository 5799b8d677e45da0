"""Tests of the data side: IDX reader, Fashion-MNIST loader, scenes, shipped sample.

Most tests build tiny IDX files in tmp_path, so they run without the Debian
package ``dataset-fashion-mnist``; the comparisons against the real data skip
cleanly when it is absent.
"""
import gzip

import numpy as np
import pytest

from tinygrad_explain.data import fashion_mnist as fm
from tinygrad_explain.data import scenes as sc

LUMA = np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray, magic=None) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x800 + arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def write(path, data: bytes, gz=True):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_dataset(root, n=6, seed=0):
    """Write a tiny Fashion-MNIST look-alike (both splits) into ``root``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    for split, (img_name, lab_name) in fm.FILES.items():
        items = np.zeros((n, 28, 28), np.uint8)
        for k in range(n):  # a blob of random size/brightness with some texture
            cy, cx, r = rng.uniform(10, 18), rng.uniform(10, 18), rng.uniform(5, 10)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            items[k] = blob * rng.integers(60, 256, (28, 28))
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write(root / img_name, idx_bytes(items))
        write(root / lab_name, idx_bytes(labels))
    return root


def have_debian_dataset():
    try:
        fm.load_fashion_mnist("test")
    except (FileNotFoundError, ValueError):
        return False
    return True


needs_debian = pytest.mark.needs(have_debian_dataset(), "Debian package dataset-fashion-mnist not installed")


# ----------------------------------------------------------------------------
# IDX reader
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    imgs = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labs = np.array([0, 9, 4], np.uint8)
    a = fm.read_idx(write(tmp_path / "i.idx", idx_bytes(imgs), gz))
    b = fm.read_idx(write(tmp_path / "l.idx", idx_bytes(labs), gz))
    assert a.dtype == np.uint8 and a.shape == (3, 28, 28) and np.array_equal(a, imgs)
    assert b.dtype == np.uint8 and b.shape == (3,) and np.array_equal(b, labs)
    assert a.flags.writeable


def test_idx_wrong_magic(tmp_path):
    p = write(tmp_path / "bad-magic.gz", idx_bytes(np.zeros((2, 2, 2)), magic=0x00000D03))
    with pytest.raises(ValueError, match="magic") as e:
        fm.read_idx(p)
    assert "bad-magic.gz" in str(e.value)


def test_idx_truncated_and_oversized(tmp_path):
    good = idx_bytes(np.ones((4, 28, 28)))
    p = write(tmp_path / "short.gz", good[:-5])
    with pytest.raises(ValueError, match="truncated") as e:
        fm.read_idx(p)
    assert "short.gz" in str(e.value)
    p = write(tmp_path / "long.gz", good + b"\0\0")
    with pytest.raises(ValueError, match="oversized") as e:
        fm.read_idx(p)
    assert "long.gz" in str(e.value)
    p = write(tmp_path / "hdr.gz", good[:10])  # header cut inside the dimension sizes
    with pytest.raises(ValueError, match="hdr.gz"):
        fm.read_idx(p)


def test_idx_corrupt_gzip(tmp_path):
    raw = np.random.default_rng(2).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    gz = gzip.compress(idx_bytes(raw))
    cut = tmp_path / "cut.gz"  # stream ends early
    cut.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match="cut.gz"):
        fm.read_idx(cut)
    flipped = bytearray(gz)  # garbage in the deflate data
    flipped[100:140] = bytes(40)
    bad = tmp_path / "flipped.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.gz"):
        fm.read_idx(bad)


def test_load_from_root_and_env(tmp_path, monkeypatch):
    fake_dataset(tmp_path, n=6)
    x, y = fm.load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (6, 28, 28) and x.dtype == np.uint8
    assert y.shape == (6,) and y.dtype == np.uint8
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    x2, y2 = fm.load_fashion_mnist("test")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    with pytest.raises(ValueError):
        fm.load_fashion_mnist("validation", root=tmp_path)


def test_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as e:
        fm.load_fashion_mnist("train")
    assert fm.ENV_VAR in str(e.value)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        sc.SceneDataset("test")


def test_class_names():
    assert len(fm.CLASS_NAMES) == 10
    assert fm.CLASS_NAMES[0] == "T-shirt/top" and fm.CLASS_NAMES[9] == "Ankle boot"


@needs_debian
def test_debian_dataset_shapes():
    x, y = fm.load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.array_equal(np.bincount(y), np.full(10, 1000))


# ----------------------------------------------------------------------------
# scenes
# ----------------------------------------------------------------------------

def square_item(lo=0, hi=28):
    item = np.zeros((28, 28), np.uint8)
    item[lo:hi, lo:hi] = 255
    return item


def assert_tight_box(mask, box):
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = mask.shape
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert mask[y0:y1, x0:x1].sum() == mask.sum()
    assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
    assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()


def test_make_scene_shapes_and_determinism():
    item = square_item(6, 22)
    a = sc.make_scene(item, sc.scene_rng("train", 5, 0))
    b = sc.make_scene(item, sc.scene_rng("train", 5, 0))
    c = sc.make_scene(item, sc.scene_rng("train", 6, 0))
    d = sc.make_scene(item, sc.scene_rng("test", 5, 0))
    e = sc.make_scene(item, sc.scene_rng("train", 5, 1))
    img, mask, box = a
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert box.shape == (4,) and np.issubdtype(box.dtype, np.integer)
    assert img.tobytes() == b[0].tobytes() and np.array_equal(mask, b[1]) and np.array_equal(box, b[2])
    for other in (c, d, e):
        assert img.tobytes() != other[0].tobytes()
    img96, mask96, _ = sc.make_scene(item, sc.scene_rng("train", 5, 0), size=96)
    assert img96.shape == (96, 96, 3) and mask96.shape == (96, 96)


@pytest.mark.parametrize("index", range(8))
def test_full_item_mask_and_box_exact(index):
    """An all-255 item covers its whole s x s window: mask == that window exactly."""
    rng = sc.scene_rng("test", index, 3)
    img, mask, box = sc.make_scene(square_item(), rng)
    x0, y0, x1, y1 = (int(v) for v in box)
    side = x1 - x0
    assert y1 - y0 == side
    assert round(sc.SCALE_RANGE[0] * 64) <= side <= round(sc.SCALE_RANGE[1] * 64)
    expect = np.zeros((64, 64), bool)
    expect[y0:y1, x0:x1] = True
    assert np.array_equal(mask, expect)
    assert_tight_box(mask, box)
    # the same generator state with an empty item renders the bare background
    bg, empty, ebox = sc.make_scene(np.zeros((28, 28), np.uint8), sc.scene_rng("test", index, 3))
    assert not empty.any() and np.array_equal(ebox, [0, 0, 0, 0])
    assert np.array_equal(img[~mask], bg[~mask])  # untouched outside the item
    dlum = np.abs((img[mask].astype(float) - bg[mask]) @ LUMA) / 255
    assert np.mean(dlum >= 0.1) > 0.95  # the contrast rule: item stands out
    assert dlum.min() > 0.03


def test_inner_square_mask_and_box():
    """A square in 28 px coordinates lands, scaled by s/28, as a solid rectangle."""
    for index in range(6):
        img, mask, box = sc.make_scene(square_item(8, 20), sc.scene_rng("train", index, 0))
        _, _, full_box = sc.make_scene(square_item(), sc.scene_rng("train", index, 0))
        fx0, fy0, fx1, _ = (int(v) for v in full_box)
        s = fx1 - fx0  # same rng -> same window; its side is the scale s
        x0, y0, x1, y1 = (int(v) for v in box)
        # a solid rectangle filling its box, except that bilinear resizing
        # rounds the corners off: its border rows/columns may be partial
        assert mask[y0 + 1:y1 - 1, x0 + 1:x1 - 1].all()
        assert mask[(y0 + y1) // 2, x0:x1].all() and mask[y0:y1, (x0 + x1) // 2].all()
        assert_tight_box(mask, box)
        for got, want in ((x0, fx0 + 8 * s / 28), (y0, fy0 + 8 * s / 28),
                          (x1, fx0 + 20 * s / 28), (y1, fy0 + 20 * s / 28)):
            assert abs(got - want) <= 0.5 + s / 28  # one source pixel of blur


def test_box_from_mask():
    assert np.array_equal(sc.box_from_mask(np.zeros((5, 7), bool)), [0, 0, 0, 0])
    m = np.zeros((10, 12), bool)
    m[2, 3] = m[6, 9] = True
    assert np.array_equal(sc.box_from_mask(m), [3, 2, 10, 7])
    m[:] = True
    assert np.array_equal(sc.box_from_mask(m), [0, 0, 12, 10])


def test_scene_dataset_and_generate(tmp_path):
    fake_dataset(tmp_path, n=6)
    ds = sc.SceneDataset("train", seed=7, root=tmp_path)
    assert len(ds) == 6
    img, mask, box, label = ds.scene(3)
    img2, mask2, box2, label2 = ds.scene(3)
    assert img.tobytes() == img2.tobytes() and np.array_equal(mask, mask2)
    assert label == label2 == int(ds.labels[3])
    assert img.tobytes() != ds.scene(4)[0].tobytes()
    with pytest.raises(IndexError):
        ds.scene(6)
    for i in range(len(ds)):
        m, b = ds.scene(i)[1:3]
        assert m.any()
        assert_tight_box(m, b)
    imgs, masks, boxes, labels = ds.batch([4, 1, 3])
    assert imgs.shape == (3, 64, 64, 3) and imgs.dtype == np.uint8
    assert masks.shape == (3, 64, 64) and masks.dtype == bool
    assert boxes.shape == (3, 4) and labels.dtype == np.uint8
    assert np.array_equal(imgs[2], img) and np.array_equal(boxes[2], box)
    d = sc.generate("train", n=5, seed=7, progress=False, root=tmp_path)
    assert d["images"].shape == (5, 64, 64, 3) and d["masks"].shape == (5, 64, 64)
    assert np.array_equal(d["images"][3], img) and np.array_equal(d["labels"], ds.labels[:5])
    assert np.array_equal(d["indices"], np.arange(5)) and int(d["seed"]) == 7
    other = sc.SceneDataset("train", seed=8, root=tmp_path).scene(3)[0]
    assert other.tobytes() != img.tobytes()
    part = sc.render_images("train", 7, 2, 5, root=tmp_path)
    assert part.shape == (3, 64, 64, 3) and part.dtype == np.uint8
    assert np.array_equal(part, d["images"][2:5])


# ----------------------------------------------------------------------------
# the shipped sample
# ----------------------------------------------------------------------------

def test_sample_file():
    s = sc.load_sample()
    assert s["images"].shape == (500, 64, 64, 3) and s["images"].dtype == np.uint8
    assert s["masks"].shape == (500, 64, 64) and s["masks"].dtype == bool
    assert s["boxes"].shape == (500, 4) and np.issubdtype(s["boxes"].dtype, np.integer)
    assert s["labels"].shape == (500,) and s["labels"].dtype == np.uint8
    assert s["labels"].max() <= 9 and len(np.unique(s["labels"])) == 10
    assert np.array_equal(s["indices"], np.arange(500)) and s["seed"] == 0
    for k in range(0, 500, 25):
        assert_tight_box(s["masks"][k], s["boxes"][k])
    area = s["masks"].mean(axis=(1, 2))
    assert 0.03 < area.min() and area.max() < 0.8


@needs_debian
def test_sample_matches_regenerated_scenes():
    s = sc.load_sample()
    ds = sc.SceneDataset("test", seed=s["seed"])
    assert np.array_equal(s["labels"], ds.labels[:500])
    for i in (0, 1, 137, 499):
        img, mask, box, label = ds.scene(int(s["indices"][i]))
        assert img.tobytes() == s["images"][i].tobytes()
        assert np.array_equal(mask, s["masks"][i]) and np.array_equal(box, s["boxes"][i])
        assert label == s["labels"][i]
