"""tools/experiment_s14.py: every arm's overrides are valid config keys; the report merges results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from cgspn.distill.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("experiment_s14", ROOT / "tools" / "experiment_s14.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["experiment_s14"] = mod
    spec.loader.exec_module(mod)
    return mod


def _args(exp, tmp_path):
    return exp.build_parser().parse_args(
        ["run", "--out", str(tmp_path), "--stage1-steps", "8", "--stage2-steps", "17", "--highres-steps", "3"])


def test_every_arm_is_a_valid_config(exp, tmp_path):
    args = _args(exp, tmp_path)
    for arm in exp.ARMS:
        cmd = exp.distill_cmd(arm, args, tmp_path / arm)
        sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
        cfg = load_config(args.config, sets)  # raises on a misspelt key
        s1 = cfg["stage1"]["steps"] if cfg["stage1"]["enabled"] else 0
        views = (s1 * cfg["stage1"]["batch_size"] + cfg["stage2"]["steps"] * cfg["stage2"]["batch_size"]
                 + cfg["highres"]["steps"] * cfg["highres"]["batch_size"])
        assert views == (8 + 17) * 64 + 3 * 32, arm  # equal image-views in every arm
    assert "student.name=vit" in exp.distill_cmd("vit", args, tmp_path)
    assert load_config(args.config, ["student.kwargs.attn_layers=[11]"])["student"]["kwargs"]["attn_layers"] == [11]


def test_report_merges_results(exp, tmp_path, capsys):
    row = {"model": "cgspn", "params_m": 18.1, "cos_patch_224": 0.66, "fmnist_linear": 0.82}
    data = {"arms": {"cgspn": {"eval": row, "distill": {"time_s": 400.0}},
                     "teacher": {"eval": {"params_m": 22.1, "cos_patch_224": 1.0}}},
            "bench": {"small": {"command": "cgspn bench model", "rows": [
                {"px": 224, "vit_img_s": 8961.0, "cgspn_img_s": 3040.0, "speedup": 0.339}]}}}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    md = tmp_path / "t.md"
    assert exp.main(["report", str(f), "--md", str(md)]) == 0
    text = md.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| teacher") or ln.startswith("| cgspn")]
    assert lines[0].startswith("| teacher") and "0.660" in lines[1] and "0.820" in lines[1]
    assert "| 224 | 8961 | 3040 | 0.339 |" in text
