import numpy as np
import pytest
import torch
from PIL import Image

from cgspn.eval.classify import ImageFolder, extract_features, knn_classify, linear_probe


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(123)) * 4
    y = torch.arange(n) % 4
    return centers[y] + torch.randn(n, 16, generator=g), y


def test_knn_and_linear_probe_on_separable_features():
    xtr, ytr = _blobs(200, 0)
    xte, yte = _blobs(80, 1)
    assert (knn_classify(xtr, ytr, xte, k=5) == yte).float().mean() == 1.0
    res = linear_probe(xtr, ytr, xte, yte, weight_decays=(1e-4, 1e-2), max_iter=50)
    assert res["accuracy"] == 1.0
    assert res["weight_decay"] in (1e-4, 1e-2)


def test_linear_probe_beats_chance_on_overlapping_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 2
    x = torch.randn(400, 8, generator=g) + y[:, None] * 1.0
    res = linear_probe(x[:300], y[:300], x[300:], y[300:], weight_decays=(1e-3,), max_iter=50)
    assert 0.7 < res["accuracy"] < 1.0


def test_image_folder_and_feature_extraction(tmp_path, tiny_encoder):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    x, y = extract_features(tiny_encoder, ds, size=28, batch_size=4, pool="model+avg")
    assert x.shape == (6, 64) and y.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="multiple of the patch"):
        extract_features(tiny_encoder, ds, size=30)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path)
