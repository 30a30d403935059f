"""Fused Triton kernels of the GSPN line scan: one launch forward, one launch backward.

Design (see docs/design.md for the derivation):

* One program owns one *window* of one direction for one (batch, channel block): a register tile
  ``[BLOCK_L, BLOCK_C]`` holding the fp32 state of a whole line (L positions x BLOCK_C channels),
  advanced one line per step along the scan axis. The grid is
  ``batch x directions x channel blocks x windows``, all in one launch.
* Directions are index arithmetic on the original channels-last grid: direction d picks which grid
  axis is the line and which the scan, and whether the scan runs backwards. Nothing is flipped,
  transposed or copied.
* The tridiagonal coupling (neighbours i-1 and i+1 of the previous line) is a register shift done
  with ``tl.gather`` along the line axis.
* Gate normalisation (sigmoid, sum over the neighbours that exist, divide) is computed in
  registers from the raw logits; the backward recomputes it and applies its Jacobian.
* Loads of step t+1 are issued before the math of step t (software prefetch) so that the serial
  chain per step is only arithmetic and the shift.
* The backward is the same walk in reverse with transposed, shifted gates. It is deterministic
  (no atomics) and never writes into the incoming gradient. The gradient of ``x`` is written per
  direction (x is shared by the 4 directions) and summed by the caller; gate-logit gradients are
  reduced over a channel group inside the program when the group fits in the channel block.

The same kernels serve ``line_scan`` (NCHW, already-normalised gates, one direction) through
strides and the ``NORM``/``NDIR`` constexprs.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _geometry(pid, H, W, CHUNK, NCHUNK, NCB, NDIR: tl.constexpr):
    """Decode a program id into (b, d, cb, lines-are-columns, reverse, L, S, start, n)."""
    k = pid % NCHUNK
    rest = pid // NCHUNK
    cb = rest % NCB
    rest = rest // NCB
    d = rest % NDIR
    b = rest // NDIR
    is_col = d < 2  # lines are columns (line axis = rows, scan axis = columns)
    rev = (d % 2) == 1
    L = tl.where(is_col, H, W)
    S = tl.where(is_col, W, H)
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, S)
    n = end - start
    return b, d, cb, is_col, rev, L, S, start, n


@triton.jit
def _shift_prev(v, idx, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[i] = v[i-1] (out[0] = 0) along axis 0 of a [BLOCK_L, BLOCK_C] tile."""
    src = tl.maximum(idx - 1, 0)
    g = tl.gather(v, tl.broadcast_to(src[:, None], [BLOCK_L, BLOCK_C]), 0)
    return tl.where((idx > 0)[:, None], g, 0.0)


@triton.jit
def _shift_next(v, idx, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[i] = v[i+1] (out[BLOCK_L-1] = 0) along axis 0 of a [BLOCK_L, BLOCK_C] tile."""
    src = tl.minimum(idx + 1, BLOCK_L - 1)
    g = tl.gather(v, tl.broadcast_to(src[:, None], [BLOCK_L, BLOCK_C]), 0)
    return tl.where((idx < BLOCK_L - 1)[:, None], g, 0.0)


@triton.jit
def _flat_shift(v, BY: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[i] = v[i + BY] along axis 0 of a [BLOCK_L, BLOCK_C] tile (BY = -1 or +1), zero where i + BY
    falls outside the tile, as a gather of the flattened tile: Triton gives a rank-2 gather a
    warp-local layout of its own (rows on the lanes, which conflicts with the channels-last loads and
    costs layout conversions), while a rank-1 gather keeps the tile's layout and goes through shared
    memory."""
    N: tl.constexpr = BLOCK_L * BLOCK_C
    j = tl.arange(0, N)
    if BY < 0:
        g = tl.gather(tl.reshape(v, [N]), tl.maximum(j - BLOCK_C, 0), 0)
        keep = j >= BLOCK_C
    else:
        g = tl.gather(tl.reshape(v, [N]), tl.minimum(j + BLOCK_C, N - 1), 0)
        keep = j < N - BLOCK_C
    return tl.reshape(tl.where(keep, g, 0.0), [BLOCK_L, BLOCK_C])


@triton.jit
def _shift_pair(a, b, idx, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, JOINED: tl.constexpr):
    """(a[i-1], b[i+1]) along axis 0 with zeros past the ends; JOINED does both in one gather."""
    if JOINED:
        two = tl.join(a, b)  # [BLOCK_L, BLOCK_C, 2]
        lo = tl.broadcast_to(tl.maximum(idx - 1, 0)[:, None, None], [BLOCK_L, BLOCK_C, 2])
        hi = tl.broadcast_to(tl.minimum(idx + 1, BLOCK_L - 1)[:, None, None], [BLOCK_L, BLOCK_C, 2])
        which = tl.broadcast_to(tl.arange(0, 2)[None, None, :], [BLOCK_L, BLOCK_C, 2])
        g = tl.gather(two, tl.where(which == 0, lo, hi), 0)
        up, dn = tl.split(g)
        up = tl.where((idx > 0)[:, None], up, 0.0)
        dn = tl.where((idx < BLOCK_L - 1)[:, None], dn, 0.0)
        return up, dn
    else:
        return _shift_prev(a, idx, BLOCK_L, BLOCK_C), _shift_next(b, idx, BLOCK_L, BLOCK_C)


@triton.jit
def _rcp(x, FAST: tl.constexpr):
    """1 / x in fp32; FAST (CUDA only): one ``rcp.approx.ftz`` (1 ulp), not the IEEE division."""
    if FAST:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        return 1.0 / x


@triton.jit
def _store_in_layout(ptr, value, mask, FAST: tl.constexpr):
    """``tl.store(ptr, value, mask=mask)``; FAST (CUDA only): the store as inline PTX, which keeps the
    tensors' own register layout. Triton's coalescing pass gives a plain store of a tile whose
    pointer has no contiguity (e.g. a [rows, 1] gate-gradient column reduced over the channels) a
    layout of its own, so the values go through shared memory with two barriers first; lanes that
    hold the same (replicated) element store the same value to the same address, which the
    hardware merges. Elements of 2 or 4 bytes."""
    if FAST:
        if value.dtype.primitive_bitwidth == 16:
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.global.b16 [$1], $3; mov.b32 $0, 0; }",
                "=r,l,r,h", [ptr, mask.to(tl.int32), value.to(tl.int16, bitcast=True)],
                dtype=tl.int32, is_pure=False, pack=1)
        else:
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.global.b32 [$1], $3; mov.b32 $0, 0; }",
                "=r,l,r,r", [ptr, mask.to(tl.int32), value.to(tl.int32, bitcast=True)],
                dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.store(ptr, value, mask=mask)


@triton.jit
def _store4_in_layout(ptr, a, b, c, mask):
    """(a, b, c, 0) as fp32 to the 16-byte slot at ``ptr``: one ``st.global.v4`` under a predicate in
    the values' own layout (CUDA only; see :func:`_store_in_layout`)."""
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.global.v4.b32 [$1], {$3, $4, $5, $6}; mov.b32 $0, 0; }",
        "=r,l,r,r,r,r,r",
        [ptr, mask.to(tl.int32), a.to(tl.float32).to(tl.int32, bitcast=True), b.to(tl.float32).to(tl.int32, bitcast=True),
         c.to(tl.float32).to(tl.int32, bitcast=True), tl.zeros(a.shape, dtype=tl.int32)],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _store_gate_grads(ptr, dz1, dz2, dz3, sdk, mask, IN_LAYOUT: tl.constexpr, FAST: tl.constexpr,
                      VEC4: tl.constexpr = False):
    """Store the three gate gradients at ``ptr``, ``ptr + sdk``, ``ptr + 2 sdk`` (in the pointer's
    element type). IN_LAYOUT: in the values' own register layout (:func:`_store_in_layout`; the
    pointer and mask are broadcast to the values' shape), for the gate-group gradients reduced
    over the channels; else plain stores.
    VEC4 (with IN_LAYOUT, on CUDA): fp32 into 16-byte slots (sdk = 1; the caller's partial-sum buffer
    of mode 3): one vector store (:func:`_store4_in_layout`) where three 4-byte stores took three
    requests, each a sector write of the L2."""
    if IN_LAYOUT:
        ptr = tl.broadcast_to(ptr, dz1.shape)
        mask = tl.broadcast_to(mask, dz1.shape)
        if VEC4 and FAST:
            _store4_in_layout(ptr, dz1, dz2, dz3, mask)
        else:
            _store_in_layout(ptr, dz1.to(ptr.dtype.element_ty), mask, FAST)
            _store_in_layout(ptr + sdk, dz2.to(ptr.dtype.element_ty), mask, FAST)
            _store_in_layout(ptr + 2 * sdk, dz3.to(ptr.dtype.element_ty), mask, FAST)
    else:
        tl.store(ptr, dz1.to(ptr.dtype.element_ty), mask=mask)
        tl.store(ptr + sdk, dz2.to(ptr.dtype.element_ty), mask=mask)
        tl.store(ptr + 2 * sdk, dz3.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sigmoid(x, FAST: tl.constexpr):
    """sigmoid(x) in fp32; FAST (CUDA only): 1 / (1 + 2^(-x log2 e)) with ``ex2.approx.ftz`` (2^-22
    relative) and ``rcp.approx.ftz``: 4 instructions instead of the ~10 of the denormal-safe
    ``tl.sigmoid`` (the gates and lam are sigmoids of every element, so this is a large part of the
    kernels' instruction budget; docs/design.md)."""
    if FAST:
        e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x * -1.4426950408889634],
                                      dtype=tl.float32, is_pure=True, pack=1)
        return _rcp(1.0 + e, FAST)
    else:
        return tl.sigmoid(x)


@triton.jit
def _gates(z1, z2, z3, has_prev, has_next, row_ok, NORM: tl.constexpr, FAST: tl.constexpr = False):
    """Normalised gates (g1, g2, g3) and the sigmoid values / sum needed by the backward."""
    if NORM:
        s1 = _sigmoid(z1, FAST)
        s2 = _sigmoid(z2, FAST)
        s3 = _sigmoid(z3, FAST)
        s1 = tl.where(has_prev, s1, 0.0)
        s2 = tl.where(row_ok, s2, 0.0)
        s3 = tl.where(has_next, s3, 0.0)
        ssum = tl.maximum(s1 + s2 + s3, 1e-7)
        inv = _rcp(ssum, FAST)
        return s1 * inv, s2 * inv, s3 * inv, s1, s2, s3, inv
    else:
        return z1, z2, z3, z1, z2, z3, z1


@triton.jit
def _lam(lv, LAM_SIG: tl.constexpr, FAST: tl.constexpr = False):
    """The input gate in fp32: sigmoid of the loaded logits when LAM_SIG, else the loaded value."""
    if LAM_SIG:
        return _sigmoid(lv.to(tl.float32), FAST)
    else:
        return lv.to(tl.float32)


@triton.jit
def _rows_of(z, ZW: tl.constexpr):
    """A [rows, 1] tile of one gate group's values as a [rows] fp32 vector (``ZW == 1``; else ``z``
    as it is). ``tl.max`` over the axis of length 1 is the value itself; the vector's slice layout
    holds one register per row and thread, where the [rows, 1] tile in the channel block's layout
    may hold one per channel the thread owns (``LaunchConfig.row_gates``)."""
    if ZW == 1:
        return tl.max(z.to(tl.float32), axis=1)
    else:
        return z


@triton.jit
def _cols_of(z, ZW: tl.constexpr):
    """The inverse of :func:`_rows_of`: a [rows] vector as a [rows, 1] tile (``ZW == 1``; else ``z``)."""
    if ZW == 1:
        return z[:, None]
    else:
        return z


@triton.jit
def _expand(g, ZW: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """A [BLOCK_L, ZW] tile of per-group values as [BLOCK_L, BLOCK_C] (each repeated BLOCK_C // ZW
    times along the channels); ZW == 1 or ZW == BLOCK_C tiles are returned as they are."""
    if ZW == 1 or ZW == BLOCK_C:
        return g
    else:
        return tl.reshape(tl.broadcast_to(g[:, :, None], [BLOCK_L, ZW, BLOCK_C // ZW]), [BLOCK_L, BLOCK_C])


@triton.jit
def _group_sum(v, ZW: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """Sum a [BLOCK_L, BLOCK_C] tile over each group of BLOCK_C // ZW channels -> [BLOCK_L, ZW]."""
    if ZW == 1:
        return tl.sum(v, axis=1, keep_dims=True)
    elif ZW == BLOCK_C:
        return v
    else:
        return tl.sum(tl.reshape(v, [BLOCK_L, ZW, BLOCK_C // ZW]), axis=2)


@triton.jit
def _tile(X, b, d, cb, is_col, rev, L, start, n, C, GS,
          sxb, sxr, sxc, sxch, spb, spr, spc, spd, spch, slb, slr, slc, sld, slch, szb, szr, szc, szd, szg,
          ZW: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """Index arithmetic of one program's [BLOCK_L, BLOCK_C] tile in direction d (shared by the
    forward and backward kernels): masks, base offsets, and the strides along the line and the scan
    of x (X), the outputs / saved state (P), lam and u (LAM) and the logits (Z).
    Scan step t visits the grid position ``first + step * t``."""
    b64 = b.to(tl.int64)
    x_line = tl.where(is_col, sxr, sxc)
    x_scan = tl.where(is_col, sxc, sxr)
    p_line = tl.where(is_col, spr, spc)
    p_scan = tl.where(is_col, spc, spr)
    l_line = tl.where(is_col, slr, slc)
    l_scan = tl.where(is_col, slc, slr)
    z_line = tl.where(is_col, szr, szc)
    z_scan = tl.where(is_col, szc, szr)
    step = tl.where(rev, -1, 1)
    first = tl.where(rev, start + n - 1, start)

    idx = tl.arange(0, BLOCK_L)
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok1 = idx < L
    mask = row_ok1[:, None] & (ch < C)[None, :]
    if ZW == 1:  # the block lies inside one gate group: one logit per line position
        zch = (cb * BLOCK_C) // GS + tl.zeros([1], dtype=tl.int32)
        zmask = row_ok1[:, None]
    elif ZW < BLOCK_C:  # ZW whole groups of GS = BLOCK_C // ZW channels: one logit per group
        zch = cb * ZW + tl.arange(0, ZW)
        zmask = row_ok1[:, None] & (zch * (BLOCK_C // ZW) < C)[None, :]
    else:  # one logit per channel (GS = 1, or groups that do not tile the block)
        zch = ch // GS
        zmask = mask
    row_ok = row_ok1[:, None]
    has_prev = ((idx > 0) & row_ok1)[:, None]
    has_next = (idx < L - 1)[:, None]

    x_base = X + b64 * sxb + idx[:, None] * x_line + ch[None, :] * sxch
    p_off = b64 * spb + idx[:, None] * p_line + ch[None, :] * spch + d * spd
    l_off = b64 * slb + idx[:, None] * l_line + ch[None, :] * slch + d * sld
    z_off = b64 * szb + idx[:, None] * z_line + zch[None, :] * szg + d * szd
    return (b64, step, first, idx, ch, row_ok1, mask, zmask, row_ok, has_prev, has_next, x_base, x_scan, p_off,
            p_line, p_scan, l_off, l_scan, z_off, z_scan)


@triton.jit
def _load_step(X, LAM, Z1, Z2, Z3, U, x_base, l_off, z_off, x_scan, l_scan, z_scan, pos, mask, zmask,
               HAS_U: tl.constexpr, EVX: tl.constexpr = "", EVS: tl.constexpr = ""):
    """Load the inputs of the line at scan position ``pos`` (x, lam, the three logits, u).
    EVX / EVS: eviction policies of x (read by all four directions) and of the streamed inputs."""
    xv = tl.load(x_base + pos * x_scan, mask=mask, other=0.0, eviction_policy=EVX)
    lv = tl.load(LAM + l_off + pos * l_scan, mask=mask, other=0.0, eviction_policy=EVS)
    z1 = tl.load(Z1 + z_off + pos * z_scan, mask=zmask, other=0.0, eviction_policy=EVS)
    z2 = tl.load(Z2 + z_off + pos * z_scan, mask=zmask, other=0.0, eviction_policy=EVS)
    z3 = tl.load(Z3 + z_off + pos * z_scan, mask=zmask, other=0.0, eviction_policy=EVS)
    if HAS_U:
        uv = tl.load(U + l_off + pos * l_scan, mask=mask, other=0.0, eviction_policy=EVS)
    else:
        uv = lv
    return xv, lv, z1, z2, z3, uv


@triton.jit
def gspn_fwd_kernel(
    X, LAM, Z1, Z2, Z3, U, Y, HS,
    H, W, C, GS, CHUNK, NCHUNK, NCB,
    sxb, sxr, sxc, sxch,
    spb, spr, spc, spd, spch,
    slb, slr, slc, sld, slch,
    szb, szr, szc, szd, szg,
    NDIR: tl.constexpr, NORM: tl.constexpr, HAS_U: tl.constexpr, SAVE_H: tl.constexpr, LAM_SIG: tl.constexpr,
    PREFETCH: tl.constexpr, NUM_STAGES: tl.constexpr, JOINED: tl.constexpr, ZW: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, FAST: tl.constexpr = False,
    EVX: tl.constexpr = "", EVS: tl.constexpr = "",
):
    """Forward scan. x: X[b, r, c, ch]; lam/u: LAM[b, r, c, d, ch] (strides sl*); outputs Y/HS
    (strides sp*); logits Zk[b, r, c, d, g]. Inputs may be strided views (e.g. slices of one GEMM).

    Writes Y = u * h (or h) in Y's dtype and, if SAVE_H, the state h to HS (same strides as Y).
    ZW: width of the logit tile. 1: the whole channel block shares one gate group
    (GS % BLOCK_C == 0); 1 < ZW < BLOCK_C: the block holds ZW whole groups (BLOCK_C % GS == 0);
    BLOCK_C: one logit per channel. Gates are loaded and normalised once per group and line
    position, then broadcast over the group's channels.
    PREFETCH: how many lines ahead the loads are issued (0, 1 or 2).
    LAM_SIG: LAM holds logits; lam = sigmoid(LAM) is applied here (saves the caller a pass).
    """
    pid = tl.program_id(0)
    b, d, cb, is_col, rev, L, S, start, n = _geometry(pid, H, W, CHUNK, NCHUNK, NCB, NDIR)
    if n <= 0:
        return
    (b64, step, first, idx, ch, row_ok1, mask, zmask, row_ok, has_prev, has_next, x_base, x_scan, p_off, p_line,
     p_scan, l_off, l_scan, z_off, z_scan) = _tile(
        X, b, d, cb, is_col, rev, L, start, n, C, GS, sxb, sxr, sxc, sxch, spb, spr, spc, spd, spch,
        slb, slr, slc, sld, slch, szb, szr, szc, szd, szg, ZW, BLOCK_L, BLOCK_C)

    h = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    if PREFETCH >= 1:
        xv, lv, z1, z2, z3, uv = _load_step(X, LAM, Z1, Z2, Z3, U, x_base, l_off, z_off, x_scan, l_scan, z_scan,
                                            first, mask, zmask, HAS_U, EVX, EVS)
    if PREFETCH >= 2:
        ok1 = n > 1
        xv1, lv1, z11, z21, z31, uv1 = _load_step(X, LAM, Z1, Z2, Z3, U, x_base, l_off, z_off, x_scan, l_scan,
                                                  z_scan, first + step, mask & ok1, zmask & ok1, HAS_U, EVX, EVS)
    for t in tl.range(0, n, num_stages=NUM_STAGES):
        pos = first + step * t
        if PREFETCH == 0:
            xv, lv, z1, z2, z3, uv = _load_step(X, LAM, Z1, Z2, Z3, U, x_base, l_off, z_off, x_scan, l_scan,
                                                z_scan, pos, mask, zmask, HAS_U, EVX, EVS)
        else:
            okn = (t + PREFETCH) < n
            xn, ln, z1n, z2n, z3n, un = _load_step(X, LAM, Z1, Z2, Z3, U, x_base, l_off, z_off, x_scan, l_scan,
                                                   z_scan, pos + PREFETCH * step, mask & okn, zmask & okn, HAS_U, EVX, EVS)
        g1, g2, g3, _s1, _s2, _s3, _inv = _gates(
            z1.to(tl.float32), z2.to(tl.float32), z3.to(tl.float32), has_prev, has_next, row_ok, NORM, FAST
        )
        g1 = _expand(g1, ZW, BLOCK_L, BLOCK_C)
        g2 = _expand(g2, ZW, BLOCK_L, BLOCK_C)
        g3 = _expand(g3, ZW, BLOCK_L, BLOCK_C)
        inp = _lam(lv, LAM_SIG, FAST) * xv.to(tl.float32)
        h_up, h_dn = _shift_pair(h, h, idx, BLOCK_L, BLOCK_C, JOINED)
        h = inp + g1 * h_up + g2 * h + g3 * h_dn
        h = tl.where(mask, h, 0.0)
        out = h
        if HAS_U:
            out = h * uv.to(tl.float32)
        tl.store(Y + p_off + pos * p_scan, out.to(Y.dtype.element_ty), mask=mask, eviction_policy=EVS)
        if SAVE_H:
            tl.store(HS + p_off + pos * p_scan, h.to(HS.dtype.element_ty), mask=mask, eviction_policy=EVS)
        if PREFETCH == 1:
            xv, lv, z1, z2, z3, uv = xn, ln, z1n, z2n, z3n, un
        if PREFETCH == 2:
            xv, lv, z1, z2, z3, uv = xv1, lv1, z11, z21, z31, uv1
            xv1, lv1, z11, z21, z31, uv1 = xn, ln, z1n, z2n, z3n, un


@triton.jit
def _load_bwd_step(X, LAM, Z1, Z2, Z3, U, HS, DY, x_base, p_off, l_off, z_off, x_scan, p_scan, l_scan, z_scan,
                   p_line, pos, posp, mask, zmask, mp, mp_up, mp_dn, HAS_U: tl.constexpr,
                   EVX: tl.constexpr = "", EVS: tl.constexpr = ""):
    """Backward inputs of scan position ``pos``; h of the previous traversal step ``posp`` and its
    line neighbours (read from memory, so no register shift is needed for them). EVX / EVS as in
    :func:`_load_step` (h keeps the default: its three reads of a step share cache lines)."""
    dy = tl.load(DY + p_off + pos * p_scan, mask=mask, other=0.0, eviction_policy=EVS)
    xv = tl.load(x_base + pos * x_scan, mask=mask, other=0.0, eviction_policy=EVX)
    lv = tl.load(LAM + l_off + pos * l_scan, mask=mask, other=0.0, eviction_policy=EVS)
    z1 = tl.load(Z1 + z_off + pos * z_scan, mask=zmask, other=0.0, eviction_policy=EVS)
    z2 = tl.load(Z2 + z_off + pos * z_scan, mask=zmask, other=0.0, eviction_policy=EVS)
    z3 = tl.load(Z3 + z_off + pos * z_scan, mask=zmask, other=0.0, eviction_policy=EVS)
    if HAS_U:
        uv = tl.load(U + l_off + pos * l_scan, mask=mask, other=0.0, eviction_policy=EVS)
    else:
        uv = dy
    hp = tl.load(HS + p_off + posp * p_scan, mask=mp, other=0.0)
    hp_up = tl.load(HS + p_off - p_line + posp * p_scan, mask=mp_up, other=0.0)
    hp_dn = tl.load(HS + p_off + p_line + posp * p_scan, mask=mp_dn, other=0.0)
    return dy, xv, lv, z1, z2, z3, uv, hp, hp_up, hp_dn


@triton.jit
def gspn_bwd_kernel(
    X, LAM, Z1, Z2, Z3, U, HS, DY,
    DXD, DLAM, DU, DZ,
    H, W, C, GS, CHUNK, NCHUNK, NCB,
    sxb, sxr, sxc, sxch,
    spb, spr, spc, spd, spch,
    slb, slr, slc, sld, slch,
    szb, szr, szc, szd, szg,
    sdb, sdr, sdc, sdd, sdk, sdg,
    NDIR: tl.constexpr, NORM: tl.constexpr, HAS_U: tl.constexpr, LAM_SIG: tl.constexpr,
    GROUP_MODE: tl.constexpr, NUM_STAGES: tl.constexpr, JOINED: tl.constexpr,
    PREFETCH: tl.constexpr, ZW: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
    FAST: tl.constexpr = False, DZ_ASM: tl.constexpr = False, EVX: tl.constexpr = "", EVS: tl.constexpr = "",
    DZ_VEC: tl.constexpr = False,
):
    """Backward scan (reverse walk). HS holds the forward state h (strides of the per-direction
    tensors). Writes DXD (per-direction lam*dh, x's grad before the sum over directions), DLAM,
    DU (if HAS_U) and DZ, the gate-logit grads:
    GROUP_MODE 0: one gate per channel; 1: the block holds ZW whole groups of BLOCK_C // ZW channels
       (gates, and the Jacobian of their normalisation, per group; complete sums stored);
    2: per channel into a scratch the caller sums over each group;
    3: the block lies inside one group (gates loaded once per line position): one partial sum
       per block, at DZ[..., k, cb], summed over the group's blocks by the caller.
    DZ_VEC (mode 3, partials): DZ is the caller's fp32 buffer of 16-byte slots (sdk = 1) and the three
    partials of a row go out as one vector store.
    """
    pid = tl.program_id(0)
    b, d, cb, is_col, rev, L, S, start, n = _geometry(pid, H, W, CHUNK, NCHUNK, NCB, NDIR)
    if n <= 0:
        return
    # traversal step t visits pos(t) = first + step*t; the backward walks t = n-1 ... 0
    (b64, step, first, idx, ch, row_ok1, mask, zmask, row_ok, has_prev, has_next, x_base, x_scan, p_off, p_line,
     p_scan, l_off, l_scan, z_off, z_scan) = _tile(
        X, b, d, cb, is_col, rev, L, start, n, C, GS, sxb, sxr, sxc, sxch, spb, spr, spc, spd, spch,
        slb, slr, slc, sld, slch, szb, szr, szc, szd, szg, ZW, BLOCK_L, BLOCK_C)
    mask_up = has_prev & mask
    mask_dn = has_next & mask
    d_line = tl.where(is_col, sdr, sdc)
    d_scan = tl.where(is_col, sdc, sdr)
    dz_base = DZ + b64 * sdb + d * sdd
    if GROUP_MODE == 1:
        z_off0 = (cb * ZW + tl.arange(0, ZW))[None, :] * sdg

    q1 = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    q2 = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    q3 = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    last = first + step * (n - 1)
    hv = tl.load(HS + p_off + last * p_scan, mask=mask, other=0.0)
    if PREFETCH >= 1:
        okp = n > 1
        dy, xv, lv, z1, z2, z3, uv, hp, hp_up, hp_dn = _load_bwd_step(
            X, LAM, Z1, Z2, Z3, U, HS, DY, x_base, p_off, l_off, z_off, x_scan, p_scan, l_scan, z_scan, p_line,
            last, last - step, mask, zmask, mask & okp, mask_up & okp, mask_dn & okp, HAS_U, EVX, EVS)
    for it in tl.range(0, n, num_stages=NUM_STAGES):
        t = n - 1 - it
        pos = first + step * t
        if PREFETCH == 0:
            okp = t > 0
            dy, xv, lv, z1, z2, z3, uv, hp, hp_up, hp_dn = _load_bwd_step(
                X, LAM, Z1, Z2, Z3, U, HS, DY, x_base, p_off, l_off, z_off, x_scan, p_scan, l_scan, z_scan, p_line,
                pos, pos - step, mask, zmask, mask & okp, mask_up & okp, mask_dn & okp, HAS_U, EVX, EVS)
        else:
            okn = t > 0  # step t-1 exists
            okpn = t > 1  # and has a predecessor
            dyn, xn, ln, z1n, z2n, z3n, un, hpn, hpun, hpdn = _load_bwd_step(
                X, LAM, Z1, Z2, Z3, U, HS, DY, x_base, p_off, l_off, z_off, x_scan, p_scan, l_scan, z_scan, p_line,
                pos - step, pos - 2 * step, mask & okn, zmask & okn, mask & okpn, mask_up & okpn, mask_dn & okpn,
                HAS_U, EVX, EVS)
        dyf = dy.to(tl.float32)
        hvf = hv.to(tl.float32)
        if HAS_U:
            dyh = dyf * uv.to(tl.float32)
            tl.store(DU + p_off + pos * p_scan, (dyf * hvf).to(DU.dtype.element_ty), mask=mask, eviction_policy=EVS)
        else:
            dyh = dyf
        q3_up, q1_dn = _shift_pair(q3, q1, idx, BLOCK_L, BLOCK_C, JOINED)
        dh = dyh + q3_up + q2 + q1_dn
        dh = tl.where(mask, dh, 0.0)
        g1, g2, g3, s1, s2, s3, inv = _gates(
            z1.to(tl.float32), z2.to(tl.float32), z3.to(tl.float32), has_prev, has_next, row_ok, NORM, FAST
        )
        lamv = _lam(lv, LAM_SIG, FAST)
        dlamv = xv.to(tl.float32) * dh
        if LAM_SIG:  # gradient w.r.t. the logit
            dlamv = dlamv * lamv * (1.0 - lamv)
        tl.store(DLAM + p_off + pos * p_scan, dlamv.to(DLAM.dtype.element_ty), mask=mask, eviction_policy=EVS)
        tl.store(DXD + p_off + pos * p_scan, (lamv * dh).to(DXD.dtype.element_ty), mask=mask, eviction_policy=EVS)
        # gate grads summed over each group first: gates are shared, so the normalisation's
        # Jacobian is applied once per group (ZW logits per line position)
        dg1 = _group_sum(dh * hp_up.to(tl.float32), ZW, BLOCK_L, BLOCK_C)
        dg2 = _group_sum(dh * hp.to(tl.float32), ZW, BLOCK_L, BLOCK_C)
        dg3 = _group_sum(dh * hp_dn.to(tl.float32), ZW, BLOCK_L, BLOCK_C)
        if NORM:
            dot = g1 * dg1 + g2 * dg2 + g3 * dg3
            dz1 = tl.where(has_prev, (dg1 - dot) * inv * s1 * (1.0 - s1), 0.0)
            dz2 = tl.where(row_ok, (dg2 - dot) * inv * s2 * (1.0 - s2), 0.0)
            dz3 = tl.where(has_next, (dg3 - dot) * inv * s3 * (1.0 - s3), 0.0)
        else:
            dz1 = dg1
            dz2 = dg2
            dz3 = dg3
        dzp = dz_base + pos * d_scan
        if GROUP_MODE == 1:
            _store_gate_grads(dzp + idx[:, None] * d_line + z_off0, dz1, dz2, dz3, sdk, zmask, DZ_ASM, FAST)
        elif GROUP_MODE == 3:
            _store_gate_grads(dzp + idx[:, None] * d_line + cb * sdg, dz1, dz2, dz3, sdk, row_ok, DZ_ASM, FAST, DZ_VEC)
        else:  # one gradient per channel (modes 0 and 2): contiguous along the channels, plain stores
            # (inline: through _store_gate_grads this kernel compiled to 32 more SASS instructions at ViT-B)
            coff = dzp + idx[:, None] * d_line + ch[None, :] * sdg
            tl.store(coff, dz1.to(DZ.dtype.element_ty), mask=mask)
            tl.store(coff + sdk, dz2.to(DZ.dtype.element_ty), mask=mask)
            tl.store(coff + 2 * sdk, dz3.to(DZ.dtype.element_ty), mask=mask)
        q1 = _expand(g1, ZW, BLOCK_L, BLOCK_C) * dh
        q2 = _expand(g2, ZW, BLOCK_L, BLOCK_C) * dh
        q3 = _expand(g3, ZW, BLOCK_L, BLOCK_C) * dh
        hv = hp
        if PREFETCH >= 1:
            dy, xv, lv, z1, z2, z3, uv, hp, hp_up, hp_dn = dyn, xn, ln, z1n, z2n, z3n, un, hpn, hpun, hpdn
