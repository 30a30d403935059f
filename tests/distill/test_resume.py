"""Interrupting a run (SIGTERM) and resuming it reproduces the uninterrupted run's weights."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from cgspn.distill.run import Interrupted, distill


def _sigterm_at(stage: str, step: int):
    def cb(s: str, k: int) -> None:
        if s == stage and k == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return cb


def test_resume_after_interruptions_matches_uninterrupted_run(tiny_cfg, tmp_path):
    extra = ("data.resolutions=[24, 32]", "engine.grad_accum=2", "stage2.loss.itc=0.0")
    ref_cfg = tiny_cfg("ref", 5, 5, extra)
    ref = distill(ref_cfg)
    assert [s["name"] for s in ref["stages"]] == ["stage1", "stage2"]

    cfg = tiny_cfg("interrupted", 5, 5, extra)
    run_dir = cfg["out_dir"]
    with pytest.raises(Interrupted) as e1:
        distill(cfg, callbacks=[_sigterm_at("stage1", 2)])
    assert e1.value.stage == "stage1" and e1.value.step == 2
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored
    with pytest.raises(Interrupted) as e2:
        distill(cfg, resume_dir=run_dir, callbacks=[_sigterm_at("stage2", 3)])
    assert e2.value.stage == "stage2" and e2.value.step == 3
    out = distill(cfg, resume_dir=run_dir)

    a = load_file(os.path.join(ref_cfg["out_dir"], "student.safetensors"))
    b = load_file(os.path.join(run_dir, "student.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the report survives the interruptions: fidelity before/after and both stages
    assert set(out["fidelity"]) == {"before", "after stage1", "after stage2"}
    assert out["fidelity"]["before"] == ref["fidelity"]["before"]
    assert [s["name"] for s in out["stages"]] == ["stage1", "stage2"]
    events = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
    assert sum(1 for ev in events if ev.get("event") == "interrupted") == 2
    # resuming a finished run has nothing left to train, and a second fresh run refuses the dir
    with pytest.raises(ValueError, match="already holds a run"):
        distill(cfg)


def test_end_to_end_writes_checkpoint_report_and_logs(tiny_cfg):
    cfg = tiny_cfg("e2e", 6, 6, ("engine.tensorboard=true", "highres.enabled=true", "highres.resolutions=[48]",
                                 "highres.steps=2", "highres.batch_size=2", "engine.ckpt_every=3"))
    rep = distill(cfg)
    run = cfg["out_dir"]
    for f in ("config.yaml", "log.jsonl", "report.md", "report.json", "student.safetensors", "student.json",
              "stages/stage1/student.safetensors", "stages/highres48/student.safetensors"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert os.path.isdir(os.path.join(run, "tb"))
    assert [s["name"] for s in rep["stages"]] == ["stage1", "stage2", "highres48"]
    s1 = rep["stages"][0]
    assert s1["loss_last5"] < s1["loss_first5"]
    f = rep["fidelity"]
    assert f["after stage1"]["mixer_nmse"] < f["before"]["mixer_nmse"]
    md = open(os.path.join(run, "report.md")).read()
    assert "patch_cos" in md and "stage2" in md
