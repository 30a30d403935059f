"""How fast can the forward's *access pattern* go, with the recurrence taken out?

A measurement probe (not library code). The kernel below reads and writes exactly the bytes of the
``gspn2d`` forward (x, lam, the three gate logits, u; y written) with the same per-step tiles as
the scan kernels: a program owns (batch, direction, channel block) and, at each step, a whole line
of the grid (a column for directions 0/1, a row for 2/3). It carries no state, so its steps are
independent: with ``K`` steps per program the grid also splits the scan axis, and occupancy alone
provides memory-level parallelism. Comparing it with a plain copy of the same byte count separates
what the layout costs (64-byte pieces of 512-byte pixels, lines at a 75 KB stride) from what the
recurrence's chain costs.

``NDIR_READ = 4`` reads the slices of all four directions at each pixel (as if one program did
every direction at once): the denser pattern a different work split would have.

``--layouts line`` (``LINE_MAJOR``): every direction's lam, u, logits and y in a plane of its own,
stored line-major (plane d, batch, scan position, line position, channel), and x read from a copy
whose lines are contiguous too (x itself for rows, x transposed for columns): each step of a
program then reads one contiguous run per tensor. This is the layout a projection could write if
it emitted each direction's planes in its scan order.

    PYTHONPATH=$PWD/src python3 tools/pattern_probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _probe(X, XT, LAM, Z, U, Y, H, W, C, G, GS, NCB, K, NPIX,
           BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, NDIR_READ: tl.constexpr, LINE_MAJOR: tl.constexpr):
    pid_s = tl.program_id(0)
    pid = tl.program_id(1)
    cb = pid % NCB
    rest = pid // NCB
    d = rest % (4 // NDIR_READ) * NDIR_READ
    b = rest // (4 // NDIR_READ)
    is_col = d < 2
    rev = (d % 2) == 1
    L = tl.where(is_col, H, W)
    S = tl.where(is_col, W, H)
    i = tl.arange(0, BLOCK_L)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    lmask = i < L
    cmask = c < C
    m = lmask[:, None] & cmask[None, :]
    g = c // GS
    for k in range(K):
        s = pid_s * K + k
        p = tl.where(rev, S - 1 - s, s)
        row = tl.where(is_col, i, p)
        col = tl.where(is_col, p, i)
        pix = ((b * H + row) * W + col).to(tl.int64)
        mm = m & (s < S)
        if LINE_MAJOR:  # line-major planes: (d, b, scan position, line position, channel)
            lin = ((b * S + p) * L + i).to(tl.int64)
            if is_col:
                xv = tl.load(XT + lin[:, None] * C + c[None, :], mask=mm, other=0.0).to(tl.float32)
            else:
                xv = tl.load(X + lin[:, None] * C + c[None, :], mask=mm, other=0.0).to(tl.float32)
        else:
            xv = tl.load(X + pix[:, None] * C + c[None, :], mask=mm, other=0.0).to(tl.float32)
        for j in tl.static_range(NDIR_READ):
            dd = d + j
            if LINE_MAJOR:
                base = (dd * NPIX + lin)[:, None]
            else:
                base = pix[:, None] * 4 + dd
            lam = tl.load(LAM + base * C + c[None, :], mask=mm, other=0.0).to(tl.float32)
            u = tl.load(U + base * C + c[None, :], mask=mm, other=0.0).to(tl.float32)
            z0 = tl.load(Z + (base * 3 + 0) * G + g[None, :], mask=mm, other=0.0).to(tl.float32)
            z1 = tl.load(Z + (base * 3 + 1) * G + g[None, :], mask=mm, other=0.0).to(tl.float32)
            z2 = tl.load(Z + (base * 3 + 2) * G + g[None, :], mask=mm, other=0.0).to(tl.float32)
            y = u * (lam * xv + z0 * 0.25 + z1 * 0.5 + z2 * 0.25)
            tl.store(Y + base * C + c[None, :], y.to(Y.dtype.element_ty), mask=mm)


def _line_major(t: torch.Tensor) -> torch.Tensor:
    """(B,H,W,4,...) -> planes (4, B, scan, line, ...) flattened to (4*B*H*W, ...): rows are the lines
    of directions 2/3 (scan = H), columns those of 0/1 (scan = W, stored transposed)."""
    planes = []
    for d in range(4):
        p = t[:, :, :, d]
        planes.append((p.transpose(1, 2) if d < 2 else p).contiguous().reshape(-1, *t.shape[4:]))
    return torch.stack(planes)


def run(B, H, W, C, G, dt, block_c, K, ndir_read, warps, line_major=False):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(B, H, W, C, device=dev, dtype=dt)
    lam = torch.randn(B, H, W, 4, C, device=dev, dtype=dt)
    z = torch.randn(B, H, W, 4, 3, G, device=dev, dtype=dt)
    u = torch.randn(B, H, W, 4, C, device=dev, dtype=dt)
    y = torch.empty_like(u)
    xt = x
    if line_major:
        assert H == W and ndir_read == 1, "the line-major probe takes square grids, one direction per program"
        xt = x.transpose(1, 2).contiguous()
        lam_k, z_k, u_k, y_k = _line_major(lam), _line_major(z), _line_major(u), torch.empty_like(_line_major(u))
    else:
        lam_k, z_k, u_k, y_k = lam, z, u, y
    L = max(H, W)
    S = max(H, W)
    ncb = triton.cdiv(C, block_c)
    nprog_s = triton.cdiv(S, K)
    grid = (nprog_s, B * (4 // ndir_read) * ncb)
    fn = lambda: _probe[grid](x, xt, lam_k, z_k, u_k, y_k, H, W, C, G, C // G, ncb, K, B * H * W,
                              BLOCK_L=triton.next_power_of_2(L), BLOCK_C=block_c, NDIR_READ=ndir_read,
                              LINE_MAJOR=line_major, num_warps=warps)
    fn()
    if line_major:  # back to (B,H,W,4,C) for the check
        yl = y_k.view(4, B, H, W, C)
        y = torch.stack([yl[d].transpose(1, 2) if d < 2 else yl[d] for d in range(4)], dim=3)
    # correctness of the pattern: every y element written once with the formula
    ref_dir = (u.float() * (lam.float() * x.float()[..., None, :] + 0.25 * z[..., 0, :].float().repeat_interleave(C // G, -1)
                            + 0.5 * z[..., 1, :].float().repeat_interleave(C // G, -1) + 0.25 * z[..., 2, :].float().repeat_interleave(C // G, -1)))
    err = (y.float() - ref_dir).abs().max().item() / ref_dir.abs().max().item()
    from cgspn.bench.common import time_fn
    ms = time_fn(fn, warmup=3, iters=10)
    es = x.element_size()
    nbytes = B * H * W * C * es * (1 + 4 * 3) + B * H * W * 4 * 3 * G * es  # x, lam, u, y + logits
    return ms, nbytes, err


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="pattern_probe.json")
    ap.add_argument("--shapes", default="32,147,147,64,64;32,147,147,64,16;32,74,74,64,64")
    ap.add_argument("--layouts", default="interleaved", help="comma list: interleaved (the op's), line (line-major planes)")
    ap.add_argument("--block-c", default="16,32,64")
    ap.add_argument("--ks", default="1,8,S", help="steps per program (S: the whole scan, the recurrent kernels' grid)")
    ap.add_argument("--ndir", default="1,4")
    ap.add_argument("--warps", default="4,8")
    ap.add_argument("--dtypes", default="bf16,fp32")
    args = ap.parse_args(argv)
    from cgspn.bench.common import copy_bandwidth_gbs
    copy = copy_bandwidth_gbs("cuda") if torch.cuda.is_available() else 1.0
    rows = []
    for spec in args.shapes.split(";"):
        B, H, W, C, G = (int(v) for v in spec.split(","))
        ints = lambda t: [max(H, W) if v == "S" else int(v) for v in t.split(",")]
        for dt in ({"bf16": torch.bfloat16, "fp32": torch.float32}[v] for v in args.dtypes.split(",")):
            for layout in args.layouts.split(","):
                for block_c in ints(args.block_c):
                    for K in ints(args.ks):
                        for ndir_read in ints(args.ndir):
                            if layout == "line" and ndir_read != 1:
                                continue
                            for warps in ints(args.warps):
                                try:
                                    ms, nbytes, err = run(B, H, W, C, G, dt, block_c, K, ndir_read, warps, layout == "line")
                                except Exception as e:  # noqa: BLE001 (a probe: record and go on)
                                    rows.append(dict(shape=spec, dtype=str(dt), layout=layout, block_c=block_c, K=K, ndir_read=ndir_read,
                                                     warps=warps, error=repr(e)[:200]))
                                    continue
                                gbs = nbytes / ms / 1e6
                                r = dict(shape=spec, dtype=str(dt), layout=layout, block_c=block_c, K=K, ndir_read=ndir_read, warps=warps,
                                         ms=ms, GBs=gbs, pct_copy=100 * gbs / copy, rel_err=err)
                                rows.append(r)
                                print(f"{spec} {str(dt)[6:]:9s} {layout:11s} bc={block_c:3d} K={K:4d} ndir={ndir_read} w={warps} {ms:7.3f} ms "
                                      f"{gbs:7.0f} GB/s {100 * gbs / copy:5.1f}% err={err:.1e}", flush=True)
                            json.dump(dict(copy_GBs=copy, argv=sys.argv, rows=rows), open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
