import json

import numpy as np
import pytest
from PIL import Image

from cgspn.cli import main
from cgspn.eval.fidelity import feature_fidelity

TINY = json.dumps({"depth": 1, "embed_dim": 32, "num_heads": 2})


def _photos(d, n=3):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (50 + 7 * i, 64, 3), dtype=np.uint8)).save(d / f"p{i}.png")
    return sorted(d.glob("*.png"))


def test_fidelity_self_is_one_and_other_is_less(tmp_path, tiny_encoder, tiny_encoder_b):
    imgs = _photos(tmp_path / "imgs")
    rows, maps = feature_fidelity(tiny_encoder, tiny_encoder, imgs, [28, 56], batch_size=2, keep_maps=1)
    assert [r["resolution"] for r in rows] == [28, 56]
    assert all(abs(r["patch_cos"] - 1) < 1e-5 and abs(r["pooled_cos"] - 1) < 1e-5 for r in rows)
    assert maps[56][0][0].shape == (32, 4, 4)
    rows, _ = feature_fidelity(tiny_encoder_b, tiny_encoder, imgs, [28])
    assert rows[0]["patch_cos"] < 0.9


def test_eval_classify_cli_on_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, base in (("dark", 20), ("bright", 230)):
            d = tmp_path / "ds" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((base + rng.integers(0, 20, (20, 20, 3))).astype(np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "out"
    rc = main(["eval", "classify", "--model", "vit_small_patch14_dinov2", "--model-args", TINY, "--random-init", "--device", "cpu",
               "--dataset", str(tmp_path / "ds"), "--size", "28", "--knn-k", "3", "--pool", "model+avg", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "classify.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["linear probe", "kNN k=3"]
    assert data["rows"][1]["top1"] == 1.0  # dark vs bright is trivially separable
    assert "| linear probe |" in capsys.readouterr().out.replace("Fashion", "")
    assert main(["eval", "classify", "--dataset", str(tmp_path / "nope"), "--random-init", "--model-args", TINY, "--model", "vit_small_patch14_dinov2"]) == 2


def test_eval_segment_cli_and_table(tmp_path):
    from .test_segmentation import _half_scene, _write

    root = tmp_path / "ade"
    for i in range(2):
        _write(root, "training", f"t{i}", *_half_scene(seed=i))
    _write(root, "validation", "v", *_half_scene(seed=5))
    out = tmp_path / "seg"
    rc = main(["eval", "segment", "--model", "vit_small_patch14_dinov2", "--model-args", TINY, "--random-init", "--device", "cpu",
               "--data", str(root), "--num-classes", "2", "--train-size", "56", "--resolutions", "56,112", "--iters", "20",
               "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "segment.json").read_text())["rows"]
    assert [r["resolution"] for r in rows] == [56, 112]
    assert (out / "segment_v.png").is_file() and (out / "segment_vs_resolution.png").is_file()
    # 'table' merges suite summaries
    summ = tmp_path / "summary.json"
    summ.write_text(json.dumps({"rows": [{"model": "m", "params_m": 1.0, "quokka_miou_518": 0.5}]}))
    assert main(["eval", "table", str(summ), "--out", str(tmp_path / "t.md")]) == 0
    assert "| m |" in (tmp_path / "t.md").read_text()
    assert main(["eval", "table", str(tmp_path / "missing.json")]) == 2
