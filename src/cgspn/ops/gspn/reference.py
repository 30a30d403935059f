"""Pure-PyTorch reference of the GSPN line scan, vectorised over everything but the scan axis.

This is the ground truth the fast kernels are tested against, and the explicit CPU path
(``backend="reference"``). It runs on any device and in any floating dtype (float64 included,
so ``torch.autograd.gradcheck`` works); its state is kept in float32 at least.

Notation: a *line* is a 1D slice of the grid of length L (the axis the tridiagonal coupling runs
along); the *scan* runs over S lines one after another.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["normalize_gates_reference", "scan_lines", "line_scan_reference", "gspn2d_reference"]


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize_gates_reference(
    z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor, line_dim: int = -2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid-normalise three gate logits so that every row of the transfer matrix sums to 1.

    ``s_k = sigmoid(z_k)``, ``g_k = s_k / S`` with ``S`` the sum over the neighbours that exist:
    position 0 along ``line_dim`` has no neighbour at p-1 (gate 1 is dropped: ``g1 = 0`` there),
    position L-1 has none at p+1 (``g3 = 0``). ``S`` is clamped at 1e-7. Computed in float32
    (float64 for float64 input) and returned in the input dtype.
    """
    dt = z1.dtype
    sd = _state_dtype(dt)
    s1, s2, s3 = torch.sigmoid(z1.to(sd)), torch.sigmoid(z2.to(sd)), torch.sigmoid(z3.to(sd))
    L = z1.shape[line_dim]
    pos = torch.arange(L, device=z1.device)
    shape = [1] * z1.dim()
    shape[line_dim] = L
    pos = pos.view(shape)
    s1 = torch.where(pos > 0, s1, torch.zeros_like(s1))
    s3 = torch.where(pos < L - 1, s3, torch.zeros_like(s3))
    S = (s1 + s2 + s3).clamp_min(1e-7)
    return (s1 / S).to(dt), (s2 / S).to(dt), (s3 / S).to(dt)


def scan_lines(
    x: torch.Tensor,
    lam: torch.Tensor,
    g1: torch.Tensor,
    g2: torch.Tensor,
    g3: torch.Tensor,
    starts: list[bool] | None = None,
) -> torch.Tensor:
    """Run the recurrence over the last axis (S scan steps) of (..., L, S) tensors.

    ``h[..., i, s] = lam*x + g1*h[..., i-1, s-1] + g2*h[..., i, s-1] + g3*h[..., i+1, s-1]``
    with zero reads outside [0, L). ``starts`` (bool, shape (S,)) marks steps that begin from zero
    state (chunk boundaries); step 0 always does. Returns the float32/float64 state (..., L, S).
    """
    sd = _state_dtype(x.dtype)
    S = x.shape[-1]
    h = torch.zeros(x.shape[:-1], dtype=sd, device=x.device)
    outs = []
    start_list = starts if starts is not None else [False] * S
    for s in range(S):
        if s == 0 or start_list[s]:
            h = torch.zeros_like(h)
        up = F.pad(h[..., :-1], (1, 0))  # h[i-1]
        down = F.pad(h[..., 1:], (0, 1))  # h[i+1]
        h = (
            lam[..., s].to(sd) * x[..., s].to(sd)
            + g1[..., s].to(sd) * up
            + g2[..., s].to(sd) * h
            + g3[..., s].to(sd) * down
        )
        outs.append(h)
    return torch.stack(outs, dim=-1)


def _chunk_starts(S: int, chunk: int | None, reverse: bool) -> list[bool]:
    """S bools marking, in scan order, the steps where a window [k*chunk, (k+1)*chunk) begins."""
    out = []
    for step in range(S):
        pos = S - 1 - step if reverse else step  # absolute position visited at this scan step
        if chunk is None or chunk >= S:
            out.append(step == 0)
        elif reverse:
            out.append((pos + 1) % chunk == 0 or pos == S - 1)
        else:
            out.append(pos % chunk == 0)
    return out


def line_scan_reference(
    x: torch.Tensor,
    lam: torch.Tensor,
    g1: torch.Tensor,
    g2: torch.Tensor,
    g3: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """Reference of :func:`cgspn.ops.line_scan`: (N, C, H, W) in, (N, C, H, W) out, x's dtype."""
    starts = _chunk_starts(x.shape[-1], chunk, False)
    return scan_lines(x, lam, g1, g2, g3, starts).to(x.dtype)


def _to_scan_frame(t: torch.Tensor, d: int) -> torch.Tensor:
    """(B, H, W, *F) -> (B, *F, L, S) for direction d (0: L=H,S=W; 1: flipped S; 2: L=W,S=H; 3)."""
    nf = t.dim() - 3
    feat = list(range(3, 3 + nf))
    if d in (0, 1):
        v = t.permute(0, *feat, 1, 2)
    else:
        v = t.permute(0, *feat, 2, 1)
    return v.flip(-1) if d in (1, 3) else v


def _from_scan_frame(v: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`_to_scan_frame` for a (B, C, L, S) tensor: back to (B, H, W, C)."""
    if d in (1, 3):
        v = v.flip(-1)
    if d in (0, 1):
        return v.permute(0, 2, 3, 1)
    return v.permute(0, 3, 2, 1)


def gspn2d_reference(
    x: torch.Tensor,
    lam: torch.Tensor,
    gate_logits: torch.Tensor,
    u: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Reference of :func:`cgspn.ops.gspn2d`.

    Shapes: x (B, H, W, C); lam, u (B, H, W, 4, C); gate_logits (B, H, W, 4, 3, G), C % G == 0.
    Returns y (B, H, W, 4, C) in x's dtype.
    """
    B, H, W, C = x.shape
    G = gate_logits.shape[-1]
    outs = []
    for d in range(4):
        S = W if d in (0, 1) else H
        z = gate_logits[:, :, :, d]  # (B, H, W, 3, G)
        if G != C:
            z = z.repeat_interleave(C // G, dim=-1)
        zf = _to_scan_frame(z, d)  # (B, 3, C, L, S)
        g1, g2, g3 = normalize_gates_reference(zf[:, 0], zf[:, 1], zf[:, 2], line_dim=-2)
        xf = _to_scan_frame(x, d)
        lf = _to_scan_frame(lam[:, :, :, d], d)
        starts = _chunk_starts(S, chunk, d in (1, 3))
        h = scan_lines(xf, lf, g1, g2, g3, starts)
        h = _from_scan_frame(h, d)
        if u is not None:
            h = h * u[:, :, :, d].to(h.dtype)
        outs.append(h)
    return torch.stack(outs, dim=3).to(x.dtype)
