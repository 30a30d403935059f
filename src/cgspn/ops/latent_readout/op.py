"""``torch.library`` op of the fused read-out: Triton forward, backward from PyTorch's own kernels.

``cgspn::latent_readout`` is one node for ``torch.compile``. The backward recomputes the
pre-activation (one small GEMM, K = C_c) and applies ``aten.gelu_backward``, the two GEMMs of the
up-projection and ``aten.native_layer_norm_backward``: the same kernels the unfused path's
autograd runs, minus the (M, N) pre-activation the unfused forward keeps in memory.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["latent_readout_triton", "readout_config"]


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def readout_config(K: int, N: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) for K latent channels and N outputs.

    From a sweep on the H200 (M = 32 x 147 x 147 rows, D = 4, K = 64, N = 1152, bf16;
    docs/benchmarks.md): 64 x 64 tiles with 4 warps took 1.28 ms, 64 x 128 1.65 ms, 128 x 128
    1.84 ms; the exact-GELU arithmetic, not the bytes, dominates, so small tiles (more resident
    programs to hide it) win.
    """
    bk = max(16, _next_pow2(K))
    bn = 64 if N >= 64 else max(16, _next_pow2(N))
    bm = 64 if bk <= 64 else 32
    return bm, bn, bk, 4


def _launch(y2: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor], up_w: torch.Tensor,
            up_b: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    from .triton_kernel import latent_readout_fwd_kernel

    M, D, K = y2.shape
    N = up_w.shape[0]
    out = torch.empty((M, N), dtype=y2.dtype, device=y2.device)
    if M == 0 or N == 0:
        return out
    bm, bn, bk, warps = readout_config(K, N)
    dummy = up_w
    latent_readout_fwd_kernel[(-(-M // bm),)](
        y2, w if w is not None else dummy, b if b is not None else dummy, up_w, up_b if up_b is not None else dummy,
        out, M, N, K, D, float(eps),
        y2.stride(0), y2.stride(1), up_w.stride(0), out.stride(0),
        HAS_GAMMA=w is not None, HAS_BETA=b is not None, HAS_BIAS=up_b is not None,
        IEEE=y2.dtype == torch.float32,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
    )
    return out


def _readout_forward(y, norm_weight, norm_bias, up_weight, up_bias, eps: float) -> torch.Tensor:
    """y (..., D, K) -> (..., N): the fused kernel on a (M, D, K) view of y."""
    lead, (D, K) = y.shape[:-2], y.shape[-2:]
    y2 = y.reshape(-1, D, K)
    if y2.stride(-1) != 1:
        y2 = y2.contiguous()
    up_weight = up_weight if up_weight.stride(-1) == 1 else up_weight.contiguous()
    out = _launch(y2, norm_weight, norm_bias, up_weight, up_bias, eps)
    return out.view(*lead, up_weight.shape[0])


@torch.library.custom_op("cgspn::latent_readout", mutates_args=())
def _readout(
    y: torch.Tensor, norm_weight: Optional[torch.Tensor], norm_bias: Optional[torch.Tensor],
    up_weight: torch.Tensor, up_bias: Optional[torch.Tensor], eps: float,
) -> torch.Tensor:
    return _readout_forward(y, norm_weight, norm_bias, up_weight, up_bias, eps)


@_readout.register_fake
def _(y, norm_weight, norm_bias, up_weight, up_bias, eps):
    return y.new_empty((*y.shape[:-2], up_weight.shape[0]))


def _setup(ctx, inputs, output):
    y, w, b, up_w, up_b, eps = inputs
    ctx.eps = eps
    ctx.has = (w is not None, b is not None, up_b is not None)
    ctx.D = y.shape[-2]
    ctx.save_for_backward(y, w, b, up_w, up_b)


def _backward(ctx, dout):
    return _readout_grads(ctx, dout, *ctx.saved_tensors)


def _readout_grads(ctx, dout, y, w, b, up_w, up_b):
    """Gradients for (y, norm_weight, norm_bias, up_weight, up_bias, eps) from PyTorch's kernels;
    ctx carries eps, D and which optional inputs were given."""
    K = y.shape[-1]
    s = y.sum(dim=-2)
    m, mean, rstd = torch.ops.aten.native_layer_norm(s, [K], w, b, ctx.eps)
    pre = F.linear(m, up_w, up_b)
    dpre = torch.ops.aten.gelu_backward(dout, pre)
    dpre2 = dpre.reshape(-1, dpre.shape[-1])
    dm = dpre @ up_w
    d_up_w = dpre2.t() @ m.reshape(-1, K)
    d_up_b = dpre2.sum(0) if ctx.has[2] else None
    ds, dw, db = torch.ops.aten.native_layer_norm_backward(dm, s, [K], mean, rstd, w, b, [True, ctx.has[0], ctx.has[1]])
    dy = ds.unsqueeze(-2).expand(*ds.shape[:-1], ctx.D, K)
    return dy, dw, db, d_up_w, d_up_b, None


_readout.register_autograd(_backward, setup_context=_setup)


class _ReadoutEager(torch.autograd.Function):
    """Eager autograd of the fused read-out: the registered op's kernel and backward without the
    custom-op wrappers (their host cost per call exceeds the launch's; see cgspn.ops.gspn.op)."""

    @staticmethod
    def forward(ctx, y, norm_weight, norm_bias, up_weight, up_bias, eps: float):  # type: ignore[override]
        out = _readout_forward(y, norm_weight, norm_bias, up_weight, up_bias, eps)
        _setup(ctx, (y, norm_weight, norm_bias, up_weight, up_bias, eps), out)
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        return _readout_grads(ctx, dout, *ctx.saved_tensors)


def latent_readout_triton(y, norm_weight, norm_bias, up_weight, up_bias, eps: float) -> torch.Tensor:
    """The fused read-out on validated inputs (see :func:`cgspn.ops.latent_readout`): the registered
    custom op under ``torch.compile``, the same kernel called directly in eager mode."""
    if torch.compiler.is_compiling():
        return _readout(y, norm_weight, norm_bias, up_weight, up_bias, float(eps))
    ins = (y, norm_weight, norm_bias, up_weight, up_bias)
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ins)):
        return _readout_forward(*ins, float(eps))
    return _ReadoutEager.apply(*ins, float(eps))
