"""open_clip teachers: the image tower becomes a timm ViT, the text tower stays frozen beside it.

Two image-tower kinds exist in open_clip:

* ``TimmModel`` (SigLIP, many ViT-*-SigLIP / DFN configs): ``visual.trunk`` already is a timm ViT;
  an optional linear ``visual.head.proj`` becomes the trunk's ``head``.
* the native ``VisionTransformer`` (OpenAI / LAION CLIP): converted with timm's own OpenAI-CLIP
  mapping (``conv1`` -> ``patch_embed.proj``, ``transformer.resblocks`` -> ``blocks``,
  ``in_proj`` -> ``qkv``, ``ln_post`` -> ``norm``, ``proj`` -> ``head``) into a timm
  ``VisionTransformer`` with ``pre_norm``, QuickGELU where the tower uses it and LayerScale
  where it has one.

Either way the teacher's summary (``forward_head``) is the image embedding that
``model.encode_image`` returns (unnormalised), and the student copies the same head.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .base import Teacher, TextTower, make_vit_dynamic
from .hub import network_policy
from .timm_vit import check_vit_teacher

__all__ = ["open_clip_teacher", "open_clip_visual_to_timm"]


def _native_visual_to_timm(visual: nn.Module) -> nn.Module:
    """Convert an open_clip native ``VisionTransformer`` into an equivalent timm ViT."""
    from timm.layers import QuickGELU
    from timm.models.vision_transformer import VisionTransformer, _convert_openai_clip

    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("open_clip towers with attentional pooling (CoCa) are not supported as teachers")
    if getattr(visual, "final_ln_after_pool", False):
        raise ValueError("open_clip towers with final_ln_after_pool are not supported as teachers")
    pool = {"tok": "token", "avg": "avg"}.get(getattr(visual, "pool_type", "tok"))
    if pool is None:
        raise ValueError(f"open_clip pool_type '{visual.pool_type}' is not supported")
    blocks = visual.transformer.resblocks
    b0 = blocks[0]
    width = visual.transformer.width
    heads = b0.attn.num_heads
    mlp_hidden = b0.mlp.c_fc.out_features
    act = b0.mlp.gelu
    ls = getattr(b0.ls_1, "gamma", None)
    eps = getattr(b0.ln_1, "eps", 1e-5)
    patch = visual.patch_size[0]
    img = visual.image_size[0]
    proj = visual.proj
    out_dim = proj.shape[1] if proj is not None else 0
    from functools import partial

    model = VisionTransformer(
        img_size=img,
        patch_size=patch,
        embed_dim=width,
        depth=len(blocks),
        num_heads=heads,
        mlp_ratio=mlp_hidden / width,
        qkv_bias=True,
        init_values=1e-5 if ls is not None else None,
        class_token=True,
        global_pool=pool,
        fc_norm=False,
        pre_norm=not isinstance(visual.ln_pre, nn.Identity),
        num_classes=out_dim,
        norm_layer=partial(nn.LayerNorm, eps=eps),
        act_layer=QuickGELU if type(act).__name__ == "QuickGELU" else nn.GELU,
        dynamic_img_size=True,
    )
    sd = {"visual." + k: v for k, v in visual.state_dict().items()}
    converted = _convert_openai_clip(sd, model, prefix="visual.")
    converted = {k.replace("ls_1", "ls1").replace("ls_2", "ls2"): v for k, v in converted.items()}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"open_clip tower does not convert to timm: missing {missing}, unexpected {unexpected}")
    return model


def _timm_visual_to_timm(visual: nn.Module) -> nn.Module:
    """Take ``visual.trunk`` and move a purely linear ``visual.head`` into the trunk's head."""
    trunk = copy.deepcopy(visual.trunk)
    head = getattr(visual, "head", None)
    layers = [m for m in head.children() if not isinstance(m, (nn.Dropout, nn.Identity))] if head is not None else []
    if layers:
        if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
            raise ValueError("open_clip timm towers with an MLP or attention-pool head are not supported as teachers")
        lin = copy.deepcopy(layers[0])
        if lin.bias is None:
            new = nn.Linear(lin.in_features, lin.out_features, bias=True)
            with torch.no_grad():
                new.weight.copy_(lin.weight)
                new.bias.zero_()
            lin = new
        trunk.head = lin
        trunk.num_classes = lin.out_features
    return trunk


def open_clip_visual_to_timm(visual: nn.Module) -> nn.Module:
    """A timm ViT computing the same image embedding as the open_clip image tower ``visual``."""
    if hasattr(visual, "trunk"):
        model = _timm_visual_to_timm(visual)
    elif hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        model = _native_visual_to_timm(visual)
    else:
        raise ValueError(f"open_clip image tower {type(visual).__name__} is not a ViT")
    model = make_vit_dynamic(model)
    check_vit_teacher(model, type(visual).__name__)
    return model.eval()


def open_clip_teacher(
    name: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    pretrained: str | None = None,
    allow_network: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> Teacher:
    """An open_clip model as a teacher: timm-converted image tower + frozen text tower.

    name: an open_clip model name (``ViT-B-16``, ``ViT-SO400M-14-SigLIP-384``) or an
    ``hf-hub:org/repo`` id (needs ``allow_network`` unless it is in the local HF cache).
    checkpoint: a local open_clip checkpoint file (``pretrained=<path>`` in open_clip terms).
    pretrained: an open_clip pretrained tag (e.g. ``laion2b_s34b_b88k``), downloaded only with
    ``allow_network``.
    """
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError("open_clip teachers need open-clip-torch: pip install open-clip-torch") from e
    if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model '{name}'")
    src: str | None = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"teacher checkpoint not found: {checkpoint}")
        src = str(checkpoint)
    elif pretrained:
        src = pretrained
    with network_policy(allow_network):
        try:
            model = open_clip.create_model(
                name, pretrained=src, pretrained_text=bool(src), **dict(model_kwargs or {})
            )
            tokenizer = open_clip.get_tokenizer(name)
        except (OSError, RuntimeError) as e:
            hint = "" if allow_network else " (network is off: pass a local teacher.checkpoint or set teacher.allow_network=true)"
            raise ValueError(f"could not load open_clip teacher '{name}': {e}{hint}") from e
    model.eval()
    vit = open_clip_visual_to_timm(model.visual)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = cfg.get("mean", getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
    std = cfg.get("std", getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
    logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    bias = getattr(model, "logit_bias", None)
    logit_bias = float(bias.item()) if isinstance(bias, torch.Tensor) else None
    model.visual = nn.Identity()  # the image tower lives on as ``vit``; keep the text side only
    text = TextTower(model, tokenizer, logit_scale, logit_bias)
    return Teacher(vit, name=name, mean=mean, std=std, pos_antialias=True, text=text,
                   source=src or "random init")
