"""``cgspn bench op`` on CPU through the real CLI: the Triton kernels run under the interpreter
(conftest sets TRITON_INTERPRET=1 without a GPU), tiny shape, the launch-config sweep included."""

import dataclasses
import json

import pytest

from cgspn.bench.op import SWEEP_AGREEMENT, SWEEP_SET_DOCS, SWEEP_SETS, VARIANT_SETS, sweep_configs
from cgspn.cli import main
from cgspn.ops import available_backends

pytestmark = pytest.mark.skipif("triton" not in available_backends("cpu"), reason="needs the Triton interpreter")


def _reference_case(B, H, W, C, G, seed):
    """Inputs (x, lam, z, u, dy) of a small gspn2d case, the float64 reference's output y and its
    gradients (dx, dlam, dz, du), and the state h the backward reads (float32)."""
    import torch

    from cgspn.ops import gspn2d

    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g)
    x, lam, z, u, dy = mk(B, H, W, C), torch.rand(B, H, W, 4, C, generator=g), mk(B, H, W, 4, 3, G), mk(B, H, W, 4, C), mk(B, H, W, 4, C)
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    y = gspn2d(*ins[:3], u=ins[3], backend="reference")
    grads = torch.autograd.grad(y, ins, dy.double())
    return (x, lam, z, u, dy), y.detach(), grads, gspn2d(x, lam, z, backend="reference")


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
        assert isinstance(s["heuristic"], bool)
    assert all(s["bwd_with_sums_ms"] > 0 for s in bwd)  # kernel alone, and with the caller's sums
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
    flat = [c for c in cfgs if c.flat]  # the single-warp kernels with the shared-memory exchange
    assert flat and all(c.num_warps == 1 for c in flat) and {c.prefetch for c in flat} == {1, 2}
    for cfg in cfgs[::4] + flat[::3]:
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


def test_wide_sweep_configs_cover_the_line_and_compute_the_op():
    """`--sweep-set wide` (forward and backward scratch split kernels with 16-64-channel blocks and
    8-16 warps) covers lines of up to 384 positions with 1-4 (backward 1-2) elements of a tile per thread, and
    its configs give the reference's outputs and gradients."""
    import torch

    from cgspn.bench.op import wide_scratch_backward_configs, wide_scratch_configs
    from cgspn.ops.gspn import triton_backend as TB

    for L in (33, 74, 147, 384):
        fwd, bwd = wide_scratch_configs(L, 64), wide_scratch_backward_configs(L, 64)
        assert fwd and bwd
        for cfg, most in [(c, 4) for c in fwd] + [(c, 2) for c in bwd]:
            assert cfg.scratch and cfg.split <= 6 and cfg.split * cfg.block_l >= L
            assert 32 * cfg.num_warps <= cfg.block_l * cfg.block_c <= most * 32 * cfg.num_warps
    assert wide_scratch_configs(400, 64) == [] and wide_scratch_backward_configs(400, 64) == []  # > 6 tiles
    C = 16
    (x, lam, z, u, dy), want, want_g, _ = _reference_case(1, 5, 40, C, 4, seed=8)
    y, h = TB.gspn2d_fwd_triton(x, lam, z, u, None, True)
    cfg = wide_scratch_configs(40, C)[0]
    torch.testing.assert_close(TB.gspn2d_fwd_triton(x, lam, z, u, None, False, cfg)[0].double(), want, rtol=1e-5, atol=1e-5)
    got_g = TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None, wide_scratch_backward_configs(40, C)[0])
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


def test_precompile_runs_the_configs_in_workers_and_reports_failures():
    """`--compile-workers`: the sweep's cases run once in spawned worker processes; a config the
    launcher refuses comes back as a failure naming it, the others do not."""
    from cgspn.bench.op import precompile
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    good = ("fwd", LaunchConfig(8, 4, 1, 1))
    short = ("fwd", LaunchConfig(2, 4, 1, 1, 1, False, 1, True))  # 1 tile of 2 rows < lines of 6
    secs, failed = precompile((1, 6, 5, 4), 4, "fp32", True, None, [good, short], 1, "cpu")
    assert secs > 0 and len(failed) == 1 and "block_l=2" in failed[0] and "covers lines" in failed[0]


def test_fence_and_regcap_sweep_sets():
    """`--sweep-set fence` puts a barrier after the loads of the heuristic's split config and of the
    wide configs; `--sweep-set regcap` caps the registers of 4-8-warp configs so that 2-4 programs
    share an SM's 64 K registers."""
    from cgspn.bench.op import _caps, fence_backward_configs, fence_configs, regcap_backward_configs, regcap_configs
    from cgspn.ops.gspn import triton_backend as TB

    assert _caps(8, 3) == [128] and _caps(4, 4) == [168, 128] and _caps(4, 2) == []
    for L in (74, 147):
        fwd, bwd = fence_configs(L, 64, 32, 2, 16), fence_backward_configs(L, 64, 4, 32, 2)
        assert fwd[0] == TB.LaunchConfig(**{**TB.gspn2d_forward_config(32, L, L, 64, 16, 2).__dict__, "fence": True})
        assert all(c.fence and c.split for c in fwd + bwd)
        for cfg in regcap_configs(L, 64) + regcap_backward_configs(L, 64):
            assert cfg.scratch and 4 <= cfg.num_warps <= 8 and cfg.maxnreg in (128, 168)
            assert cfg.maxnreg * cfg.num_warps * 32 * 2 <= 65536


def test_short_line_sweep_set():
    """`--sweep-set short`: for lines of at most 32, the general kernel's backward config then
    one-tile split backward configs (2-8 elements per thread), whose gradients are the reference's;
    forward general and one-tile split configs (2-16 elements per thread), whose outputs are."""
    import torch

    from cgspn.bench.op import short_backward_configs, short_forward_configs
    from cgspn.ops.gspn import triton_backend as TB

    assert short_backward_configs(33, 64) == [] and short_forward_configs(33, 64) == []
    general, *split = short_backward_configs(14, 768)
    assert general.split == 0 and general.block_l == 16
    for cfg in split:
        assert cfg.split == 1 and cfg.block_l == 16 and cfg.asm_dz
        assert 2 * 32 * cfg.num_warps <= cfg.block_l * cfg.block_c <= 8 * 32 * cfg.num_warps
    fwd = short_forward_configs(24, 768)
    assert {c.split for c in fwd} == {0, 1} and all(c.block_l == 32 and (c.scratch or not c.split) for c in fwd)
    assert all(2 * 32 * c.num_warps <= c.block_l * c.block_c <= 16 * 32 * c.num_warps for c in fwd)
    W, C = 7, 16
    (x, lam, z, u, dy), want_y, want, h = _reference_case(1, 5, W, C, 2, seed=4)
    for cfg in short_backward_configs(W, C)[:2]:  # the general kernel's, the first one-tile split
        got = TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None, cfg)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    one_tile = next(c for c in short_forward_configs(W, C) if c.split)
    y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, None, True, one_tile)
    torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hs, h, rtol=1e-5, atol=1e-5)


def test_inside_group_backward_sweep_set():
    """`--sweep-set inside`: general-kernel backward blocks inside one gate group (mode 3), none for
    per-channel gates; one of them (two gathers, own-layout stores) against the reference."""
    import torch

    from cgspn.bench.op import inside_group_backward_configs
    from cgspn.ops.gspn import triton_backend as TB

    assert inside_group_backward_configs(14, 768, 1) == [] and inside_group_backward_configs(14, 96, 12) == []
    cfgs = inside_group_backward_configs(14, 768, 48)
    assert cfgs and all(c.split == 0 and c.block_l == 16 and 48 % c.block_c == 0 for c in cfgs)
    assert {(c.joined, c.asm_dz, c.prefetch) for c in cfgs} == {(j, a, p) for j in (0, 1) for a in (0, 1) for p in (0, 1)}
    W, C, G = 7, 32, 2
    (x, lam, z, u, dy), _, want, h = _reference_case(1, 5, W, C, G, seed=6)
    cfg = next(c for c in inside_group_backward_configs(W, C, C // G) if c.block_c == 16 and not c.joined and c.asm_dz)
    got = TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None, cfg)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


def test_evict_sweep_set():
    """`--sweep-set evict`: the heuristic's forward and backward configs with the eviction hints;
    the split (L = 9) and general (L = 5) kernels that take them give the reference's results
    (the interpreter ignores the hints; tests/ops/test_gspn_gpu.py checks them compiled)."""
    import dataclasses

    import torch

    from cgspn.bench.op import VARIANT_SETS
    from cgspn.ops.gspn import triton_backend as TB

    fwd_set, bwd_set = VARIANT_SETS["evict"]
    heuristics = lambda L, C, G, B, it: (TB.gspn2d_forward_config(B, L, L, C, G, it),
                                         TB.backward_config(L, C, C // G, B=B, itemsize=it)[0])
    evicted = lambda L, C, G, B, it: [c for h, build in zip(heuristics(L, C, G, B, it), (fwd_set, bwd_set))
                                      for c in build(h, L)]
    for L, C, G, it in ((147, 64, 16, 2), (74, 64, 1, 4), (14, 768, 16, 2)):
        f, b = evicted(L, C, G, 32, it)
        assert f == dataclasses.replace(TB.gspn2d_forward_config(32, L, L, C, G, it), evict=True)
        assert b == dataclasses.replace(TB.backward_config(L, C, C // G, B=32, itemsize=it)[0], evict=True)
    split = TB.LaunchConfig(4, 8, 1, 1, 1, False, 3, True, evict=True)
    for L, f, b in ((9, split, split), (5, *evicted(5, 16, 2, 1, 4))):
        (x, lam, z, u, dy), want_y, want, h = _reference_case(1, L, L, 16, 2, seed=8)
        y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, None, True, f)
        torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-5)
        for a, w in zip(TB.gspn2d_bwd_triton(dy, x, lam, z, u, hs, None, b), want):
            torch.testing.assert_close(a.double(), w, rtol=1e-5, atol=1e-5)


def test_tiles_sweep_set():
    """`--sweep-set tiles`: the heuristic's split configs cut into more, shorter tiles (no more
    padding, 1-4 elements of a tile per thread); a 10-tile line against the reference."""
    import torch

    from cgspn.bench.op import VARIANT_SETS, _more_tiles
    from cgspn.ops.gspn import triton_backend as TB

    tiles_configs, tiles_backward_configs = VARIANT_SETS["tiles"]
    assert tiles_configs(TB.gspn2d_forward_config(64, 14, 14, 768, 16, 2), 14) == []  # not a split config: nothing to cut
    cfgs = (tiles_configs(TB.gspn2d_forward_config(32, 147, 147, 64, 1, 2), 147)
            + tiles_backward_configs(TB.backward_config(74, 64, 1, B=32, itemsize=2)[0], 74))
    assert cfgs and all(c.scratch and c.split >= 7 and c.block_l * c.split in (80, 160) for c in cfgs)
    assert all(32 * c.num_warps <= c.block_l * c.block_c <= 128 * c.num_warps for c in cfgs)
    base = TB.LaunchConfig(16, 8, 2, 1, 1, False, 5, True)
    assert {(c.block_l, c.split) for c in _more_tiles(base, 74, (1, 2))} == {(8, 10)}
    cfg = TB.LaunchConfig(2, 8, 1, 1, 1, False, 10, True)
    (x, lam, z, u, dy), want_y, want, h = _reference_case(1, 17, 5, 16, 4, seed=10)
    y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, None, True, cfg)
    torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-5)
    for a, w in zip(TB.gspn2d_bwd_triton(dy, x, lam, z, u, hs, None, cfg), want):
        torch.testing.assert_close(a.double(), w, rtol=1e-5, atol=1e-5)


def test_flat_sweep_set_and_kernels():
    """`--sweep-set flat`: the heuristic's split configs with the wrap-around exchange through
    shared memory (``LaunchConfig.flat``); split kernels of 1, 5 and 10 tiles with it give the
    reference's outputs and gradients."""
    import torch

    from cgspn.bench.op import flat_backward_configs, flat_configs
    from cgspn.ops.gspn import triton_backend as TB

    assert flat_configs(TB.gspn2d_forward_config(64, 14, 14, 768, 16, 2)) == []  # the general kernel: no wrap-around exchange
    for L, G, it in ((147, 16, 2), (147, 64, 2), (74, 1, 4)):  # the heuristic's exchange: scratch, flat, scratch
        heuristic = TB.gspn2d_forward_config(32, L, L, 64, G, it)
        fwd = flat_configs(heuristic)
        bwd = flat_backward_configs(TB.backward_config(L, 64, 64 // G, B=32, itemsize=it)[0])
        assert any(c.flat != heuristic.flat for c in fwd) and heuristic not in fwd and all(c.split for c in fwd)
        assert bwd and all(c.flat and c.split for c in bwd)
    for (H, W, G), cfg in (((17, 19, 2), TB.LaunchConfig(4, 8, 1, 1, 1, False, 5, True, flat=True)),
                           ((9, 7, 16), TB.LaunchConfig(16, 16, 1, 2, 1, False, 1, True, flat=True)),
                           ((17, 5, 4), TB.LaunchConfig(2, 8, 1, 0, 1, False, 10, True, flat=True))):
        (x, lam, z, u, dy), want_y, want, h = _reference_case(1, H, W, 16, G, seed=12)
        y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, None, True, cfg)
        torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-5)
        for a, w in zip(TB.gspn2d_bwd_triton(dy, x, lam, z, u, hs, None, cfg), want):
            torch.testing.assert_close(a.double(), w, rtol=1e-5, atol=1e-5)
    # windows (chunk 3) and a channel count the block does not divide (12 in blocks of 8)
    from cgspn.ops import gspn2d

    g = torch.Generator().manual_seed(13)
    x, lam, z, u, dy = (torch.randn(1, 11, 6, 12, generator=g), torch.rand(1, 11, 6, 4, 12, generator=g),
                        torch.randn(1, 11, 6, 4, 3, 3, generator=g), torch.randn(1, 11, 6, 4, 12, generator=g),
                        torch.randn(1, 11, 6, 4, 12, generator=g))
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    y = gspn2d(*ins[:3], u=ins[3], chunk=3, backend="reference")
    want = torch.autograd.grad(y, ins, dy.double())
    cfg = TB.LaunchConfig(4, 8, 1, 1, 1, False, 3, True, flat=True)
    got_y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, 3, True, cfg)
    torch.testing.assert_close(got_y.double(), y.detach(), rtol=1e-5, atol=1e-5)
    for a, w in zip(TB.gspn2d_bwd_triton(dy, x, lam, z, u, hs, 3, cfg), want):
        torch.testing.assert_close(a.double(), w, rtol=1e-5, atol=1e-5)


def test_every_sweep_set_has_its_help_line():
    assert SWEEP_SET_DOCS.keys() == SWEEP_SETS.keys() | VARIANT_SETS.keys()
    assert not SWEEP_SETS.keys() & VARIANT_SETS.keys()


def test_small_batch_and_wide_flat_sweep_sets():
    """`--sweep-set latflat` (B = 1 tiles) and `--sweep-set wideflat` (the wide tiles, 4-16 warps):
    every config has the shared-memory exchange and covers the line, and a sample computes the op."""
    import torch

    from cgspn.bench.op import small_batch_flat_configs, wide_flat_configs
    from cgspn.ops.gspn import triton_backend as TB

    lat, wide = small_batch_flat_configs(147, 64), wide_flat_configs(74, 64)
    assert lat and wide and all(c.flat and c.split for c in lat + wide)
    assert {c.prefetch for c in lat} == {1, 2} and {c.fence for c in lat} == {False, True}
    assert {c.prefetch for c in wide} == {0, 1, 2} and {c.num_warps for c in wide} == {4, 8, 16}
    assert all(c.split * c.block_l >= 74 for c in wide) and all(c.split * c.block_l >= 147 for c in lat)
    (x, lam, z, u, dy), want_y, _, _ = _reference_case(1, 20, 13, 8, 4, seed=14)
    for cfg in wide_flat_configs(20, 8)[::5]:
        y, _ = TB.gspn2d_fwd_triton(x, lam, z, u, None, False, cfg)
        torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-5, msg=str(cfg))


def test_unroll_sweep_set():
    """`--sweep-set unroll`: the heuristic's split configs with the scan loop unrolled, the forward
    at prefetch 1 and 2, the backward at prefetch 1, warps and channel blocks valid; general-kernel
    configs get none."""
    from cgspn.bench.op import VARIANT_SETS
    from cgspn.ops.gspn import triton_backend as TB

    fwd_set, bwd_set = VARIANT_SETS["unroll"]
    assert fwd_set(TB.gspn2d_forward_config(64, 14, 14, 768, 16, 2)) == []
    assert bwd_set(TB.backward_config(14, 768, 48, B=64, itemsize=2)[0]) == []
    for B, L, G, it in ((32, 147, 16, 2), (32, 74, 1, 4), (1, 147, 1, 2)):
        heuristic = TB.gspn2d_forward_config(B, L, L, 64, G, it)
        fwd = fwd_set(heuristic, L)
        assert fwd and all(c.unroll and c.prefetch in (1, 2) and 1 <= c.num_warps <= 16 for c in fwd)
        assert {c.prefetch for c in fwd} == {1, 2} and heuristic.num_warps in {c.num_warps for c in fwd}
        bwd_h = TB.backward_config(L, 64, 64 // G, B=B, itemsize=it)[0]
        bwd = bwd_set(bwd_h, L)
        assert all(c.unroll and c.prefetch == 1 and c.block_l * c.block_c >= 32 * c.num_warps for c in bwd)
        assert bool(bwd) == bool(bwd_h.split)


def test_row_gates_sweep_set():
    """`--sweep-set rowgates`: the backward heuristic's split configs with one gate group's logits
    as [rows] vectors, with and without the prefetch, at its tiles and at tiles of twice the rows
    that still cover the line (also at half the warps); no forward variants, none for general-kernel
    backwards."""
    from cgspn.bench.op import VARIANT_SETS
    from cgspn.ops.gspn import triton_backend as TB

    fwd_set, bwd_set = VARIANT_SETS["rowgates"]
    assert fwd_set(TB.gspn2d_forward_config(32, 74, 74, 64, 1, 2), 74) == []
    assert bwd_set(TB.backward_config(14, 768, 768, B=64, itemsize=2)[0]) == []
    for L, it in ((74, 2), (147, 2), (74, 4), (147, 4)):
        heuristic = TB.backward_config(L, 64, 64, B=32, itemsize=it)[0]
        got = bwd_set(heuristic, L)
        assert got[:2] == [dataclasses.replace(heuristic, row_gates=True, prefetch=pf) for pf in (0, 1)]
        taller = got[2:]
        assert len(taller) == 3 and all(c.row_gates and c.block_l == 2 * heuristic.block_l for c in taller)
        assert taller[2].num_warps == heuristic.num_warps // 2 and taller[2].prefetch == 0
        assert all(c.block_l * (c.split - 1) < L <= c.block_l * c.split for c in got)
