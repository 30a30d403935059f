"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (or any folder of the idx files).

Files (gzip-compressed idx, as distributed): ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``.
Images are ``uint8`` ``(N, 28, 28)`` grey, labels ``int64`` ``(N,)`` in ``[0, 10)``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_ROOT", "CLASSES", "read_idx", "write_idx", "load_fashion_mnist", "write_fashion_mnist_subset",
           "FashionMNIST"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (``.gz`` or raw) into a numpy array of its declared shape (uint8 data)."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            head = f.read(4)
            if len(head) != 4 or head[0] != 0 or head[1] != 0:
                raise ValueError("bad magic number")
            if head[2] != 0x08:
                raise ValueError(f"unsupported idx data type 0x{head[2]:02x} (only unsigned bytes)")
            ndim = head[3]
            dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
            data = f.read()
    except (OSError, EOFError, struct.error, ValueError) as e:
        raise ValueError(f"cannot read idx file {p}: {e}") from None
    n = int(np.prod(dims))
    if len(data) != n:
        raise ValueError(f"idx file {p} is truncated: {len(data)} bytes of data, header says {n}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as a gzip-compressed idx file (the format :func:`read_idx` reads).

    The gzip header carries no timestamp, so equal arrays give byte-identical files."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"idx arrays need 1..255 dimensions, got {a.ndim}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(head)
        f.write(a.tobytes())
    os.replace(tmp, p)
    return p


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {root}: install it with "
        "'apt-get install dataset-fashion-mnist' (Debian; files go to /usr/share/datasets/fashion-mnist/) "
        "or pass a folder holding the four idx .gz files"
    )


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of ``split`` ('train' or 'test').

    ``per_class``: keep the first ``per_class`` images of each class (a deterministic, balanced subset).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    r = Path(root) if root is not None else DEFAULT_ROOT
    img_stem, lbl_stem = _FILES[split]
    images = read_idx(_find(r, img_stem))
    labels = read_idx(_find(r, lbl_stem)).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])
        keep.sort()
        images, labels = images[keep], labels[keep]
    return images, labels


def write_fashion_mnist_subset(dest: str | os.PathLike, per_class_train: int, per_class_test: int,
                               root: str | os.PathLike | None = None) -> Path:
    """Write a class-balanced Fashion-MNIST subset as the four idx ``.gz`` files into ``dest``.

    The first ``per_class_train`` / ``per_class_test`` images of each class (as
    :func:`load_fashion_mnist` with ``per_class``, original order kept): deterministic, and
    ``load_fashion_mnist(split, dest)`` reads it back. 200 + 100 per class is about 1.6 MB, for a
    machine without the ``dataset-fashion-mnist`` package (``cgspn eval ... --data-root dest``).
    Returns ``dest``.
    """
    out = Path(dest)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        if int(n) <= 0:
            raise ValueError(f"per_class_{split} must be positive, got {n}")
        images, labels = load_fashion_mnist(split, root, int(n))
        img_stem, lbl_stem = _FILES[split]
        write_idx(out / (img_stem + ".gz"), images)
        write_idx(out / (lbl_stem + ".gz"), labels.astype(np.uint8))
    return out


class FashionMNIST:
    """Indexable dataset: ``ds[i] -> (PIL RGB image 28x28, label int)``; ``ds.classes``."""

    classes = CLASSES

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, per_class: int | None = None) -> None:
        self.images, self.labels = load_fashion_mnist(split, root, per_class)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]).convert("RGB"), int(self.labels[i])
