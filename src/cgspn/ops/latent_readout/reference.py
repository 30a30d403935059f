"""Pure-PyTorch reference of the latent read-out: sum over directions, LayerNorm, up-projection, GELU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["latent_readout_reference"]


def latent_readout_reference(
    y: torch.Tensor,
    norm_weight: torch.Tensor | None,
    norm_bias: torch.Tensor | None,
    up_weight: torch.Tensor,
    up_bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """``GELU(LayerNorm(y.sum(-2)) @ up_weight.T + up_bias)``; y (..., D, K) -> (..., N).

    The same composition of PyTorch ops the unfused C-GSPN mixer runs (exact, erf GELU), with
    autograd; any device and floating dtype, float64 included.
    """
    m = F.layer_norm(y.sum(dim=-2), (y.shape[-1],), norm_weight, norm_bias, eps)
    return F.gelu(F.linear(m, up_weight, up_bias))
