"""``torch.library`` registration of the fused kernels: custom ops with fake and autograd rules,
and the eager path that calls the same kernels without the dispatcher.

Registered as ``cgspn::gspn2d_fwd`` / ``cgspn::gspn2d_bwd`` and ``cgspn::line_scan_fwd`` /
``cgspn::line_scan_bwd`` so that ``torch.compile(fullgraph=True)`` traces models using them
(the op is one node in the graph, not a graph break) and ``torch.library.opcheck`` passes.
``chunk`` is passed as an int, 0 meaning global lines.

Eager calls (not under ``torch.compile``) skip the custom-op machinery: with no gradient needed the
forward kernel is launched directly, else through a ``torch.autograd.Function`` whose forward and
backward launch the same kernels as the registered ops. The custom op's Python wrappers (its
dispatcher hops, the generated autograd function, the argument re-filling) cost more host time per
call than the launch itself: measured with ``tools/op_overhead.py --host-only`` (docs/benchmarks.md,
eighth session). Both paths run the same launches (``triton_backend``), so they agree bit for bit
(tests/ops/test_gspn_triton.py).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import triton_backend as TB

__all__ = ["gspn2d_triton", "line_scan_triton"]


def _chunk(c: int) -> int | None:
    return None if c <= 0 else c


# ----------------------------------------------------------------------------- gspn2d
@torch.library.custom_op("cgspn::gspn2d_fwd", mutates_args=())
def _gspn2d_fwd(
    x: torch.Tensor, lam: torch.Tensor, gate_logits: torch.Tensor, u: Optional[torch.Tensor], chunk: int, save_h: bool,
    lam_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    y, h = TB.gspn2d_fwd_triton(x, lam, gate_logits, u, _chunk(chunk), save_h, lam_logits=lam_logits)
    if h is None:
        h = y.new_empty(0)
    return y, h


@_gspn2d_fwd.register_fake
def _(x, lam, gate_logits, u, chunk, save_h, lam_logits=False):
    y = torch.empty_like(lam, dtype=x.dtype)
    h = torch.empty_like(lam, dtype=x.dtype) if (save_h and u is not None) else y.new_empty(0)
    return y, h


@torch.library.custom_op("cgspn::gspn2d_bwd", mutates_args=())
def _gspn2d_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    lam: torch.Tensor,
    gate_logits: torch.Tensor,
    u: Optional[torch.Tensor],
    h: torch.Tensor,
    chunk: int,
    lam_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dlam, dz, du = TB.gspn2d_bwd_triton(dy, x, lam, gate_logits, u, h, _chunk(chunk), lam_logits=lam_logits)
    if du is None:
        du = dy.new_empty(0)
    return dx, dlam, dz, du


@_gspn2d_bwd.register_fake
def _(dy, x, lam, gate_logits, u, h, chunk, lam_logits=False):
    du = torch.empty_like(u) if u is not None else dy.new_empty(0)
    return torch.empty_like(x), torch.empty_like(lam), torch.empty_like(gate_logits), du


def _gspn2d_setup(ctx, inputs, output):
    x, lam, z, u, chunk, save_h, lam_logits = inputs
    y, h = output
    ctx.chunk = chunk
    ctx.lam_logits = lam_logits
    ctx.has_u = u is not None
    state = h if u is not None else y
    ctx.save_for_backward(x, lam, z, u, state)


def _gspn2d_grads(ctx, dy, registered: bool):
    """(dx, dlam, dz, du or None) from what ``_gspn2d_setup`` saved: through the registered backward op
    (the custom op's autograd) or its launches directly (the eager path)."""
    x, lam, z, u, state = ctx.saved_tensors
    if ctx.has_u and state.numel() == 0 and x.numel() > 0:
        raise RuntimeError("gspn2d: the forward ran without saving its state (save_h=False); cannot backpropagate")
    if registered:
        dx, dlam, dz, du = _gspn2d_bwd(dy, x, lam, z, u, state, ctx.chunk, ctx.lam_logits)
    else:
        dx, dlam, dz, du = TB.gspn2d_bwd_triton(dy, x, lam, z, u, state, _chunk(ctx.chunk), lam_logits=ctx.lam_logits)
    return dx, dlam, dz, (du if ctx.has_u else None)


def _gspn2d_backward(ctx, dy, _dh):
    return (*_gspn2d_grads(ctx, dy, registered=True), None, None, None)


_gspn2d_fwd.register_autograd(_gspn2d_backward, setup_context=_gspn2d_setup)


class _Gspn2dEager(torch.autograd.Function):
    """Eager autograd of the fused gspn2d: the registered ops' launches without the dispatcher.
    Inputs as ``cgspn::gspn2d_fwd``; returns y (B, H, W, 4, C)."""

    @staticmethod
    def forward(ctx, x, lam, gate_logits, u, chunk: int, lam_logits: bool):  # type: ignore[override]
        y, h = TB.gspn2d_fwd_triton(x, lam, gate_logits, u, _chunk(chunk), True, lam_logits=lam_logits)
        _gspn2d_setup(ctx, (x, lam, gate_logits, u, chunk, True, lam_logits), (y, h))
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable  # the backward kernel has no derivative of its own
    def backward(ctx, dy):  # type: ignore[override]
        return (*_gspn2d_grads(ctx, dy, registered=False), None, None)


def gspn2d_triton(
    x: torch.Tensor, lam: torch.Tensor, gate_logits: torch.Tensor, u: torch.Tensor | None, chunk: int | None,
    lam_logits: bool = False,
) -> torch.Tensor:
    """Fused-kernel gspn2d on validated inputs (see :func:`cgspn.ops.gspn2d`): the registered custom
    op under ``torch.compile``, the same kernels launched directly in eager mode."""
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, lam, gate_logits, u)
    )
    if torch.compiler.is_compiling():
        y, _ = _gspn2d_fwd(x, lam, gate_logits, u, chunk or 0, needs_grad, lam_logits)
        return y
    if not needs_grad:
        return TB.gspn2d_fwd_triton(x, lam, gate_logits, u, chunk, False, lam_logits=lam_logits)[0]
    return _Gspn2dEager.apply(x, lam, gate_logits, u, chunk or 0, lam_logits)


# ----------------------------------------------------------------------------- line_scan
@torch.library.custom_op("cgspn::line_scan_fwd", mutates_args=())
def _line_scan_fwd(
    x: torch.Tensor, lam: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor, chunk: int
) -> torch.Tensor:
    return TB.line_scan_fwd_triton(x, lam, g1, g2, g3, _chunk(chunk))


@_line_scan_fwd.register_fake
def _(x, lam, g1, g2, g3, chunk):
    return torch.empty_like(x)


@torch.library.custom_op("cgspn::line_scan_bwd", mutates_args=())
def _line_scan_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    lam: torch.Tensor,
    g1: torch.Tensor,
    g2: torch.Tensor,
    g3: torch.Tensor,
    h: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # the three gate gradients come back stacked (3, N, C, H, W): one buffer, no aliasing outputs
    return TB.line_scan_bwd_triton(dy, x, lam, g1, g2, g3, h, _chunk(chunk))


@_line_scan_bwd.register_fake
def _(dy, x, lam, g1, g2, g3, h, chunk):
    return torch.empty_like(x), torch.empty_like(lam), g1.new_empty((3,) + tuple(g1.shape))


def _line_scan_setup(ctx, inputs, output):
    x, lam, g1, g2, g3, chunk = inputs
    ctx.chunk = chunk
    ctx.save_for_backward(x, lam, g1, g2, g3, output)


def _line_scan_grads(ctx, dy, registered: bool):
    """(dx, dlam, dg1, dg2, dg3, None) from what ``_line_scan_setup`` saved, as :func:`_gspn2d_grads`."""
    x, lam, g1, g2, g3, h = ctx.saved_tensors
    if registered:
        dx, dlam, dg = _line_scan_bwd(dy, x, lam, g1, g2, g3, h, ctx.chunk)
    else:
        dx, dlam, dg = TB.line_scan_bwd_triton(dy, x, lam, g1, g2, g3, h, _chunk(ctx.chunk))
    return dx, dlam, dg[0], dg[1], dg[2], None


def _line_scan_backward(ctx, dy):
    return _line_scan_grads(ctx, dy, registered=True)


_line_scan_fwd.register_autograd(_line_scan_backward, setup_context=_line_scan_setup)


class _LineScanEager(torch.autograd.Function):
    """Eager autograd of the fused line_scan (as :class:`_Gspn2dEager`). Inputs (N, C, H, W)."""

    @staticmethod
    def forward(ctx, x, lam, g1, g2, g3, chunk: int):  # type: ignore[override]
        h = TB.line_scan_fwd_triton(x, lam, g1, g2, g3, _chunk(chunk))
        _line_scan_setup(ctx, (x, lam, g1, g2, g3, chunk), h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):  # type: ignore[override]
        return _line_scan_grads(ctx, dy, registered=False)


def line_scan_triton(
    x: torch.Tensor, lam: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor, chunk: int | None
) -> torch.Tensor:
    """Fused-kernel line_scan on validated inputs (see :func:`cgspn.ops.line_scan`): the registered
    custom op under ``torch.compile``, the same kernels launched directly in eager mode."""
    if torch.compiler.is_compiling():
        return _line_scan_fwd(x, lam, g1, g2, g3, chunk or 0)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, lam, g1, g2, g3))):
        return TB.line_scan_fwd_triton(x, lam, g1, g2, g3, chunk)
    return _LineScanEager.apply(x, lam, g1, g2, g3, chunk or 0)
