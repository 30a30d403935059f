"""Shared fixtures: a tiny random-init timm ViT teacher and a tiny end-to-end config."""

from __future__ import annotations

import json

import pytest

TINY_TEACHER = {
    "kind": "timm",
    "name": "vit_tiny_patch16_224",
    "model_kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 8, "img_size": 32, "init_values": 0.1},
}


def tiny_overrides(out_dir, steps1: int = 4, steps2: int = 4) -> list[str]:
    """``--set`` overrides turning the default config into a seconds-long CPU run."""
    return [
        "teacher.kind=timm",
        f"teacher.name={TINY_TEACHER['name']}",
        "teacher.model_kwargs={depth: 2, embed_dim: 64, num_heads: 2, patch_size: 8, img_size: 32, init_values: 0.1}",
        "data.resolution=32",
        f"stage1.steps={steps1}",
        "stage1.batch_size=4",
        "stage1.warmup_steps=1",
        f"stage2.steps={steps2}",
        "stage2.batch_size=4",
        "stage2.warmup_steps=1",
        "eval.resolution=32",
        "engine.tensorboard=false",
        "engine.progress=false",
        "engine.threads=1",
        f"out_dir={str(out_dir)!r}",
    ]


def fit(objective, steps: int, batch_fn, lr: float) -> list[float]:
    """Train ``objective`` for ``steps`` AdamW steps on ``batch_fn() -> (loss, metrics)``; the losses."""
    from cgspn.distill.optim import build_optimizer, param_groups

    opt = build_optimizer(param_groups(objective, lr, 0.0))
    losses = []
    for _ in range(steps):
        loss, _ = batch_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def tiny_cfg(tmp_path):
    from cgspn.distill.config import load_config

    def make(name: str = "run", steps1: int = 4, steps2: int = 4, extra: tuple[str, ...] = ()):
        return load_config(None, tiny_overrides(tmp_path / name, steps1, steps2) + list(extra))

    return make


@pytest.fixture
def tiny_teacher():
    from cgspn.distill.teachers import timm_teacher

    return timm_teacher(TINY_TEACHER["name"], model_kwargs=TINY_TEACHER["model_kwargs"])


@pytest.fixture
def tiny_open_clip_configs(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    native = {"embed_dim": 32, "quick_gelu": True,
              "vision_cfg": {"image_size": 56, "layers": 2, "width": 64, "patch_size": 14, "head_width": 32,
                             "ls_init_value": 0.1},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    siglip = {"embed_dim": 32, "init_logit_bias": -10,
              "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit",
                             "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": "linear"},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "cgspn-test-clip.json").write_text(json.dumps(native))
    (tmp_path / "cgspn-test-sig.json").write_text(json.dumps(siglip))
    open_clip.add_model_config(tmp_path)
    return open_clip
