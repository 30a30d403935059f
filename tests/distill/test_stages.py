"""Stage 1 and stage 2 decrease their losses on a tiny teacher; student init is faithful."""

import pytest
import torch

from cgspn.distill.encoders import forward_taps
from cgspn.distill.objectives import Stage1Objective, Stage2Objective
from cgspn.distill.student import build_student, load_student, mixer_parameters, save_student

from .conftest import fit


@pytest.fixture
def pair(tiny_teacher):
    torch.manual_seed(0)
    student, spec, info = build_student(tiny_teacher.model, tiny_teacher.name)
    return tiny_teacher, student, spec, info


def test_student_is_initialised_from_teacher(pair):
    teacher, student, spec, info = pair
    assert info["mixers_from_attention"] == 2 and info["dropped"] == ["pos_embed"]
    t, s = teacher.model, student
    assert torch.equal(s.patch_embed.proj.weight, t.patch_embed.proj.weight)
    assert torch.equal(s.cls_token, t.cls_token)
    for bs, bt in zip(s.blocks, t.blocks):
        assert torch.equal(bs.mlp.fc1.weight, bt.mlp.fc1.weight)
        assert torch.equal(bs.ls1.gamma, bt.ls1.gamma) and torch.equal(bs.norm2.weight, bt.norm2.weight)
        assert torch.equal(bs.mixer.proj.weight, bt.attn.proj.weight)  # documented mixer init
    assert torch.equal(s.norm.weight, t.norm.weight)
    assert getattr(s, "pos_embed", None) is None
    assert spec.kwargs["embed_dim"] == 64 and spec.kwargs["depth"] == 2 and spec.kwargs["patch_size"] == 8


def test_student_export_roundtrip(pair, tmp_path):
    _, student, spec, _ = pair
    save_student(tmp_path / "s.safetensors", student, spec, {"teacher": "tiny"})
    again, info = load_student(tmp_path / "s.safetensors")
    x = torch.randn(2, 3, 32, 24)
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), student(x))
    assert info["teacher"] == "tiny" and (tmp_path / "s.json").is_file()


def test_stage1_trains_only_mixers_and_decreases_loss(pair):
    teacher, student, _, _ = pair
    obj = Stage1Objective(student)
    trainable = {id(p) for p in obj.trainable_parameters()}
    assert trainable == {id(p) for p in mixer_parameters(student)}
    frozen_before = student.blocks[0].mlp.fc1.weight.clone()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    taps = teacher(x, ("inputs", "pp"))
    losses = fit(obj, 12, lambda: obj(taps), 3e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    assert torch.equal(student.blocks[0].mlp.fc1.weight, frozen_before)


def test_stage2_decreases_loss_and_trains_everything(pair):
    teacher, student, _, _ = pair
    obj = Stage2Objective(student, {"itc": 0.0})
    assert set(obj.want) == {"pp", "pb"}
    n_trainable = sum(p.numel() for p in obj.trainable_parameters())
    assert n_trainable == sum(p.numel() for p in obj.parameters())
    torch.manual_seed(2)
    x = torch.randn(4, 3, 32, 32)
    taps = teacher(x, obj.want)
    losses = fit(obj, 12, lambda: obj(x, taps), 2e-3)
    assert losses[-1] < 0.7 * losses[0], losses


def test_adapters_start_as_identity(pair):
    teacher, student, _, _ = pair
    obj = Stage2Objective(student)
    v = torch.randn(2, 5, 64)
    torch.testing.assert_close(obj.adapters.pp[0](v), v)
    with pytest.raises(ValueError, match="unknown stage2.loss keys"):
        Stage2Objective(student, {"ppp": 1})


def test_hybrid_student_copies_attention(tiny_teacher):
    student, spec, info = build_student(tiny_teacher.model, tiny_teacher.name, overrides={"attn_layers": [1]})
    assert info["attention_copied"] > 0 and info["mixers_from_attention"] == 1
    x = torch.randn(1, 3, 32, 32)
    t = tiny_teacher(x, ("inputs", "pp"))
    with torch.no_grad():
        y = student.blocks[1].mixer(student.blocks[1].norm1(t.block_inputs[1]), t.grid)
    torch.testing.assert_close(y, t.mixer_outputs[1], rtol=1e-4, atol=1e-5)


def test_student_taps_match_forward(pair):
    _, student, _, _ = pair
    student.eval()
    x = torch.randn(2, 3, 40, 32)
    with torch.no_grad():
        taps = forward_taps(student, x)
        torch.testing.assert_close(taps.final, student.forward_features(x))
    assert taps.grid == (5, 4)


def test_siglip_style_teacher_map_pool_no_class_token():
    from cgspn.distill.teachers import timm_teacher

    t = timm_teacher("vit_tiny_patch16_224", model_kwargs=dict(depth=2, embed_dim=64, num_heads=2, patch_size=8,
                                                               img_size=32, global_pool="map", class_token=False,
                                                               act_layer="gelu_tanh"))
    student, spec, _ = build_student(t.model, t.name)
    assert spec.kwargs["global_pool"] == "map" and not spec.kwargs["class_token"]
    assert spec.kwargs["act_layer"] == "gelu_tanh"
    assert student.num_prefix_tokens == 0
    for (n, a), b in zip(t.model.attn_pool.state_dict().items(), student.attn_pool.state_dict().values()):
        assert torch.equal(a, b), n
    obj = Stage2Objective(student, {"summary": 0.0, "feature": 0.0})  # pooling head frozen, nothing unused
    x = torch.randn(2, 3, 32, 32)
    loss, _ = obj(x, t(x, obj.want))
    loss.backward()
    assert all(p.grad is not None for p in obj.trainable_parameters())
    assert not any(p.requires_grad for p in student.attn_pool.parameters())


def test_image_text_losses_with_open_clip_teacher(tiny_open_clip_configs, tiny_cfg):
    """Stage 2 with the SigLIP loss and logit distillation against the teacher's frozen text tower
    (captions of the built-in photos)."""
    from cgspn.distill.run import distill

    cfg = tiny_cfg("itc", 2, 3, ("teacher.kind=open_clip", "teacher.name=cgspn-test-sig", "teacher.model_kwargs={}",
                                 "stage2.loss.itc=1.0", "stage2.loss.itc_distill=0.5"))
    rep = distill(cfg)
    final = rep["stages"][1]["final_metrics"]
    assert final["itc"] > 0 and final["itc_distill"] > 0
    assert rep["student"]["kwargs"]["num_classes"] == 32  # the projection head travels with the student


def test_grad_checkpointing_gives_the_same_gradients(tiny_teacher):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        student, _, _ = build_student(tiny_teacher.model, tiny_teacher.name)
        obj = Stage2Objective(student, grad_checkpointing=ckpt)
        loss, _ = obj(x, tiny_teacher(x, obj.want))
        loss.backward()
        grads.append([p.grad.clone() for p in obj.trainable_parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_lamb_grad_checkpointing_run(tiny_cfg):
    from cgspn.distill.run import distill

    rep = distill(tiny_cfg("bf16", 2, 2, ("engine.precision=bf16", "engine.optimizer=lamb",
                                          "engine.grad_checkpointing=true", "eval.enabled=false")))
    assert all(s["loss_last"] == s["loss_last"] for s in rep["stages"])  # finite, not NaN
    assert rep["precision"] == "bf16" and rep["fidelity"] == {}
