"""GPU tests of the fused kernels (run on the H200: ``pytest -m gpu tests/ops``).

Fast kernel vs the float64 reference (computed on the same device from the same, rounded inputs)
for the output and every gradient, per-dtype relative-RMS tolerances.
"""

import pytest
import torch

from cgspn.ops import gspn2d, line_scan, normalize_gates

from ._tolerance import RATIO, assert_close

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPES = [(3, 37, 53, 48), (1, 1, 129, 64), (2, 147, 147, 64)]


def _launch_inputs(B, H, W, C, G, dtype, seed):
    """x (B, H, W, C), lam in [0, 1) and u, dy (B, H, W, 4, C), gate logits (B, H, W, 4, 3, G) on CUDA."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, device="cuda").to(dtype)
    x = mk(B, H, W, C)
    lam = torch.rand(B, H, W, 4, C, generator=g, device="cuda").to(dtype)
    return x, lam, 2 * mk(B, H, W, 4, 3, G), mk(B, H, W, 4, C), mk(B, H, W, 4, C)


def _assert_launches_match_reference(fwd, bwd, x, lam, z, u, dy):
    """The forward launch ``fwd`` and backward launch ``bwd`` (LaunchConfig): y, h and every
    gradient against the float64 reference's autograd, at the inputs' dtype's tolerance."""
    from cgspn.ops.gspn import triton_backend as TB

    y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, None, True, fwd)
    got = TB.gspn2d_bwd_triton(dy, x, lam, z, u, hs, None, bwd)
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    yr = gspn2d(*ins[:3], u=ins[3], backend="reference")
    want = torch.autograd.grad(yr, ins, dy.double())
    ratio = RATIO[x.dtype]
    assert_close("y", y, yr.detach(), ratio, atol=1e-5)
    floor = ratio * want[1].abs().max().item()
    for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
        assert_close(name, a, b, 2 * ratio, atol=max(1e-5, floor))


def _check(B, H, W, C, G, chunk, dtype, with_u, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g, device="cuda")).to(dtype).requires_grad_()
    x, lam = mk(B, H, W, C), mk(B, H, W, 4, C)
    z = mk(B, H, W, 4, 3, G, scale=2.0)
    u = mk(B, H, W, 4, C) if with_u else None
    dy = torch.randn(B, H, W, 4, C, generator=g, device="cuda").to(dtype)
    ins = [t for t in (x, lam, z, u) if t is not None]
    y = gspn2d(x, lam, z, u=u, chunk=chunk)  # backend None on CUDA = triton
    grads = torch.autograd.grad(y, ins, dy)
    ref = [t.detach().double().requires_grad_() for t in ins]
    yr = gspn2d(ref[0], ref[1], ref[2], u=ref[3] if with_u else None, chunk=chunk, backend="reference")
    grads_r = torch.autograd.grad(yr, ref, dy.double())
    ratio = RATIO[dtype]
    assert y.dtype == dtype
    assert_close("y", y, yr, ratio, atol=1e-5)
    # gradients that are zero in exact arithmetic (e.g. gate logits of a line of length 1, whose
    # only gate normalises to exactly 1) come out as rounding noise: floor at the dlam scale
    floor = ratio * grads_r[1].abs().max().item()
    for name, a, b in zip(("dx", "dlam", "dgate_logits", "du"), grads, grads_r):
        assert a.dtype == dtype
        assert_close(name, a, b, 2 * ratio, atol=max(1e-5, floor))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("G", [1, 8, "C"])
@pytest.mark.parametrize("chunk", [None, 2, 7])
def test_fp32_all_gradients(shape, G, chunk):
    B, H, W, C = shape
    _check(B, H, W, C, C if G == "C" else G, chunk, torch.float32, with_u=True)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("G", [1, "C"])
def test_half_precision_io(shape, dtype, G):
    B, H, W, C = shape
    _check(B, H, W, C, C if G == "C" else G, None, dtype, with_u=G == 1)


def test_large_channel_count_per_channel_gates():
    _check(4, 14, 14, 768, 768, None, torch.bfloat16, with_u=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("L", [14, 24])
def test_forward_narrowed_inside_gate_groups_where_the_dispatch_picks_it(dtype, L):
    """768 channels in 16 groups of 48 on 14- and 24-long lines: the forward's general block
    narrows to 16 channels inside one group (sixth session; before, the one-tile shuffle kernel)."""
    from cgspn.ops.gspn.triton_backend import gspn2d_forward_config

    cfg = gspn2d_forward_config(8, L, L, 768, 16, dtype.itemsize)
    assert (cfg.split, cfg.block_c, cfg.num_warps) == (0, 16, 1)
    _check(8, L, L, 768, 16, None, dtype, with_u=True)


@pytest.mark.parametrize("cfg", [(32, 8, 1, 0, 1, 0, 5), (32, 4, 1, 0, 3, 0, 5), (256, 8, 4, 0, 3, 0, 0),
                                 (32, 8, 4, 1, 1, 0, 5, 1), (32, 4, 2, 2, 1, 0, 5, 1), (32, 16, 8, 1, 1, 0, 5, 1),
                                 (32, 32, 16, 1, 1, 0, 5, 1, 1), (64, 4, 8, 1, 1, 0, 3, 1, 1)],
                         ids=["split5", "split5-piped", "general-piped", "scratch-8c4w", "scratch-4c2w-pf2", "scratch-16c8w",
                              "scratch-32c16w-fence", "scratch-64rows-fence"])
@pytest.mark.parametrize("G,chunk", [(16, None), (64, 7)], ids=["G16", "G64-chunk7"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_forward_launch_variants_the_sweep_times(cfg, G, chunk, dtype):
    """Launch configs the default does not pick but ``bench op --sweep`` times (the split kernel on
    147-long lines, with shuffle or scratch exchange; Triton-pipelined prefetch): y and the saved
    state h against the float64 reference."""
    from cgspn.ops.gspn import triton_backend as TB

    x, lam, z, u, _ = _launch_inputs(2, 147, 147, 64, G, dtype, seed=3)
    config = TB.LaunchConfig(*cfg[:5], bool(cfg[5]), cfg[6], *(bool(v) for v in cfg[7:8]), fence=bool(cfg[8:9] and cfg[8]))
    y, hs = TB.gspn2d_fwd_triton(x, lam, z, u, chunk, True, config)
    yr = gspn2d(x.double(), lam.double(), z.double(), u=u.double(), chunk=chunk, backend="reference")
    hr = gspn2d(x.double(), lam.double(), z.double(), chunk=chunk, backend="reference")
    assert_close("y", y, yr, RATIO[dtype], atol=1e-5)
    assert_close("h", hs, hr, RATIO[dtype], atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 16, 37, 53), (2, 300, 40, 9)], ids=["small", "many-channels"])
def test_line_scan_on_gpu(shape):
    """line_scan forward and every gradient against float64; (2, 300, 40, 9): lines of 40 with
    batch x channels at which gspn2d's backward takes split tiles (line_scan must not)."""
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(*shape, generator=g, device="cuda").requires_grad_()
    lam = torch.randn(*shape, generator=g, device="cuda").requires_grad_()
    gates = [t.detach().requires_grad_() for t in normalize_gates(*torch.randn(3, *shape, generator=g, device="cuda"))]
    ins = [x, lam, *gates]
    dy = torch.randn(*shape, generator=g, device="cuda")
    h = line_scan(*ins, chunk=7)
    gr = torch.autograd.grad(h, ins, dy)
    ref = [t.detach().double().requires_grad_() for t in ins]
    hr = line_scan(*ref, chunk=7, backend="reference")
    grr = torch.autograd.grad(hr, ref, dy.double())
    assert_close("h", h, hr, 1e-4)
    for a, b in zip(gr, grr):
        assert_close("grad", a, b, 1e-4)


def test_no_nan_over_long_lines_bf16():
    """Convex gates keep the state bounded: a 2048-step scan in bf16 stays finite and close."""
    g = torch.Generator(device="cuda").manual_seed(2)
    B, H, W, C = 1, 8, 2048, 16
    x = torch.randn(B, H, W, C, generator=g, device="cuda").bfloat16()
    lam = torch.rand(B, H, W, 4, C, generator=g, device="cuda").bfloat16()
    z = torch.randn(B, H, W, 4, 3, 1, generator=g, device="cuda").bfloat16()
    y = gspn2d(x, lam, z)
    yr = gspn2d(x.double(), lam.double(), z.double(), backend="reference")
    assert torch.isfinite(y).all()
    assert_close("y", y, yr, 2e-2)


_BF16, _FP32 = torch.bfloat16, torch.float32
SPLIT_BWD_GPU = [  # (rows, channels, warps, prefetch, tiles), G, chunk, dtype: each compile takes seconds
    ((32, 8, 8, 1, 5), 16, None, _BF16), ((32, 16, 8, 0, 5), 16, None, _BF16), ((64, 8, 16, 0, 3), 16, None, _BF16),
    ((32, 16, 16, 1, 5), 16, None, _BF16), ((32, 16, 8, 0, 5), 64, 7, _BF16), ((32, 16, 8, 0, 5), 1, None, _BF16),
    ((32, 16, 8, 0, 5), 64, 7, _FP32), ((32, 8, 8, 0, 5), 16, None, _FP32),
    # (..., fence): a barrier after each step's loads
    ((32, 16, 8, 1, 5, True), 64, 7, _BF16), ((32, 16, 8, 1, 5, True), 16, None, _FP32),
    # (..., fence, asm_dz): gate-group gradients stored by inline PTX in their own layout
    ((32, 16, 8, 0, 5, False, True), 16, None, _BF16), ((32, 16, 8, 0, 5, False, True), 1, 7, _BF16),
    ((32, 16, 8, 0, 5, False, True), 16, None, _FP32), ((32, 16, 8, 0, 5, False, True), 4, None, _BF16),
    ((32, 16, 8, 1, 5, False, True), 1, None, _BF16),
]
SPLIT_BWD_GPU_74 = [  # the dispatch's backward configs for 74-long lines (32 x 74 x 74 x 64), G = C / 16 / 1
    ((16, 32, 8, 1, 5), 64, None, _BF16), ((16, 16, 4, 0, 5), 16, 7, _BF16), ((32, 32, 16, 1, 3), 1, None, _BF16),
    ((16, 32, 8, 0, 5), 64, None, _FP32), ((16, 32, 8, 1, 5), 16, None, _FP32), ((16, 32, 8, 1, 5, True), 64, 2, _BF16),
    ((16, 16, 4, 0, 5, False, True), 16, 7, _BF16), ((32, 32, 16, 1, 3, False, True), 1, None, _BF16),
    # the bf16 dispatch since the fifth session: 32 channels, 8 warps, own-layout gate-gradient stores
    ((16, 32, 8, 0, 5, False, True), 16, None, _BF16), ((16, 32, 8, 1, 5, False, True), 1, 7, _BF16),
    # (..., fence, asm_dz, flat, row_gates): one gate group's logits as [rows] vectors (--sweep-set rowgates),
    # at the dispatch's tiles and at 3 tiles of 32 x 32
    ((16, 32, 8, 1, 5, False, True, False, True), 1, None, _BF16), ((32, 32, 8, 1, 3, False, True, False, True), 1, 7, _BF16),
    ((32, 32, 8, 0, 3, False, True, False, True), 1, None, _FP32), ((32, 32, 8, 1, 3, False, False, False, True), 16, None, _BF16),
]
SPLIT_BWD_GPU_147_ROWS = [  # 147-long lines, --sweep-set rowgates: the dispatch's tiles and 3 tiles of 64 x 16
    ((32, 16, 8, 1, 5, False, True, False, True), 1, None, _BF16), ((64, 16, 8, 0, 3, False, True, False, True), 1, None, _BF16),
    ((64, 16, 8, 1, 3, False, True, False, True), 1, 7, _FP32),
    # 16 gate groups on the taller tiles without the prefetch (row_gates changes nothing there)
    ((64, 16, 8, 0, 3, False, True), 16, None, _BF16), ((64, 16, 8, 0, 3), 16, 7, _FP32),
]


SPLIT_BWD_GPU_ONE_TILE = [  # lines of <= 32 as one tile, per-channel gates (sixth session's dispatch), with L;
    # (..., fence, asm_dz, flat): the seventh session's 32-row tiles, exchange through shared memory
    ((16, 64, 4, 1, 1), 64, None, _BF16, 14), ((32, 32, 8, 0, 1), 64, 5, _BF16, 24), ((32, 32, 8, 0, 1), 64, None, torch.float16, 32),
    ((32, 32, 8, 1, 1, False, False, True), 64, 5, _BF16, 24), ((32, 32, 8, 1, 1, False, False, True), 64, None, torch.float16, 32),
]


@pytest.mark.parametrize("cfg,G,chunk,dtype,L", [c + (147,) for c in SPLIT_BWD_GPU + SPLIT_BWD_GPU_147_ROWS]
                         + [c + (74,) for c in SPLIT_BWD_GPU_74] + SPLIT_BWD_GPU_ONE_TILE,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v).replace("torch.", ""))
def test_split_backward_launch_variants(cfg, G, chunk, dtype, L):
    """The split-line backward (scratch exchange) that ``bench op --sweep --sweep-set scratch``
    times: every gradient against the float64 reference's autograd."""
    from cgspn.ops.gspn import triton_backend as TB

    x, lam, z, u, dy = _launch_inputs(2, L, L, 64, G, dtype, seed=5)
    k, bc, warps, pf, r, *rest = cfg
    fence, asm_dz, flat, row_gates = rest + [False] * (4 - len(rest))
    h = gspn2d(x, lam, z, chunk=chunk)
    config = TB.LaunchConfig(k, bc, warps, pf, 1, False, r, True, fence=fence, asm_dz=asm_dz, flat=flat, row_gates=row_gates)
    got = TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, chunk, config)
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    want = torch.autograd.grad(gspn2d(*ins[:3], u=ins[3], chunk=chunk, backend="reference"), ins, dy.double())
    ratio = RATIO[dtype]
    floor = ratio * want[1].abs().max().item()
    for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
        assert_close(name, a, b, 2 * ratio, atol=max(1e-5, floor))


@pytest.mark.parametrize("C,G,cfg", [(96, 2, (16, 16, 1, 1)), (64, 16, (16, 16, 2, 1)), (64, 1, (16, 64, 4, 0))],
                         ids=["groups48-inside", "groups4-mode1", "shared-mode3"])
@pytest.mark.parametrize("asm_dz", [False, True], ids=["store", "asm"])
def test_general_backward_gate_group_stores(C, G, cfg, asm_dz):
    """The general backward's gate-group gradients (modes 1 and 3), stored by tl.store or by inline
    PTX in the reduction's layout (``LaunchConfig.asm_dz``): every gradient against the reference."""
    from cgspn.ops.gspn import triton_backend as TB

    x, lam, z, u, dy = _launch_inputs(2, 14, 13, C, G, torch.float32, seed=9)
    bl, bc, warps, pf = cfg
    config = TB.LaunchConfig(bl, bc, warps, pf, 1, True, asm_dz=asm_dz)
    h = gspn2d(x, lam, z)
    got = TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None, config)
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    want = torch.autograd.grad(gspn2d(*ins[:3], u=ins[3], backend="reference"), ins, dy.double())
    for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
        assert_close(name, a, b, 1e-4, atol=1e-5)


@pytest.mark.parametrize("option,L,G", [("evict", 74, 1), ("evict", 74, 64), ("evict", 14, 16),
                                        ("flat", 74, 1), ("flat", 74, 64), ("flat", 147, 16), ("flat", 147, 1),
                                        ("unroll", 74, 1), ("row_gates", 74, 1), ("row_gates", 147, 1)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_launch_options_on_the_dispatch_configs(option, L, G, dtype):
    """The dispatch's forward and backward configs with one launch option switched on: the cache
    eviction hints (``LaunchConfig.evict``; split kernels at 74 and 147, general ones at 14) or the
    wrap-around exchange through shared memory (``LaunchConfig.flat``), the loop unrolled, one
    gate group's logits as [rows] vectors (``LaunchConfig.row_gates``, backward only): y, h and
    every gradient against the float64 reference."""
    import dataclasses

    from cgspn.ops.gspn import triton_backend as TB

    C = 64
    fwd = dataclasses.replace(TB.gspn2d_forward_config(32, L, L, C, G, dtype.itemsize), **{option: True})
    bwd = dataclasses.replace(TB.backward_config(L, C, C // G, B=32, itemsize=dtype.itemsize)[0], **{option: True})
    _assert_launches_match_reference(fwd, bwd, *_launch_inputs(2, L, L, C, G, dtype, seed=11))


# forward (block_l, block_c, warps, prefetch, tiles, scratch, fence, flat) and backward (block_l, block_c,
# warps, tiles, asm_dz; prefetch 1) with the loop unrolled, L, G
UNROLL_GPU = [
    ((16, 64, 8, 2, 5, True, False, False), (16, 16, 8, 5, False), 74, 64),
    ((64, 4, 8, 2, 3, False, True, True), (32, 16, 8, 5, True), 147, 1),
]


@pytest.mark.parametrize("fwd_cfg,bwd_cfg,L,G", UNROLL_GPU, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_unrolled_split_kernels(fwd_cfg, bwd_cfg, L, G, dtype):
    """The split kernels with the scan loop unrolled (``LaunchConfig.unroll``; the real unrolled
    machine code only runs here, the interpreter iterates the same loop): y, h and every gradient
    against the float64 reference, on odd line lengths (a remainder iteration) and batch 3."""
    from cgspn.ops.gspn import triton_backend as TB

    k, bc, warps, pf, r, scratch, fence, flat = fwd_cfg
    fwd = TB.LaunchConfig(k, bc, warps, pf, 1, False, r, scratch, fence=fence, flat=flat, unroll=True)
    k, bc, warps, r, asm_dz = bwd_cfg
    bwd = TB.LaunchConfig(k, bc, warps, 1, 1, False, r, True, asm_dz=asm_dz, unroll=True)
    # W = L - 1: one direction pair has an even number of steps, the other an odd one
    _assert_launches_match_reference(fwd, bwd, *_launch_inputs(3, L, L - 1, 64, G, dtype, seed=13))
