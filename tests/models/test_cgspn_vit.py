"""The C-GSPN encoders: timm's model-test habits on tiny random models (CPU, reference scan)."""

import functools

import pytest
import safetensors.torch
import timm
import torch

import cgspn  # noqa: F401  registers the models
from cgspn.layers import AttentionMixer, LatentPropagationMixer
from cgspn.models import ISOMORPHIC_VIT, CGSPNVisionTransformer, checkpoint_filter_fn
from cgspn.ops import available_backends


TINY = dict(embed_dim=32, depth=2, num_heads=2)


def tiny(name="cgspn_base_patch16_224", **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **{**TINY, **kwargs})


def images(b, h_patches, w_patches, patch=16, c=3):
    return torch.randn(b, c, h_patches * patch, w_patches * patch)


# ---------------------------------------------------------------------------------- registry
@functools.lru_cache(maxsize=None)
def meta_model(name):
    """A full-size registered model on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return timm.create_model(name)


@pytest.mark.parametrize("name", sorted(ISOMORPHIC_VIT))
def test_registered_shapes_match_the_isomorphic_vit(name):
    m, v = meta_model(name), meta_model(ISOMORPHIC_VIT[name])
    assert isinstance(m, CGSPNVisionTransformer)
    assert (m.embed_dim, len(m.blocks), m.patch_size) == (v.embed_dim, len(v.blocks), v.patch_embed.patch_size[0])
    assert m.blocks[0].mlp.fc1.out_features == v.blocks[0].mlp.fc1.out_features
    assert (m.cls_token is None) == (v.cls_token is None) and m.num_prefix_tokens == v.num_prefix_tokens
    assert (m.attn_pool is None) == (v.attn_pool is None) and m.global_pool == v.global_pool
    assert type(m.blocks[0].ls1).__name__ == type(v.blocks[0].ls1).__name__
    assert m.num_classes == v.num_classes and m.pretrained_cfg["input_size"] == v.pretrained_cfg["input_size"]
    assert m.pretrained_cfg["mean"] == v.pretrained_cfg["mean"]


def _n_params(name):
    return sum(p.numel() for p in meta_model(name).parameters())


def test_parameter_ratio_vs_isomorphic_vit():
    ratios = {}
    for name, vit in sorted(ISOMORPHIC_VIT.items()):
        n, n_vit = _n_params(name), _n_params(vit)
        ratios[name] = n / n_vit
        print(f"{name}: {n / 1e6:.2f}M vs {vit}: {n_vit / 1e6:.2f}M, ratio {n / n_vit:.3f}")
    assert ratios["cgspn_so400m_patch14_378"] <= 0.87
    assert ratios["cgspn_base_patch16_224"] <= 0.87


# ---------------------------------------------------------------------------------- contract
def test_contract_attributes_embed_and_blocks():
    m = tiny(reg_tokens=2, init_values=1e-5).eval()
    assert m.cls_token.shape == (1, 1, 32) and m.reg_token.shape == (1, 2, 32) and m.num_prefix_tokens == 3
    assert isinstance(m.blocks, torch.nn.ModuleList) and m.attn_pool is None
    assert m.num_features == m.embed_dim == 32 and m.patch_size == 16 and isinstance(m.patch_size, int)
    tokens, grid = m.embed(images(2, 2, 3))
    assert tokens.shape == (2, 3 + 6, 32) and grid == (2, 3)
    blk = m.blocks[0]
    for name in ("norm1", "mixer", "ls1", "norm2", "mlp", "ls2"):
        assert hasattr(blk, name)
    assert "blocks.0.ls1.gamma" in m.state_dict()
    seg = blk.mixer._bias_segments()  # the model-wide timm init keeps the mixers' "propagate straight" biases
    assert torch.all(blk.mixer.in_proj.bias[seg["u"]] == 1) and blk.mixer.in_proj.bias[seg["gates"]].abs().min() == 2
    assert blk.mixer(blk.norm1(tokens), grid).shape == tokens.shape
    # forward_features is exactly embed -> blocks -> norm (no positional embedding anywhere)
    torch.manual_seed(1)
    img = images(2, 2, 3)
    tokens, grid = m.embed(img)
    for b in m.blocks:
        tokens = b(tokens, grid)
    assert torch.allclose(m.forward_features(img), m.norm(tokens), atol=1e-6)
    so = tiny("cgspn_so400m_patch14_378")
    assert so.cls_token is None and so.reg_token is None and so.num_prefix_tokens == 0 and so.attn_pool is not None


@pytest.mark.parametrize(
    "name,patch,kwargs",
    [("cgspn_base_patch16_224", 16, dict(reg_tokens=1)), ("cgspn_so400m_patch14_378", 14, {})],
)
def test_forward_two_resolutions_one_non_square(name, patch, kwargs):
    m = tiny(name, num_classes=7, **kwargs).eval()
    with torch.no_grad():
        for hp, wp in ((2, 2), (3, 2)):
            out = m(images(2, hp, wp, patch))
            assert out.shape == (2, 7) and torch.isfinite(out).all()
            feats = m.forward_features(images(1, hp, wp, patch))
            assert feats.shape == (1, m.num_prefix_tokens + hp * wp, 32)
            assert m.forward_head(feats, pre_logits=True).shape == (1, 32)


@pytest.mark.parametrize(
    "name,patch,kwargs",
    [
        ("cgspn_base_patch16_224", 16, dict(reg_tokens=1, attn_layers=(1,), init_values=1e-2)),
        ("cgspn_so400m_patch14_378", 14, dict(chunks=[1, None])),
    ],
)
def test_backward_reaches_every_parameter(name, patch, kwargs):
    m = tiny(name, num_classes=5, **kwargs).train()
    m(images(2, 2, 3, patch)).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in m.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


def test_grad_checkpointing_gives_same_output():
    m = tiny(reg_tokens=1, attn_layers=(0,), num_classes=5).train()
    x = images(2, 2, 3)
    ref = m(x)
    m.set_grad_checkpointing(True)
    out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_forward_intermediates_shapes():
    m = tiny(depth=3, reg_tokens=1).eval()
    x = images(2, 2, 3)
    with torch.no_grad():
        final, inter = m.forward_intermediates(x, indices=2)
        assert final.shape == (2, 2 + 6, 32) and [t.shape for t in inter] == [(2, 32, 2, 3)] * 2
        nlc = m.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)
        assert [t.shape for t in nlc] == [(2, 6, 32)]
        with_prefix = m.forward_intermediates(x, indices=1, return_prefix_tokens=True, intermediates_only=True)
        assert with_prefix[0][0].shape == (2, 32, 2, 3) and with_prefix[0][1].shape == (2, 2, 32)
        early = m.forward_intermediates(x, indices=[0], stop_early=True, norm=True, intermediates_only=True)
        full = m.forward_intermediates(x, indices=[0], norm=True, intermediates_only=True)
        torch.testing.assert_close(early[0], full[0])
        last = m.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)[0]
        torch.testing.assert_close(m.norm(last), final[:, 2:])
        d = m.forward_intermediates(x, indices=1, output_dict=True, return_prefix_tokens=True)
        assert set(d) == {"image_intermediates", "image_intermediates_prefix", "image_features"}
        with pytest.raises(ValueError, match="output_fmt"):
            m.forward_intermediates(x, output_fmt="NHWC")
    kept = m.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(m.blocks) == 2 and isinstance(m.head, torch.nn.Identity)


def test_features_only():
    m = timm.create_model("cgspn_so400m_patch14_378", features_only=True, out_indices=(0, 2), **{**TINY, "depth": 3})
    feats = m(images(1, 2, 3, 14))
    assert [f.shape for f in feats] == [(1, 32, 2, 3)] * 2
    assert m.feature_info.channels() == [32, 32] and m.feature_info.reduction() == [14, 14]


def test_hybrid_attention_layers():
    m = tiny(depth=3, attn_layers=(0, -1))
    kinds = [type(b.mixer) for b in m.blocks]
    assert kinds == [AttentionMixer, LatentPropagationMixer, AttentionMixer] and m.attn_layers == (0, 2)
    assert "blocks.0.mixer.qkv.weight" in m.state_dict() and "blocks.1.mixer.in_proj.weight" in m.state_dict()
    with torch.no_grad():
        assert torch.isfinite(m(images(1, 3, 2))).all()
    with pytest.raises(ValueError, match="out of range"):
        tiny(depth=2, attn_layers=(2,))


def test_chunks_per_layer():
    m = tiny(depth=3, chunks=[2, None, 1], attn_layers=(1,))
    assert [getattr(b.mixer, "chunk", "attn") for b in m.blocks] == [2, "attn", 1]
    assert [b.mixer.chunk for b in tiny(depth=2, chunks=4).blocks] == [4, 4]
    with pytest.raises(ValueError, match="one per layer"):
        tiny(depth=3, chunks=[2, None])


def test_bad_inputs_name_the_expected_shape():
    m = tiny().eval()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) with H a multiple of 16"):
        m(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match="got 4 channels"):
        m(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="3-d tensor"):
        m(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="global_pool='token' needs"):
        tiny(class_token=False)


def test_classifier_api():
    m = tiny(num_classes=5)
    assert m.get_classifier().out_features == 5
    m.reset_classifier(3, "avg")
    assert m.get_classifier().out_features == 3 and m.global_pool == "avg"
    assert m(images(1, 2, 2)).shape == (1, 3)
    m.reset_classifier(0)
    assert m(images(1, 2, 2)).shape == (1, 32)
    assert m.no_weight_decay() == {"cls_token", "reg_token", "blocks.0.mixer.merge_weight", "blocks.1.mixer.merge_weight"}
    assert set(m.group_matcher()) == {"stem", "blocks"}
    m.set_input_size(img_size=64, patch_size=8)
    assert m.patch_size == 8 and m.patch_embed.proj.weight.shape[-2:] == (8, 8)
    assert m.forward_features(images(1, 2, 3, patch=8)).shape == (1, 1 + 6, 32)
    assert set(m.group_matcher()) == {"stem", "blocks"}
    so = tiny("cgspn_so400m_patch14_378")
    with pytest.raises(ValueError, match="cannot add a MAP"):
        tiny().reset_classifier(0, "map")
    so.reset_classifier(0, "avg")
    assert so.attn_pool is None


def _reference_scan_traces_in_one_graph() -> bool:
    """Whether dynamo captures the CPU reference scan without a graph break."""
    from cgspn.ops import gspn2d

    x = torch.randn(1, 2, 2, 4)
    lam, z = torch.rand(1, 2, 2, 4, 4), torch.randn(1, 2, 2, 4, 3, 1)
    torch._dynamo.reset()
    try:
        torch.compile(lambda *a: gspn2d(*a, chunk=1), fullgraph=True, backend="eager")(x, lam, z)
    except torch._dynamo.exc.Unsupported:
        return False
    finally:
        torch._dynamo.reset()
    return True


@pytest.mark.skipif("triton" not in available_backends("cpu"), reason="needs TRITON_INTERPRET=1 (tests/conftest.py)")
def test_torch_compile_fullgraph_with_the_fused_op():
    """The whole model is one graph when the scan is the registered custom op (Triton interpreter on CPU)."""
    m = tiny(depth=1, chunks=2, num_classes=3, reg_tokens=1, scan_backend="triton").eval()
    x = images(1, 2, 3)
    with torch.no_grad():
        torch._dynamo.reset()
        got = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
        torch._dynamo.reset()
        m.blocks[0].mixer.backend = "reference"
        torch.testing.assert_close(got, m(x), rtol=1e-4, atol=1e-5)


def test_torch_compile_fullgraph_with_the_reference_scan():
    if not _reference_scan_traces_in_one_graph():
        pytest.xfail(
            "the CPU reference scan (ops/gspn/reference.py scan_lines) calls Tensor.tolist(), a dynamo graph "
            "break; the model itself has none once the chunk starts are computed as Python bools"
        )
    m = tiny(depth=2, chunks=[2, None], num_classes=3, reg_tokens=1).eval()
    x = images(1, 2, 3)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------- loading
def test_pretrained_from_local_safetensors(tmp_path):
    src = tiny(reg_tokens=1, num_classes=4, attn_layers=(1,))
    path = tmp_path / "cgspn_tiny.safetensors"
    safetensors.torch.save_file(src.state_dict(), str(path))
    torch.manual_seed(123)
    dst = timm.create_model(
        "cgspn_base_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=4),
        **TINY, reg_tokens=1, num_classes=4, attn_layers=(1,),
    )
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k


def test_student_from_timm_vit_checkpoint(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", **TINY, num_classes=4, reg_tokens=1)
    path = tmp_path / "vit_tiny.safetensors"
    safetensors.torch.save_file(vit.state_dict(), str(path))
    student = timm.create_model(
        "cgspn_base_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=4),
        **TINY, num_classes=4, reg_tokens=1, attn_layers=(1,),
    )
    t, s = vit.state_dict(), student.state_dict()
    assert "pos_embed" in t and "pos_embed" not in s
    for k in ("blocks.0.mlp.fc1.weight", "blocks.1.norm2.bias", "cls_token", "reg_token", "head.weight", "norm.weight"):
        assert torch.equal(s[k], t[k]), k
    for k in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias"):  # hybrid block: attn.* -> mixer.*
        assert torch.equal(s[f"blocks.1.mixer.{k}"], t[f"blocks.1.attn.{k}"]), k
    assert torch.equal(s["blocks.0.mixer.proj.weight"], t["blocks.0.attn.proj.weight"])  # teacher's output projection
    assert torch.equal(s["blocks.0.mixer.up.bias"], t["blocks.0.attn.qkv.bias"][64:])  # value bias
    # the same mapping, without a file
    fresh = tiny(num_classes=4, reg_tokens=1, attn_layers=(1,))
    fresh.load_state_dict(checkpoint_filter_fn(vit.state_dict(), fresh))
    cc = fresh.blocks[0].mixer.latent_dim  # the value rows come from the teacher; gate rows keep each model's init
    torch.testing.assert_close(fresh.blocks[0].mixer.in_proj.weight[:cc], student.blocks[0].mixer.in_proj.weight[:cc])
    torch.testing.assert_close(fresh.blocks[0].mixer.up.weight, student.blocks[0].mixer.up.weight)
