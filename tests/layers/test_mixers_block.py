"""Token mixers (prefix-token paths, attention mixer), the block and the patch embedding."""

import pytest
import torch
from timm.layers import Attention

from cgspn.layers import AttentionMixer, CGSPNBlock, GridPatchEmbed, LatentPropagationMixer
from cgspn.ops import available_backends


C, CC = 32, 16


def _grad_wrt_input(module, x, grid, out_index, in_index):
    x = x.clone().requires_grad_(True)
    module(x, grid)[out_index].sum().backward()
    return x.grad[in_index].abs().sum().item()


def test_mixer_without_prefix_matches_grid_layer():
    torch.manual_seed(0)
    m = LatentPropagationMixer(C, latent_dim=CC)
    x = torch.randn(2, 3 * 4, C)
    y = m(x, (3, 4))
    ref = super(LatentPropagationMixer, m).forward(x.view(2, 3, 4, C)).view(2, 12, C)
    assert torch.allclose(y, ref, atol=1e-6)
    assert m.prefix_weight is None


def test_prefix_tokens_read_and_feed_the_grid():
    torch.manual_seed(0)
    P, grid = 2, (2, 3)
    m = LatentPropagationMixer(C, num_prefix_tokens=P, latent_dim=CC)
    x = torch.randn(1, P + 6, C)
    y = m(x, grid)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(y[:, 0], y[:, 1])  # class token and register read different things
    assert _grad_wrt_input(m, x, grid, (0, 0), (0, slice(P, None))) > 0  # grid -> prefix
    assert _grad_wrt_input(m, x, grid, (0, slice(P, None)), (0, 1)) > 0  # prefix -> grid
    with pytest.raises(ValueError, match="2 prefix tokens"):
        m(x[:, 1:], grid)
    with pytest.raises(ValueError, match="at least H\\*W"):
        m(x, (3, 3))
    with pytest.raises(ValueError, match=r"\(B, P \+ H\*W, C=32\)"):
        m(x[..., :16], grid)


def test_attention_mixer_is_timm_attention():
    torch.manual_seed(0)
    a = AttentionMixer(C, num_heads=4, qkv_bias=True)
    ref = Attention(C, num_heads=4, qkv_bias=True)
    ref.load_state_dict(a.state_dict())  # same parameter names as timm
    x = torch.randn(2, 7, C)
    assert torch.allclose(a(x, (2, 3)), ref(x), atol=1e-6)
    assert {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"} <= set(a.state_dict())


@pytest.mark.parametrize("mixer_type", ["propagation", "attention"])
def test_block_math_and_names(mixer_type):
    torch.manual_seed(0)
    b = CGSPNBlock(C, num_heads=4, mixer_type=mixer_type, num_prefix_tokens=1, latent_dim=CC, init_values=0.1)
    names = [n for n, _ in b.named_children()]
    assert names[:3] == ["norm1", "mixer", "ls1"] and {"norm2", "mlp", "ls2"} <= set(names)
    assert b.ls1.gamma.shape == (C,)
    x, grid = torch.randn(2, 1 + 6, C), (2, 3)
    x1 = x + b.ls1(b.mixer(b.norm1(x), grid))
    expected = x1 + b.ls2(b.mlp(b.norm2(x1)))
    assert torch.allclose(b(x, grid), expected, atol=1e-6)
    with pytest.raises(ValueError, match="mixer_type"):
        CGSPNBlock(C, num_heads=4, mixer_type="conv")


def test_block_without_layer_scale_uses_identity():
    b = CGSPNBlock(C, num_heads=4, latent_dim=CC)
    assert isinstance(b.ls1, torch.nn.Identity) and isinstance(b.ls2, torch.nn.Identity)


def test_grid_patch_embed_any_multiple_and_errors():
    pe = GridPatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=C)
    assert pe(torch.randn(2, 3, 16, 40)).shape == (2, 2, 5, C)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) with H a multiple of 8 and W a multiple of 8"):
        pe(torch.randn(2, 3, 17, 40))
    with pytest.raises(ValueError, match="got 1 channels"):
        pe(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="3-d tensor"):
        pe(torch.randn(3, 16, 16))


def test_grid_patch_embed_returns_contiguous_tokens_equal_to_the_nchw_convolution():
    """The channels-last convolution gives the blocks a contiguous (B, H, W, C) stream (a strided one
    makes every residual add and LayerNorm slow) with the same values as timm's NCHW path."""
    torch.manual_seed(0)
    pe = GridPatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=C)
    x = torch.randn(2, 3, 16, 40)
    y = pe(x)
    assert y.is_contiguous() and x.is_contiguous()  # the caller's images are left as they were
    torch.testing.assert_close(y, pe.proj(x).permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("triton" not in available_backends("cpu"), reason="needs TRITON_INTERPRET=1 (tests/conftest.py)")
@pytest.mark.parametrize("prefix", [0, 1])
def test_fused_op_wiring_matches_reference_forward_and_backward(prefix):
    """The mixer hands the fused ops (scan, read-out) strided views of one GEMM's output; results and
    every gradient must equal the reference path (Triton interpreter on CPU). Without prefix tokens the
    4-direction sum runs inside the read-out; with them the merged latent goes in (D = 1)."""
    torch.manual_seed(0)
    m = LatentPropagationMixer(C, num_prefix_tokens=prefix, latent_dim=CC, chunk=2, backend="triton")
    assert m.fused_readout
    x = torch.randn(2, prefix + 6, C, requires_grad=True)
    runs = []
    for backend in ("triton", "reference"):
        m.backend = backend
        m.zero_grad()
        x.grad = None
        y = m(x, (2, 3))
        y.square().sum().backward()
        runs.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in m.parameters()]))
    (y_t, dx_t, dp_t), (y_r, dx_r, dp_r) = runs
    torch.testing.assert_close(y_t, y_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx_t, dx_r, rtol=1e-5, atol=1e-6)
    for a, b in zip(dp_t, dp_r):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
