"""Token mixers as the encoder's blocks call them: ``mixer(x, grid)`` on (B, P + H*W, C) tokens.

* :class:`LatentPropagationMixer`: :class:`LatentPropagation` on the H x W grid, plus the path
  for the P prefix tokens (class token, registers), which bypass the scan.
* :class:`AttentionMixer`: timm's SDPA ``Attention`` (names ``qkv``, ``proj``, ``q_norm``,
  ``k_norm``), accepting and ignoring ``grid``; the mixer of hybrid (``attn_layers``) blocks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import Attention

from .latent_propagation import LatentPropagation

__all__ = ["LatentPropagationMixer", "AttentionMixer", "check_tokens"]


def check_tokens(x: torch.Tensor, grid: tuple[int, int], dim: int) -> int:
    """Validate tokens x (B, P + H*W, C) against grid (H, W); return P, the prefix-token count."""
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"tokens must have shape (B, P + H*W, C={dim}), got {tuple(x.shape)}")
    H, W = int(grid[0]), int(grid[1])
    P = x.shape[1] - H * W
    if H < 1 or W < 1 or P < 0:
        raise ValueError(f"grid {(H, W)} needs at least H*W = {H * W} tokens, got x of shape {tuple(x.shape)}")
    return P


class LatentPropagationMixer(LatentPropagation):
    """:class:`LatentPropagation` over tokens (B, P + H*W, C), P prefix tokens first.

    The H*W grid tokens go through the scan. The P prefix tokens bypass it:

    * grid -> prefix: prefix token p reads the grid mean of each direction's output,
      ``r_p = sum_d merge_weight[d] * u_p[d] * mean_grid(y[d])``, gated by its own output gates u_p
      (so a class token and registers read different things);
    * prefix -> grid: ``prefix_weight * mean_p(v_p)``, the mean of the prefix tokens' latent
      values, is added to every token's merged latent before the latent norm: a global path that
      the four half-plane scans lack, and the way registers feed back into the grid.

    Both paths then share the latent norm and the read-out, so a prefix token's output lives in
    the same space as a grid token's. ``prefix_weight`` (C_c,) exists only when
    ``num_prefix_tokens > 0``; it starts at 1/4, the weight of one direction.

    Args:
        dim: token width C.
        num_prefix_tokens: P, the number of prefix tokens every input carries.
        **kwargs: :class:`LatentPropagation` arguments (latent_dim, gate_groups, chunk, ...).
    """

    def __init__(self, dim: int, num_prefix_tokens: int = 0, **kwargs) -> None:
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.num_prefix_tokens = int(num_prefix_tokens)
        super().__init__(dim, **kwargs)
        if self.num_prefix_tokens:
            self.prefix_weight = nn.Parameter(torch.full((self.latent_dim,), 0.25))
        else:
            self.prefix_weight = None

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        if getattr(self, "prefix_weight", None) is not None:
            self.prefix_weight.fill_(0.25)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        """x (B, P + H*W, C) with grid = (H, W) -> (B, P + H*W, C)."""
        P = check_tokens(x, grid, self.dim)
        if P != self.num_prefix_tokens:
            raise ValueError(
                f"this mixer was built for {self.num_prefix_tokens} prefix tokens, got x of shape {tuple(x.shape)} "
                f"with grid {tuple(grid)} ({P} prefix tokens)"
            )
        B, N, _ = x.shape
        H, W = int(grid[0]), int(grid[1])
        Cc = self.latent_dim
        if not P:
            # one GEMM gives v, lam logits, merge_weight * u and z as views the scan reads in place
            v, lam, uw, z = self.project_in_weighted(x)
            y = self.propagate(v.reshape(B, H, W, Cc), lam.reshape(B, H, W, 4, Cc),
                               z.reshape(B, H, W, 4, 3, self.gate_groups), uw.reshape(B, H, W, 4, Cc), lam_logits=True)
            # y[..., d, :] = merge_weight[d] * u_d * h_d; the sum over directions is fused into the read-out
            return self.proj_drop(self.proj(self.readout(y.reshape(B, H * W, 4, Cc))))
        v, lam, u, z = self.project_in(x)
        uw = self.weighted_u(u)  # (B, P + H*W, 4, C_c); its grid slice shares lam's strides (no copy in the op)
        y = self.propagate(
            v[:, P:].reshape(B, H, W, Cc),
            lam[:, P:].reshape(B, H, W, 4, Cc),
            z[:, P:].reshape(B, H, W, 4, 3, self.gate_groups),
            uw[:, P:].reshape(B, H, W, 4, Cc),
        )  # y[..., d, :] = merge_weight[d] * u_d * h_d: the merge is a sum
        m = y.sum(dim=-2).reshape(B, H * W, Cc)
        summary = y.mean(dim=(1, 2))  # (B, 4, C_c), merge weights included
        m_prefix = (u[:, :P] * summary[:, None].to(u.dtype)).sum(dim=-2)  # (B, P, C_c)
        m = torch.cat([m_prefix.to(m.dtype), m], dim=1)
        m = m + self.prefix_weight.to(v.dtype) * v[:, :P].mean(dim=1, keepdim=True)
        return self.project_out(m)


class AttentionMixer(Attention):
    """timm ``Attention`` (SDPA / FlashAttention path) with the mixer call signature.

    Weights are named like timm's (``qkv``, ``proj``, ``q_norm``, ``k_norm``) so a ViT block's
    ``attn.*`` loads as ``mixer.*``. ``grid`` is accepted and ignored: attention sees all tokens.
    """

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:  # type: ignore[override]
        """x (B, N, C) -> (B, N, C)."""
        return super().forward(x)
