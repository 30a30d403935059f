"""Public functional of the fused latent read-out."""

from __future__ import annotations

import torch

from ..backends import resolve_backend
from .reference import latent_readout_reference

__all__ = ["latent_readout"]


def _check(y, norm_weight, norm_bias, up_weight, up_bias) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"y must be a floating torch.Tensor, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.dim() < 2:
        raise ValueError(f"y must have shape (..., D, K), got {tuple(y.shape)}")
    K = y.shape[-1]
    if not isinstance(up_weight, torch.Tensor) or up_weight.dim() != 2 or up_weight.shape[1] != K:
        raise ValueError(f"up_weight must have shape (N, K={K}), got {tuple(getattr(up_weight, 'shape', ()))}")
    N = up_weight.shape[0]
    for name, t, n in (("norm_weight", norm_weight, K), ("norm_bias", norm_bias, K), ("up_bias", up_bias, N)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(getattr(t, 'shape', ()))}")
    for name, t in (("norm_weight", norm_weight), ("norm_bias", norm_bias), ("up_weight", up_weight), ("up_bias", up_bias)):
        if t is not None and t.device != y.device:
            raise ValueError(f"{name} is on {t.device}, y on {y.device}: all inputs must be on one device")


def latent_readout(
    y: torch.Tensor,
    norm_weight: torch.Tensor | None,
    norm_bias: torch.Tensor | None,
    up_weight: torch.Tensor,
    up_bias: torch.Tensor | None,
    *,
    eps: float = 1e-5,
    backend: str | None = None,
) -> torch.Tensor:
    """``GELU(LayerNorm(y.sum(-2)) @ up_weight.T + up_bias)``: y (..., D, K) -> (..., N).

    The C-GSPN mixer's read-out after the scan: sum of the D direction outputs (D = 1 for an
    already-merged latent), LayerNorm over the K latent channels (weight/bias optional), the
    K -> N up-projection and the exact (erf) GELU. ``backend``: "triton" (one kernel: the (..., N)
    pre-activation is never written; backward from PyTorch kernels), "reference" (PyTorch ops), or
    None (Triton on CUDA, reference on CPU). Returns y's dtype.
    """
    _check(y, norm_weight, norm_bias, up_weight, up_bias)
    name = resolve_backend(backend, y)
    if name == "triton":
        from .op import latent_readout_triton

        # one dtype in the kernel (e.g. bf16 activations under autocast with fp32 weights)
        cast = [t if t is None or t.dtype == y.dtype else t.to(y.dtype) for t in (norm_weight, norm_bias, up_weight, up_bias)]
        return latent_readout_triton(y, *cast, eps)
    return latent_readout_reference(y, norm_weight, norm_bias, up_weight, up_bias, eps)
