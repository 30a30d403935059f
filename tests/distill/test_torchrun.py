"""torchrun with 2 gloo processes on CPU: training runs, checkpoints are written once, ranks stay in sync."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_overrides

import cgspn

SRC = str(Path(os.path.abspath(cgspn.__file__)).parents[1])  # the cgspn under test, for the child processes


@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_torchrun_two_gloo_ranks_stay_in_sync(tmp_path, mode):
    out = tmp_path / mode
    sets = [a for o in tiny_overrides(out, 3, 3) + [f"engine.distributed={mode}", "engine.device=cpu"]
            for a in ("--set", o)]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cgspn.cli", "distill", *sets]
    # own session, so that a hung run is killed with all its worker processes
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun did not finish in 240 s")
    assert proc.returncode == 0, err[-3000:]
    events = [json.loads(line) for line in open(out / "log.jsonl")]
    syncs = [e for e in events if e.get("event") == "ranks_in_sync"]
    assert [e["stage"] for e in syncs] == ["stage1", "stage2"]
    for e in syncs:
        assert len(e["checksums"]) == 2 and e["checksums"][0] == e["checksums"][1]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["stages"][1]["batch_size"] == 2 * 4  # global batch = ranks x per-rank batch
    assert (out / "student.safetensors").is_file()
    steps = [e for e in events if e.get("stage") == "stage2" and "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]  # one log line per step: only rank 0 writes
