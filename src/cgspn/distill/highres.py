"""High-resolution curriculum (e.g. 378 -> 518 -> 756 -> 1036 for patch 14).

Each curriculum stage trains the student at a higher resolution against a teacher that is the
*previous stage's frozen student* run at the previous resolution, whose taps are bilinearly
upsampled to the new patch grid (prefix tokens pass through). Going through the intermediate
resolutions matters: C-GSPN reports 80.4 through 518 vs 70.2 jumping 378 -> 756 directly.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import TAP_KINDS, Taps
from .teachers.base import Teacher

__all__ = ["upsample_tokens", "UpsampledTeacher", "curriculum"]


def upsample_tokens(tokens: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int) -> torch.Tensor:
    """Bilinearly resize the grid part of (B, P + h*w, C) tokens to (B, P + H*W, C)."""
    if tuple(grid) == tuple(new_grid):
        return tokens
    b, _, c = tokens.shape
    prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
    x = patches.transpose(1, 2).reshape(b, c, grid[0], grid[1])
    x = F.interpolate(x.float(), size=tuple(new_grid), mode="bilinear", align_corners=False).to(tokens.dtype)
    return torch.cat([prefix, x.flatten(2).transpose(1, 2)], dim=1)


class UpsampledTeacher(nn.Module):
    """Run ``inner`` on images resized to ``resolution`` (short side, patch multiple) and upsample
    its taps to the grid of the full-resolution images the student sees."""

    def __init__(self, inner: Teacher, resolution: int) -> None:
        super().__init__()
        self.inner = inner
        self.resolution = int(resolution)
        self.text = inner.text
        self.mean, self.std = inner.mean, inner.std
        self.name = f"{inner.name}@{resolution}"

    @property
    def patch_size(self) -> int:
        return self.inner.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return self.inner.num_prefix_tokens

    def train(self, mode: bool = True) -> "UpsampledTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, want: Iterable[str] = TAP_KINDS) -> Taps:
        p = self.patch_size
        h, w = images.shape[-2:]
        grid = (h // p, w // p)
        scale = self.resolution / min(h, w)
        th = max(p, int(round(h * scale / p)) * p)
        tw = max(p, int(round(w * scale / p)) * p)
        small = images if (th, tw) == (h, w) else F.interpolate(
            images, size=(th, tw), mode="bicubic", align_corners=False, antialias=True)
        t = self.inner(small, want)
        n = t.num_prefix_tokens
        up = lambda xs: [upsample_tokens(x, t.grid, grid, n) for x in xs]  # noqa: E731
        return Taps(
            block_inputs=up(t.block_inputs),
            mixer_outputs=up(t.mixer_outputs),
            block_outputs=up(t.block_outputs),
            final=upsample_tokens(t.final, t.grid, grid, n),
            summary=t.summary,
            grid=grid,
            num_prefix_tokens=n,
        )


def curriculum(base: int, resolutions: list[int], patch: int) -> list[tuple[int, int]]:
    """[(teacher_resolution, student_resolution), ...] for the stages after ``base``.

    Resolutions must be multiples of the patch and increasing.
    """
    out, prev = [], int(base)
    for r in resolutions:
        r = int(r)
        if r % patch:
            raise ValueError(f"highres resolution {r} is not a multiple of the patch size {patch}")
        if r <= prev:
            raise ValueError(f"highres resolutions must increase from {prev}, got {r}")
        out.append((prev, r))
        prev = r
    return out
