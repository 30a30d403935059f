"""The C-GSPN encoder block: a timm ViT ``Block`` with ``attn`` renamed ``mixer`` and a grid argument."""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerScale, Mlp

from .mixers import AttentionMixer, LatentPropagationMixer

__all__ = ["CGSPNBlock", "MIXER_TYPES"]

MIXER_TYPES = ("propagation", "attention")


class CGSPNBlock(nn.Module):
    """Pre-norm block: ``x = x + ls1(mixer(norm1(x), grid))``, ``x = x + ls2(mlp(norm2(x)))``.

    Submodules ``norm1``, ``mixer``, ``ls1``, ``drop_path1``, ``norm2``, ``mlp``, ``ls2``,
    ``drop_path2`` are named as in timm's ViT ``Block`` (``attn`` -> ``mixer``), so the MLP, norms
    and layer scales of a ViT checkpoint load unchanged.

    Args:
        dim: token width C.
        num_heads: attention heads (attention mixers only).
        mlp_ratio: MLP hidden width over C (``int(dim * mlp_ratio)``, as timm).
        mixer_type: "propagation" (:class:`LatentPropagationMixer`) or "attention"
            (:class:`AttentionMixer`, timm SDPA attention).
        num_prefix_tokens: prefix tokens (class, registers) every input carries.
        latent_dim, gate_groups, chunk, scan_backend: propagation-mixer settings
            (:class:`cgspn.layers.LatentPropagation`).
        qkv_bias, qk_norm, attn_drop: attention-mixer settings (timm ``Attention``).
        proj_bias: bias of the mixer's output projection and of the MLP.
        proj_drop: dropout after the mixer's and the MLP's output projections.
        init_values: LayerScale init (``ls1.gamma``/``ls2.gamma``); None = no LayerScale (Identity).
        drop_path: stochastic-depth rate.
        act_layer, norm_layer, mlp_layer: as timm's ``Block``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mixer_type: Literal["propagation", "attention"] = "propagation",
        num_prefix_tokens: int = 0,
        latent_dim: int | None = None,
        gate_groups: int | None = None,
        chunk: int | None = None,
        scan_backend: str | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        mlp_layer: Callable[..., nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        if mixer_type not in MIXER_TYPES:
            raise ValueError(f"mixer_type must be one of {MIXER_TYPES}, got {mixer_type!r}")
        self.mixer_type = mixer_type
        self.norm1 = norm_layer(dim)
        if mixer_type == "attention":
            self.mixer = AttentionMixer(
                dim,
                num_heads=num_heads,
                qkv_bias=qkv_bias,
                qk_norm=qk_norm,
                attn_drop=attn_drop,
                proj_drop=proj_drop,
                norm_layer=norm_layer,
            )
        else:
            self.mixer = LatentPropagationMixer(
                dim,
                num_prefix_tokens=num_prefix_tokens,
                latent_dim=latent_dim,
                gate_groups=gate_groups,
                chunk=chunk,
                act_layer=act_layer,
                bias=proj_bias,
                proj_drop=proj_drop,
                backend=scan_backend,
            )
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            bias=proj_bias,
            drop=proj_drop,
        )
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x (B, P + H*W, C) tokens, P prefix tokens first, grid = (H, W) -> (B, P + H*W, C)."""
        x = x + self.drop_path1(self.ls1(self.mixer(self.norm1(x), grid)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x
