"""Sharded safetensors weights: writing, reading, ``pretrained=True`` loading, the shipped S/14."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import cgspn  # noqa: F401  (registers the models)
from cgspn.models.shipped import INDEX_NAME, compact_dtype, read_sharded, shipped_weights, write_sharded


def _tiny(**kw):
    return timm.create_model("cgspn_tiny_patch16_224", depth=2, embed_dim=96, num_heads=3, num_classes=0, **kw)


def test_write_read_roundtrip_in_several_shards(tmp_path):
    torch.manual_seed(0)
    state = {f"t{i}": torch.randn(64, 64) for i in range(6)}
    state["ids"] = torch.arange(5)
    paths = write_sharded(state, tmp_path / "w", max_shard_bytes=2 * 64 * 64 * 4 + 64, metadata={"note": "x"})
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    index = json.loads((tmp_path / "w" / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(state) and index["metadata"]["note"] == "x"
    back = read_sharded(tmp_path / "w")
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    # rewriting replaces the folder atomically (no leftovers)
    write_sharded({"a": torch.ones(3)}, tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted([INDEX_NAME, "model-00001-of-00001.safetensors"])
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_read_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_sharded(tmp_path / "nope")
    write_sharded({"a": torch.ones(3), "b": torch.ones(2)}, tmp_path / "w", max_shard_bytes=12)
    (tmp_path / "w" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing shards"):
        read_sharded(tmp_path / "w")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_sharded(tmp_path / "bad.safetensors")


def test_compact_dtype_keeps_small_tensors_fp32():
    out = compact_dtype({"big": torch.randn(100, 100), "gamma": torch.full((384,), 1e-5)})
    assert out["big"].dtype == torch.float16 and out["gamma"].dtype == torch.float32
    with pytest.raises(ValueError, match="overflows"):
        compact_dtype({"big": torch.full((5000,), 1e6)})


def test_pretrained_true_loads_shards(tmp_path):
    torch.manual_seed(0)
    src = _tiny().eval()
    write_sharded(src.state_dict(), tmp_path / "w", max_shard_bytes=200_000)
    assert len(list((tmp_path / "w").glob("*.safetensors"))) > 1
    model = _tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "w"), custom_load=True)).eval()
    x = torch.randn(1, 3, 64, 80)
    torch.testing.assert_close(model(x), src(x))
    # a timm ViT checkpoint goes through the filter (attention -> mixer init, pos_embed dropped)
    vit = timm.create_model("vit_tiny_patch16_224", depth=2, embed_dim=96, num_heads=3, num_classes=0)
    write_sharded(vit.state_dict(), tmp_path / "vit")
    student = _tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "vit"), custom_load=True))
    torch.testing.assert_close(student.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight)


def test_shipped_small_checkpoint_loads_offline():
    path = shipped_weights("cgspn_small_patch14_dinov2")
    if path is None:
        pytest.skip("no shipped cgspn_small_patch14_dinov2 weights in this checkout")
    for f in path.iterdir():
        assert f.stat().st_size < 16 * 2**20, f
    model = timm.create_model("cgspn_small_patch14_dinov2", pretrained=True).eval()
    state = read_sharded(path)
    torch.testing.assert_close(model.blocks[3].mlp.fc2.weight, state["blocks.3.mlp.fc2.weight"].float())
    with torch.no_grad():
        out = model.forward_features(torch.rand(1, 3, 112, 154))
    assert out.shape == (1, 1 + 8 * 11, 384) and torch.isfinite(out).all()


def test_cli_defaults_use_the_shipped_student(tmp_path, capsys):
    """`cgspn encode` and `cgspn eval` run on the shipped checkpoint by default (CPU), and its
    features are the distilled ones: close to the teacher's on the held-out photos."""
    if shipped_weights("cgspn_small_patch14_dinov2") is None:
        pytest.skip("no shipped cgspn_small_patch14_dinov2 weights in this checkout")
    from cgspn.cli import main
    from cgspn.data import default_photos

    photo = default_photos("holdout")[0].path
    out = tmp_path / "f.safetensors"
    assert main(["encode", str(photo), "--size", "112", "--device", "cpu", "--out", str(out)]) == 0
    assert "pretrained (shipped weights)" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert f.get_tensor("patch_features").shape[1] == 384
    rc = main(["eval", "fidelity", "--resolutions", "112", "--pca", "0", "--device", "cpu", "--out", str(tmp_path / "fid")])
    assert rc == 0
    rows = json.loads((tmp_path / "fid" / "fidelity.json").read_text())["rows"]
    # a random-init student scores about 0 here; the shipped one about 0.6 at 224 px on the H200
    assert rows[0]["patch_cos"] > 0.3 and rows[0]["pooled_cos"] > 0.4, rows[0]
