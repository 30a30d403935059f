"""CPU smoke tests of ``cgspn bench block`` and ``cgspn bench model`` through the real CLI, tiny sizes."""

import json

import pytest
import torch

from cgspn.bench._measure import parse_overrides, snap_to_patch
from cgspn.cli import main


def test_bench_block_cpu_smoke(tmp_path):
    out, png = tmp_path / "block.json", tmp_path / "block.png"
    rc = main([
        "bench", "block", "--device", "cpu", "--dtype", "fp32", "--dim", "32", "--mlp-dim", "48", "--heads", "2",
        "--patch", "4", "--resolutions", "8", "12", "--batches", "1", "--iters", "1", "--warmup", "0",
        "--out", str(out), "--plot", str(png),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [(r["px"], r["mode"]) for r in data["rows"]] == [(8, "fwd"), (8, "fwdbwd"), (12, "fwd"), (12, "fwdbwd")]
    for r in data["rows"]:
        assert r["vit_ms"] > 0 and r["cgspn_ms"] > 0 and r["floor_ms"] > 0 and r["cgspn_mixer_ms"] > 0
        assert r["speedup"] == pytest.approx(r["vit_ms"] / r["cgspn_ms"])
        assert r["ceiling"] == pytest.approx(r["vit_ms"] / r["floor_ms"])
    assert data["meta"]["latent_dim"] == 16 and data["meta"]["scan_backend"] == "reference"
    assert png.stat().st_size > 1000


def test_bench_block_rejects_resolution_off_the_patch(tmp_path):
    rc = main(["bench", "block", "--device", "cpu", "--dim", "32", "--mlp-dim", "48", "--heads", "2",
               "--patch", "4", "--resolutions", "10", "--out", str(tmp_path / "x.json")])
    assert rc == 2  # the CLI reports the ValueError as one line


def test_bench_model_cpu_smoke(tmp_path):
    out = tmp_path / "model.json"
    rc = main([
        "bench", "model", "--device", "cpu", "--dtype", "fp32", "--pairs", "so400m",
        "--set", "embed_dim=32", "--set", "depth=1", "--set", "num_heads=2", "--cgspn-set", "chunks=[2]",
        "--resolutions", "28", "--batches", "1", "--iters", "1", "--warmup", "0",
        "--search", "--search-start", "28", "--search-max", "42", "--out", str(out),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["pair"] == "so400m" and row["px"] == 28
    assert row["vit_img_s"] > 0 and row["cgspn_img_s"] > 0 and row["speedup"] > 0
    assert set(data["params"]) == {"cgspn_so400m_patch14_378", "vit_so400m_patch14_siglip_378"}
    assert data["params"]["cgspn_so400m_patch14_378"] < data["params"]["vit_so400m_patch14_siglip_378"]
    largest = {s["row"]["model"]: s["row"] for s in data["search"]}
    assert all(r["largest_px"] == 42 and r["stopped_by"] == "search-max" for r in largest.values())


def test_nhwc_patch_embed_hooks_keep_the_vit_function_and_make_tokens_contiguous():
    import timm

    from cgspn.bench.model import use_nhwc_patch_embed

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before, tokens_before = vit(x), vit.patch_embed(x)
        use_nhwc_patch_embed(vit)
        after, tokens_after = vit(x), vit.patch_embed(x)
    assert not tokens_before.is_contiguous() and tokens_after.is_contiguous()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_measure_helpers():
    assert snap_to_patch(518, 16) == 512 and snap_to_patch(5, 14) == 14 and snap_to_patch(2058, 14) == 2058
    assert parse_overrides(["depth=2", "attn_layers=[0, 5]", "chunks=none", "mlp_ratio=3.5", "act_layer=gelu"]) == {
        "depth": 2, "attn_layers": [0, 5], "chunks": None, "mlp_ratio": 3.5, "act_layer": "gelu",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["depth"])
