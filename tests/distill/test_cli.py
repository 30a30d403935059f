"""`cgspn distill`: help, config printing, and one-line errors."""

import subprocess
import sys

import pytest
import yaml

from cgspn.cli import main

from .conftest import tiny_overrides


def _run(argv, capsys):
    code = main(["distill", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_documents_options():
    proc = subprocess.run([sys.executable, "-m", "cgspn.cli", "distill", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    for opt in ("--config", "--set", "--resume", "--teacher", "--data", "--out", "--print-config"):
        assert opt in proc.stdout


def test_print_config_applies_overrides(capsys):
    code, out, _ = _run(["--print-config", "--set", "stage2.lr=1e-4", "--steps", "7", "--precision", "bf16"], capsys)
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg["stage2"]["lr"] == pytest.approx(1e-4)
    assert cfg["stage1"]["steps"] == cfg["stage2"]["steps"] == 7 and cfg["engine"]["precision"] == "bf16"


def test_packaged_configs_load(capsys):
    code, out, _ = _run(["--list-configs"], capsys)
    assert code == 0 and "distill_default.yaml" in out
    for name in out.split():
        code, _, err = _run(["--config", name.removesuffix(".yaml"), "--print-config"], capsys)
        assert code == 0, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--set", "stage2.lrr=1"], "unknown config key 'stage2.lrr'; did you mean 'stage2.lr'?"),
        (["--config", "/nonexistent/cfg.yaml"], "config not found"),
        (["--data", "/nonexistent/dir"], "no such directory"),
        (["--teacher", "timm:vit_not_a_model"], "unknown timm model"),
        (["--teacher", "timm:vit_tiny_patch16_224", "--teacher-checkpoint", "/nonexistent/w.safetensors"],
         "teacher checkpoint not found"),
        (["--teacher", "weird"], "--teacher must be"),
        (["--resume", "/nonexistent/run"], "not found"),
    ],
)
def test_errors_are_one_line(argv, needle, capsys, tmp_path):
    code, out, err = _run(argv + ["--out", str(tmp_path / "r"), "--set", "engine.progress=false"], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("cgspn distill: error:")]
    assert len(lines) == 1 and needle in lines[0], err


def test_bad_resolution_is_one_line(capsys, tmp_path):
    argv = [a for o in tiny_overrides(tmp_path / "r") + ["data.resolution=30"] for a in ("--set", o)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "multiple of the patch size 8" in err


def test_cli_runs_tiny_job(capsys, tmp_path):
    argv = [a for o in tiny_overrides(tmp_path / "r", 2, 2) for a in ("--set", o)]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "Fidelity to the teacher" in out and (tmp_path / "r" / "student.safetensors").is_file()
