"""Optimizers and the learning-rate schedule (linear warm-up, then cosine to ``min_lr_ratio``)."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn as nn

__all__ = ["param_groups", "build_optimizer", "lr_factor", "set_lr"]

_NEW = re.compile(r"(^|\.)(mixer|adapters|blocks\.\d+\.attn)\.")  # attn: a ViT student's re-initialised attention
_NO_DECAY_NAMES = ("cls_token", "reg_token", "pos_embed", "latent", "merge_weight")


def param_groups(module: nn.Module, lr: float, weight_decay: float, new_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Trainable parameters of ``module`` split by (new vs copied) x (decay vs no decay).

    "New" parameters -- the mixers (a ViT student's ``blocks.i.attn``) and the tap adapters -- get ``lr * new_lr_mult``. Biases,
    norm / LayerScale vectors and prefix tokens get no weight decay. Each group carries its base
    ``lr`` in ``base_lr`` for the schedule.
    """
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    for n, p in module.named_parameters():
        if not p.requires_grad:
            continue
        new = bool(_NEW.search(n))
        decay = p.ndim > 1 and not any(t in n for t in _NO_DECAY_NAMES)
        buckets.setdefault((new, decay), []).append(p)
        names.setdefault((new, decay), []).append(n)
    groups = []
    for (new, decay), params in sorted(buckets.items()):
        base = lr * (new_lr_mult if new else 1.0)
        groups.append({"params": params, "lr": base, "base_lr": base,
                       "weight_decay": weight_decay if decay else 0.0,
                       "group_name": f"{'new' if new else 'copied'}_{'decay' if decay else 'no_decay'}"})
    if not groups:
        raise ValueError("nothing to train: no parameter requires grad")
    return groups


def build_optimizer(groups: list[dict[str, Any]], name: str = "adamw", betas: tuple[float, float] = (0.9, 0.999),
                    fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (torch) or LAMB (timm) over ``groups``."""
    name = name.lower()
    if name == "adamw":
        kw: dict[str, Any] = {"betas": tuple(betas)}
        if fused:
            kw["fused"] = True
        return torch.optim.AdamW(groups, **kw)
    if name == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, betas=tuple(betas))
    raise ValueError(f"unknown optimizer '{name}'; known: adamw, lamb")


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up over ``warmup`` steps from
    1/warmup, then cosine decay from 1 to ``min_ratio`` at the last step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup - 1)
    t = min(1.0, max(0.0, (step - warmup) / span))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(opt: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to ``base_lr * factor``; returns the first group's lr."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor
    return opt.param_groups[0]["lr"]
