"""The split-line kernels of gspn2d: a line held as R register tiles, neighbours from the same thread,
a warp shuffle or a scratch buffer.

Why a second forward kernel (``triton_kernels.gspn_fwd_kernel`` is the general one): that kernel
keeps a whole line in one ``[BLOCK_L, BLOCK_C]`` tile, BLOCK_L the next power of two of the line
length. A 147-long line then pads to 256 lanes, the tile spans several warps, and the neighbour
exchange is a generic ``tl.gather``: compiled for sm_90 (``tools/aot_report.py``), 256-512 shuffles
and 12-20 barriers per step at 232-255 registers per thread.

Here line position ``i = k * R + r`` lives in tile ``r`` (of R) at row ``k`` (of BLOCK_K <= 32):

* the neighbour ``i - 1`` of tile r >= 1 is tile r - 1 at the same row (same thread, free), and
  only tile 0 needs tile R - 1 shifted by one row (likewise ``i + 1`` for tile R - 1), so two
  gathers of one tile per step instead of two of the whole line;
* the rows of a tile sit on the lanes of one warp, so the gathers are warp shuffles and the tile is
  in the layout the channels-last loads want (16-byte channel vectors): no layout conversions;
* the padding is R * BLOCK_K - L instead of next_pow2(L) - L (147 -> 160, not 256).

R is a compile-time count of separate tiles, so the kernel source is generated for each R
(:func:`split_forward_kernel`) and registered with ``linecache`` so that Triton (and its
interpreter) can read it like any other source. Arguments are the general kernel's, so the
launcher shares its strides and grid.

With ``scratch=True`` the two wrap-around neighbours go through a small double-buffered fp32
buffer (one barrier per step) instead of shuffles, so a tile may span many warps and a thread
holds 1-2 elements per tile. :func:`split_backward_source` is the reverse walk with the same
exchange. With ``flat=True`` the two neighbours come instead from a gather of the flattened tile
(``triton_kernels._flat_shift``), which Triton lowers through shared memory in the tile's own
layout: no round trip through the L2, which is the busiest unit of these forwards (seventh session).

Measured on the H200 (docs/benchmarks.md): with the shuffle exchange, faster than the general
kernel only on short lines whose gate groups do not tile the general kernel's channel block (2-3x
slower on 147-long lines: one 255-register warp per program); with the scratch exchange 1.3-3.0x
faster on 147-long lines (62% of copy with 16 gate groups in bf16, 2026-12-01) and 1.4-2x on
74-long lines with gate groups, the backward 1.3-1.45x. ``gspn2d_forward_config`` / ``backward_config`` pick them
where measured faster. ``num_stages >= 2`` variants measured 2-2.6x slower on 147-long lines.
"""

from __future__ import annotations

import functools
import linecache

import triton
import triton.language as tl

from . import triton_kernels as K

__all__ = ["split_forward_kernel", "split_forward_source", "split_backward_kernel", "split_backward_source", "MAX_SPLIT"]

MAX_SPLIT = 12  # most tiles per line (register budget); longer lines use the general kernel

_SIGNATURE = (
    "X, LAM, Z1, Z2, Z3, U, Y, HS, H, W, C, GS, CHUNK, NCHUNK, NCB, "
    "sxb, sxr, sxc, sxch, spb, spr, spc, spd, spch, slb, slr, slc, sld, slch, szb, szr, szc, szd, szg, "
    "NDIR: tl.constexpr, NORM: tl.constexpr, HAS_U: tl.constexpr, SAVE_H: tl.constexpr, LAM_SIG: tl.constexpr, "
    "EVEN_C: tl.constexpr, ZW: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, FAST: tl.constexpr, "
    "EVX: tl.constexpr = '', EVS: tl.constexpr = ''"
)


def _prologue(a, names: tuple[tuple[str, str, str], ...]) -> None:
    """The split kernels' common start: geometry of the program, the line / scan strides of each
    tensor in ``names`` (name, row stride, column stride), the rows and channels of a tile and
    their masks (``chm``; ``zchm`` for the per-group logits) and the clamped channel indices the
    unmasked loads use (``chl``, ``zchl``). Offsets inside one batch item fit in 32 bits (the
    launcher checks), so only the per-item base is 64-bit."""
    a("    pid = tl.program_id(0)")
    a("    b, d, cb, is_col, rev, L, S, start, n = _geometry(pid, H, W, CHUNK, NCHUNK, NCB, NDIR)")
    a("    if n <= 0:")
    a("        return")
    for name, row, col in names:
        a(f"    {name}_line = tl.where(is_col, {row}, {col})")
        a(f"    {name}_scan = tl.where(is_col, {col}, {row})")
    a("    step = tl.where(rev, -1, 1)")
    a("    first = tl.where(rev, start + n - 1, start)")
    a("    b64 = b.to(tl.int64)")
    a("    kk = tl.arange(0, BLOCK_K)")
    a("    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)")
    a("    if EVEN_C:  # C % BLOCK_C == 0: row masks only, so loads and stores stay vectors")
    a("        chm = tl.full([1, BLOCK_C], 1, tl.int1)")
    a("        chl = ch")
    a("    else:  # loads of the padding channels read channel C - 1 (their results are masked)")
    a("        chm = (ch < C)[None, :]")
    a("        chl = tl.minimum(ch, C - 1)")
    a("    if ZW == 1:")
    a("        zch = (cb * BLOCK_C) // GS + tl.zeros([1], dtype=tl.int32)")
    a("        zchm = tl.full([1, 1], 1, tl.int1)")
    a("    elif ZW < BLOCK_C:")
    a("        zch = cb * ZW + tl.arange(0, ZW)")
    a("        zchm = (zch * (BLOCK_C // ZW) < C)[None, :]")
    a("    else:")
    a("        zch = ch // GS")
    a("        zchm = chm")
    a("    if EVEN_C:")
    a("        zchl = zch")
    a("    else:")
    a("        zchl = tl.minimum(zch, (C - 1) // GS)")


def _bases(a) -> None:
    """Per-program base pointers of the inputs both split kernels read (x, lam, u, the logits)."""
    a("    xb = X + b64 * sxb")
    a("    lb = LAM + b64 * slb + d * sld")
    a("    ub = U + b64 * slb + d * sld")
    for k in (1, 2, 3):
        a(f"    z{k}b = Z{k} + b64 * szb + d * szd")


def _scratch_setup(a) -> None:
    """The program's double-buffered exchange buffer: 2 buffers x 2 wrap tiles of [K, C] fp32."""
    a("    KC: tl.constexpr = BLOCK_K * BLOCK_C")
    a("    sb = SCR + pid.to(tl.int64) * (4 * KC)")
    a("    so = kk[:, None] * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]")
    a("    up_ok = (kk > 0)[:, None]")
    a("    dn_ok = (kk < BLOCK_K - 1)[:, None]")


def _tile_setup(a, r: int, R: int) -> None:
    """Tile r's line positions, masks and offsets: loads use rows clamped into the line (``il``,
    offsets ``xo``, ``lo``, ``pl``, ``zo``), stores the true rows (``po``) under the mask ``m``."""
    a(f"    i{r} = kk * {R} + {r}")
    a(f"    ok{r} = (i{r} < L)[:, None]")
    a(f"    m{r} = ok{r} & chm")
    a(f"    zm{r} = ok{r} & zchm")
    a(f"    hp{r} = ((i{r} > 0) & (i{r} < L))[:, None]")
    a(f"    hn{r} = (i{r} < L - 1)[:, None]")
    a(f"    il{r} = tl.minimum(i{r}, L - 1)[:, None]")
    a(f"    xo{r} = il{r} * x_line + chl[None, :] * sxch")
    a(f"    lo{r} = il{r} * l_line + chl[None, :] * slch")
    a(f"    pl{r} = il{r} * p_line + chl[None, :] * spch")
    a(f"    po{r} = i{r}[:, None] * p_line + ch[None, :] * spch")
    a(f"    zo{r} = il{r} * z_line + zchl[None, :] * szg")


def _input_loads(a, ind: str, pos: str, sfx: str, tiles: range, no_u: str, pre: str = "", post: str = "",
                 z_rows: bool = False) -> None:
    """Loads of x, lam, the three logits and u at scan position ``pos`` into ``<name><sfx><r>``
    (``no_u``: what u stands for without one; ``pre`` / ``post``: a kernel's own line before /
    after each tile's loads, formatted with ``ind``, ``sfx`` and ``r``). Unmasked: padding rows and channels read the line's
    last row / the last channel (the offsets are clamped), so no predicate or zeroing instruction
    per load; the kernels mask the gates after the sigmoid and the results with ``m``, so those
    values never reach a stored or neighbouring element. ``z_rows``: the logits of a gate group that
    spans the channel block as [rows] vectors (``triton_kernels._rows_of``)."""
    a(f"{ind}xs = xb + {pos} * x_scan")
    a(f"{ind}ls = lb + {pos} * l_scan")
    a(f"{ind}us = ub + {pos} * l_scan")
    a(f"{ind}zs = {pos} * z_scan")
    for r in tiles:
        if pre:
            a(pre.format(ind=ind, sfx=sfx, r=r))
        a(f"{ind}x{sfx}{r} = tl.load(xs + xo{r}, eviction_policy=EVX)")
        a(f"{ind}l{sfx}{r} = tl.load(ls + lo{r}, eviction_policy=EVS)")
        for k in (1, 2, 3):
            zl = f"tl.load(z{k}b + zs + zo{r}, eviction_policy=EVS)"
            a(f"{ind}z{k}{sfx}{r} = _rows_of({zl}, ZW)" if z_rows else f"{ind}z{k}{sfx}{r} = {zl}")
        a(f"{ind}if HAS_U:")
        a(f"{ind}    u{sfx}{r} = tl.load(us + lo{r}, eviction_policy=EVS)")
        a(f"{ind}else:")
        a(f"{ind}    u{sfx}{r} = {no_u.format(sfx=sfx, r=r)}")
        if post:
            a(post.format(ind=ind, sfx=sfx, r=r))


_NAMES = (("x", "sxr", "sxc"), ("p", "spr", "spc"), ("l", "slr", "slc"), ("z", "szr", "szc"))


def split_forward_source(R: int, stages: int = 1, scratch: bool = False, prefetch: int = 1, fence: bool = False,
                         flat: bool = False, unroll: bool = False) -> str:
    """Source of the forward kernel for lines split into R tiles (see the module docstring).

    ``stages`` <= 1: the inputs are loaded into registers ``prefetch`` (0, 1 or 2) steps ahead of
    the math, by hand; >= 2: each step loads its own inputs and the loop is
    ``tl.range(..., num_stages=stages)``, so Triton's software pipeliner may stage the loads ahead
    through shared memory instead.
    ``scratch``: the two wrap-around neighbours (tile R-1 shifted down a row for tile 0, tile 0
    shifted up a row for tile R-1) go through a small per-program fp32 buffer ``SCR`` (double
    buffered, one barrier per step) instead of warp shuffles, so a tile may span several warps
    (``num_warps`` > 1) and a thread holds fewer elements. Not combinable with ``stages`` >= 2
    (the pipeliner would hoist the buffer's loads above the barrier).
    ``fence``: a barrier right after each step's input loads. Without it, ptxas schedules the
    prefetch loads after the step's math (they have no consumer in the loop body), at 40-75% of
    it (sm_90, Triton 3.6); the barrier keeps them at the top of the step (``bar.sync`` does not
    wait for loads in flight). Measured on the H200 it is slower in almost every shape (the next
    step's inputs then stay live through the math) and 1.03-1.07x faster only with one shared
    gate group in bf16 (docs/benchmarks.md, fifth session).
    ``flat``: the wrap-around neighbours by a gather of the flattened tile, through shared memory
    (``triton_kernels._flat_shift``), not the scratch; like the scratch, tiles may span warps.
    ``unroll`` (with a prefetch): the loop unrolled by ``prefetch + 1`` (:func:`_loop_header`).
    """
    if not 1 <= R <= MAX_SPLIT:
        raise ValueError(f"R must be in [1, {MAX_SPLIT}], got {R}")
    piped = stages >= 2
    if piped and scratch:
        raise ValueError("scratch exchange cannot be combined with Triton's pipelining (stages >= 2)")
    if scratch and flat:
        raise ValueError("one wrap-around exchange: the scratch (scratch=True) or shared memory (flat=True)")
    if not 0 <= prefetch <= 2:
        raise ValueError(f"prefetch must be 0, 1 or 2, got {prefetch}")
    depth = 0 if piped else prefetch
    tiles = range(R)
    s: list[str] = []
    a = s.append
    a(f"def {_kernel_name(R, stages, scratch, prefetch, fence, flat, unroll)}({_SIGNATURE.replace('Y, HS,', 'Y, HS, SCR,') if scratch else _SIGNATURE}):")
    _prologue(a, _NAMES)
    _bases(a)
    a("    yb = Y + b64 * spb + d * spd")
    a("    hb = HS + b64 * spb + d * spd")
    if scratch:
        _scratch_setup(a)
    for r in tiles:
        _tile_setup(a, r, R)
        a(f"    h{r} = tl.zeros([BLOCK_K, BLOCK_C], dtype=tl.float32)")

    def loads(pos: str, sfx: str, ind: str) -> None:
        _input_loads(a, ind, pos, sfx, tiles, "l{sfx}{r}")

    # buffers: "c" is the step being computed; "p1", "p2" the ones loaded 1 and 2 steps ahead
    ahead = ["c", "p1", "p2"][: depth + 1]
    if piped:
        a(f"    for t in tl.range(0, n, num_stages={stages}):")
        a("        pos = first + step * t")
        loads("pos", "c", "        ")
    else:
        for j in range(depth):
            loads(f"(first + step * tl.minimum({j}, n - 1))", ahead[j], "    ")
        a(f"    for t in {_loop_header(depth, unroll)}:")
        a("        pos = first + step * t")
        if depth == 0:
            loads("pos", "c", "        ")
        else:
            a(f"        posn = first + step * tl.minimum(t + {depth}, n - 1)  # past the window: re-read the last line")
            loads("posn", ahead[depth], "        ")
    if fence:
        a("        tl.debug_barrier()  # the loads above are issued before the math below")
    for r in tiles:
        a(f"        g1_{r}, g2_{r}, g3_{r}, _s1, _s2, _s3, _inv = _gates(z1c{r}.to(tl.float32), z2c{r}.to(tl.float32), "
          f"z3c{r}.to(tl.float32), hp{r}, hn{r}, ok{r}, NORM, FAST)")
        for k in (1, 2, 3):
            a(f"        g{k}_{r} = _expand(g{k}_{r}, ZW, BLOCK_K, BLOCK_C)")
    if scratch:
        # written at step t-1 into buffer (t-1) % 2, before that step's barrier
        a("        prv = sb + ((t + 1) % 2) * (2 * KC)")
        a("        started = t > 0")
        a("        up0 = tl.load(prv + so - BLOCK_C, mask=up_ok & started, other=0.0)")
        a(f"        dn{R - 1} = tl.load(prv + {'KC + ' if R > 1 else ''}so + BLOCK_C, mask=dn_ok & started, other=0.0)")
    elif flat:
        a(f"        up0 = _flat_shift(h{R - 1}, -1, BLOCK_K, BLOCK_C)")
        a(f"        dn{R - 1} = _flat_shift(h0, 1, BLOCK_K, BLOCK_C)")
    else:
        a(f"        up0 = _shift_prev(h{R - 1}, kk, BLOCK_K, BLOCK_C)")
        a(f"        dn{R - 1} = _shift_next(h0, kk, BLOCK_K, BLOCK_C)")
    for r in tiles:
        up = "up0" if r == 0 else f"h{r - 1}"
        dn = f"dn{R - 1}" if r == R - 1 else f"h{r + 1}"
        a(f"        nh{r} = _lam(lc{r}, LAM_SIG, FAST) * xc{r}.to(tl.float32) + g1_{r} * {up} + g2_{r} * h{r} + g3_{r} * {dn}")
    a("        ys = yb + pos * p_scan")
    a("        hs = hb + pos * p_scan")
    for r in tiles:
        a(f"        h{r} = tl.where(m{r}, nh{r}, 0.0)")
        a("        if HAS_U:")
        a(f"            tl.store(ys + po{r}, (h{r} * uc{r}.to(tl.float32)).to(Y.dtype.element_ty), mask=m{r}, eviction_policy=EVS)")
        a("        else:")
        a(f"            tl.store(ys + po{r}, h{r}.to(Y.dtype.element_ty), mask=m{r}, eviction_policy=EVS)")
        a("        if SAVE_H:")
        a(f"            tl.store(hs + po{r}, h{r}.to(HS.dtype.element_ty), mask=m{r}, eviction_policy=EVS)")
    if scratch:
        a("        cur = sb + (t % 2) * (2 * KC)")
        a(f"        tl.store(cur + so, h{R - 1})")
        if R > 1:
            a("        tl.store(cur + KC + so, h0)")
        a("        tl.debug_barrier()")
    for j in range(depth):
        names = ", ".join(f"{v}{ahead[j]}{r}" for r in tiles for v in ("x", "l", "z1", "z2", "z3", "u"))
        nxt = ", ".join(f"{v}{ahead[j + 1]}{r}" for r in tiles for v in ("x", "l", "z1", "z2", "z3", "u"))
        a(f"        {names} = {nxt}")
    return "\n".join(s) + "\n"


def _loop_header(depth: int, unroll: bool) -> str:
    """The scan loop's range over its n steps. ``unroll`` with a prefetch ``depth`` >= 1: unrolled
    by depth + 1, so that the buffers of prefetched inputs rotate by renaming inside the unrolled
    body and the loop-carried one is loaded after the last use of the register it replaces (no
    copy at the loop's end; without the unroll that copy waits for the loads issued in the same
    iteration, ``LaunchConfig.unroll``)."""
    if unroll and depth:
        return f"tl.range(0, n, loop_unroll_factor={depth + 1})"
    return "range(0, n)"


def _kernel_name(R: int, stages: int, scratch: bool, prefetch: int, fence: bool = False, flat: bool = False,
                 unroll: bool = False) -> str:
    f = ("_f" if fence else "") + ("_flat" if flat else "") + ("_u" if unroll and prefetch and stages < 2 else "")
    if stages >= 2:
        return f"gspn_fwd_split_r{R}_s{stages}{f}"
    return f"gspn_fwd_split_r{R}{'_scr' if scratch else ''}_p{prefetch}{f}"


@functools.lru_cache(maxsize=None)
def split_forward_kernel(R: int, stages: int = 1, scratch: bool = False, prefetch: int = 1, fence: bool = False,
                         flat: bool = False, unroll: bool = False):
    """The jitted forward kernel for lines split into R tiles (compiled by Triton on first launch);
    arguments as in :func:`split_forward_source`."""
    stages = max(1, int(stages))
    src = split_forward_source(R, stages, scratch, prefetch, fence, flat, unroll)
    filename = (f"<cgspn.ops.gspn.triton_split: forward, R={R}, stages={stages}, scratch={scratch}, "
                f"prefetch={prefetch}, fence={fence}, flat={flat}, unroll={unroll}>")
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    scope = {
        "tl": tl,
        "triton": triton,
        "_geometry": K._geometry,
        "_gates": K._gates,
        "_expand": K._expand,
        "_lam": K._lam,
        "_shift_prev": K._shift_prev,
        "_shift_next": K._shift_next,
        "_flat_shift": K._flat_shift,
    }
    exec(compile(src, filename, "exec"), scope)
    return triton.jit(scope[_kernel_name(R, stages, scratch, prefetch, fence, flat, unroll)])


_BWD_SIGNATURE = (
    "X, LAM, Z1, Z2, Z3, U, HS, DY, DXD, DLAM, DU, DZ, SCR, H, W, C, GS, CHUNK, NCHUNK, NCB, "
    "sxb, sxr, sxc, sxch, spb, spr, spc, spd, spch, slb, slr, slc, sld, slch, szb, szr, szc, szd, szg, "
    "sdb, sdr, sdc, sdd, sdk, sdg, "
    "NDIR: tl.constexpr, NORM: tl.constexpr, HAS_U: tl.constexpr, LAM_SIG: tl.constexpr, GROUP_MODE: tl.constexpr, "
    "EVEN_C: tl.constexpr, ZW: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, FAST: tl.constexpr, "
    "DZ_ASM: tl.constexpr = False, EVX: tl.constexpr = '', EVS: tl.constexpr = '', DZ_VEC: tl.constexpr = False"
)


def split_backward_source(R: int, prefetch: int = 1, fence: bool = False, flat: bool = False, unroll: bool = False,
                          row_gates: bool = False) -> str:
    """Source of the split-line backward for lines split into R tiles (line position
    ``i = k * R + r``), the reverse walk of :func:`split_forward_source` with the scratch exchange.

    Per step it carries ``q_k = g_k * dh`` of the step after; ``dh[i]`` needs ``q3[i-1]`` and
    ``q1[i+1]``: tile r's are tiles r -/+ 1 at the same row, and only tile 0's ``q3`` and tile
    R-1's ``q1`` come shifted by a row through the double-buffered scratch ``SCR`` (one barrier per
    step). The forward state of the previous step and its line neighbours (for the gate
    gradients) is read once per tile from the saved ``HS``; the neighbours are the adjacent tiles,
    plus two shifted row loads for the wrap-around. Arguments, outputs and GROUP_MODE are those of
    ``triton_kernels.gspn_bwd_kernel``; ``prefetch`` (0 or 1): the next step's inputs are loaded
    before this step's math.

    ``DZ_ASM`` (GROUP_MODE 1 and 3, on CUDA): the gate-group gradients are stored by inline PTX
    in the layout of their channel reduction. A plain store of those [rows, 1] / [rows, groups]
    tiles gets a layout of its own from Triton's coalescing pass (their pointers are not contiguous
    along the channels), which costs 9-15 layout conversions (18-30 barriers) per step at R = 3-5.
    (Staging them through a buffer, the fourth session's ``stage_dz``, also removed the
    conversions, measured slower, and was deleted.)

    ``DZ_VEC`` (GROUP_MODE 3 into the caller's partial-sum buffer of 16-byte slots): the three gate
    gradients of a row as one vector store (``triton_kernels._store_gate_grads``).

    ``fence``: a barrier right after each step's input loads, as in :func:`split_forward_source`.
    ``flat``: the wrap-around ``q`` tiles by a gather of the flattened tile through shared memory
    instead of the scratch (``SCR`` is then not used).
    ``unroll`` (with the prefetch): the loop unrolled by 2 (:func:`_loop_header`).
    ``row_gates``: where one gate group spans the channel block (``ZW == 1``) its logits are loaded
    into and carried between steps as [rows] vectors, and widened to [rows, 1] only where they are
    used (``LaunchConfig.row_gates``).
    """
    if not 1 <= R <= MAX_SPLIT:
        raise ValueError(f"R must be in [1, {MAX_SPLIT}], got {R}")
    if prefetch not in (0, 1):
        raise ValueError(f"prefetch must be 0 or 1 for the backward, got {prefetch}")
    tiles = range(R)
    s: list[str] = []
    a = s.append
    a(f"def {_bwd_name(R, prefetch, fence, flat, unroll, row_gates)}({_BWD_SIGNATURE}):")
    _prologue(a, _NAMES + (("dz", "sdr", "sdc"),))
    a("    if GROUP_MODE == 1:")
    a("        dzch = (cb * ZW + tl.arange(0, ZW))[None, :] * sdg")
    a("    elif GROUP_MODE == 3:")
    a("        dzch = cb * sdg + tl.zeros([1, 1], dtype=tl.int32)")
    a("    else:")
    a("        dzch = ch[None, :] * sdg")
    _bases(a)
    a("    pb = b64 * spb + d * spd")
    a("    dzb = DZ + b64 * sdb + d * sdd")
    _scratch_setup(a)
    for r in tiles:
        _tile_setup(a, r, R)
        a(f"    do{r} = i{r}[:, None] * dz_line + dzch")
        for k in (1, 2, 3):
            a(f"    q{k}_{r} = tl.zeros([BLOCK_K, BLOCK_C], dtype=tl.float32)")
    # the wrap-around rows of h (previous step): tile R-1 one row down for tile 0, tile 0 one row up;
    # clamped into the line at both ends (padding rows past L would read past the tensor's end)
    a("    pu0 = tl.minimum(tl.maximum(i0 - 1, 0), L - 1)[:, None] * p_line + chl[None, :] * spch")
    a(f"    pd{R - 1} = tl.minimum(i{R - 1} + 1, L - 1)[:, None] * p_line + chl[None, :] * spch")

    def loads(t: str, sfx: str, ind: str) -> None:
        """Inputs of traversal step t (clamped into the window) and the state of step t - 1."""
        a(f"{ind}pos_{sfx} = first + step * {t}")
        a(f"{ind}posp_{sfx} = first + step * tl.maximum({t} - 1, 0)")
        a(f"{ind}dys = DY + pb + pos_{sfx} * p_scan")
        a(f"{ind}hps = HS + pb + posp_{sfx} * p_scan")
        _input_loads(a, ind, f"pos_{sfx}", sfx, tiles, "dy{sfx}{r}",
                     pre="{ind}dy{sfx}{r} = tl.load(dys + pl{r}, eviction_policy=EVS)",
                     post="{ind}hq{sfx}{r} = tl.load(hps + pl{r})", z_rows=row_gates)
        a(f"{ind}hqu{sfx} = tl.load(hps + pu0)")
        a(f"{ind}hqd{sfx} = tl.load(hps + pd{R - 1})")

    names = [f"{v}{{}}{r}" for r in tiles for v in ("dy", "x", "l", "z1", "z2", "z3", "u", "hq")] + ["hqu{}", "hqd{}"]
    last = "(n - 1)"
    for r in tiles:
        a(f"    hv{r} = tl.load(HS + pb + (first + step * {last}) * p_scan + pl{r}).to(tl.float32)")
    if prefetch:
        loads(last, "c", "    ")
    a(f"    for it in {_loop_header(prefetch, unroll)}:")
    a("        t = n - 1 - it")
    if prefetch:
        a("        pos = pos_c")
        a("        okp = t > 0")
        loads("tl.maximum(t - 1, 0)", "n", "        ")
    else:
        loads("t", "c", "        ")
        a("        pos = pos_c")
        a("        okp = t > 0")
    if fence:
        a("        tl.debug_barrier()  # the loads above are issued before the math below")
    # h of the previous step (zero before the window's first step)
    for r in tiles:
        a(f"        hpv{r} = tl.where(okp, hqc{r}.to(tl.float32), 0.0)")
    a("        hpu0 = tl.where(okp, hquc.to(tl.float32), 0.0)")
    a(f"        hpd{R - 1} = tl.where(okp, hqdc.to(tl.float32), 0.0)")
    # q of the step after, shifted: through the scratch (or shared memory) for the wrap-around tiles
    if flat:
        a(f"        q3u0 = _flat_shift(q3_{R - 1}, -1, BLOCK_K, BLOCK_C)")
        a(f"        q1d{R - 1} = _flat_shift(q1_0, 1, BLOCK_K, BLOCK_C)")
    else:
        a("        prv = sb + ((it + 1) % 2) * (2 * KC)")
        a("        started = it > 0")
        a("        q3u0 = tl.load(prv + so - BLOCK_C, mask=up_ok & started, other=0.0)")
        a(f"        q1d{R - 1} = tl.load(prv + KC + so + BLOCK_C, mask=dn_ok & started, other=0.0)")
    a("        dzp = dzb + pos * dz_scan")
    a("        ps = pb + pos * p_scan")
    for r in tiles:
        q3u = "q3u0" if r == 0 else f"q3_{r - 1}"
        q1d = f"q1d{R - 1}" if r == R - 1 else f"q1_{r + 1}"
        hu = "hpu0" if r == 0 else f"hpv{r - 1}"
        hd = f"hpd{R - 1}" if r == R - 1 else f"hpv{r + 1}"
        a(f"        dyf = dyc{r}.to(tl.float32)")
        a("        if HAS_U:")
        a(f"            dyh = dyf * uc{r}.to(tl.float32)")
        a(f"            tl.store(DU + ps + po{r}, (dyf * hv{r}).to(DU.dtype.element_ty), mask=m{r}, eviction_policy=EVS)")
        a("        else:")
        a("            dyh = dyf")
        a(f"        dh = tl.where(m{r}, dyh + {q3u} + q2_{r} + {q1d}, 0.0)")
        z1, z2, z3 = (f"_cols_of(z{k}c{r}, ZW)" if row_gates else f"z{k}c{r}" for k in (1, 2, 3))
        a(f"        g1, g2, g3, s1, s2, s3, inv = _gates({z1}.to(tl.float32), {z2}.to(tl.float32), "
          f"{z3}.to(tl.float32), hp{r}, hn{r}, ok{r}, NORM, FAST)")
        a(f"        lamv = _lam(lc{r}, LAM_SIG, FAST)")
        a(f"        dlamv = xc{r}.to(tl.float32) * dh")
        a("        if LAM_SIG:")
        a("            dlamv = dlamv * lamv * (1.0 - lamv)")
        a(f"        tl.store(DLAM + ps + po{r}, dlamv.to(DLAM.dtype.element_ty), mask=m{r}, eviction_policy=EVS)")
        a(f"        tl.store(DXD + ps + po{r}, (lamv * dh).to(DXD.dtype.element_ty), mask=m{r}, eviction_policy=EVS)")
        a(f"        dg1 = _group_sum(dh * {hu}, ZW, BLOCK_K, BLOCK_C)")
        a(f"        dg2 = _group_sum(dh * hpv{r}, ZW, BLOCK_K, BLOCK_C)")
        a(f"        dg3 = _group_sum(dh * {hd}, ZW, BLOCK_K, BLOCK_C)")
        a("        if NORM:")
        a("            dot = g1 * dg1 + g2 * dg2 + g3 * dg3")
        a(f"            dz1 = tl.where(hp{r}, (dg1 - dot) * inv * s1 * (1.0 - s1), 0.0)")
        a(f"            dz2 = tl.where(ok{r}, (dg2 - dot) * inv * s2 * (1.0 - s2), 0.0)")
        a(f"            dz3 = tl.where(hn{r}, (dg3 - dot) * inv * s3 * (1.0 - s3), 0.0)")
        a("        else:")
        a("            dz1 = dg1")
        a("            dz2 = dg2")
        a("            dz3 = dg3")
        a(f"        dzm = zm{r} if GROUP_MODE == 1 else ok{r} if GROUP_MODE == 3 else m{r}")
        a(f"        _store_gate_grads(dzp + do{r}, dz1, dz2, dz3, sdk, dzm, DZ_ASM, FAST, DZ_VEC)")
        for k in (1, 2, 3):
            a(f"        nq{k}_{r} = _expand(g{k}, ZW, BLOCK_K, BLOCK_C) * dh")
    for r in tiles:
        a(f"        q1_{r}, q2_{r}, q3_{r} = nq1_{r}, nq2_{r}, nq3_{r}")
        a(f"        hv{r} = hpv{r}")
    if not flat:
        a("        cur = sb + (it % 2) * (2 * KC)")
        a(f"        tl.store(cur + so, q3_{R - 1})")
        a("        tl.store(cur + KC + so, q1_0)")  # a different tensor from q3 even when R == 1
        a("        tl.debug_barrier()")
    if prefetch:
        lhs = ", ".join(n.format("c") for n in names) + ", pos_c"
        rhs = ", ".join(n.format("n") for n in names) + ", pos_n"
        a(f"        {lhs} = {rhs}")
    return "\n".join(s) + "\n"


@functools.lru_cache(maxsize=None)
def split_backward_kernel(R: int, prefetch: int = 1, fence: bool = False, flat: bool = False, unroll: bool = False,
                          row_gates: bool = False):
    """The jitted split-line backward for lines split into R tiles (:func:`split_backward_source`)."""
    src = split_backward_source(R, prefetch, fence, flat, unroll, row_gates)
    filename = (f"<cgspn.ops.gspn.triton_split: backward, R={R}, prefetch={prefetch}, fence={fence}, flat={flat}, "
                f"unroll={unroll}, row_gates={row_gates}>")
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    scope = {"tl": tl, "triton": triton, "_geometry": K._geometry, "_gates": K._gates, "_expand": K._expand,
             "_lam": K._lam, "_group_sum": K._group_sum, "_store_gate_grads": K._store_gate_grads,
             "_flat_shift": K._flat_shift, "_rows_of": K._rows_of, "_cols_of": K._cols_of}
    exec(compile(src, filename, "exec"), scope)
    return triton.jit(scope[_bwd_name(R, prefetch, fence, flat, unroll, row_gates)])


def _bwd_name(R: int, prefetch: int, fence: bool = False, flat: bool = False, unroll: bool = False,
              row_gates: bool = False) -> str:
    return (f"gspn_bwd_split_r{R}_p{prefetch}{'_f' if fence else ''}{'_flat' if flat else ''}"
            f"{'_u' if unroll and prefetch else ''}{'_rg' if row_gates else ''}")
