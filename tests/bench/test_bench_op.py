"""``cgspn bench op`` on CPU through the real CLI: the Triton kernels run under the interpreter
(conftest sets TRITON_INTERPRET=1 without a GPU), tiny shape, the launch-config sweep included."""

import json

import pytest

from cgspn.bench.op import SWEEP_AGREEMENT, sweep_configs
from cgspn.cli import main
from cgspn.ops import available_backends

pytestmark = pytest.mark.skipif("triton" not in available_backends("cpu"), reason="needs the Triton interpreter")


def test_bench_op_sweep_cpu_smoke(tmp_path):
    out = tmp_path / "op.json"
    rc = main(["bench", "op", "--device", "cpu", "--shapes", "1,3,16,16", "--groups", "4", "--dtypes", "fp32",
               "--sweep", "--sweep-limit", "8", "--iters", "1", "--warmup", "0", "--no-baseline", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["fwd_ms"] > 0 and row["bwd_ms"] > 0 and row["fwd_general_ms"] > 0
    assert row["fwd_kernel_ms"] > 0 and row["bwd_kernel_ms"] > 0
    assert row["fwd_config"]["block_c"] >= 1
    fwd = [s for s in data["sweep"] if s["pass"] == "fwd"]
    bwd = [s for s in data["sweep"] if s["pass"] == "bwd"]
    configs = sweep_configs(16, 16, 1, False, 4)
    assert [s["config"] for s in fwd] == [c.__dict__ for c in configs[:8]] and len(bwd) == 8
    assert any(c.split for c in configs) and any(c.num_stages > 1 for c in configs)
    for s in fwd + bwd:  # every config computes the same outputs as the heuristic's
        assert "error" not in s, s
        assert s["agrees"] and s["rel_diff_vs_heuristic"] <= SWEEP_AGREEMENT["fp32"]
    assert {b["pass"] for b in data["best"]} == {"fwd", "bwd"}


def test_latency_sweep_configs_compute_the_op():
    """The B = 1 sweep set (`--sweep-set latency`: shuffle and scratch split kernels with small
    channel blocks) covers the line, and its configs give the reference's outputs."""
    import torch

    from cgspn.bench.op import latency_configs
    from cgspn.ops import gspn2d
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C, G = 1, 20, 13, 8, 4
    g = torch.Generator().manual_seed(3)
    x, lam = torch.randn(B, H, W, C, generator=g), torch.rand(B, H, W, 4, C, generator=g)
    z, u = torch.randn(B, H, W, 4, 3, G, generator=g), torch.randn(B, H, W, 4, C, generator=g)
    want = gspn2d(*(t.double() for t in (x, lam, z)), u=u.double(), backend="reference")
    cfgs = latency_configs(max(H, W), C, 4)
    assert any(not c.scratch for c in cfgs) and any(c.scratch for c in cfgs)
    for cfg in cfgs[::4]:
        assert cfg.split * cfg.block_l >= max(H, W)
        y, _ = TB.gspn2d_fwd_triton(x, lam, z, u, None, False, cfg)
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5, msg=str(cfg))


def test_pipelined_sweep_configs_compute_the_op():
    """The `--sweep-set pipelined` configs (split kernels, loads staged by Triton's pipeliner, wrap
    neighbours by tl.gather across warps) fit the shared-memory bound and give the reference's
    outputs (the interpreter ignores num_stages, so this checks the multi-warp tiles' math)."""
    import torch

    from cgspn.bench.op import _staged_bytes, pipelined_configs
    from cgspn.ops import gspn2d
    from cgspn.ops.gspn import triton_backend as TB

    for L in (74, 147):
        for cfg in pipelined_configs(L, 64, 32, 2):
            assert cfg.num_stages >= 2 and not cfg.scratch and cfg.split * cfg.block_l >= L
            assert _staged_bytes(cfg.split * cfg.block_l, cfg.block_c, 2) * (cfg.num_stages - 1) <= 200 * 1024
    B, H, W, C, G = 1, 19, 12, 16, 4
    g = torch.Generator().manual_seed(4)
    x, lam = torch.randn(B, H, W, C, generator=g), torch.rand(B, H, W, 4, C, generator=g)
    z, u = torch.randn(B, H, W, 4, 3, G, generator=g), torch.randn(B, H, W, 4, C, generator=g)
    want = gspn2d(*(t.double() for t in (x, lam, z)), u=u.double(), backend="reference")
    for cfg in pipelined_configs(max(H, W), C, 8, 4)[::5]:
        y, _ = TB.gspn2d_fwd_triton(x, lam, z, u, None, False, cfg)
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5, msg=str(cfg))
