"""LatentPropagation: sizes, wiring of the scan directions and windows, init, teacher init."""

import pytest
import torch
from timm.layers import Attention

from cgspn.layers import LatentPropagation, LatentPropagationMixer, default_gate_groups, default_latent_dim, mixer_weight_params
from cgspn.ops import gspn2d, normalize_gates


@pytest.mark.parametrize("dim,latent", [(1152, 64), (1024, 64), (768, 48), (384, 32), (192, 16), (40, 16)])
def test_default_latent_dim(dim, latent):
    assert default_latent_dim(dim) == latent


def test_sizes_and_budget():
    m = LatentPropagation(72, latent_dim=16)
    assert m.gate_groups == default_gate_groups(16) == 4
    assert m.in_proj.out_features == 16 * 9 + 12 * 4
    n_weights = m.in_proj.weight.numel() + m.up.weight.numel() + m.proj.weight.numel()
    assert n_weights == pytest.approx(mixer_weight_params(72, 16, 4) * 72 * 72)
    # the documented budgets at SO400M width: 1.72 C^2 by default, 2.22 C^2 with per-channel gates
    assert mixer_weight_params(1152) == pytest.approx(1.722, abs=1e-3)
    assert mixer_weight_params(1152, gate_groups=64) == pytest.approx(2.222, abs=1e-3)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="gate_groups"):
        LatentPropagation(32, latent_dim=16, gate_groups=3)
    with pytest.raises(ValueError, match="chunk"):
        LatentPropagation(32, chunk=0)
    m = LatentPropagation(32, latent_dim=16)
    with pytest.raises(ValueError, match=r"\(B, H, W, C=32\)"):
        m(torch.randn(2, 6, 32))
    with pytest.raises(ValueError, match=r"\(B, H, W, C=32\)"):
        m(torch.randn(2, 2, 3, 16))


def test_forward_non_square_and_backward():
    torch.manual_seed(0)
    m = LatentPropagation(32, latent_dim=16, chunk=2)
    x = torch.randn(2, 3, 5, 32, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_propagates_straight():
    m = LatentPropagation(32, latent_dim=16, gate_groups=4)
    v, lam, u, z = m.project_in(torch.zeros(1, 3, 3, 32))  # zero input: every value is its bias
    assert torch.all(v == 0) and torch.allclose(lam, torch.full_like(lam, 0.5)) and torch.all(u == 1)
    g1, g2, g3 = normalize_gates(z[..., 0, :], z[..., 1, :], z[..., 2, :], line_dim=1)
    interior = g2[:, 1]  # a line position with both neighbours: g2 = s(2) / (s(2) + 2 s(-2))
    assert torch.allclose(interior, torch.full_like(interior, 0.786), atol=1e-3) and torch.allclose(g1[:, 1], g3[:, 1])
    assert torch.allclose(m.merge_weight, torch.full_like(m.merge_weight, 0.25))


def _only_direction(m: LatentPropagation, d: int) -> None:
    with torch.no_grad():
        m.merge_weight.zero_()
        m.merge_weight[d] = 1.0


def _output_depends_on(m, x, out_index, in_index):
    """Whether m(x)[out_index] changes when x[in_index] changes."""
    x = x.clone().requires_grad_(True)
    m(x)[out_index].sum().backward()
    return bool(x.grad[in_index].abs().sum() > 0)


def test_left_to_right_direction_is_causal_along_width():
    torch.manual_seed(0)
    m = LatentPropagation(16, latent_dim=16, gate_groups=16)
    _only_direction(m, 0)  # direction 0 scans left -> right
    x = torch.randn(1, 3, 4, 16)
    assert _output_depends_on(m, x, (0, slice(None), 2), (0, slice(None), 0))
    assert not _output_depends_on(m, x, (0, slice(None), 1), (0, slice(None), 2))
    _only_direction(m, 3)  # direction 3 scans bottom -> top
    assert _output_depends_on(m, x, (0, 0), (0, 2))
    assert not _output_depends_on(m, x, (0, 2), (0, 1))


def test_chunk_windows_exchange_no_state():
    torch.manual_seed(0)
    m = LatentPropagation(16, latent_dim=16, chunk=2)
    _only_direction(m, 0)
    x = torch.randn(1, 2, 5, 16)
    assert _output_depends_on(m, x, (0, slice(None), 1), (0, slice(None), 0))  # same window [0, 2)
    assert not _output_depends_on(m, x, (0, slice(None), 2), (0, slice(None), 1))  # next window starts fresh
    m.chunk = None
    assert _output_depends_on(m, x, (0, slice(None), 2), (0, slice(None), 1))


def test_init_from_attention():
    torch.manual_seed(0)
    C, Cc = 48, 16
    attn = Attention(C, num_heads=4, qkv_bias=True)
    m = LatentPropagation(C, latent_dim=Cc)
    gates_before = m.in_proj.weight[Cc:].clone()
    m.init_from_attention(attn)
    assert torch.equal(m.proj.weight, attn.proj.weight) and torch.equal(m.proj.bias, attn.proj.bias)
    w_v = attn.qkv.weight[2 * C:]
    assert torch.equal(m.up.bias, attn.qkv.bias[2 * C:])
    # up o (value rows of in_proj) is the best rank-Cc approximation of W_v (Eckart-Young)
    approx = m.up.weight @ m.in_proj.weight[:Cc]
    s = torch.linalg.svdvals(w_v.detach())
    err = torch.linalg.matrix_norm(approx - w_v).item()
    assert err == pytest.approx(s[Cc:].square().sum().sqrt().item(), rel=1e-4)
    assert torch.equal(m.in_proj.weight[Cc:], gates_before)  # gates, lam and u keep their init
    with pytest.raises(ValueError, match="qkv"):
        m.init_from_attention(torch.nn.Linear(C, C))
    with pytest.raises(ValueError, match=r"\(3C, C\)"):
        m.init_from_attention(Attention(32, num_heads=4))


def _unfused(m, x):
    """The mixer written out op by op: sigmoid, scan, weighted merge, norm, up, GELU, proj."""
    v, lam, u, z = m.project_in(x)
    y = gspn2d(v, lam, z, u=u, chunk=m.chunk, backend="reference")
    merged = (y * m.merge_weight).sum(dim=-2)
    return m.proj(m.act(m.up(m.latent_norm(merged))))


def test_fused_formulation_equals_the_op_by_op_mixer():
    """Merge weights folded into in_proj's u rows, lam passed as logits, the merge summed inside
    the read-out: the same function as the op-by-op composition (float64, random merge weights)."""
    torch.manual_seed(0)
    m = LatentPropagation(24, latent_dim=16, gate_groups=4, chunk=3).double()
    with torch.no_grad():
        m.merge_weight.uniform_(-1.0, 2.0)
        m.latent_norm.weight.uniform_(0.5, 1.5)
        m.latent_norm.bias.normal_()
    x = torch.randn(2, 5, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(m(x), _unfused(m, x))
    mixer = LatentPropagationMixer(24, latent_dim=16, gate_groups=4).double()
    mixer.load_state_dict(m.state_dict())
    mixer.chunk = m.chunk
    tokens = x.reshape(2, 35, 24)
    torch.testing.assert_close(mixer(tokens, (5, 7)), _unfused(m, x).reshape(2, 35, 24))
