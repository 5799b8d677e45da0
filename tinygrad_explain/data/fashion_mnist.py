"""Fashion-MNIST loader: a small, strict reader for the IDX file format.

Fashion-MNIST (Zalando, 2017) is a drop-in replacement for MNIST: 70,000
grey-scale 28x28 pictures of clothing in 10 classes (60,000 train, 10,000
test).  It is distributed as four gzip'ed IDX files.  On Debian the package
``dataset-fashion-mnist`` installs them under ``/usr/share/datasets/fashion-mnist/``.

The IDX format
--------------
An IDX file is a tiny header followed by the raw array, C order, big-endian::

    bytes 0-1   0x00 0x00                 (always zero)
    byte  2     type code                 (0x08 = unsigned byte)
    byte  3     number of dimensions  d   (1 for labels, 3 for images)
    d x 4 bytes each dimension's size as a big-endian uint32
    payload     prod(sizes) elements of the given type

So the first four bytes read as one big-endian integer are the "magic
number": ``0x00000801`` for a label file (uint8, 1-D) and ``0x00000803`` for an
image file (uint8, 3-D: count x rows x cols).  :func:`read_idx` accepts exactly
these two and checks that the payload has exactly the announced size, so a
truncated download or a wrong file is reported instead of silently yielding
garbage.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_ROOT",
    "ENV_VAR",
    "FILES",
    "read_idx",
    "dataset_root",
    "load_fashion_mnist",
]

#: Class index -> human readable name, in the official Fashion-MNIST order.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist/"

#: Environment variable that overrides :data:`DEFAULT_ROOT`.
ENV_VAR = "TGE_FASHION_MNIST"

#: split -> (images file, labels file), names as in the original distribution.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# magic number -> expected number of dimensions (both are uint8 files).
_MAGICS = {0x00000801: 1, 0x00000803: 3}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Return the decompressed content of ``path`` (gzip detected by its magic bytes)."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw  # plain, uncompressed IDX file
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt gzip stream ({type(e).__name__}: {e})") from e


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzip'ed or plain) into a numpy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file.  Gzip compression is recognised by the gzip magic bytes, not
        by the file name, so ``foo.gz`` and ``foo`` both work either way.

    Returns
    -------
    np.ndarray, dtype uint8
        Shape ``(N,)`` for a label file (magic ``0x00000801``) or
        ``(N, rows, cols)`` for an image file (magic ``0x00000803``).  The
        array owns its memory and is writeable.

    Raises
    ------
    ValueError
        With the file name in the message when the gzip stream is corrupt, the
        header is too short, the magic number is not one of the two above, or
        the payload is shorter (truncated) or longer (trailing bytes) than the
        header announces.
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _MAGICS:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x}; expected 0x00000801 "
            "(uint8 labels) or 0x00000803 (uint8 images)"
        )
    ndim = _MAGICS[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimension sizes need {header} bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    got = len(data) - header
    if got < expected:
        raise ValueError(
            f"{path}: truncated IDX payload: shape {shape} needs {expected} bytes, "
            f"only {got} present"
        )
    if got > expected:
        raise ValueError(
            f"{path}: oversized IDX payload: shape {shape} needs {expected} bytes, "
            f"found {got} ({got - expected} trailing bytes)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def dataset_root(root=None) -> Path:
    """Resolve the Fashion-MNIST directory.

    Priority: the ``root`` argument, then the ``TGE_FASHION_MNIST`` environment
    variable, then :data:`DEFAULT_ROOT` (Debian's install location).
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root)


def load_fashion_mnist(split: str = "train", root=None):
    """Load one split of Fashion-MNIST.

    Parameters
    ----------
    split : "train" or "test"
        ``"train"`` has 60,000 items, ``"test"`` 10,000 (files ``t10k-*``).
    root : str or os.PathLike, optional
        Directory holding the four ``*-ubyte.gz`` files; see :func:`dataset_root`.

    Returns
    -------
    images : np.ndarray, uint8, shape (N, 28, 28)
        0 = background, 255 = fully "on" (the garment); white-on-black.
    labels : np.ndarray, uint8, shape (N,)
        Class indices 0..9; names in :data:`CLASS_NAMES`.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message says how to install it.
    ValueError
        If ``split`` is unknown or a file is malformed (see :func:`read_idx`).
    """
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    base = dataset_root(root)
    paths = [base / name for name in FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST file(s) not found: {', '.join(missing)}. Install the Debian "
            f"package with `apt-get install -y dataset-fashion-mnist` (puts the files in "
            f"{DEFAULT_ROOT}) or set {ENV_VAR} to a directory holding "
            f"{', '.join(FILES[split])}."
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{paths[0]}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{paths[1]}: expected a 1-D label file, got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{paths[1]}: label {labels.max()} out of range 0..9")
    return images, labels
