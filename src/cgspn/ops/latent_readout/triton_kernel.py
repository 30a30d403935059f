"""Triton forward of the latent read-out: one pass over the merged latent, one write of the output.

One program owns BLOCK_M rows: it sums the D direction slices of its rows, normalises them
(LayerNorm over the K latent channels, fp32 statistics), keeps the normalised [BLOCK_M, K] tile
in registers and walks the N output columns in BLOCK_N tiles: ``tl.dot`` with the up-projection
weight (read from L2), bias, exact GELU, store. The (M, N) pre-activation is never written, so
the read-out costs one write of its output instead of GEMM write + GELU read + GELU write.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def latent_readout_fwd_kernel(
    Y, GAMMA, BETA, WUP, BIAS, OUT,
    M, N, K, D, eps,
    s_ym, s_yd, s_wn, s_om,
    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Y[m, d, k] (stride s_ym, s_yd, 1) -> OUT[m, n] = gelu(LN(sum_d Y[m, d, :]) . WUP[n, :] + BIAS[n])."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    ks = tl.arange(0, BLOCK_K)
    kmask = ks < K
    mask = rmask[:, None] & kmask[None, :]
    s = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    for d in range(0, D):
        s += tl.load(Y + rows[:, None] * s_ym + d * s_yd + ks[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(s, axis=1) / K
    diff = tl.where(mask, s - mean[:, None], 0.0)
    var = tl.sum(diff * diff, axis=1) / K
    rstd = 1.0 / tl.sqrt(var + eps)
    m = diff * rstd[:, None]
    if HAS_GAMMA:
        m = m * tl.load(GAMMA + ks, mask=kmask, other=0.0).to(tl.float32)[None, :]
    if HAS_BETA:
        m = m + tl.load(BETA + ks, mask=kmask, other=0.0).to(tl.float32)[None, :]
    m = tl.where(mask, m, 0.0)
    a = m.to(WUP.dtype.element_ty)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < N
        w = tl.load(WUP + cols[None, :] * s_wn + ks[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(a, w, input_precision="ieee")
        else:
            acc = tl.dot(a, w)
        if HAS_BIAS:
            acc += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        g = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        tl.store(OUT + rows[:, None] * s_om + cols[None, :], g.to(OUT.dtype.element_ty),
                 mask=rmask[:, None] & cmask[None, :])
