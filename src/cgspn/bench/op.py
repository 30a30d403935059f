"""``cgspn bench op``: the fused GSPN operator against the copy roofline and the per-line loop.

For each shape (B, H, W, C), gate groups G and dtype it reports median forward and backward
milliseconds of the fused kernel, the bytes the op must move (each input read once, each output
written once: "unique bytes"), the achieved GB/s on those bytes, that as a % of the device-to-device
copy bandwidth measured in the same run, and the speedup over the per-line PyTorch loop (the
reference backend: one vectorised step per line, as GSPN-1's pure-PyTorch path).

Each row also times the general forward kernel (one tile per line) in the same run
(``fwd_general_ms``; ``gain_vs_general`` = its time over the dispatched kernel's, 1 where the default
is the general kernel). ``fwd_ms`` goes through the public op (its checks, dispatch and
allocations on the host), ``bwd_ms`` through what an eager backward runs (the launch builder and the
partial sums; before the eighth session, the registered ``cgspn::gspn2d_bwd`` op's wrappers too); ``fwd_kernel_ms`` / ``bwd_kernel_ms`` time the dispatched kernel alone from a
launch built once (the backward without the caller's sums of its per-direction partials), which is
the GPU time when the op path's host work is longer than the kernel. ``--sweep`` also times a grid of launch configurations per shape, each checked
against the heuristic's outputs first, and reports the best. Swept configs are timed as the kernel
columns are, from a launch built once (the backward also with the caller's sums, ``bwd_with_sums_ms``),
and compared with the heuristic's config timed the same way. (Until the eighth session they were timed
through the launch builder, whose host work, ~0.16 ms per call on the H200's host, hid every kernel
faster than that: sweeps of 32 x 74 x 74 bf16 before then compare host floors, not kernels.)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from typing import Any, Callable

import torch

from .common import copy_bandwidth_gbs, print_table, run_metadata, time_fn, write_json

DEFAULT_SHAPES = "32,74,74,64;32,147,147,64;1,147,147,64;64,14,14,768"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# largest max|out - heuristic's out| / max|heuristic's out| over all outputs for a swept config to count
# (launch shapes change only fp32 summation order and the rounding of the results)
SWEEP_AGREEMENT = {"bf16": 2e-2, "fp16": 5e-3, "fp32": 1e-4}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="';'-separated B,H,W,C (default: %(default)s)")
    p.add_argument("--groups", default="C,1", help="gate groups G per shape: comma list of ints or 'C' (default: %(default)s)")
    p.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16, fp16, fp32 (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=None, help="window length along the scan axis (default: global)")
    p.add_argument("--no-u", action="store_true", help="benchmark without the output gate u")
    p.add_argument("--iters", type=int, default=20, help="timed repetitions (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before the timed ones")
    p.add_argument("--baseline-max-elems", type=float, default=2e9,
                   help="skip the per-line loop baseline above this many B*H*W*4*C elements")
    p.add_argument("--no-baseline", action="store_true", help="skip the per-line loop baseline")
    p.add_argument("--sweep", action="store_true", help="also time a grid of launch configurations")
    p.add_argument("--sweep-passes", default="fwd,bwd", help="which kernels --sweep times: fwd, bwd or both (default: %(default)s)")
    p.add_argument("--sweep-set", default="all", choices=["all", *SWEEP_SETS, *VARIANT_SETS],
                   help="configs --sweep times: all (around the heuristic's), or the heuristic's plus one set: "
                        + "; ".join(f"{name}: {doc}" for name, doc in SWEEP_SET_DOCS.items()) + " (default: %(default)s)")
    p.add_argument("--sweep-limit", type=int, default=0, help="time at most this many configs per pass and shape (0: all)")
    p.add_argument("--compile-workers", type=int, default=0,
                   help="--sweep: compile the swept kernels first in this many worker processes (Triton's disk cache "
                        "then serves the timed runs; 0: compile while timing, default)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="bench_op.json", help="JSON output path (default: %(default)s)")


def _parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    shapes = []
    for part in text.split(";"):
        vals = tuple(int(v) for v in part.split(","))
        if len(vals) != 4:
            raise ValueError(f"--shapes: each shape is B,H,W,C; got {part!r}")
        shapes.append(vals)  # type: ignore[arg-type]
    return shapes


def op_bytes(B: int, H: int, W: int, C: int, G: int, itemsize: int, with_u: bool) -> dict[str, int]:
    """Unique bytes of the forward and backward (each tensor read or written once)."""
    P = B * H * W
    x, per_dir, z = P * C, P * 4 * C, P * 4 * 3 * G
    fwd = x + per_dir + z + per_dir + (per_dir if with_u else 0)  # x, lam, z, y, (u)
    # backward reads x, lam, z, h (or y), dy, (u) and writes dx, dlam, dz, (du)
    bwd = (x + per_dir + z + per_dir + per_dir) + (x + per_dir + z) + ((2 * per_dir) if with_u else 0)
    return {"fwd": fwd * itemsize, "bwd": bwd * itemsize}


def _inputs(B, H, W, C, G, dtype, device, with_u, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, device=device, dtype=torch.float32).to(dtype)
    x = mk(B, H, W, C)
    lam = mk(B, H, W, 4, C)
    z = mk(B, H, W, 4, 3, G)
    u = mk(B, H, W, 4, C) if with_u else None
    dy = mk(B, H, W, 4, C)
    return x, lam, z, u, dy


def _compile_cases(shape: tuple[int, int, int, int], G: int, dname: str, with_u: bool, chunk: int | None,
                   cases: list[tuple[str, Any]], device: str = "cuda") -> list[str]:
    """Worker of ``--compile-workers``: launch each (pass, config) once on this shape so that Triton
    compiles it into its disk cache; returns the errors (a config that does not compile is reported
    again, with its message, when the main process times it)."""
    from cgspn.ops.gspn import triton_backend as TB

    x, lam, z, u, dy = _inputs(*shape, G, DTYPES[dname], torch.device(device), with_u)
    _, hs = TB.gspn2d_fwd_triton(x, lam, z, u, chunk, True)
    h = hs if hs is not None else TB.gspn2d_fwd_triton(x, lam, z, u, chunk, False)[0]
    errors = []
    for which, cfg in cases:
        try:
            if which == "fwd":
                TB.gspn2d_fwd_triton(x, lam, z, u, chunk, False, cfg)
            else:
                TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, chunk, cfg)
        except Exception as e:  # reported by the timed run
            errors.append(f"{which} {cfg}: {str(e)[:120]}")
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return errors


def precompile(shape: tuple[int, int, int, int], G: int, dname: str, with_u: bool, chunk: int | None,
               cases: list[tuple[str, Any]], workers: int, device: str = "cuda") -> tuple[float, list[str]]:
    """Compile a sweep's kernels in ``workers`` spawned processes (round robin) before it is timed;
    returns the seconds it took and the configs that failed (with their errors). The processes share
    the GPU only while compiling and launching once."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import time

    t0 = time.perf_counter()
    parts = [cases[i::workers] for i in range(workers) if cases[i::workers]]
    errors: list[str] = []
    with cf.ProcessPoolExecutor(len(parts), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_compile_cases, shape, G, dname, with_u, chunk, part, device) for part in parts]
        for f in futures:
            try:
                errors += f.result()
            except Exception as e:  # a worker that died (e.g. a faulting config): the timed run reports it
                errors.append(f"worker failed: {str(e)[:200]}")
    return time.perf_counter() - t0, errors


def sweep_configs(L: int, C: int, B: int = 32, shared: bool = False, itemsize: int = 2) -> list[Any]:
    """Forward launch configs: the general kernel's heuristic config and, with the prefetch left to
    Triton's software pipeliner (prefetch 0, num_stages 2-4), that, x0.5/x2 channel blocks and twice
    the warps; then
    split-line configs
    (``LaunchConfig.split``) with 16 / 32 rows per tile and at most 6 tiles, channel
    blocks x0.5/x1/x2 of the split heuristic's, one warp, and the prefetch by hand (num_stages 1)
    or by Triton's pipeliner through shared memory (num_stages 3)."""
    from cgspn.ops.gspn import triton_backend as TB
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2
    from cgspn.ops.gspn.triton_split import MAX_SPLIT

    general = TB.forward_config(L, C, B=B, shared=shared)
    cmax = _next_pow2(C)
    out = [general]
    # the general kernel with the prefetch left to Triton's pipeliner (cp.async through shared memory)
    for bc in sorted({min(cmax, max(1, b)) for b in (general.block_c // 2, general.block_c, general.block_c * 2)}):
        for stages in ((2, 3, 4) if bc == general.block_c else (3,)):
            out.append(LaunchConfig(general.block_l, bc, general.num_warps, 0, stages, general.joined))
    if general.num_warps < 16:  # the pipelined tile needs fewer registers: try twice the warps
        out.append(LaunchConfig(general.block_l, general.block_c, 2 * general.num_warps, 0, 3, general.joined))
    out += scratch_configs(L, C, B, itemsize)
    if TB.split_forward_config(L, C, itemsize=itemsize) is None:
        return out
    rows = sorted({min(_next_pow2(L), k) for k in (16, 32)})
    for k, stages in itertools.product(rows, (1, 3)):
        r = -(-L // k)
        if r > min(6, MAX_SPLIT):  # more tiles spill (AOT-compiled for sm_90: tools/aot_report.py)
            continue
        base = max(1, min(cmax, (16 // itemsize) * max(1, 32 // k)))
        for bc in sorted({min(cmax, max(1, b)) for b in (base // 2, base, base * 2)}):
            out.append(LaunchConfig(k, bc, 1, 0, stages, False, r))
    return out


def _line_tilings(L: int, rows: tuple[int, ...], max_tiles: int) -> list[tuple[int, int]]:
    """(rows per tile, tiles) covering a line of L positions: tiles of ``rows`` rows (at most the
    line's power of two, 16 at least), at most ``max_tiles`` of them."""
    from cgspn.ops.gspn.triton_backend import _next_pow2

    return [(k, -(-L // k)) for k in rows if k <= max(16, _next_pow2(L)) and -(-L // k) <= max_tiles]


def _split_tile_grid(L: int, C: int, B: int, itemsize: int, wide: bool = False) -> list[tuple[int, int, int, int]]:
    """(rows, tiles, channels, warps) of the split-line kernels' sweeps: tiles of 16 / 32 / 64 rows
    (at most the line's power of two) covering the line in at most 6 tiles; channel blocks of
    8 / 16 / 32 (2 / 4 / 8 below 8 batch items, where programs are few), halved for fp32; 2-16
    warps so that a thread holds 1 or 2 elements of a tile. ``wide``: also 64-channel blocks (128-byte
    pieces of bf16 rows) and 4 elements of a tile per thread (for kernels whose staged inputs do not
    hold registers)."""
    from cgspn.ops.gspn.triton_backend import _next_pow2

    out = []
    cmax = _next_pow2(C)
    bcs = ((8, 16, 32) + ((64,) if wide else ())) if B >= 8 else (2, 4, 8)
    if itemsize >= 4:
        bcs = tuple(max(1, b // 2) for b in bcs)
    for k, r in _line_tilings(L, (16, 32, 64), 6):
        for bc in sorted({min(cmax, b) for b in bcs}):
            for per_thread in ((1, 2, 4) if wide else (1, 2)):
                warps = k * bc // (32 * per_thread)
                if 2 <= warps <= 16:
                    out.append((k, r, bc, warps))
    return out


def scratch_configs(L: int, C: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Split-line forward configs whose wrap-around neighbours go through the scratch buffer
    (``LaunchConfig.scratch``): the tiles of :func:`_split_tile_grid`, the prefetch 1 or 2 steps ahead
    by hand."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, pf, 1, False, r, True)
            for k, r, bc, warps in _split_tile_grid(L, C, B, itemsize) for pf in (1, 2)]


def _wide_tiles(L: int, C: int, most_per_thread: int, warp_counts: tuple[int, ...] = (8, 16)) -> list[tuple[int, int, int, int]]:
    """(rows, tiles, channels, warps) of the wide sweeps: tiles of 16 / 32 / 64 rows covering the
    line in at most 6 tiles, 16 / 32 / 64 channels, ``warp_counts`` warps, 1 to ``most_per_thread``
    elements of a tile per thread."""
    from cgspn.ops.gspn.triton_backend import _next_pow2

    cmax = _next_pow2(C)
    return [(k, r, bc, warps) for k, r in _line_tilings(L, (16, 32, 64), 6)
            for bc in sorted({min(cmax, b) for b in (16, 32, 64)}) for warps in warp_counts
            if 32 * warps <= k * bc <= most_per_thread * 32 * warps]


def wide_scratch_configs(L: int, C: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Scratch-exchange split forward configs with wide channel blocks and many warps
    (:func:`_wide_tiles`, 1-4 elements of a tile per thread), the prefetch 1 or 2 steps ahead. The
    scratch set's heuristic-centred grid never paired 64-channel blocks with 16 warps; on the H200
    that pairing reached 79% of copy at 32 x 74 x 74 x 64 (bf16, per-channel gates) against the
    dispatch's 40% (``tools/layout_probe.py``, 2026-12-01)."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, pf, 1, False, r, True) for k, r, bc, warps in _wide_tiles(L, C, 4) for pf in (1, 2)]


def wide_scratch_backward_configs(L: int, C: int) -> list[Any]:
    """Split-line backward configs (scratch exchange) of :func:`_wide_tiles` with 1-2 elements of a
    tile per thread (the backward keeps ten inputs live per element), no prefetch or one step."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, pf, 1, False, r, True) for k, r, bc, warps in _wide_tiles(L, C, 2) for pf in (0, 1)]


def fence_configs(L: int, C: int, B: int = 32, itemsize: int = 2, G: int | None = None) -> list[Any]:
    """Forward configs with a barrier right after each step's input loads (``LaunchConfig.fence``:
    ptxas otherwise issues the prefetch loads after the step's math): the heuristic's own config
    with it, then the wide scratch configs (B >= 8) or the small-batch scratch configs (B < 8), one
    step of prefetch, with it."""
    import dataclasses

    from cgspn.ops.gspn import triton_backend as TB

    base = TB.gspn2d_forward_config(B, L, L, C, C if G is None else G, itemsize)
    out = [dataclasses.replace(base, fence=True)] if base.split else []
    grid = wide_scratch_configs(L, C, B, itemsize) if B >= 8 else scratch_configs(L, C, B, itemsize)
    return out + [dataclasses.replace(c, fence=True) for c in grid if c.prefetch == 1 and c != base]


def fence_backward_configs(L: int, C: int, GS: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Backward configs with ``LaunchConfig.fence``: the heuristic's (when it is a split kernel) and
    the wide scratch backward configs with one step of prefetch."""
    import dataclasses

    from cgspn.ops.gspn import triton_backend as TB

    base, _ = TB.backward_config(L, C, GS, B=B, itemsize=itemsize)
    out = [dataclasses.replace(base, fence=True)] if base.split else []
    return out + [dataclasses.replace(c, fence=True) for c in wide_scratch_backward_configs(L, C) if c.prefetch == 1]


def _caps(warps: int, most_programs: int) -> list[int]:
    """Register caps (``LaunchConfig.maxnreg``, multiples of 8, 96-248) that let 2 ..
    ``most_programs`` programs of ``warps`` warps share an SM's 64 K registers."""
    out = []
    for n in range(2, most_programs + 1):
        if n * warps > 64:
            break
        cap = min(255, (65536 // (n * warps * 32)) // 8 * 8)
        if 96 <= cap < 255 and cap not in out:  # 255 is no cap; below 96 the kernels spill heavily
            out.append(cap)
    return out


def regcap_configs(L: int, C: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Scratch split forward configs of 4-8 warps with the registers capped so that 2-4 programs
    share an SM (:func:`_caps`): each program's barrier then stalls only its own warps while the
    others compute (the dispatch's 16-warp programs run one per SM). Tiles of
    :func:`_split_tile_grid` (wide), one step of prefetch."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, 1, 1, False, r, True, maxnreg=cap)
            for k, r, bc, warps in _split_tile_grid(L, C, B, itemsize, wide=True) if 4 <= warps <= 8
            for cap in _caps(warps, 3 if warps == 8 else 4)]


def regcap_backward_configs(L: int, C: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Split backward configs of 4-8 warps with the registers capped so that two programs share an
    SM; no prefetch or one step."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, pf, 1, False, r, True, maxnreg=cap)
            for k, r, bc, warps in _split_tile_grid(L, C, B, itemsize) if 4 <= warps <= 8 for pf in (0, 1)
            for cap in _caps(warps, 2) or [128]]


def asmdz_backward_configs(L: int, C: int, GS: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Backward configs with ``LaunchConfig.asm_dz`` (gate-group gradients stored by inline PTX in
    the layout of their channel reduction, no layout conversion): the heuristic's, the wide split
    configs and, for gate groups that do not tile a block, 1-4-warp
    blocks inside one group, each with it."""
    import dataclasses

    from cgspn.ops.gspn import triton_backend as TB
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2

    base, _ = TB.backward_config(L, C, GS, B=B, itemsize=itemsize)
    grid = [base] + wide_scratch_backward_configs(L, C)
    inside = None if base.split else TB._narrowed_inside_group(GS, base.block_c)
    if inside is not None:
        grid += [LaunchConfig(_next_pow2(L), inside, w, pf, 1, True) for w in (1, 2, 4) for pf in (0, 1)
                 if _next_pow2(L) * inside >= 32 * w]
    out: list[Any] = []
    for c in grid:
        c = dataclasses.replace(c, asm_dz=True)
        if c not in out:
            out.append(c)
    return out


def inside_group_backward_configs(L: int, C: int, GS: int) -> list[Any]:
    """General-kernel backward configs whose channel block lies inside one gate group (mode 3: one
    partial gate gradient per block): 8 or 16 channels (those dividing the group), 1-4 warps, no
    prefetch or one step, one gather for both neighbour shifts or two, the gate gradients stored
    plainly or in their reduction's layout. Empty for per-channel gates or where no 8-channel block
    fits inside a group."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2

    bl = _next_pow2(L)
    return [LaunchConfig(bl, bc, w, pf, 1, joined, asm_dz=own)
            for bc in (8, 16) if GS > 1 and GS % bc == 0 and bc <= C for w in (1, 2, 4) if bl * bc >= 32 * w
            for pf in (0, 1) for joined in (False, True) for own in (False, True)]


def short_forward_configs(L: int, C: int) -> list[Any]:
    """Forward configs for lines of at most 32 positions (ViT-B at 224-512 px: 14-32): the general
    kernel (one block of next_pow2(L) rows) and the split kernel as one tile with the scratch
    exchange, each with 8-64 channels, 1-8 warps holding 2-16 elements per thread, the prefetch 1
    or 2 steps ahead. Until the sixth session the dispatch ran the one-tile shuffle kernel with 8-16
    channels and one warp when gate groups did not tile the general kernel's block (e.g. 16 groups
    of 48), which measured 22-46% of copy at 14-32; this set found the narrowed general block."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2

    if L > 32:
        return []
    bl, k = _next_pow2(L), max(16, _next_pow2(L))
    cmax = _next_pow2(C)
    out: list[Any] = []
    for bc in sorted({min(cmax, b) for b in (8, 16, 32, 64)}):
        for w in (1, 2, 4, 8):
            for pf in (1, 2):
                if 2 * 32 * w <= bl * bc <= 16 * 32 * w:
                    out.append(LaunchConfig(bl, bc, w, pf))
                if 2 * 32 * w <= k * bc <= 16 * 32 * w:
                    out.append(LaunchConfig(k, bc, w, pf, 1, False, 1, True))
    return out


def short_backward_configs(L: int, C: int, GS: int = 1, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Backward configs for lines of at most 32 positions (the ViT-B shape's 14) with the split
    kernel's single tile (R = 1: the neighbours are the same thread's rows and the scratch): 8-128
    channels, 1-8 warps with 2-8 elements per thread, no prefetch or one step, the gate-group
    gradients stored in their own layout. Compiled for sm_90 (Triton 3.6) at 64 x 14 x 14 x 768,
    these have 0-2 layout conversions per step where the general kernel has 11 (16 groups of 48)
    or 14 with 28 barriers (per-channel gates). The general kernel's config (what the dispatch ran
    before the one-tile rule) comes first after the heuristic's, for comparison."""
    from cgspn.ops.gspn import triton_backend as TB
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2

    if L > 32:
        return []
    k = max(16, _next_pow2(L))
    cmax = _next_pow2(C)
    general, _ = TB.backward_config(L, C, GS, B=B, itemsize=itemsize, allow_split=False)  # the kernel it replaces
    return [general] + [LaunchConfig(k, bc, w, pf, 1, False, 1, True, asm_dz=True)
                        for bc in sorted({min(cmax, b) for b in (8, 16, 32, 64, 128)}) for w in (1, 2, 4, 8)
                        if 2 * 32 * w <= k * bc <= 8 * 32 * w for pf in (0, 1)]


def pipelined_configs(L: int, C: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Split-line forward configs whose input loads Triton's software pipeliner stages through
    shared memory (``num_stages`` 2-4: ``cp.async``, S - 1 steps of loads in flight without holding
    registers), the wrap-around neighbours exchanged by ``tl.gather`` (the compiler's own shared
    memory and barriers, which the pipeliner may not reorder, unlike the scratch buffer's global
    loads): the tiles of :func:`_split_tile_grid`. Compiled for sm_90 (Triton 3.6) at 32 x 147 x 147 x 64,
    per-channel gates, 16 warps, 3 stages: 99 registers, 122 KB of shared memory, no ``ld.global``
    left in the loop, 5 layout conversions and 12 barriers per step (the scratch kernel: 128
    registers, 1 barrier)."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, 0, stages, False, r, False)
            for k, r, bc, warps in _split_tile_grid(L, C, B, itemsize, wide=True) for stages in (2, 3, 4)
            if _staged_bytes(k * r, bc, itemsize) * (stages - 1) <= 200 * 1024]


def _staged_bytes(L_pad: int, bc: int, itemsize: int) -> int:
    """Shared memory one pipeline stage of the forward's inputs takes (x, lam, u, three logits at
    per-channel width: the upper bound)."""
    return L_pad * bc * itemsize * 6


def latency_configs(L: int, C: int, itemsize: int = 2) -> list[Any]:
    """Forward configs for few programs (B = 1), where a step's dependent chain sets the time:
    the warp-shuffle split kernel (no barrier, no scratch round trip through L2; 16 or 32 rows on
    the lanes, 1-8 channels per lane, 1-2 warps, prefetch 1-2) and the scratch kernel's small-batch
    tiles (:func:`scratch_configs` at B = 1). The shuffle kernel runs its prefetch 1 step ahead
    whatever the config says; the single-warp kernels with the exchange through a gather of the
    flattened tile (``LaunchConfig.flat``, eighth session) run 1 or 2 steps ahead. Those test whether
    the step waits for its loads: compiled for sm_90 (Triton 3.6) at 1 x 147 x 147 x 64 bf16, 5 x 32
    rows, 2 channels, 1 warp, 2 steps ahead, they take 249 registers without spilling, no barrier,
    ~620 instructions per thread and step (the scratch kernel's step: ~1 us measured)."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2
    from cgspn.ops.gspn.triton_split import MAX_SPLIT

    out = []
    cmax = _next_pow2(C)
    for k, r in _line_tilings(L, (16, 32), MAX_SPLIT):
        for bc in sorted({min(cmax, b) for b in (1, 2, 4, 8)}):
            for warps in (1, 2):
                if k * bc < 32 * warps:  # at least one element of a tile per thread
                    continue
                out += [LaunchConfig(k, bc, warps, pf, 1, False, r, False) for pf in (1, 2)]
    return out + single_warp_flat_configs(L, C) + scratch_configs(L, C, 1, itemsize)


def single_warp_flat_configs(L: int, C: int) -> list[Any]:
    """Split forwards of one warp with the exchange through shared memory (``LaunchConfig.flat``):
    tiles of 32 rows (a row per lane), 1-4 channels per lane, the prefetch 1 or 2 steps ahead; no
    barrier per step. For few programs (B = 1), where the step's chain sets the time
    (:func:`latency_configs`)."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2
    from cgspn.ops.gspn.triton_split import MAX_SPLIT

    cmax = _next_pow2(C)
    return [LaunchConfig(k, bc, 1, pf, 1, False, r, False, flat=True)
            for k, r in _line_tilings(L, (32,), MAX_SPLIT)
            for bc in sorted({min(cmax, b) for b in (1, 2, 4)}) for pf in (1, 2)]


def small_batch_flat_configs(L: int, C: int, itemsize: int = 2) -> list[Any]:
    """The small-batch scratch forwards of :func:`scratch_configs` (B = 1: tiles of 16-64 rows,
    1-8 channels, 1-16 warps) with the wrap-around exchange through shared memory
    (``LaunchConfig.flat``), the prefetch 1 or 2 steps ahead, with and without the barrier after the
    loads (``fence``): the ninth session's one-group B = 1 gain (1.06x) tried on every tile."""
    out: list[Any] = []
    for cfg in scratch_configs(L, C, 1, itemsize):
        for pf, fence in itertools.product((1, 2), (False, True)):
            v = dataclasses.replace(cfg, flat=True, prefetch=pf, fence=fence)
            if v not in out:
                out.append(v)
    return out


def wide_flat_configs(L: int, C: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """The wide sweep's tiles (:func:`_wide_tiles`, 1-4 elements of a tile per thread; 4 warps added)
    with the wrap-around exchange through shared memory (``LaunchConfig.flat``), the prefetch 0-2
    steps ahead. The L2 traffic of the per-channel forward at 74 x 74 is 1.26x its bytes with the
    scratch and would be ~1.12x without it (ninth session's ncu), but the flat variants of the
    heuristic's tile spilled at 16 warps or lost at 8; this grid looks for one that does neither."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, pf, 1, False, r, True, flat=True)
            for k, r, bc, warps in _wide_tiles(L, C, 4, (4, 8, 16)) for pf in (0, 1, 2)]


def scratch_backward_configs(L: int, C: int, B: int = 32, itemsize: int = 2, GS: int = 1) -> list[Any]:
    """Split-line backward configs (always the scratch exchange): the tiles of
    :func:`_split_tile_grid`, prefetch 0 or 1; with gate groups (GS > 1) each also with the
    gate-group gradients stored in their own layout (``LaunchConfig.asm_dz``)."""
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    return [LaunchConfig(k, bc, warps, pf, 1, False, r, True, asm_dz=own)
            for k, r, bc, warps in _split_tile_grid(L, C, B, itemsize)
            for own in ((False, True) if GS > 1 else (False,)) for pf in (0, 1)]


def evict_configs(cfg: Any, L: int = 0) -> list[Any]:
    """The heuristic's config ``cfg`` (forward or backward) with the cache eviction hints
    (``LaunchConfig.evict``: x kept in L2 between its four directions' reads, the streamed
    tensors evicted first)."""
    return [dataclasses.replace(cfg, evict=True)]


def _more_tiles(cfg: Any, L: int, warps: tuple[int, ...]) -> list[Any]:
    """``cfg`` (a scratch split config) with its line cut into more, shorter tiles: rows of 8 / 16 /
    32 (fewer than ``cfg``'s), 7-12 tiles, no more padding than ``cfg``'s; ``warps`` for each that
    leave a thread 1-4 elements of a tile. The scratch carries 2 of the R tiles per step (fp32, a
    store and a load through L2), so R = 10 halves that traffic against R = 5."""
    if not (cfg.split and cfg.scratch):
        return []
    pad = cfg.block_l * cfg.split
    out = []
    for k, r in _line_tilings(L, (8, 16, 32), 12):
        if k < cfg.block_l and r > cfg.split and r >= 7 and k * r <= pad:
            out += [dataclasses.replace(cfg, block_l=k, split=r, num_warps=w) for w in warps
                    if 32 * w <= k * cfg.block_c <= 4 * 32 * w]
    return out


def flat_configs(cfg: Any, L: int = 0) -> list[Any]:
    """The forward heuristic's split config ``cfg`` with the other wrap-around exchange (through
    shared memory, ``LaunchConfig.flat``, or the scratch), and the shared-memory one with the
    prefetch 0 or 2 steps ahead or with half the warps. The last two fit where the heuristic's
    16 warps sit at the 128-register cap and the exchange's indices spill: at 32 x 74 x 74 x 64 in
    bf16 the sm_90 compile (Triton 3.6) gives 113 registers without the prefetch and 233 at 8 warps,
    no spill (the sweep measured with 16 warps and the prefetch: 80 bytes of stack, slower)."""
    if not cfg.split:
        return []
    variants = [dataclasses.replace(cfg, flat=not cfg.flat)]
    variants += [dataclasses.replace(cfg, flat=True, prefetch=pf) for pf in (0, 2)]
    if cfg.num_warps >= 4:
        variants.append(dataclasses.replace(cfg, flat=True, num_warps=cfg.num_warps // 2))
    out: list[Any] = []
    for v in variants:
        if v != cfg and v not in out:
            out.append(v)
    return out


def flat_backward_configs(cfg: Any, L: int = 0) -> list[Any]:
    """The backward heuristic's split config ``cfg`` with the exchange through shared memory
    (:func:`flat_configs`), prefetch 0 and 1."""
    return [dataclasses.replace(cfg, flat=True, prefetch=pf) for pf in (0, 1)] if cfg.split else []


def unroll_configs(cfg: Any, L: int = 0) -> list[Any]:
    """The forward heuristic's split config ``cfg`` (scratch or shared-memory exchange) with the
    scan loop unrolled (``LaunchConfig.unroll``), the prefetch 1 or 2 steps ahead, at the
    heuristic's warps and at half / twice as many (the unrolled body keeps more values live: at 16
    warps the 128-register cap may spill)."""
    if not (cfg.split and (cfg.scratch or cfg.flat)) or cfg.num_stages >= 2:
        return []
    warps = sorted({w for w in (cfg.num_warps // 2, cfg.num_warps, cfg.num_warps * 2) if 1 <= w <= 16})
    return [dataclasses.replace(cfg, unroll=True, prefetch=pf, num_warps=w) for pf in (1, 2) for w in warps]


def unroll_backward_configs(cfg: Any, L: int = 0) -> list[Any]:
    """The backward heuristic's split config ``cfg`` with the prefetch 1 step ahead and the loop
    unrolled by 2 (:func:`unroll_configs`), at its channel block and at half of it (the backward
    sits near 255 registers, and the unrolled body spills there), at its warps and twice as many."""
    if not cfg.split:
        return []
    bcs = sorted({b for b in (cfg.block_c // 2, cfg.block_c) if b >= 1})
    warps = sorted({w for w in (cfg.num_warps, cfg.num_warps * 2) if w <= 16})
    return [dataclasses.replace(cfg, unroll=True, prefetch=1, block_c=bc, num_warps=w) for bc in bcs for w in warps
            if cfg.block_l * bc >= 32 * w]


def row_gates_backward_configs(cfg: Any, L: int = 0) -> list[Any]:
    """The backward heuristic's split config ``cfg`` with one gate group's logits carried as [rows]
    vectors (``LaunchConfig.row_gates``), with the prefetch 1 step ahead and without it, at its
    tiles and at tiles of twice the rows (fewer of them: 4 elements of a tile per thread, so
    64-bit bf16 / 128-bit fp32 accesses and 3 shuffle levels per channel sum instead of 4).

    Screened for sm_90 without a GPU (eleventh session, Triton 3.6; loop SASS per element of the
    one-group backward, the dispatch's config first): 32 x 74 x 74 x 64 bf16 120.9, with row_gates
    96.8, with them and 3 tiles of 32 x 32 64.3 (prefetch 1, 188 registers) / 60.9 (none, 181);
    147 x 147 bf16 117.8 / 93.7 / 63.2 / 59.8 (3 tiles of 64 x 16); 74 x 74 fp32 110.1 / 87.5 /
    54.2 / 51.3, none of them spilling; the taller tiles at half the warps without the prefetch
    (8 elements of a tile per thread, 2 programs per SM) 44.9 (74, bf16) and 44.1 (147, bf16) at
    185 registers (fp32 spilled 104 bytes). For 16 gate groups, where row_gates changes nothing, the
    taller tiles without the prefetch compile to 56.2 (bf16) / 44.4 (fp32) against 85.4 / 86.7 at
    74 x 74, with no shared-memory access in the loop. Halving the channel block or doubling the warps instead
    compiled worse (one element per thread and tile, 147-160 instructions per element, or 248-288
    bytes of spill; ``docs/results/rowgates_bwd_aot_screen_sm90_triton36.json``, the set as it is now
    ``..._tiles_sm90_triton36.json``)."""
    if not cfg.split:
        return []
    out = [dataclasses.replace(cfg, row_gates=True, prefetch=pf) for pf in (0, 1)]
    k = 2 * cfg.block_l
    if L and -(-L // k) >= 2:
        taller = dataclasses.replace(cfg, row_gates=True, block_l=k, split=-(-L // k))
        out += [dataclasses.replace(taller, prefetch=pf) for pf in (0, 1)]
        if cfg.num_warps >= 2:  # 8 elements of a tile per thread; with the prefetch these spilled (80-104 bytes)
            out.append(dataclasses.replace(taller, prefetch=0, num_warps=cfg.num_warps // 2))
    return out


_scratch_bwd = lambda L, C, B, it, GS: scratch_backward_configs(L, C, B, it, GS)
_none = lambda *_: []
# --sweep-set NAME (other than "all"): (forward configs (L, C, B, itemsize, G), backward configs
# (L, C, B, itemsize, GS)), each timed after the heuristic's own config; sets without a backward of
# their own sweep the scratch backward
# one line each for --help (the builders' docstrings say more)
SWEEP_SET_DOCS = {
    "scratch": "scratch-exchange split kernels around the heuristic's tile",
    "latency": "(forward, small batches) shuffle and small-batch scratch split kernels",
    "pipelined": "(forward) split kernels with Triton-pipelined loads",
    "wide": "scratch split kernels with wide channel blocks and 8-16 warps",
    "fence": "a barrier after each step's loads, on the heuristic's and the wide (B >= 8) or small-batch scratch configs",
    "regcap": "scratch configs of 4-8 warps with registers capped so that 2-4 programs share an SM",
    "asmdz": "(backward) the wide configs and blocks inside one gate group, gate-group gradients stored in their own layout",
    "short": "(lines <= 32) the general kernel's and one-tile split configs",
    "inside": "(backward) general blocks inside one gate group",
    "warp1": "(forward, small batches) one-warp split kernels with the shared-memory exchange, prefetch 1-2",
    "latflat": "(forward, small batches) the small-batch scratch tiles with the shared-memory exchange, prefetch 1-2, fence or not",
    "wideflat": "(forward) the wide tiles (4-16 warps) with the shared-memory exchange, prefetch 0-2",
    "evict": "the heuristic's configs with cache eviction hints (x kept in L2, streamed tensors evicted first)",
    "tiles": "the heuristic's split configs with 7-12 shorter tiles per line (less scratch traffic per step)",
    "flat": "the heuristic's split configs with the wrap-around exchange through shared memory (no scratch)",
    "unroll": "the heuristic's split configs with the scan loop unrolled by prefetch + 1 (no register copies of prefetched values)",
    "rowgates": "the heuristic's split backward with one gate group's logits carried as [rows] vectors (the gate math once per row), at its tiles and at tiles of twice the rows",
}
SWEEP_SETS: dict[str, tuple[Callable[..., list[Any]], Callable[..., list[Any]]]] = {
    "scratch": (lambda L, C, B, it, G: scratch_configs(L, C, B, it), _scratch_bwd),
    "latency": (lambda L, C, B, it, G: latency_configs(L, C, it), _scratch_bwd),
    "pipelined": (lambda L, C, B, it, G: pipelined_configs(L, C, B, it), _scratch_bwd),
    "wide": (lambda L, C, B, it, G: wide_scratch_configs(L, C, B, it), lambda L, C, B, it, GS: wide_scratch_backward_configs(L, C)),
    "fence": (lambda L, C, B, it, G: fence_configs(L, C, B, it, G), lambda L, C, B, it, GS: fence_backward_configs(L, C, GS, B, it)),
    "regcap": (lambda L, C, B, it, G: regcap_configs(L, C, B, it), lambda L, C, B, it, GS: regcap_backward_configs(L, C, B, it)),
    "asmdz": (_none, lambda L, C, B, it, GS: asmdz_backward_configs(L, C, GS, B, it)),
    "short": (lambda L, C, B, it, G: short_forward_configs(L, C), lambda L, C, B, it, GS: short_backward_configs(L, C, GS, B, it)),
    "inside": (_none, lambda L, C, B, it, GS: inside_group_backward_configs(L, C, GS)),
    "warp1": (lambda L, C, B, it, G: single_warp_flat_configs(L, C), _none),
    "latflat": (lambda L, C, B, it, G: small_batch_flat_configs(L, C, it), _none),
    "wideflat": (lambda L, C, B, it, G: wide_flat_configs(L, C, B, it), _none),
}
# --sweep-set NAME: variants of the heuristic's own (forward, backward) config, built from it and the
# line length: (heuristic config, L) -> configs
VARIANT_SETS: dict[str, tuple[Callable[..., list[Any]], Callable[..., list[Any]]]] = {
    "evict": (evict_configs, evict_configs),
    "tiles": (lambda cfg, L: _more_tiles(cfg, L, (8, 16)), lambda cfg, L: _more_tiles(cfg, L, (4, 8, 16))),
    "flat": (flat_configs, flat_backward_configs),
    "unroll": (unroll_configs, unroll_backward_configs),
    "rowgates": (lambda cfg, L: [], row_gates_backward_configs),
}


def sweep_backward_configs(L: int, C: int, GS: int, B: int = 32, itemsize: int = 2) -> list[Any]:
    """Backward launch configs around the heuristic's: channel block x0.5/x1/x2, 4/8/16 warps,
    prefetch 0/1 (prefetching ten step inputs doubles the live registers, which spills in fp32),
    and the heuristic's block with the prefetch left to Triton's pipeliner (num_stages 2, 3)."""
    from cgspn.ops.gspn import triton_backend as TB
    from cgspn.ops.gspn.triton_backend import LaunchConfig, _next_pow2

    default, _ = TB.backward_config(L, C, GS, B=B, itemsize=itemsize)
    bl = default.block_l
    cmax = _next_pow2(C)
    bcs = sorted({min(cmax, max(1, b)) for b in (default.block_c // 2, default.block_c, default.block_c * 2)})
    out = []
    for bc, warps, pf in itertools.product(bcs, (4, 8, 16), (0, 1)):
        if bl * bc >= 32 * warps:  # at least one element per thread
            out.append(LaunchConfig(bl, bc, warps, pf, 1, default.joined))
    for warps, stages in itertools.product((4, 8, 16), (2, 3)):  # prefetch by Triton's pipeliner
        if bl * default.block_c >= 32 * warps:
            out.append(LaunchConfig(bl, default.block_c, warps, 0, stages, default.joined))
    # gate groups that neither divide nor tile the block (e.g. 48 channels) make the kernel write
    # per-channel gate gradients in fp32 for the caller to sum; a block inside one group (the
    # largest power of two dividing the group) writes one partial per block instead
    inside = GS & -GS
    if 1 < GS and GS % default.block_c and default.block_c % GS and inside > 1:
        for warps in (1, 2, 4):
            if bl * inside >= 32 * warps:
                out += [LaunchConfig(bl, inside, warps, pf, 1, default.joined) for pf in (0, 1)]
    return out


def _compiled_resources(compiled: Any) -> dict[str, int]:
    """Registers and spills per thread of a launch's compiled kernel (what Triton's launch returned;
    empty under the interpreter, which compiles nothing)."""
    out = {}
    for key in ("n_regs", "n_spills"):
        value = getattr(compiled, key, None)
        if isinstance(value, int):
            out[key] = value
    return out


def _ramp_clocks(fn: Callable[[], Any], device: torch.device, seconds: float = 0.3) -> None:
    """Run ``fn`` back to back for ``seconds`` before a sweep's first timing: after the compile phase
    the GPU idles at low clocks, and the first config timed (the heuristic's) would otherwise run
    before they ramp up (eighth session: 0.063 ms against 0.045 for the same config timed later)."""
    if device.type != "cuda":
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            fn()
        torch.cuda.synchronize(device)


def best_of_sweep(rows: list[dict[str, Any]], sweeps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (shape, G, dtype, pass): the fastest swept config whose outputs agree with the heuristic's
    (``SWEEP_AGREEMENT``) against the heuristic's timing."""
    out = []
    for r in rows:
        for which in ("fwd", "bwd"):
            cand = [s for s in sweeps if s.get("pass") == which and s["shape"] == [r["B"], r["H"], r["W"], r["C"]]
                    and s["G"] == r["G"] and s["dtype"] == r["dtype"] and f"{which}_ms" in s and s.get("agrees", True)]
            if not cand:
                continue
            b = min(cand, key=lambda s: s[f"{which}_ms"])
            c = b["config"]
            # the heuristic timed as the swept configs are (kernel alone); else the row's kernel-alone time
            own = [s[f"{which}_ms"] for s in cand if s.get("heuristic")]
            base = min(own) if own else r.get(f"{which}_kernel_ms", r[f"{which}_ms"])
            out.append({"B": r["B"], "H": r["H"], "W": r["W"], "C": r["C"], "G": r["G"], "dtype": r["dtype"], "pass": which,
                        "heuristic_ms": base, "best_ms": b[f"{which}_ms"], "gain": base / b[f"{which}_ms"],
                        "best_config": (f"split={c.get('split', 0)} rows={c['block_l']} stages={c['num_stages']} "
                                        f"pf={c['prefetch']} scratch={int(c.get('scratch', 0))} fence={int(c.get('fence', 0))} maxnreg={c.get('maxnreg', 0)} "
                                        f"asm_dz={int(c.get('asm_dz', 0))} flat={int(c.get('flat', 0))} evict={int(c.get('evict', 0))} "
                                        f"unroll={int(c.get('unroll', 0))} rg={int(c.get('row_gates', 0))} "
                                        if c.get("split") else f"bl={c['block_l']} pf={c['prefetch']} j={int(c['joined'])} ")
                        + f"bc={c['block_c']} w={c['num_warps']}"})
    return out


def _sweep_shape(args: argparse.Namespace, device: torch.device, shape: tuple[int, int, int, int], G: int, dname: str,
                 tensors: tuple[Any, ...], nbytes: dict[str, int], with_u: bool) -> list[dict[str, Any]]:
    """``--sweep`` on one shape: every config of the chosen set (the heuristic's first), each checked
    against the heuristic's outputs and timed from a launch built once. Returns the sweep rows."""
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C = shape
    x, lam, z, u, dy = tensors
    dtype = DTYPES[dname]
    sweeps: list[dict[str, Any]] = []
    _, hs = TB.gspn2d_fwd_triton(x, lam, z, u, args.chunk, True)
    h = hs if hs is not None else TB.gspn2d_fwd_triton(x, lam, z, u, args.chunk, False)[0]
    passes = {t.strip() for t in args.sweep_passes.split(",")}
    L, it = max(H, W), dtype.itemsize
    heuristic_f = TB.gspn2d_forward_config(B, H, W, C, G, it)
    heuristic_b = TB.backward_config(L, C, C // G, B=B, itemsize=it)[0]
    if args.sweep_set in SWEEP_SETS:  # the heuristic's configs first, then the set's
        fwd_set, bwd_set = SWEEP_SETS[args.sweep_set]
        fwd_cfgs = [heuristic_f] + fwd_set(L, C, B, it, G)
        bwd_cfgs = [heuristic_b] + bwd_set(L, C, B, it, C // G)
    elif args.sweep_set in VARIANT_SETS:
        fwd_set, bwd_set = VARIANT_SETS[args.sweep_set]
        fwd_cfgs = [heuristic_f] + fwd_set(heuristic_f, L)
        bwd_cfgs = [heuristic_b] + bwd_set(heuristic_b, L)
    else:
        fwd_cfgs = sweep_configs(L, C, B, (C // G) >= 8, it)
        bwd_cfgs = sweep_backward_configs(L, C, C // G, B, it)
    limit = lambda cfgs: cfgs[: args.sweep_limit] if args.sweep_limit > 0 else cfgs
    cases = [(which, cfg) for which, cfgs in (("fwd", fwd_cfgs), ("bwd", bwd_cfgs)) if which in passes
             for cfg in limit(cfgs)]
    if args.compile_workers > 0 and cases:
        secs, failed = precompile(shape, G, dname, with_u, args.chunk, cases, args.compile_workers, str(device))
        print(f"# compiled {len(cases)} configs in {secs:.0f} s ({args.compile_workers} workers), "
              f"{len(failed)} failed (reported again when timed)", flush=True)
    want = {"fwd": [TB.gspn2d_fwd_triton(x, lam, z, u, args.chunk, False)[0]],
            "bwd": [t for t in TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, args.chunk) if t is not None]}
    _ramp_clocks(lambda: TB.gspn2d_fwd_triton(x, lam, z, u, args.chunk, False), device)
    for which, cfg in cases:
        extra = {}
        try:
            # built once: the timings are the kernel's GPU time, not the host's build of the
            # launch (~0.1-0.2 ms on the H200's host, longer than the fastest kernels)
            if which == "fwd":
                launch, y, _ = TB.gspn2d_fwd_launch(x, lam, z, u, args.chunk, False, cfg)
                outputs = lambda: [y]
            else:
                launch, sums = TB.gspn2d_bwd_launch(dy, x, lam, z, u, h, args.chunk, cfg)
                outputs = lambda: [t for t in sums() if t is not None]
            compiled = launch.launch()
            # every swept config must agree with the heuristic's outputs (a fast wrong config is no result)
            diff = max(float((a.float() - b.float()).abs().max() / (b.float().abs().max() + 1e-12))
                       for a, b in zip(outputs(), want[which]))
            ms = time_fn(launch.launch, warmup=args.warmup, iters=args.iters, device=device)
            if which == "bwd":  # with the caller's sums of the partials, which depend on the config's reduction mode
                extra["bwd_with_sums_ms"] = time_fn(lambda: (launch.launch(), sums()), warmup=args.warmup,
                                                    iters=args.iters, device=device)
            resources = _compiled_resources(compiled)
        except Exception as e:  # a config that fails to compile (resources) is reported, not fatal
            sweeps.append({"shape": [B, H, W, C], "G": G, "dtype": dname, "pass": which, "config": cfg.__dict__,
                           "error": str(e)[:200]})
            continue
        gbs = nbytes[which] / ms / 1e6
        sweeps.append({"shape": [B, H, W, C], "G": G, "dtype": dname, "pass": which, "config": cfg.__dict__,
                       f"{which}_ms": ms, f"{which}_gbs": gbs, **extra, "rel_diff_vs_heuristic": diff, **resources,
                       "agrees": diff <= SWEEP_AGREEMENT[dname],
                       "heuristic": cfg == (heuristic_f if which == "fwd" else heuristic_b)})
        print(f"sweep {which} {B},{H},{W},{C} G={G} {dname} {cfg}: {ms:.4f} ms ({gbs:.0f} GB/s), "
              f"max |diff| / max |heuristic| {diff:.1e}, {resources}", flush=True)
    return sweeps


def _bench_shape(args: argparse.Namespace, device: torch.device, shape: tuple[int, int, int, int], G: int, dname: str,
                 tensors: tuple[Any, ...], nbytes: dict[str, int], with_u: bool, copy_gbs: float | None) -> dict[str, Any]:
    """The benchmark row of one shape: the public op per call, the dispatched kernels alone, the
    general kernel, the backward, and (unless ``--no-baseline``) the per-line reference loop."""
    from cgspn.ops import gspn2d
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C = shape
    x, lam, z, u, dy = tensors
    dtype = DTYPES[dname]
    fwd = lambda: gspn2d(x, lam, z, u=u, chunk=args.chunk, backend="triton")
    ms_f = time_fn(fwd, warmup=args.warmup, iters=args.iters, device=device)
    general = TB.forward_config(max(H, W), C, B=B, shared=(C // G) >= 8)  # the pre-split kernel, same run
    ms_g = time_fn(lambda: TB.gspn2d_fwd_triton(x, lam, z, u, args.chunk, False, general), warmup=args.warmup, iters=args.iters, device=device)
    _, hs = TB.gspn2d_fwd_triton(x, lam, z, u, args.chunk, True)
    h = hs if hs is not None else fwd()
    # what an eager backward runs (op.py's autograd.Function: the launch and the partial sums)
    ms_b = time_fn(lambda: TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, args.chunk), warmup=args.warmup, iters=args.iters, device=device)
    # the dispatched kernels alone, launches built once: the GPU time when the op path's host work
    # (checks, strides, allocations: ~0.2 ms per call on the H200's host) is longer than the kernel
    launch_f, _, _ = TB.gspn2d_fwd_launch(x, lam, z, u, args.chunk, False)
    launch_b, _ = TB.gspn2d_bwd_launch(dy, x, lam, z, u, h, args.chunk)
    ms_fk = time_fn(launch_f.launch, warmup=args.warmup, iters=args.iters, device=device) if launch_f else ms_f
    ms_bk = time_fn(launch_b.launch, warmup=args.warmup, iters=args.iters, device=device) if launch_b else ms_b
    row: dict[str, Any] = {
        "B": B, "H": H, "W": W, "C": C, "G": G, "dtype": dname, "u": with_u, "chunk": args.chunk,
        "fwd_ms": ms_f, "bwd_ms": ms_b, "fwd_kernel_ms": ms_fk, "bwd_kernel_ms": ms_bk,
        "fwd_general_ms": ms_g, "gain_vs_general": ms_g / ms_fk,
        "fwd_MB": nbytes["fwd"] / 1e6, "bwd_MB": nbytes["bwd"] / 1e6,
        "fwd_GBs": nbytes["fwd"] / ms_f / 1e6, "bwd_GBs": nbytes["bwd"] / ms_b / 1e6,
        "fwd_config": TB.gspn2d_forward_config(B, H, W, C, G, dtype.itemsize).__dict__,
        "bwd_config": TB.backward_config(max(H, W), C, C // G, B=B, itemsize=dtype.itemsize)[0].__dict__,
    }
    if copy_gbs:
        row["fwd_pct_copy"] = 100 * row["fwd_GBs"] / copy_gbs
        row["bwd_pct_copy"] = 100 * row["bwd_GBs"] / copy_gbs
        row["fwd_kernel_pct_copy"] = 100 * nbytes["fwd"] / ms_fk / 1e6 / copy_gbs
        row["bwd_kernel_pct_copy"] = 100 * nbytes["bwd"] / ms_bk / 1e6 / copy_gbs
    if not args.no_baseline and B * H * W * 4 * C <= args.baseline_max_elems:
        ref_f = time_fn(lambda: gspn2d(x, lam, z, u=u, chunk=args.chunk, backend="reference"), warmup=1, iters=3, device=device)
        xs = [t.detach().requires_grad_() for t in (x, lam, z)] + ([u.detach().requires_grad_()] if u is not None else [])

        def ref_fb():
            y = gspn2d(xs[0], xs[1], xs[2], u=xs[3] if u is not None else None, chunk=args.chunk, backend="reference")
            torch.autograd.grad(y, xs, dy)

        ref_fb_ms = time_fn(ref_fb, warmup=1, iters=3, device=device)
        row["loop_fwd_ms"] = ref_f
        row["loop_fwd_bwd_ms"] = ref_fb_ms
        row["speedup_fwd"] = ref_f / ms_f
        row["speedup_fwd_bwd"] = ref_fb_ms / (ms_f + ms_b)
    return row


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (the fused kernel needs a GPU)")
    with_u = not args.no_u
    meta = run_metadata(device)
    copy_gbs = copy_bandwidth_gbs(device) if device.type == "cuda" else None
    meta["copy_bandwidth_gbs"] = copy_gbs
    print(f"# device {meta['device']}, torch {meta['torch']}, triton {meta['triton']}, copy bandwidth {copy_gbs and round(copy_gbs)} GB/s", flush=True)
    rows, sweeps = [], []
    for (B, H, W, C), dname in itertools.product(_parse_shapes(args.shapes), args.dtypes.split(",")):
        for gtxt in args.groups.split(","):
            G = C if gtxt.strip() == "C" else int(gtxt)
            tensors = _inputs(B, H, W, C, G, DTYPES[dname], device, with_u)  # x, lam, z, u, dy
            nbytes = op_bytes(B, H, W, C, G, DTYPES[dname].itemsize, with_u)
            if args.sweep:
                sweeps += _sweep_shape(args, device, (B, H, W, C), G, dname, tensors, nbytes, with_u)
            row = _bench_shape(args, device, (B, H, W, C), G, dname, tensors, nbytes, with_u, copy_gbs)
            rows.append(row)
            write_json(args.out, {"meta": meta, "rows": rows, "sweep": sweeps, "partial": True})  # survives an interrupt
            print(f"{B},{H},{W},{C} G={G} {dname}: fwd {row['fwd_ms']:.4f} ms {row['fwd_GBs']:.0f} GB/s, "
                  f"bwd {row['bwd_ms']:.4f} ms {row['bwd_GBs']:.0f} GB/s", flush=True)
            tensors = None  # this shape's inputs are freed before the next shape's are made
            if device.type == "cuda":
                torch.cuda.empty_cache()
    cols = ["B", "H", "W", "C", "G", "dtype", "fwd_ms", "fwd_GBs", "fwd_pct_copy", "fwd_kernel_ms", "fwd_kernel_pct_copy",
            "fwd_general_ms", "gain_vs_general", "bwd_ms", "bwd_GBs", "bwd_pct_copy", "bwd_kernel_ms", "bwd_kernel_pct_copy",
            "speedup_fwd", "speedup_fwd_bwd"]
    table = print_table(rows, cols)
    best = best_of_sweep(rows, sweeps)
    if best:
        print("\n# best launch config of the sweep vs the heuristic's (ms)")
        print_table(best, ["B", "H", "W", "C", "G", "dtype", "pass", "heuristic_ms", "best_ms", "gain", "best_config"])
    path = write_json(args.out, {"meta": meta, "rows": rows, "sweep": sweeps, "best": best, "table": table})
    print(f"# wrote {path}")
    return 0
