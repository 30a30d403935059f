"""Literal, element-by-element loop implementation of the line scan (test oracle only).

Deliberately written straight from the formula, sharing no code with the vectorised reference,
so that each checks the other. Use on tiny shapes: it is O(N*C*H*W) Python steps.
"""

from __future__ import annotations

import torch

__all__ = ["line_scan_naive"]


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
