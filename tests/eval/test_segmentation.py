import json

import numpy as np
import pytest
import torch
from PIL import Image

from cgspn.data.segmentation import IGNORE_INDEX, SegmentationFolder, pseudo_mask, quokka_mask
from cgspn.eval.segment import evaluate_segmentation, train_linear_head


def _write(root, split, name, img, ann):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "images" / split / f"{name}.jpg", quality=95)
    Image.fromarray(ann).save(root / "annotations" / split / f"{name}.png")


def _half_scene(h=56, w=84, seed=0):
    """Left half dark / right half bright photo; ADE labels 1 (left) and 2 (right), a 0 border row."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 30 + rng.integers(0, 20, (h, w // 2, 3))
    img[:, w // 2 :] = 220 + rng.integers(0, 20, (h, w - w // 2, 3))
    ann = np.ones((h, w), np.uint8)
    ann[:, w // 2 :] = 2
    ann[0] = 0
    return img, ann


def test_folder_reduces_zero_label(tmp_path):
    img, ann = _half_scene()
    _write(tmp_path, "validation", "a", img, ann)
    (tmp_path / "meta.json").write_text(json.dumps({"classes": ["left", "right"]}))
    ds = SegmentationFolder(tmp_path, "validation")
    assert ds.num_classes == 2 and len(ds) == 1 and ds.names() == ["a"]
    im, lab = ds[0]
    assert im.size == (84, 56) and lab.shape == (56, 84)
    assert (lab[0] == IGNORE_INDEX).all() and lab[5, 0] == 0 and lab[5, -1] == 1
    raw = SegmentationFolder(tmp_path, "validation", reduce_zero_label=False, num_classes=3)
    assert raw[0][1][5, -1] == 2


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SegmentationFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="ADE20K layout"):
        SegmentationFolder(tmp_path)
    img, ann = _half_scene()
    _write(tmp_path, "validation", "a", img, ann)
    Image.fromarray(img).save(tmp_path / "images" / "validation" / "lonely.jpg")
    with pytest.raises(ValueError, match="no annotation"):
        SegmentationFolder(tmp_path)
    (tmp_path / "images" / "validation" / "lonely.jpg").unlink()
    Image.fromarray(ann[:10]).save(tmp_path / "annotations" / "validation" / "a.png")  # wrong size
    with pytest.raises(ValueError, match="annotation is 84x10"):
        SegmentationFolder(tmp_path)[0]
    Image.fromarray(np.full((56, 84), 200, np.uint8)).save(tmp_path / "annotations" / "validation" / "a.png")
    with pytest.raises(ValueError, match="outside"):
        SegmentationFolder(tmp_path, num_classes=150)[0]
    (tmp_path / "images" / "validation" / "a.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(ann).save(tmp_path / "annotations" / "validation" / "a.png")
    with pytest.raises(ValueError, match="cannot read image"):
        SegmentationFolder(tmp_path)[0]


def test_quokka_polygon_and_pseudo_mask(tmp_path):
    ann = {"polygons": [{"keypoints": [{"x": 2, "y": 2}, {"x": 7, "y": 2}, {"x": 7, "y": 7}, {"x": 2, "y": 7}]}]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(ann))
    m = quokka_mask(p, (10, 10))
    assert m.shape == (10, 10) and m[4, 4] and not m[0, 0] and m.sum() == 36
    sal = np.array([[0.1, 0.45, 0.9]])
    assert pseudo_mask(sal).tolist() == [[1, 0, 2]]


def test_linear_head_learns_a_two_class_scene(tmp_path, tiny_encoder):
    for i in range(3):
        _write(tmp_path, "training", f"t{i}", *_half_scene(seed=i))
    _write(tmp_path, "validation", "v", *_half_scene(seed=9))
    train, val = SegmentationFolder(tmp_path, "training", num_classes=2), SegmentationFolder(tmp_path, "validation", num_classes=2)
    head, info = train_linear_head(tiny_encoder, train, 2, train_size=56, iters=60, batch_size=4, lr=1e-2)
    assert info["train_views"] == 6
    results, kept = evaluate_segmentation(tiny_encoder, head, val, 2, resolutions=(56, 112), keep_predictions=1)
    assert [r.resolution for r in results] == [56, 112]
    assert results[0].grid == (4, 6) and results[1].grid == (8, 12)
    assert results[0].miou > 0.8
    assert kept[56][0].shape == (56, 84)
