"""Launchers of the fused Triton kernels: layouts, strides, launch configuration.

Everything here works on already-validated tensors; the public API lives in ``cgspn.ops``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable

import torch

from . import triton_kernels as K
from .triton_split import MAX_SPLIT, split_backward_kernel, split_forward_kernel

__all__ = [
    "LaunchConfig",
    "forward_config",
    "split_forward_config",
    "gspn2d_forward_config",
    "scratch_forward_config",
    "backward_config",
    "scratch_backward_config",
    "KernelLaunch",
    "gspn2d_fwd_launch",
    "gspn2d_bwd_launch",
    "gspn2d_fwd_triton",
    "gspn2d_bwd_triton",
    "line_scan_fwd_triton",
    "line_scan_bwd_triton",
]


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@dataclass(frozen=True)
class LaunchConfig:
    """Tile and launch shape of one kernel call.

    block_l: line positions per program (power of 2 >= the longest line); with ``split`` > 0, the
        rows of each of the ``split`` tiles (line position i = row * split + tile);
    block_c: channels per program; num_warps: warps per program;
    prefetch: issue the loads this many lines ahead of the math (0, 1 or 2);
    num_stages: Triton's own software pipelining of the scan loop (1 = off);
    joined: do the two neighbour shifts as one gather;
    split: forward only: 0 = the general kernel (one [block_l, block_c] tile per line), R >= 1 =
        the split-line kernel (``triton_split``: R tiles of [block_l, block_c], block_l <= 32 rows on
        the lanes of a warp, neighbours by shuffle; prefetch and joined do not apply, num_stages >= 2
        hands the prefetch to Triton's software pipeliner);
    scratch: split-line kernel only: the two wrap-around neighbours go through a small fp32
        buffer with one barrier per step instead of warp shuffles, so the tiles may span
        ``num_warps`` warps (fewer elements per thread); ``prefetch`` (0-2) then applies;
    fence: split-line kernels only: a barrier right after each step's input loads, which keeps
        ptxas from scheduling them after the step's math (``triton_split.split_forward_source``);
    maxnreg: a cap on the registers per thread (0: the compiler's choice), e.g. 128 at 8 warps so
        that two programs fit on an SM and one computes while the other waits at its barrier
        (measured never faster, fifth session; a sweep option);
    asm_dz: backward with gate groups (modes 1 and 3) on CUDA: the gate gradients are stored by
        inline PTX in the layout of their channel reduction, which avoids a layout conversion
        (shared memory, two barriers) per gate and tile (``triton_kernels._store_in_layout``);
    evict: gspn2d: cache eviction hints: x, which all four directions read (at different steps),
        ``evict_last``; the tensors each program streams once (lam, u, the logits, dy and the
        outputs) ``evict_first``, so that the L2 keeps x between its four reads;
    flat: split kernels: the two wrap-around neighbours by a gather of the flattened tile, through
        shared memory (``triton_kernels._flat_shift``), instead of the scratch or warp shuffles;
    unroll: split kernels with a prefetch: the scan loop unrolled by the prefetch depth + 1
        (``tl.range(..., loop_unroll_factor=...)``), so that the registers a step's loads fill are
        not copied at the end of the iteration. Without it the rotation of the prefetched values
        (``cur = next``) is a register copy (``PRMT`` / ``MOV`` in the SASS) that waits for the
        loads issued in that same iteration, which then hide at most one step's math, whatever the
        prefetch depth. Measured slower everywhere (tenth session, ``--sweep-set unroll``): at B = 1,
        1 x 147 x 147 x 64 bf16, where it compiles without spills and the copies are gone, 0.116 ->
        0.139 ms (one gate group) and 0.146 -> 0.155 (per-channel); at B = 32 the unrolled bodies
        spill (16-632 bytes) and run 1.2-2x slower. A sweep option only;
    row_gates: split backward: a gate group that spans the whole channel block (one group for all
        channels, or groups wider than the block) has its logits loaded and carried between steps
        as [rows] vectors (``triton_kernels._rows_of``) instead of [rows, 1] tiles. In the channel
        block's layout a [rows, 1] tile holds a register per channel a thread owns (2 in the bf16
        backward's blocks), and the loop-carried copies are not merged, so every thread loaded once
        but carried and computed each row's gate normalisation and gate gradients twice. sm_90
        compiles (Triton 3.6, ``tools/aot_report.py --sass``) of the dispatch's one-group configs:
        loop SASS per element 120.9 -> 96.8 (32 x 74 x 74 x 64 bf16), 117.8 -> 93.7 (147 x 147
        bf16), 110.1 -> 87.5 (74 x 74 fp32), 98.6 -> 76.3 (147 x 147 fp32), spills 16 -> 8, 16 ->
        8, 32 -> 16, 0 -> 0 bytes. Not yet timed on the GPU (eleventh session had no device time
        left), so the dispatch does not take it yet.
    """

    block_l: int
    block_c: int
    num_warps: int
    prefetch: int = 1
    num_stages: int = 1
    joined: bool = False
    split: int = 0
    scratch: bool = False
    fence: bool = False
    maxnreg: int = 0
    asm_dz: bool = False
    evict: bool = False
    flat: bool = False
    unroll: bool = False
    row_gates: bool = False


# Tuned on the H200 from `cgspn bench op --sweep` (docs/benchmarks.md). The state of a whole line
# lives in registers, so the tile (block_l x block_c) is kept small enough not to spill; below
# ~2 programs per SM, narrower channel blocks give more programs and shorter per-line steps.
_SM_COUNT_GUESS = 132


def _enough_programs(B: int, C: int, bc: int) -> bool:
    return _programs(B, C, bc) >= (3 * _SM_COUNT_GUESS) // 2


def forward_config(
    L: int, C: int, override: LaunchConfig | None = None, *, B: int = 32, shared: bool = False
) -> LaunchConfig:
    """Pick the forward tile for lines of length L, C channels, batch B.

    ``shared``: gates shared by a group of >= 8 channels (normalised once per line position), which
    frees registers for a wider channel block on long lines.
    """
    if override is not None:
        return override
    bl = _next_pow2(L)
    elems = 8192 if (shared and bl >= 256) else 2048
    bc = max(1, min(_next_pow2(C), elems // bl))
    while bc > 8 and not _enough_programs(B, C, bc):
        bc //= 2
    warps = 8 if bl * bc >= 8192 else 4 if bl * bc >= 1024 else 2 if bl * bc >= 256 else 1
    return LaunchConfig(bl, bc, warps, 1)


def split_forward_config(L: int, C: int, *, itemsize: int = 2) -> LaunchConfig | None:
    """The split-line forward's tile for lines of length L (None when L needs more than
    ``MAX_SPLIT`` tiles of 32 rows: the general kernel then runs).

    Rows per tile: the line itself up to 32 positions (one tile), else 32 or 16, whichever pads
    the line less (147 -> 5 x 32 = 160, 74 -> 5 x 16 = 80). Channels: one 16-byte vector per
    thread and row (8 bf16 / 4 fp32) when the rows fill the warp's 32 lanes, more when they do
    not, one warp per program.
    """
    if L <= 32:
        k, r = _next_pow2(L), 1
    else:
        fits = [k for k in (32, 16) if -(-L // k) <= MAX_SPLIT]
        if not fits:
            return None
        _, _, k = min((-(-L // k) * k, -k, k) for k in fits)  # least padding, then more rows
        r = -(-L // k)
    vec = max(1, 16 // max(1, itemsize))
    bc = max(1, min(_next_pow2(C), vec * max(1, 32 // k)))
    return LaunchConfig(k, bc, 1, 0, 1, False, r)


def _programs(B: int, C: int, bc: int) -> int:
    """Programs of one launch (batch x 4 directions x channel blocks), windows aside."""
    return B * 4 * -(-C // bc)


def _one_wave(B: int, C: int, bc: int) -> bool:
    """About one program per SM (>= 0.9 x the SM count), which the wide sweeps' fastest configs had."""
    return _programs(B, C, bc) >= (9 * _SM_COUNT_GUESS) // 10


def _split_tiles(L: int) -> tuple[int, int] | None:
    """(rows, tiles) of the scratch split kernels for lines of L positions: 16 rows up to 96
    positions, 32 up to 192, 64 up to 384 (at most 6 tiles); None outside 33-384."""
    if L <= 32 or L > 6 * 64:
        return None
    k = 16 if L <= 96 else 32 if L <= 192 else 64
    return k, -(-L // k)


def _split_warps(k: int, bc: int) -> int:
    """Warps for 2 elements of a [k, bc] tile per thread, 2 to 16."""
    return max(2, min(16, k * bc // 64))


def scratch_forward_config(B: int, L: int, C: int, itemsize: int) -> LaunchConfig | None:
    """The split-line forward with the scratch exchange for lines of 33-384 positions (None
    otherwise), from the H200 sweeps (``bench op --sweep-set wide``, 2026-12-01; B = 32, C = 64,
    74 x 74 and 147 x 147, per-channel / 4-channel / shared gates, bf16 and fp32):

    * tiles of 32 rows (16 for lines of at most 96, so that 74 pads to 80; 64 beyond 192), so a line
      is at most 6 tiles;
    * a program holds about 5120 elements of a line step (the fastest config of every swept shape
      did: 10 elements per thread at 16 warps in bf16, 20 at 8 warps in fp32), i.e. the channel block
      is the largest power of two <= 5120 / padded line (64 at 74 x 74, 32 at 147 x 147), halved until
      the launch has about one program per SM (B x 4 directions x channel blocks >= 0.9 x 132);
    * warps from the elements per thread (2 to 16); the prefetch 1 step ahead (2 below 16 warps
      in 2-byte dtypes, where the registers allow it).
    Measured (fastest swept or within 2% of it): 32 x 74 x 74 x 64 bf16 0.167 / 0.131 / 0.120 ms
    (per-channel / 4-channel / shared gates; the previous rule 0.332 / 0.177 / 0.220), fp32 0.308 /
    0.211 / 0.181 (0.483 / 0.270 / 0.236); 147 x 147 bf16 unchanged (0.82 / 0.55 / 0.50), fp32
    1.33 / 0.88 / 0.76 (1.56 / 1.03 / 0.96).
    """
    tiles = _split_tiles(L)
    if tiles is None:
        return None
    k, r = tiles
    per_thread = 10 if itemsize <= 2 else 20
    cmax = _next_pow2(C)
    bc = min(cmax, max(1, _next_pow2(5120 // (k * r) + 1) // 2))
    while bc > 1 and not _one_wave(B, C, bc):
        bc //= 2
    warps = max(2, min(16, _next_pow2(k * r * bc // (32 * per_thread))))
    prefetch = 2 if (itemsize <= 2 and warps < 16) else 1
    return LaunchConfig(k, bc, warps, prefetch, 1, False, r, True)


def few_programs_forward_config(B: int, L: int, C: int, GS: int, itemsize: int) -> LaunchConfig | None:
    """The forward for very small batches (B x C <= 132, e.g. one image's 64-channel latent), where
    a step's dependent chain, not bandwidth, sets the time: the scratch split kernel with 64-row
    tiles (147 -> 3 tiles) and 4 channels per program (8 with gate groups inside the block), 8
    warps, so that a thread holds one element of each tile. Measured on the H200 (bf16,
    1 x 147 x 147 x 64, ``bench op --sweep-set latency``, 2026-12-01): 0.146 / 0.129 / 0.156 ms for
    per-channel / 4-channel / shared gates against 0.209 / 0.238 / 0.169 ms for the previous rule.
    With one gate group for all channels (GS = C) a barrier after each step's loads
    (``LaunchConfig.fence``) took it from 0.129 to 0.121 ms (``--sweep-set fence``, fifth session;
    it was slower with per-channel or 4-channel gates). Ninth session (``--sweep-set flat``, kernel
    timed from a launch built once): with that one group, the wrap-around through shared memory
    (``LaunchConfig.flat``) and the prefetch 2 steps ahead, 0.123 -> 0.116 ms (1.06x); with 16 or 64
    groups the same exchange tied (0.128 / 0.143-0.145 ms).
    None outside lines of 97-192 positions, 2-byte inputs and B x C <= 132 (not measured there)."""
    if itemsize > 2 or not 96 < L <= 192 or B * C > _SM_COUNT_GUESS:
        return None
    cmax = _next_pow2(C)
    bc = min(cmax, 8 if 1 < GS < C else 4)
    one_group = GS == C and C > 1
    return LaunchConfig(64, bc, 8, 2 if one_group else 1, 1, False, -(-L // 64), True, fence=one_group, flat=one_group)


def _with_flat_exchange(cfg: LaunchConfig, L: int, GS: int, itemsize: int) -> LaunchConfig:
    """The scratch forward ``cfg`` with its wrap-around exchange through shared memory
    (``LaunchConfig.flat``) where that was measured faster on the H200 (32 x L x L x 64), else ``cfg``:

    * 147-long lines (32-row tiles), bf16 per-channel gates: 1.16x (0.820 -> 0.708 ms, seventh
      session, ``bench op --sweep-set flat``); fp32 with gate groups 1.04x (0.880 -> 0.844 ms with 16
      groups, 0.757 -> 0.729 with one);
    * 147-long lines, bf16 with gate groups, at half the warps (16 -> 8, so the gather's indices do
      not spill at the 128-register cap): 1.03x with 16 groups (0.541 -> 0.523 ms), 1.01x with one
      (0.502 -> 0.495; eighth session, kernels timed from launches built once). Tenth session
      (``--sweep-set wideflat``): as 3 tiles of 64 rows at 16 warps (123 registers, no spill),
      0.528 -> 0.500 ms with 16 groups and 0.494 -> 0.448 with one (1.05 / 1.10x); taken for lines
      of 129-192 (97-128 would be 2 tiles: not measured, they keep the 8-warp rule). ``bench op``
      on the dispatch (eleventh session): 0.488 / 0.445 ms, 68.2 / 61.7% of copy (63.6 / 55.4 before);
    * 74-long lines (16-row tiles), bf16 with gate groups: 1.02x with 16 groups (0.1305 -> 0.1274 ms),
      1.04x with one (0.1214 -> 0.1164; eighth session). Tenth session (``--sweep-set wideflat``): as
      3 tiles of 32 rows (same channel block and warps, 121 registers, no spill) 0.127 -> 0.121 ms
      with 16 groups and 0.116 -> 0.110 with one (1.05x); taken for lines of 65-96 (per-channel gates
      tie there: 0.164 both).

    Elsewhere it ties or loses where the kernel already sits at its register cap (the exchange's
    indices then spill: 74-long lines in bf16 per-channel 0.164 -> 0.217 ms, fp32 per-channel 1.36 ->
    1.42 ms at 147). The L2, not DRAM, is the busiest unit of these forwards (83-91% of its peak,
    ncu), and the scratch round trip is about a fifth of its traffic. Only the measured tiles: 16- or
    32-row tiles, prefetch 1 step."""
    if cfg.prefetch != 1:
        return cfg
    if 96 < L <= 192 and cfg.block_l == 32:
        if itemsize > 2:
            return replace(cfg, flat=True) if GS > 1 else cfg
        if GS == 1:
            return replace(cfg, flat=True)
        if L > 128 and cfg.num_warps >= 16:  # tenth session: 3 tiles of 64 rows at the heuristic's 16 warps
            return replace(cfg, flat=True, block_l=64, split=-(-L // 64))
        return replace(cfg, flat=True, num_warps=cfg.num_warps // 2) if cfg.num_warps >= 16 else cfg
    if 32 < L <= 96 and cfg.block_l == 16 and itemsize <= 2 and GS > 1:
        if L > 64:  # tenth session: 3 tiles of 32 rows instead of 5 of 16 (fewer wrap-arounds per step)
            return replace(cfg, flat=True, block_l=32, split=-(-L // 32))
        return replace(cfg, flat=True)
    return cfg


@lru_cache(maxsize=1024)  # pure in its ints (LaunchConfig is frozen): the op's host path asks it every call
def gspn2d_forward_config(B: int, H: int, W: int, C: int, G: int, itemsize: int) -> LaunchConfig:
    """The launch configuration gspn2d's forward uses.

    Very small batches on lines of 97-192: :func:`few_programs_forward_config`. Lines of 33-384
    positions: the split-line kernel with the scratch exchange (:func:`scratch_forward_config`;
    1.3-3.0x the general kernel on the H200). Shorter lines: the general kernel
    (:func:`forward_config`). Where gate groups do not tile its channel block (which would make it
    normalise the gates once per channel, e.g. 768 channels in 16 groups of 48), the block narrows
    to the widest power of two inside one group (at most 16), one warp, the prefetch 2 steps ahead.
    Measured on the H200 (sixth session, ``bench op --sweep-set short``, bf16, C = 768, G = 16):
    64 x 14 x 14 0.116 ms, 32 x 24 x 24 0.184, 16 x 32 x 32 0.194 against 0.129 / 0.368 / 0.361 for
    the one-tile shuffle kernel that ran before; in fp32 the prefetch 2 steps ahead against 1 step
    was 1.05 / 1.15x at 24 / 32 (bf16: within run-to-run noise, 0.98-1.1x). The shuffle kernel
    (:func:`split_forward_config`) is now only swept: where no block of >= 8 channels lies inside a
    group, no split tile's block reduces the gates either. Longer lines: the general kernel.
    """
    L, GS = max(H, W), C // G
    few = few_programs_forward_config(B, L, C, GS, itemsize)
    if few is not None:
        return few
    scratch = scratch_forward_config(B, L, C, itemsize)
    # measured faster (docs/benchmarks.md): every gate grouping and dtype with about one program per
    # SM; with fewer programs only per-channel gates in 2-byte dtypes
    enough = _programs(B, C, min(32, _next_pow2(C))) >= _SM_COUNT_GUESS
    if scratch is not None and (enough or (GS == 1 and itemsize <= 2)):
        return _with_flat_exchange(scratch, L, GS, itemsize)
    general = forward_config(L, C, B=B, shared=GS >= 8)
    inside = _narrowed_inside_group(GS, general.block_c) if L <= 32 else None
    if inside is not None:  # one warp, the prefetch 2 steps ahead
        return LaunchConfig(general.block_l, inside, 1, 2)
    if L <= 16 and GS == 1 and itemsize <= 2 and general.block_c > 32:
        # per-channel gates on lines of <= 16 in 2-byte dtypes: 32-channel blocks of 4 warps (4 elements
        # per thread). Measured on the H200 (eighth session, --sweep-set short timed kernel-only):
        # 64 x 14 x 14 x 768 bf16 0.150 ms against 0.167 for the 128-channel block (1.11x); at
        # 16 x 32 x 32 the 64-channel block stays the fastest
        return replace(general, block_c=32, num_warps=4)
    if 16 < L <= 24 and GS == 1 and itemsize <= 2 and C >= 64 and _programs(B, C, 64) >= _SM_COUNT_GUESS:
        # per-channel gates on lines of 17-24 in 2-byte dtypes: the one-tile split kernel with the scratch
        # exchange, 64 channels, 8 warps. Measured on the H200 (eighth session, --sweep-set short timed
        # kernel-only; outputs within 7e-4 of the general kernel's): 32 x 24 x 24 x 768 bf16 0.238 ms
        # against 0.272 (1.14x). At 16 x 32 x 32 x 768 it was 5% slower than the general kernel, so
        # lines of 25-32 keep that. Confirmed in the benchmark (ninth session, `bench op`): 0.237 ms against
        # the general kernel's 0.272 in the same run, 69.9% of copy (60.9 before)
        return LaunchConfig(32, 64, 8, 1, 1, False, 1, True)
    return general


@lru_cache(maxsize=1024)  # pure in its arguments, as gspn2d_forward_config
def backward_config(
    L: int, C: int, GS: int, override: LaunchConfig | None = None, *, B: int = 32, itemsize: int = 2,
    allow_split: bool = True,
) -> tuple[LaunchConfig, int]:
    """Pick the backward tile and the gate-gradient reduction mode (see ``gspn_bwd_kernel``).

    ``allow_split=False``: only the general kernel's tiles (one block holds the whole line), for callers
    that launch ``gspn_bwd_kernel`` itself (line_scan).

    Modes: 0 = one gate per channel; 1 = power-of-two groups summed inside a channel block;
    2 = per-channel scratch summed by the caller; 3 = the block lies inside one group.

    Gate groups that neither divide nor tile the general kernel's block (e.g. 768 channels in 16
    groups of 48) would need mode 2, which writes per-channel fp32 gate gradients for the caller to
    sum. Instead the block is narrowed to the largest power of two dividing the group (at most 16;
    8 at least), one warp per 256 elements: mode 3. Measured on the H200 (64 x 14 x 14 x 768,
    G = 16, ``bench op --sweep``, fifth session): 0.42 / 0.49 ms per call in bf16 / fp32 against
    1.44 / 1.24 ms for mode 2 (kernel alone 0.83 / 0.59 ms).
    """
    tiled = None
    if override is None and allow_split:
        tiled = scratch_backward_config(B, L, C, itemsize, GS) or one_tile_backward_config(B, L, C, itemsize, GS)
    if override is not None:
        cfg = override
    elif tiled is not None:
        cfg = tiled
    elif _next_pow2(L) >= 128:
        cfg = _backward_config_long(L, C, GS, B, itemsize)
    else:
        bl = _next_pow2(L)
        elems = 2048 if bl <= 32 else 4096 if GS == 1 or GS < 8 else 2048 if bl <= 128 else 4096
        if itemsize >= 4:  # fp32 inputs keep twice the registers per prefetched value: halve the tile
            elems //= 2
        bc = max(1, min(_next_pow2(C), elems // bl))
        while bc > 8 and not _enough_programs(B, C, bc):
            bc //= 2
        warps = 8 if bl * bc >= 4096 else 4 if bl * bc >= 1024 else 2 if bl * bc >= 256 else 1
        # one gather for both neighbour shifts pays off except on short lines with shared gates
        # and on long lines with per-channel gates when there are programs enough to hide latency
        joined = not ((bl <= 32 and GS % bc == 0) or (GS == 1 and bl >= 128 and _enough_programs(B, C, bc)))
        cfg = LaunchConfig(bl, bc, warps, 1, 1, joined)
        inside = _narrowed_inside_group(GS, bc)
        if inside is not None:
            cfg = LaunchConfig(bl, inside, max(1, min(16, bl * inside // 256)), 1, 1, True)
    if GS == 1:
        return cfg, 0
    if GS % cfg.block_c == 0:
        return cfg, 3
    if GS & (GS - 1) == 0 and cfg.block_c % GS == 0:
        return cfg, 1
    return cfg, 2


def scratch_backward_config(B: int, L: int, C: int, itemsize: int, GS: int = 1) -> LaunchConfig | None:
    """The split-line backward (scratch exchange) where it measured faster on the H200 (B = 32,
    C = 64, bf16; ``docs/results/scratch_sweep3/`` and ``bench op --sweep-set wide``, 2026-12-01):

    * gate groups (1 < GS < C): tiles as :func:`scratch_forward_config`, 16 channels, 2 elements of a
      tile per thread, no prefetch (147 x 147: 2.14 ms against the general kernel's 3.12; 74 x 74
      0.49);
    * per-channel gates (GS = 1): the same, but 32 channels, 8 warps and the prefetch one step ahead
      on lines of at most 96 (74 x 74: 0.486 against 0.549 ms with 16 channels);
    * one gate group for all channels (GS = C): only on lines of 33-96, as 32-row tiles, 32
      channels, 16 warps, prefetch 1 (74 x 74: 0.507 against the general kernel's 0.594 ms; at
      147 x 147 the fastest such config spilled and gained 8%, so the general kernel runs);
    * fp32, every gate grouping: 32 channels, 8 warps on lines of at most 96 (prefetch one step
      except with per-channel gates, where it spills), 16 channels, 8 warps, no prefetch on lines of
      97-192 (147 x 147: 3.35 / 2.99 / 3.31 ms for per-channel / 4-channel / shared gates against
      the general kernel's 7.49 / 4.13 / 4.29; 74 x 74: 0.79 / 0.58 / 0.61 against 1.21 / 0.63 / 0.86).
    Requires about one program per SM; None elsewhere (few programs and fp32 lines over 192 were
    not measured).

    Fifth session (``bench op --sweep-set asmdz``): in bf16, gate groups (1 < GS <= C) store their
    gradients in the layout of their channel reduction (``LaunchConfig.asm_dz``), which removes 9-15
    layout conversions (18-30 barriers) per step, and then take 32-channel blocks with 8 warps on
    lines of at most 96 (prefetch 1 step with one group for all channels, none with smaller groups)
    and 16-channel blocks with 8 warps, the split kernel also for one group, on lines of 97-192.
    Measured at B = 32, C = 64: 74 x 74 0.430 / 0.475 ms (4-channel / shared gates) against
    0.493 / 0.508; 147 x 147 1.84 / 2.20 against 2.14 / 2.69 (the general kernel).

    Sixth session (``bench op --sweep-set scratch``, fp32): the own-layout stores gain on lines of
    97-192 with gate groups smaller than the channels (147 x 147, 4-channel groups: 2.96 -> 2.66 ms
    per call), not with one shared group (3.28 -> 3.33) nor on lines of at most 96 (74 x 74: the
    32-channel blocks stay faster without them, 0.575 against 0.628).

    Tenth session (``--sweep-set asmdz``, fp32, kernel timed from a launch built once): since the
    one-group partials are 16-byte slots written by one vector store (``DZ_VEC``), the own-layout
    stores gain with one group for all channels: 74 x 74 0.521 -> 0.446 ms, 147 x 147 2.78 -> 2.44
    (1.17 / 1.14x; with 16 groups they tie, 0.507 / 0.506)."""
    tiles = _split_tiles(L)
    cmax = _next_pow2(C)
    bc = min(16, cmax)
    if tiles is None or _programs(B, C, bc) < _SM_COUNT_GUESS:
        return None
    k, r = tiles
    wide = min(32, cmax)
    wide_ok = L <= 96 and _one_wave(B, C, wide)
    if itemsize > 2:
        if wide_ok:
            return LaunchConfig(k, wide, 8, 0 if GS == 1 else 1, 1, False, r, True, asm_dz=GS >= C > 1 and _reduces_in_block(GS, wide))
        if L > 192:
            return None
        # own-layout stores with groups inside the block (sixth session: 147 x 147, 4-channel groups 2.96 ->
        # 2.66 ms) and with one group for all channels (tenth session, after the 16-byte partial slots)
        own = GS > 1 and _reduces_in_block(GS, bc)
        return LaunchConfig(k, bc, _split_warps(k, bc), 0, 1, False, r, True, asm_dz=own)
    if GS == 1:
        if wide_ok:
            return LaunchConfig(k, wide, 8, 1, 1, False, r, True)
        return LaunchConfig(k, bc, _split_warps(k, bc), 0, 1, False, r, True)
    pf = 1 if GS >= C else 0
    before = LaunchConfig(k, bc, _split_warps(k, bc), 0, 1, False, r, True)  # the rule before the own-layout stores
    if wide_ok:
        w = _inside_or_whole_groups(GS, wide)
        if not _reduces_in_block(GS, w):  # per-channel partials (mode 2): not measured with these
            return before
        return LaunchConfig(k, w, 8 if w == wide else _split_warps(k, w), pf, 1, False, r, True, asm_dz=True)
    if L > 192:  # not measured with the own-layout stores
        return None if GS >= C else before
    bc = _inside_or_whole_groups(GS, bc)
    if not _reduces_in_block(GS, bc):
        return before if GS < C else None
    return LaunchConfig(k, bc, max(_split_warps(k, bc), 8 if GS >= C else 2), pf, 1, False, r, True, asm_dz=True)


def one_tile_backward_config(B: int, L: int, C: int, itemsize: int, GS: int = 1) -> LaunchConfig | None:
    """The split-line backward as one tile (``split=1``: each row's neighbours are the tile shifted
    by a row, through the scratch or through shared memory, no layout conversion) for lines of
    9-32 positions with per-channel gates in 2-byte dtypes: next_pow2(L) rows; 16-row tiles take 64
    channels, 4 warps and the prefetch one step ahead, 32-row tiles 32 channels, 8 warps, the
    prefetch one step ahead and the exchange through shared memory (``LaunchConfig.flat``); the
    channel block halved until the launch has about one program per SM. None elsewhere.

    Measured on the H200 (sixth session, ``bench op --sweep-set short``, C = 768, bf16, per call):
    64 x 14 x 14 0.387 ms, 32 x 24 x 24 0.682, 16 x 32 x 32 0.550 against the general kernel's 0.507 /
    0.935 / 0.738 (at 14 x 14 it used 255 registers and spilled 82 bytes, the split kernel 168 and
    none); the fastest swept were 0.387 / 0.648 / 0.549. With gate groups, or in fp32, the general
    kernel was as fast or faster (14 x 14: 0.42 / 0.31 ms for 16 / 1 groups against the best split's
    0.47 / 0.32; fp32 0.59 against 0.61).
    Seventh session (``--sweep-set flat``, per call): the 32-row tiles with the exchange through shared
    memory and prefetch 1, 32 x 24 x 24 0.569 ms and 16 x 32 x 32 0.465 against 0.649 / 0.523 (the
    scratch, no prefetch; with shared memory and no prefetch 0.648 / 0.522). 16-row tiles: 0.351
    (shared memory, no prefetch) against 0.366, within what two runs differ by; not taken.
    """
    if GS != 1 or itemsize > 2 or not 8 < L <= 32:
        return None
    k = _next_pow2(L)
    bc, warps, pf, flat = (64, 4, 1, False) if k <= 16 else (32, 8, 1, True)
    bc = min(_next_pow2(C), bc)
    while bc > 8 and not _one_wave(B, C, bc):
        bc //= 2
    if not _one_wave(B, C, bc):
        return None
    return LaunchConfig(k, bc, warps, pf, 1, False, 1, True, flat=flat)


def _reduces_in_block(GS: int, bc: int) -> bool:
    """Whether a block of bc channels lies inside one gate group of GS channels or holds whole
    power-of-two groups (the gate gradients then reduce inside the block: modes 3 and 1)."""
    return GS % bc == 0 or (GS & (GS - 1) == 0 and bc % GS == 0)


def _narrowed_inside_group(GS: int, bc: int) -> int | None:
    """For gate groups of GS channels that a block of bc channels neither lies inside nor holds
    whole (its gate gradients / normalisation would be per channel): the widest power-of-two block
    of 8-16 channels inside one group (see :func:`_inside_or_whole_groups`); None when the block
    already reduces in place (or gates are per channel) or no such narrower block exists."""
    if GS <= 1 or _reduces_in_block(GS, bc):
        return None
    inside = _inside_or_whole_groups(GS, 16)
    return inside if _reduces_in_block(GS, inside) else None


def _inside_or_whole_groups(GS: int, bc: int) -> int:
    """The widest power-of-two channel block <= bc that lies inside one gate group of GS channels or
    holds whole power-of-two groups (so the gate gradients reduce inside the block: modes 1 and 3);
    bc itself when none of at least 8 channels does (mode 2)."""
    b = bc
    while b > 1 and not _reduces_in_block(GS, b):
        b //= 2
    return b if b >= min(8, bc) else bc


def _backward_config_long(L: int, C: int, GS: int, B: int, itemsize: int) -> LaunchConfig:
    """Backward tile for lines of >= 65 positions, from the H200 sweep
    ``docs/results/bench_op_bwd_sweep_h200.json`` (B = 1 and 32, 74 x 74 and 147 x 147, C = 64,
    per-channel and 4-channel gate groups, bf16 and fp32; within 1.2x of the best config swept on
    every shape, up to 12x faster than the previous rule in fp32).

    The backward keeps ten step inputs live (and prefetches ten more), so what matters is the number
    of elements per thread: about 8 for 2-byte inputs, 4 for fp32 (more spills: the old rule's 16
    fp32 elements per thread ran 10x slower). The tile is 4096 elements (2048 in fp32), narrowed
    until there are ~1.5 programs per SM; the warps follow from the elements per thread (4-16).
    Per-channel gates with programs enough run faster without prefetch (fewer live registers).
    """
    bl = _next_pow2(L)
    tile = 2048 if itemsize >= 4 else 4096
    bc = max(1, min(_next_pow2(C), tile // bl))
    while bc > 4 and not _enough_programs(B, C, bc):
        bc //= 2
    per_thread = 4 if itemsize >= 4 else 8
    warps = max(4, min(16, bl * bc // (32 * per_thread)))
    enough = _enough_programs(B, C, bc)
    prefetch = 0 if GS == 1 and enough and (itemsize < 4 or bl >= 256) else 1
    joined = not (GS == 1 and bl >= 128 and enough)
    return LaunchConfig(bl, bc, warps, prefetch, 1, joined)


def _fast_math(t: torch.Tensor) -> bool:
    """The kernels' sigmoids and reciprocals use the approximate PTX instructions (ex2 / rcp
    .approx.ftz, ~1e-7 relative) on CUDA; the Triton interpreter runs the IEEE versions (it cannot
    run inline PTX), whatever the tensors' device."""
    from ..backends import _interpreting

    return t.device.type == "cuda" and not _interpreting()


def _check_covers(cfg: LaunchConfig, L: int, op: str = "gspn2d") -> None:
    """A config's tiles (R split tiles of block_l rows, or one block of block_l rows for the
    general kernels) must hold the longest line, L positions; line_scan runs general kernels only."""
    if cfg.split and op == "line_scan":
        raise ValueError(f"line_scan (triton): the split-line kernels run only under gspn2d, got {cfg}")
    rows = max(1, cfg.split) * cfg.block_l
    if rows < L:
        what = f"split={cfg.split}, block_l={cfg.block_l}" if cfg.split else f"block_l={cfg.block_l}"
        raise ValueError(f"{op} (triton): LaunchConfig({what}) covers lines of {rows} positions, the input's are {L} long")


def _exchange_buffer(cfg: LaunchConfig, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The split kernels' scratch exchange: per program 2 buffers x 2 wrap tiles of
    [block_l, block_c] fp32."""
    return torch.empty(grid[0] * 4 * cfg.block_l * cfg.block_c, dtype=torch.float32, device=device)


def _channels_unit_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _shared_strides(lam: torch.Tensor, u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """lam and u are read with one set of strides: keep views when they agree, else copy."""
    lam = _channels_unit_stride(lam)
    if u is None:
        return lam, None
    u = _channels_unit_stride(u)
    if u.stride() != lam.stride():
        lam, u = lam.contiguous(), u.contiguous()
    return lam, u


def _z_tile_width(GS: int, block_c: int) -> int:
    """Logits per line position a program loads: 1 when its channel block lies inside one gate
    group, block_c // GS when the block holds whole groups, else block_c (one per channel)."""
    if GS % block_c == 0:
        return 1
    if block_c % GS == 0:
        return block_c // GS
    return block_c


def _grid(B: int, ndir: int, C: int, bc: int, S_max: int, chunk: int | None):
    ncb = triton_cdiv(C, bc)
    ck = S_max if chunk is None else min(chunk, S_max)
    nchunk = triton_cdiv(S_max, ck)
    return ncb, ck, nchunk, (B * ndir * ncb * nchunk,)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class KernelLaunch:
    """One Triton launch, built but not run: ``launch()`` runs it; ``tools/aot_report.py`` compiles
    it for a GPU target without a GPU (the tensors may then live on the ``meta`` device)."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    meta: dict[str, Any]

    def launch(self) -> Any:
        """Run it; returns what Triton's launch returns (the compiled kernel on a GPU, whose
        ``n_regs`` / ``n_spills`` the benchmarks record)."""
        return self.kernel[self.grid](*self.args, **self.meta)


def _eviction(cfg: LaunchConfig) -> dict[str, str]:
    """The kernels' eviction-policy constexprs for ``cfg.evict`` (x kept, the streamed tensors first out)."""
    return {"EVX": "evict_last", "EVS": "evict_first"} if cfg.evict else {}


def _register_cap(cfg: LaunchConfig, x: torch.Tensor) -> dict[str, int]:
    """``maxnreg`` for the launch when the config caps the registers (a CUDA compile option: not
    passed to the interpreter, which compiles nothing)."""
    return {"maxnreg": cfg.maxnreg} if cfg.maxnreg and x.device.type != "cpu" else {}


def _z_views(z: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
    """The three logit planes of z (B,H,W,4,3,G) and the strides the kernels read them with."""
    return z.unbind(4), (z.stride(0), z.stride(1), z.stride(2), z.stride(3), z.stride(5))


_INT32_MAX = 2**31 - 1


def _check_offsets(**tensors: torch.Tensor | None) -> None:
    """The kernels index within one batch item with 32-bit offsets (position x stride products):
    refuse, with a clear error, inputs whose per-item extent would overflow them."""
    for name, t in tensors.items():
        if t is None or (t.numel() <= _INT32_MAX and t.is_contiguous()):  # a dense tensor spans its numel
            continue
        extent = sum((n - 1) * abs(st) for n, st in zip(t.shape[1:], t.stride()[1:]))
        if extent > _INT32_MAX:
            raise ValueError(
                f"gspn2d (triton): {name} of shape {tuple(t.shape)} and strides {tuple(t.stride())} spans {extent} "
                f"elements per batch item, more than the kernels' 32-bit offsets address ({_INT32_MAX}); "
                "split the batch item or use backend='reference'"
            )


def gspn2d_fwd_launch(
    x: torch.Tensor,
    lam: torch.Tensor,
    z: torch.Tensor,
    u: torch.Tensor | None,
    chunk: int | None,
    save_h: bool,
    config: LaunchConfig | None = None,
    lam_logits: bool = False,
) -> tuple[KernelLaunch | None, torch.Tensor, torch.Tensor | None]:
    """Outputs y (and h if ``save_h`` and u is given) and the forward launch that fills them (None
    for empty inputs). Arguments as :func:`gspn2d_fwd_triton`."""
    x, z, lam, u = _channels_unit_stride(x), _channels_unit_stride(z), *_shared_strides(lam, u)
    B, H, W, C = x.shape
    G = z.shape[-1]
    # y and h take lam's memory layout when lam is dense (e.g. direction-major planes), else contiguous
    y = torch.empty_like(lam, dtype=x.dtype)
    hs = torch.empty_like(lam, dtype=x.dtype) if (save_h and u is not None) else None
    if y.numel() == 0:
        return None, y, hs
    _check_offsets(x=x, lam=lam, z=z, u=u, y=y)
    cfg = config if config is not None else gspn2d_forward_config(B, H, W, C, G, x.element_size())
    _check_covers(cfg, max(H, W))
    ncb, ck, nchunk, grid = _grid(B, 4, C, cfg.block_c, max(H, W), chunk)
    zs, z_strides = _z_views(z)
    outs: tuple[torch.Tensor, ...] = (y, hs if hs is not None else y)
    if cfg.split and cfg.scratch and not cfg.flat:
        outs += (_exchange_buffer(cfg, grid, x.device),)
    args = (
        x, lam, *zs, u if u is not None else y, *outs,
        H, W, C, C // G, ck, nchunk, ncb, *x.stride(), *y.stride(), *lam.stride(), *z_strides,
    )
    meta: dict[str, Any] = dict(
        NDIR=4, NORM=True, HAS_U=u is not None, SAVE_H=hs is not None, LAM_SIG=lam_logits,
        ZW=_z_tile_width(C // G, cfg.block_c), BLOCK_C=cfg.block_c, num_warps=cfg.num_warps, FAST=_fast_math(x),
        **_register_cap(cfg, x), **_eviction(cfg),
    )
    if cfg.split:
        kernel = split_forward_kernel(cfg.split, cfg.num_stages, cfg.scratch and not cfg.flat,
                                      cfg.prefetch if (cfg.scratch or cfg.flat) else 1, cfg.fence, cfg.flat,
                                      cfg.unroll)
        meta.update(EVEN_C=C % cfg.block_c == 0, BLOCK_K=cfg.block_l)
    else:
        kernel = K.gspn_fwd_kernel
        meta.update(PREFETCH=cfg.prefetch, NUM_STAGES=cfg.num_stages, JOINED=cfg.joined, BLOCK_L=cfg.block_l)
    return KernelLaunch(kernel, grid, args, meta), y, hs


def gspn2d_fwd_triton(
    x: torch.Tensor,
    lam: torch.Tensor,
    z: torch.Tensor,
    u: torch.Tensor | None,
    chunk: int | None,
    save_h: bool,
    config: LaunchConfig | None = None,
    lam_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (B,H,W,C), lam/u (B,H,W,4,C), z (B,H,W,4,3,G) -> y (B,H,W,4,C)[, h (B,H,W,4,C)].
    ``lam_logits``: lam holds logits, the kernel applies the sigmoid.

    Inputs may be strided views (e.g. slices of one projection's output): no copies are made as
    long as channels are contiguous (stride 1) and lam and u share strides.
    """
    launch, y, hs = gspn2d_fwd_launch(x, lam, z, u, chunk, save_h, config, lam_logits)
    if launch is not None:
        launch.launch()
    return y, hs


def gspn2d_bwd_launch(
    dy: torch.Tensor,
    x: torch.Tensor,
    lam: torch.Tensor,
    z: torch.Tensor,
    u: torch.Tensor | None,
    h: torch.Tensor,
    chunk: int | None,
    config: LaunchConfig | None = None,
    lam_logits: bool = False,
) -> tuple[KernelLaunch | None, Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]]:
    """The backward launch (None for empty inputs) and a function that, once it has run, returns
    the gradients (dx, dlam, dz, du) (summing the per-direction and per-block partials).
    Arguments as :func:`gspn2d_bwd_triton`."""
    dy, h = dy.contiguous(), h.contiguous()
    x, z, lam, u = _channels_unit_stride(x), _channels_unit_stride(z), *_shared_strides(lam, u)
    B, H, W, C = x.shape
    G = z.shape[-1]
    GS = C // G
    dxd = torch.empty(lam.shape, dtype=x.dtype, device=x.device)
    dlam = torch.empty(lam.shape, dtype=lam.dtype, device=x.device)
    du = torch.empty(u.shape, dtype=u.dtype, device=x.device) if u is not None else None
    if dxd.numel() == 0:
        zero = (x.new_zeros(x.shape), torch.zeros_like(lam), torch.zeros_like(z), (torch.zeros_like(u) if u is not None else None))
        return None, lambda: zero
    _check_offsets(x=x, lam=lam, z=z, u=u, h=h, dy=dy)
    cfg, mode = backward_config(max(H, W), C, GS, config, B=B, itemsize=max(x.element_size(), lam.element_size()))
    ncb, ck, nchunk, grid = _grid(B, 4, C, cfg.block_c, max(H, W), chunk)
    partials = mode == 3 and ncb != G  # one fp32 partial per channel block, summed over each group's blocks
    if mode == 2:
        dz_buf = torch.empty((B, H, W, 4, 3, C), dtype=torch.float32, device=x.device)
    elif partials:
        # a 16-byte slot (3 gates and a pad) per pixel, direction and block: one vector store per row
        # and block instead of three 4-byte ones (DZ_VEC; ninth session: these partial stores were
        # about half of the L2's write sectors of the shared-gate backward at 147 x 147)
        dz_buf = torch.empty((B, H, W, 4, ncb, 4), dtype=torch.float32, device=x.device)
    else:
        dz_buf = torch.empty_like(z)
    # the kernels' (batch, row, column, direction, gate, group or block) strides
    dz_strides = dz_buf.transpose(4, 5).stride() if partials else dz_buf.stride()
    zs, z_strides = _z_views(z)
    outs: tuple[torch.Tensor, ...] = (dxd, dlam, du if du is not None else dlam, dz_buf)
    _check_covers(cfg, max(H, W))
    if cfg.split:  # the split backward's scratch; with cfg.flat in its signature but never read: any pointer
        outs += (dlam if cfg.flat else _exchange_buffer(cfg, grid, x.device),)
    args = (
        x, lam, *zs, u if u is not None else dy, h, dy, *outs,
        H, W, C, GS, ck, nchunk, ncb, *x.stride(), *dy.stride(), *lam.stride(), *z_strides, *dz_strides,
    )
    meta: dict[str, Any] = dict(
        NDIR=4, NORM=True, HAS_U=u is not None, LAM_SIG=lam_logits, GROUP_MODE=mode,
        ZW=_z_tile_width(GS, cfg.block_c), BLOCK_C=cfg.block_c, num_warps=cfg.num_warps, FAST=_fast_math(x),
        DZ_ASM=bool(cfg.asm_dz and mode in (1, 3)), DZ_VEC=partials, **_register_cap(cfg, x), **_eviction(cfg),
    )
    if cfg.split:
        kernel = split_backward_kernel(cfg.split, min(1, cfg.prefetch), cfg.fence, cfg.flat, cfg.unroll, cfg.row_gates)
        meta.update(EVEN_C=C % cfg.block_c == 0, BLOCK_K=cfg.block_l)
    else:
        kernel = K.gspn_bwd_kernel
        meta.update(NUM_STAGES=cfg.num_stages, JOINED=cfg.joined, PREFETCH=cfg.prefetch, BLOCK_L=cfg.block_l)

    def grads() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        dx = dxd.sum(dim=3)  # one pass: torch accumulates half-precision sums in fp32 and rounds once
        if mode == 2:
            dz = dz_buf.view(B, H, W, 4, 3, G, GS).sum(-1).to(z.dtype)
        elif partials:  # (B, H, W, 4, G, blocks per group, 3 of the 4 slots) -> (B, H, W, 4, 3, G)
            dz = dz_buf[..., :3].view(B, H, W, 4, G, ncb // G, 3).sum(5).transpose(-1, -2).to(z.dtype).contiguous()
        else:
            dz = dz_buf
        return dx, dlam, dz, du

    return KernelLaunch(kernel, grid, args, meta), grads


def gspn2d_bwd_triton(
    dy: torch.Tensor,
    x: torch.Tensor,
    lam: torch.Tensor,
    z: torch.Tensor,
    u: torch.Tensor | None,
    h: torch.Tensor,
    chunk: int | None,
    config: LaunchConfig | None = None,
    lam_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients (dx, dlam, dz, du) of gspn2d; h is the forward state (B,H,W,4,C).
    ``lam_logits``: lam holds logits (dlam is then the gradient w.r.t. the logits)."""
    launch, grads = gspn2d_bwd_launch(dy, x, lam, z, u, h, chunk, config, lam_logits)
    if launch is not None:
        launch.launch()
    return grads()


def line_scan_fwd_triton(
    x: torch.Tensor, lam: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor,
    chunk: int | None, config: LaunchConfig | None = None,
) -> torch.Tensor:
    """(N, C, H, W) tensors, normalised gates -> h (N, C, H, W). Lines are columns, scan along W."""
    x, lam, g1, g2, g3 = (t.contiguous() for t in (x, lam, g1, g2, g3))
    N, C, H, W = x.shape
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    cfg = forward_config(H, C, config, B=N)
    _check_covers(cfg, H, "line_scan")
    ncb, ck, nchunk, grid = _grid(N, 1, C, cfg.block_c, W, chunk)
    sn, sc, sh, sw = x.stride()
    K.gspn_fwd_kernel[grid](
        x, lam, g1, g2, g3, y, y, y,
        H, W, C, 1, ck, nchunk, ncb,
        sn, sh, sw, sc,
        sn, sh, sw, 0, sc,
        sn, sh, sw, 0, sc,
        sn, sh, sw, 0, sc,
        NDIR=1, NORM=False, HAS_U=False, SAVE_H=False, LAM_SIG=False,
        PREFETCH=cfg.prefetch, NUM_STAGES=cfg.num_stages, JOINED=cfg.joined, ZW=cfg.block_c,
        BLOCK_L=cfg.block_l, BLOCK_C=cfg.block_c, num_warps=cfg.num_warps,
    )
    return y


def line_scan_bwd_triton(
    dy: torch.Tensor, x: torch.Tensor, lam: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor,
    h: torch.Tensor, chunk: int | None, config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients (dx, dlam, dg) of line_scan, dg = the three gate gradients stacked (3, N, C, H, W)."""
    dy, x, lam, g1, g2, g3, h = (t.contiguous() for t in (dy, x, lam, g1, g2, g3, h))
    N, C, H, W = x.shape
    dx = torch.empty_like(x)
    dlam = torch.empty_like(lam)
    dg = torch.empty((3,) + tuple(x.shape), dtype=g1.dtype, device=x.device)
    if dx.numel() == 0:
        return dx.zero_(), dlam.zero_(), dg.zero_()
    cfg, _ = backward_config(H, C, 1, config, B=N, itemsize=x.element_size(), allow_split=False)
    _check_covers(cfg, H, "line_scan")
    ncb, ck, nchunk, grid = _grid(N, 1, C, cfg.block_c, W, chunk)
    sn, sc, sh, sw = x.stride()
    K.gspn_bwd_kernel[grid](
        x, lam, g1, g2, g3, dy, h, dy,
        dx, dlam, dlam, dg,
        H, W, C, 1, ck, nchunk, ncb,
        sn, sh, sw, sc,
        sn, sh, sw, 0, sc,
        sn, sh, sw, 0, sc,
        sn, sh, sw, 0, sc,
        sn, sh, sw, 0, dg.stride(0), sc,
        NDIR=1, NORM=False, HAS_U=False, LAM_SIG=False, GROUP_MODE=0,
        NUM_STAGES=cfg.num_stages, JOINED=cfg.joined, PREFETCH=cfg.prefetch, ZW=cfg.block_c,
        BLOCK_L=cfg.block_l, BLOCK_C=cfg.block_c, num_warps=cfg.num_warps,
    )
    return dx, dlam, dg
