"""The pure-PyTorch reference against literal loops, gradcheck, the 4-direction equivalence."""

import pytest
import torch

from cgspn.ops import gspn2d, line_scan, normalize_gates
from cgspn.ops.gspn.naive import gspn2d_naive, line_scan_naive


def _gates(*shape, dtype=torch.float32):
    return normalize_gates(*(2 * torch.randn(3, *shape, dtype=dtype)), line_dim=-2)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 6), (1, 1, 6, 1), (1, 2, 4, 4)])
@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 100])
def test_line_scan_matches_literal_loop(shape, chunk):
    torch.manual_seed(0)
    x, lam = torch.randn(shape), torch.randn(shape)
    g = _gates(*shape)
    got = line_scan(x, lam, *g, chunk=chunk, backend="reference")
    want = line_scan_naive(x, lam, *g, chunk=chunk)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [(2, 3, 5, 4, 2), (1, 4, 3, 2, 1), (1, 1, 4, 3, 3), (1, 3, 1, 2, 2)])
@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
@pytest.mark.parametrize("with_u", [False, True])
def test_gspn2d_matches_literal_loop(dims, chunk, with_u):
    B, H, W, C, G = dims
    torch.manual_seed(1)
    x, lam = torch.randn(B, H, W, C), torch.randn(B, H, W, 4, C)
    z, u = 2 * torch.randn(B, H, W, 4, 3, G), (torch.randn(B, H, W, 4, C) if with_u else None)
    got = gspn2d(x, lam, z, u=u, chunk=chunk, backend="reference")
    want = gspn2d_naive(x, lam, z, u, chunk)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _view(t, d):
    """(B, H, W, *F) -> line_scan frame (B, *F, L, S) of direction d, by flips/transposes."""
    nf = t.dim() - 3
    perm = (0, *range(3, 3 + nf), 1, 2) if d < 2 else (0, *range(3, 3 + nf), 2, 1)
    v = t.permute(*perm)
    return v.flip(-1) if d % 2 else v


@pytest.mark.parametrize("HW", [(5, 7), (6, 3), (4, 4)])
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_four_directions_equal_line_scan_on_viewed_grid(HW, chunk):
    """gspn2d[..., d, :] == line_scan on the grid viewed in direction d, mapped back.

    With a chunk that does not divide the scan length, reversed directions' windows (absolute
    positions of the original grid) are offset in the viewed frame, so only dividing chunks apply.
    """
    H, W = HW
    B, C, G = 2, 4, 2
    torch.manual_seed(2)
    x, lam, u = torch.randn(B, H, W, C), torch.randn(B, H, W, 4, C), torch.randn(B, H, W, 4, C)
    z = 2 * torch.randn(B, H, W, 4, 3, G)
    y = gspn2d(x, lam, z, u=u, chunk=chunk, backend="reference")
    for d in range(4):
        S = W if d < 2 else H
        if chunk is not None and S % chunk != 0:
            continue
        zf = _view(z[:, :, :, d].repeat_interleave(C // G, dim=-1), d)  # (B, 3, C, L, S)
        g = normalize_gates(zf[:, 0], zf[:, 1], zf[:, 2], line_dim=-2)
        h = line_scan(_view(x, d), _view(lam[:, :, :, d], d), *g, chunk=chunk, backend="reference")
        if d % 2:
            h = h.flip(-1)
        h = h.permute(0, 2, 3, 1) if d < 2 else h.permute(0, 3, 2, 1)
        torch.testing.assert_close(y[:, :, :, d], h * u[:, :, :, d], rtol=1e-5, atol=1e-5)


def test_normalize_gates_rows_sum_to_one_and_drop_missing_neighbours():
    z = 3 * torch.randn(3, 2, 3, 5, 4)
    g1, g2, g3 = normalize_gates(z[0], z[1], z[2], line_dim=-2)
    torch.testing.assert_close(g1 + g2 + g3, torch.ones_like(g1))
    assert (g1[..., 0, :] == 0).all() and (g3[..., -1, :] == 0).all()
    s = torch.sigmoid(z)
    torch.testing.assert_close(g2[..., 2, :], s[1][..., 2, :] / s[:, ..., 2, :].sum(0))
    # line of length 1: only the middle gate survives
    g1, g2, g3 = normalize_gates(*torch.randn(3, 2, 1, 4), line_dim=-2)
    assert (g2 == 1).all() and (g1 == 0).all() and (g3 == 0).all()
    # another line axis
    a1, a2, a3 = normalize_gates(z[0], z[1], z[2], line_dim=-1)
    assert (a1[..., 0] == 0).all() and (a3[..., -1] == 0).all()


def test_gradcheck_line_scan_reference():
    torch.manual_seed(3)
    shape = (1, 2, 3, 4)
    x, lam = torch.randn(shape, dtype=torch.float64, requires_grad=True), torch.randn(shape, dtype=torch.float64, requires_grad=True)
    gs = [g.detach().requires_grad_() for g in _gates(*shape, dtype=torch.float64)]
    for chunk in (None, 3):
        assert torch.autograd.gradcheck(lambda *a: line_scan(*a, chunk=chunk, backend="reference"), (x, lam, *gs))


def test_gradcheck_gspn2d_reference():
    torch.manual_seed(4)
    B, H, W, C, G = 1, 3, 4, 2, 1
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x, lam, u = torch.randn(B, H, W, C, **f64), torch.randn(B, H, W, 4, C, **f64), torch.randn(B, H, W, 4, C, **f64)
    z = torch.randn(B, H, W, 4, 3, G, **f64)
    for chunk in (None, 3):
        assert torch.autograd.gradcheck(lambda *a: gspn2d(*a[:3], u=a[3], chunk=chunk, backend="reference"), (x, lam, z, u))


def test_reference_state_is_float32_for_half_inputs():
    torch.manual_seed(5)
    shape = (1, 2, 4, 64)
    x, lam = torch.randn(shape), torch.rand(shape)
    g = _gates(*shape)
    want = line_scan(x.double(), lam.double(), *(t.double() for t in g))
    got = line_scan(x.bfloat16(), lam.bfloat16(), *(t.bfloat16() for t in g), backend="reference")
    assert got.dtype == torch.bfloat16
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert rel < 1e-2, rel
