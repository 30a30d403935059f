import gzip
import struct

import numpy as np
import pytest

from cgspn.data.fashion_mnist import CLASSES, FashionMNIST, load_fashion_mnist, read_idx


def _write_idx(path, arr):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fmnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_reads_idx_files_and_balanced_subsets(fmnist_dir):
    x, y = load_fashion_mnist("train", fmnist_dir)
    assert x.shape == (40, 28, 28) and x.dtype == np.uint8 and y.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    x, y = load_fashion_mnist("test", fmnist_dir, per_class=1)
    assert sorted(y.tolist()) == list(range(10))
    ds = FashionMNIST("test", fmnist_dir)
    im, lab = ds[3]
    assert im.size == (28, 28) and im.mode == "RGB" and lab == 3 and len(ds.classes) == len(CLASSES) == 10


def test_clear_errors(tmp_path, fmnist_dir):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path / "empty")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val", fmnist_dir)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)


def test_write_fashion_mnist_subset_roundtrip(fmnist_dir, tmp_path):
    from cgspn.data.fashion_mnist import write_fashion_mnist_subset

    dest = write_fashion_mnist_subset(tmp_path / "sub", 3, 1, root=fmnist_dir)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
    for split, n in (("train", 3), ("test", 1)):
        x, y = load_fashion_mnist(split, dest)
        xr, yr = load_fashion_mnist(split, fmnist_dir, per_class=n)
        assert np.bincount(y, minlength=10).tolist() == [n] * 10
        assert np.array_equal(x, xr) and np.array_equal(y, yr) and y.dtype == np.int64
    first = (dest / "train-images-idx3-ubyte.gz").read_bytes()
    write_fashion_mnist_subset(tmp_path / "sub2", 3, 1, root=fmnist_dir)  # deterministic, byte for byte
    assert (tmp_path / "sub2" / "train-images-idx3-ubyte.gz").read_bytes() == first
    with pytest.raises(ValueError, match="positive"):
        write_fashion_mnist_subset(tmp_path / "bad", 0, 1, root=fmnist_dir)


def test_write_fashion_mnist_subset_of_the_real_dataset(tmp_path):
    from cgspn.data.fashion_mnist import DEFAULT_ROOT, write_fashion_mnist_subset

    if not (DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    dest = write_fashion_mnist_subset(tmp_path / "fm", 200, 100)
    x, y = load_fashion_mnist("train", dest)
    assert x.shape == (2000, 28, 28) and np.bincount(y).tolist() == [200] * 10
    xt, yt = load_fashion_mnist("test", dest)
    assert xt.shape == (1000, 28, 28) and np.bincount(yt).tolist() == [100] * 10
    assert sum(p.stat().st_size for p in dest.iterdir()) < 3 * 2**20
