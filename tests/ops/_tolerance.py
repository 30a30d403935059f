"""Comparison helpers: relative RMS error with an absolute floor, per-dtype ratios."""

from __future__ import annotations

import torch

# relative RMS error allowed for a fast kernel vs the float64 reference, by I/O dtype
RATIO = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}


def rel_rms(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, ratio: float, atol: float = 1e-6) -> None:
    """``||got - want|| / ||want|| < ratio``, or everything within ``atol`` (near-zero references)."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got.detach().double().cpu() - want.detach().double().cpu()).abs().max().item()
    if err <= atol:
        return
    r = rel_rms(got, want)
    assert r < ratio, f"{name}: relative RMS error {r:.3e} >= {ratio:.1e} (max abs err {err:.3e})"
