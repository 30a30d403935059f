"""Bad input gives ValueError/TypeError naming the argument; backends are explicit."""

import os

import pytest
import torch

from cgspn.ops import available_backends, backend_for, gspn2d, line_scan


def _ok(B=1, H=3, W=4, C=4, G=2):
    return torch.randn(B, H, W, C), torch.randn(B, H, W, 4, C), torch.randn(B, H, W, 4, 3, G)


def test_gspn2d_bad_inputs_name_the_argument():
    x, lam, z = _ok()
    with pytest.raises(ValueError, match=r"x must be .*\(B, H, W, C\)"):
        gspn2d(x[0], lam, z)
    with pytest.raises(ValueError, match=r"lam must have shape \(B, H, W, 4, C\) = \(1, 3, 4, 4, 4\)"):
        gspn2d(x, lam[:, :, :, :3], z)
    with pytest.raises(ValueError, match=r"u must have shape"):
        gspn2d(x, lam, z, u=lam[..., :2])
    with pytest.raises(ValueError, match=r"gate_logits must have shape \(B, H, W, 4, 3, G\)"):
        gspn2d(x, lam, z[..., :2, :])
    with pytest.raises(ValueError, match=r"G = 3 must divide the channel count C = 4"):
        gspn2d(x, lam, torch.randn(1, 3, 4, 4, 3, 3))
    with pytest.raises(TypeError, match=r"lam must be a floating tensor.*torch.int64"):
        gspn2d(x, lam.long(), z)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        gspn2d(x.numpy(), lam, z)
    with pytest.raises(ValueError, match=r"chunk must be None or an int >= 1, got 0"):
        gspn2d(x, lam, z, chunk=0)
    with pytest.raises(TypeError, match=r"chunk must be None or an int"):
        gspn2d(x, lam, z, chunk=2.0)
    if torch.device("meta") is not None:
        with pytest.raises(ValueError, match=r"same device.*x on cpu.*lam on meta"):
            gspn2d(x, lam.to("meta"), z)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        gspn2d(x, lam, z, backend="cuda")


def test_line_scan_bad_inputs_name_the_argument():
    t = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        line_scan(t[0], t[0], t[0], t[0], t[0])
    with pytest.raises(ValueError, match=r"g2 must have x's shape"):
        line_scan(t, t, t, t[..., :2], t)
    with pytest.raises(TypeError, match=r"g3 must be a floating tensor"):
        line_scan(t, t, t, t, t.int())
    with pytest.raises(ValueError, match=r"chunk"):
        line_scan(t, t, t, t, t, chunk=-1)


def test_backend_reporting():
    x = torch.randn(1, 2, 2, 4)
    assert backend_for(x) == "reference"
    names = available_backends("cpu")
    assert names[0] == "reference"
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    assert ("triton" in names) == interp


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, lam, z = _ok()
    with pytest.raises(RuntimeError, match=r"'triton' backend runs on CUDA tensors"):
        gspn2d(x, lam, z, backend="triton")
    assert "triton" not in available_backends("cpu")


def test_empty_batch_is_fine():
    x, lam, z = _ok(B=0)
    assert gspn2d(x, lam, z, backend="reference").shape == (0, 3, 4, 4, 4)


def test_triton_launch_refuses_offsets_past_32_bits():
    """Per-item extents beyond 2**31 elements would overflow the kernels' 32-bit offsets: a clear
    error (built on meta tensors: nothing is allocated or launched)."""
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C, G = 1, 2, 3, 4, 2
    mk = lambda *s: torch.empty(*s, device="meta")
    x, lam, z = mk(B, H, W, C), mk(B, H, W, 4, C), mk(B, H, W, 4, 3, G)
    assert TB.gspn2d_fwd_launch(x, lam, z, None, None, False)[0] is not None
    huge = torch.empty(1, device="meta").as_strided((B, H, W, 4, C), (0, 2**31, 4 * C, C, 1))
    with pytest.raises(ValueError, match="32-bit offsets"):
        TB.gspn2d_fwd_launch(x, huge, z, None, None, False)
