"""timm ViT teachers (``vit_*``: supervised, DINOv2, CLIP and SigLIP image towers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from .base import Teacher, make_vit_dynamic
from .hub import network_policy

__all__ = ["create_timm_vit", "timm_teacher", "check_vit_teacher"]


def check_vit_teacher(model: nn.Module, name: str) -> None:
    """Raise ValueError unless ``model`` is a timm ViT with pre-norm (LayerScale-slot) blocks."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "patch_embed"):
        raise ValueError(f"teacher '{name}' is not a ViT-style encoder (no patch_embed/blocks)")
    for b in blocks:
        if not all(hasattr(b, a) for a in ("norm1", "attn", "ls1", "norm2", "mlp", "ls2")):
            raise ValueError(
                f"teacher '{name}' has {type(b).__name__} blocks; supported: timm vision_transformer.Block "
                "(pre-norm attention + MLP with LayerScale slots)"
            )


def create_timm_vit(
    name: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    allow_network: bool = False,
    keep_head: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a timm ViT by name with weights from a local file, the hub, or nothing (random init).

    checkpoint: local ``.safetensors`` / ``.pth`` (read with ``weights_only=True``), passed through
    timm's own checkpoint filter so original DINOv2 / OpenAI-CLIP / big_vision layouts convert.
    pretrained: timm's default pretrained weights (or an ``hf-hub:`` name); read from the local HF
    cache, downloaded only with ``allow_network``.
    keep_head: keep the classifier / projection head (default: ``num_classes=0``, pooled features).
    """
    import timm

    if not timm.is_model(name.split("hf-hub:")[-1].split(".")[0]) and not name.startswith("hf-hub:"):
        raise ValueError(f"unknown timm model '{name}'")
    kwargs: dict[str, Any] = dict(model_kwargs or {})
    kwargs.setdefault("dynamic_img_size", True)
    if not keep_head:
        kwargs.setdefault("num_classes", 0)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"teacher checkpoint not found: {path}")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    with network_policy(allow_network):
        try:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
        except (OSError, RuntimeError) as e:
            if checkpoint is None and pretrained and not allow_network:
                raise ValueError(
                    f"pretrained weights for '{name}' are not in the local cache and the network is off; "
                    "pass teacher.checkpoint=<file> or set teacher.allow_network=true"
                ) from e
            raise ValueError(f"could not load teacher '{name}': {e}") from e
    model = make_vit_dynamic(model)
    check_vit_teacher(model, name)
    return model.eval()


def timm_teacher(
    name: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    allow_network: bool = False,
    keep_head: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> Teacher:
    """A :class:`Teacher` around :func:`create_timm_vit`; pixel statistics from the model's cfg."""
    model = create_timm_vit(
        name, checkpoint=checkpoint, pretrained=pretrained, allow_network=allow_network,
        keep_head=keep_head, model_kwargs=model_kwargs,
    )
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    src = str(checkpoint) if checkpoint else ("pretrained" if pretrained else "random init")
    return Teacher(model, name=name, mean=mean, std=std, pos_antialias=True, source=src)
