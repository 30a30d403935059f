"""Literal, element-by-element loop implementation of the line scan (test oracle only).

Deliberately written straight from the formula, sharing no code with the vectorised reference,
so that each checks the other. Use on tiny shapes: it is O(N*C*H*W) Python steps.
"""

from __future__ import annotations

import torch

__all__ = ["line_scan_naive", "gspn2d_naive"]


def line_scan_naive(
    x: torch.Tensor,
    lam: torch.Tensor,
    g1: torch.Tensor,
    g2: torch.Tensor,
    g3: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H, W), float64 state, chunk windows [k*chunk, (k+1)*chunk) along W."""
    N, C, H, W = x.shape
    xd, ld = x.double(), lam.double()
    a, b, c = g1.double(), g2.double(), g3.double()
    h = torch.zeros(N, C, H, W, dtype=torch.float64)
    for n in range(N):
        for ch in range(C):
            for w in range(W):
                fresh = w == 0 or (chunk is not None and w % chunk == 0)
                for i in range(H):
                    v = ld[n, ch, i, w] * xd[n, ch, i, w]
                    if not fresh:
                        if i > 0:
                            v = v + a[n, ch, i, w] * h[n, ch, i - 1, w - 1]
                        v = v + b[n, ch, i, w] * h[n, ch, i, w - 1]
                        if i < H - 1:
                            v = v + c[n, ch, i, w] * h[n, ch, i + 1, w - 1]
                    h[n, ch, i, w] = v
    return h.to(x.dtype)


def gspn2d_naive(
    x: torch.Tensor,
    lam: torch.Tensor,
    gate_logits: torch.Tensor,
    u: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Literal 4-direction loop on the original grid (float64), windows at absolute positions.

    x (B, H, W, C); lam, u (B, H, W, 4, C); gate_logits (B, H, W, 4, 3, G) -> (B, H, W, 4, C).
    Walks each direction pixel by pixel in the grid's own coordinates (no flips or transposes).
    """
    B, H, W, C = x.shape
    G = gate_logits.shape[-1]
    gs = C // G
    X, LAM, Z = x.double(), lam.double(), gate_logits.double()
    U = u.double() if u is not None else None
    y = torch.zeros(B, H, W, 4, C, dtype=torch.float64)
    for d in range(4):
        cols = d < 2  # lines are columns: line position = row, scan position = column
        L, S = (H, W) if cols else (W, H)
        order = range(S - 1, -1, -1) if d in (1, 3) else range(S)
        for b in range(B):
            for c in range(C):
                g = c // gs
                h = [0.0] * L
                prev = None  # scan position of the previous step, None = window start
                for s in order:
                    if chunk is not None and prev is not None and (s // chunk) != (prev // chunk):
                        prev = None
                    new = [0.0] * L
                    for i in range(L):
                        r, q = (i, s) if cols else (s, i)
                        z = Z[b, r, q, d, :, g]
                        sg = torch.sigmoid(z)
                        s1 = sg[0].item() if i > 0 else 0.0
                        s2 = sg[1].item()
                        s3 = sg[2].item() if i < L - 1 else 0.0
                        tot = max(s1 + s2 + s3, 1e-7)
                        v = LAM[b, r, q, d, c].item() * X[b, r, q, c].item()
                        if prev is not None:
                            if i > 0:
                                v += s1 / tot * h[i - 1]
                            v += s2 / tot * h[i]
                            if i < L - 1:
                                v += s3 / tot * h[i + 1]
                        new[i] = v
                        y[b, r, q, d, c] = v * (U[b, r, q, d, c].item() if U is not None else 1.0)
                    h = new
                    prev = s
    return y.to(x.dtype)
