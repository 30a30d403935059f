"""Tap adapters: small residual MLPs applied to student taps before the stage-2 losses.

``A(v) = v + W2 GELU(W1 LN(v))`` with ``W1: C -> C*ratio``, ``W2: C*ratio -> C`` zero-initialised,
so every adapter starts as the identity. They give the student room to represent a feature
differently from the teacher up to a cheap map, and are dropped at export.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TapAdapter", "AdapterBank"]


class TapAdapter(nn.Module):
    """Residual bottleneck MLP on the channel axis: (..., C) -> (..., C)."""

    def __init__(self, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class AdapterBank(nn.Module):
    """One :class:`TapAdapter` per block for the PP taps and one per block for the PB taps."""

    def __init__(self, dim: int, depth: int, ratio: float = 0.25, pp: bool = True, pb: bool = True) -> None:
        super().__init__()
        self.pp = nn.ModuleList([TapAdapter(dim, ratio) for _ in range(depth)]) if pp else None
        self.pb = nn.ModuleList([TapAdapter(dim, ratio) for _ in range(depth)]) if pb else None
