"""Shared fixtures for the evaluation tests: tiny random timm ViTs (CPU, milliseconds)."""

from __future__ import annotations

import pytest
import timm
import torch

from cgspn.eval.backbone import Encoder, create_encoder

TINY_ARGS = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def tiny_vit(seed: int = 0, embed_dim: int = 32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56, depth=1, embed_dim=embed_dim,
                             num_heads=2, num_classes=0, dynamic_img_size=True)


@pytest.fixture
def tiny_encoder() -> Encoder:
    return create_encoder(tiny_vit(0), "tiny", device="cpu", dtype="fp32")


@pytest.fixture
def tiny_encoder_b() -> Encoder:
    return create_encoder(tiny_vit(1), "tiny_b", device="cpu", dtype="fp32")
