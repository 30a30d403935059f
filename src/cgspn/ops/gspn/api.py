"""Public functionals of the GSPN operator (the contract other code calls)."""

from __future__ import annotations

import torch

from ..backends import resolve_backend
from .reference import gspn2d_reference, line_scan_reference, normalize_gates_reference
from .validate import check_gspn2d_inputs, check_line_scan_inputs

__all__ = ["line_scan", "gspn2d", "normalize_gates"]


def normalize_gates(
    z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor, *, line_dim: int = -2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise raw gate logits: ``g_k = sigmoid(z_k) / S`` over the neighbours that exist.

    z1, z2, z3: same shape; ``line_dim`` is the axis along the line (H for ``line_scan``'s
    (N, C, H, W)). ``S = sum of sigmoid(z_k)`` over k whose neighbour exists: position 0 drops
    gate 1 (its neighbour p-1 is missing; returned g1 is 0 there), position L-1 drops gate 3.
    ``S`` is clamped at 1e-7. So ``g1 + g2 + g3 == 1`` everywhere. Returns (g1, g2, g3) in z1's dtype.
    """
    for n, t in (("z1", z1), ("z2", z2), ("z3", z3)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{n} must be a floating torch.Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if z1.shape != z2.shape or z1.shape != z3.shape:
        raise ValueError(f"z1, z2, z3 must have one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}, {tuple(z3.shape)}")
    if z1.dim() == 0 or not -z1.dim() <= line_dim < z1.dim():
        raise ValueError(f"line_dim={line_dim} is out of range for tensors of shape {tuple(z1.shape)}")
    return normalize_gates_reference(z1, z2, z3, line_dim=line_dim)


def line_scan(
    x: torch.Tensor,
    lam: torch.Tensor,
    g1: torch.Tensor,
    g2: torch.Tensor,
    g3: torch.Tensor,
    *,
    chunk: int | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One left-to-right line scan with already-normalised gates.

    x, lam, g1, g2, g3: (N, C, H, W). Column w is a line of H pixels; gates sit at the destination:
    ``h[..., i, w] = lam*x + g1*h[..., i-1, w-1] + g2*h[..., i, w-1] + g3*h[..., i+1, w-1]``,
    reads outside [0, H) are 0, and column 0 of each chunk starts from zero state. ``chunk=k``
    cuts W into windows [0, k), [k, 2k), ... that exchange no state; None = global lines.
    State is float32 (float64 for float64 input). Returns h (N, C, H, W) in x's dtype.
    ``backend``: "reference", "triton" or None (Triton on CUDA, reference on CPU).
    """
    chunk = check_line_scan_inputs(x, lam, g1, g2, g3, chunk)
    name = resolve_backend(backend, x)
    if name == "triton":
        from .op import line_scan_triton

        return line_scan_triton(x, lam, g1, g2, g3, chunk)
    return line_scan_reference(x, lam, g1, g2, g3, chunk)


def gspn2d(
    x: torch.Tensor,
    lam: torch.Tensor,
    gate_logits: torch.Tensor,
    *,
    u: torch.Tensor | None = None,
    chunk: int | None = None,
    backend: str | None = None,
    lam_logits: bool = False,
) -> torch.Tensor:
    """4-direction GSPN propagation on channels-last tokens, gate normalisation fused in.

    Shapes: x (B, H, W, C); lam, u (B, H, W, 4, C); gate_logits (B, H, W, 4, 3, G) raw logits,
    C % G == 0, channel c uses gate group ``c // (C // G)``.
    Directions d: 0 left->right (lines are columns), 1 right->left, 2 top->bottom (lines are rows),
    3 bottom->top; gate k couples to the neighbour at line position p-1, p, p+1 of the previous line.
    ``chunk`` cuts the scan axis into windows [k*chunk, (k+1)*chunk) of the original grid, the
    same for all directions; state never crosses a window.
    Returns y (B, H, W, 4, C) in x's dtype: ``y[..., d, :] = u_d * h_d`` (u=None means 1), each
    direction mapped back to the original grid.
    ``lam_logits=True``: lam holds logits and the input gate is ``sigmoid(lam)``, applied inside the
    op (fused in the kernel: no separate pass over lam); gradients are w.r.t. the logits.
    """
    chunk = check_gspn2d_inputs(x, lam, gate_logits, u, chunk)
    name = resolve_backend(backend, x)
    if name == "triton":
        from .op import gspn2d_triton

        return gspn2d_triton(x, lam, gate_logits, u, chunk, bool(lam_logits))
    if lam_logits:
        lam = torch.sigmoid(lam)
    return gspn2d_reference(x, lam, gate_logits, u, chunk)
