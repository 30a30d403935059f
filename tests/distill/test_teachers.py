"""Teacher adapters: taps are consistent with the models' own forward passes."""

import pytest
import torch

from cgspn.distill.encoders import forward_taps
from cgspn.distill.teachers import build_teacher, open_clip_visual_to_timm, timm_teacher

from .conftest import TINY_TEACHER


def test_timm_teacher_taps_match_forward(tiny_teacher):
    t = tiny_teacher
    assert not any(p.requires_grad for p in t.parameters())
    t.train()
    assert not t.model.training  # teachers stay in eval mode
    x = torch.randn(2, 3, 48, 40)  # any multiple of the patch, non-square
    taps = t(x)
    assert taps.grid == (6, 5) and taps.num_prefix_tokens == 1
    assert len(taps.block_inputs) == len(taps.mixer_outputs) == len(taps.block_outputs) == t.depth == 2
    # PB of block i is the input of block i+1; PP + ls1 + MLP reproduce the block output
    assert torch.equal(taps.block_outputs[0], taps.block_inputs[1])
    blk = t.model.blocks[1]
    mid = taps.block_inputs[1] + blk.ls1(taps.mixer_outputs[1])
    torch.testing.assert_close(mid + blk.ls2(blk.mlp(blk.norm2(mid))), taps.block_outputs[1])
    with torch.no_grad():
        torch.testing.assert_close(taps.final, t.model.forward_features(x))
        torch.testing.assert_close(taps.summary, t.model.forward_head(t.model.forward_features(x)))
    assert not taps.final.requires_grad


def test_timm_teacher_loads_local_checkpoint(tmp_path):
    from safetensors.torch import save_file

    a = timm_teacher(TINY_TEACHER["name"], model_kwargs=TINY_TEACHER["model_kwargs"])
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in a.model.state_dict().items()}, str(path))
    torch.manual_seed(123)
    b = timm_teacher(TINY_TEACHER["name"], checkpoint=path, model_kwargs=TINY_TEACHER["model_kwargs"])
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(a(x).final, b(x).final)
    assert b.source == str(path)


def test_teacher_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown timm model"):
        build_teacher("timm", "vit_does_not_exist")
    with pytest.raises(FileNotFoundError, match="not found"):
        build_teacher("timm", TINY_TEACHER["name"], checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="unknown teacher kind"):
        build_teacher("nope")
    with pytest.raises(ValueError, match="needs teacher.name"):
        build_teacher("timm")


@pytest.mark.parametrize("name,size", [("cgspn-test-clip", 56), ("cgspn-test-sig", 160)])
def test_open_clip_tower_converts_to_timm(tiny_open_clip_configs, name, size):
    open_clip = tiny_open_clip_configs
    model = open_clip.create_model(name).eval()
    with torch.no_grad():
        for p in model.visual.parameters():  # non-trivial weights
            p.add_(torch.randn_like(p) * 0.05)
    vit = open_clip_visual_to_timm(model.visual)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(forward_taps(vit, x).summary, model.encode_image(x), rtol=1e-4, atol=1e-5)


def test_open_clip_teacher_has_text_tower(tiny_open_clip_configs):
    t = build_teacher("open_clip", "cgspn-test-sig")
    assert t.text is not None and t.text.logit_bias == pytest.approx(-10.0)
    emb = t.text.encode(["a photo of a cat", "a photo of a dog"])
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert t(torch.randn(1, 3, 32, 32)).summary.shape == (1, 32)
