"""Feature fidelity: how close the student's features are to the teacher's, image by image.

For each resolution ``R`` every image is centre-cropped to a square and resized to ``R x R`` (a
multiple of the patch), then encoded by both models in one pass. Per image we take the mean over
patch tokens of the token-wise cosine, and the cosine of the pooled embeddings; the report gives
their means over images (and the 10th percentile of token cosines, which shows the bad tail).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .backbone import Encoder
from .images import center_crop_square, load_image, resize_to, round_to_multiple, to_tensor
from .metrics import token_cosine

__all__ = ["fidelity_at", "feature_fidelity"]


def _timed(enc: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    if enc.device.type == "cuda":
        torch.cuda.synchronize(enc.device)
    t0 = time.perf_counter()
    p, g = enc(x)
    if enc.device.type == "cuda":
        torch.cuda.synchronize(enc.device)
    return p, g, (time.perf_counter() - t0) * 1e3


@torch.no_grad()
def fidelity_at(student: Encoder, teacher: Encoder, images: Sequence[Path], resolution: int, batch_size: int = 8,
                keep_maps: int = 0) -> tuple[dict, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Fidelity at one resolution. Returns ``(row, maps)``: ``row`` = {resolution, images,
    patch_cos, patch_cos_p10, pooled_cos, student_ms, teacher_ms} (ms per image), ``maps`` = the
    (teacher, student) patch feature maps ``(C, h, w)`` of the first ``keep_maps`` images."""
    if student.patch_size != teacher.patch_size:
        raise ValueError(f"student patch {student.patch_size} != teacher patch {teacher.patch_size}: token grids differ")
    r = round_to_multiple(resolution, student.patch_size)
    per_img_patch, per_img_pool, all_tok = [], [], []
    ts, tt = 0.0, 0.0
    maps: list[tuple[torch.Tensor, torch.Tensor]] = []
    for s in tqdm(range(0, len(images), batch_size), desc=f"fidelity {r}px", unit="batch", leave=False, mininterval=2.0):
        pil = [resize_to(center_crop_square(load_image(p)), (r, r)) for p in images[s : s + batch_size]]
        xs = torch.stack([to_tensor(im, student.mean, student.std) for im in pil])
        xt = xs if (student.mean, student.std) == (teacher.mean, teacher.std) else torch.stack([to_tensor(im, teacher.mean, teacher.std) for im in pil])
        ps, gs, ms_s = _timed(student, xs)
        pt, gt, ms_t = _timed(teacher, xt)
        ts += ms_s
        tt += ms_t
        if ps.shape != pt.shape:
            raise ValueError(f"student features {tuple(ps.shape)} and teacher features {tuple(pt.shape)} differ in shape")
        cos = token_cosine(ps.flatten(2).transpose(1, 2), pt.flatten(2).transpose(1, 2))  # (B, N)
        per_img_patch.append(cos.mean(1))
        all_tok.append(cos.flatten())
        if gs.shape == gt.shape:
            per_img_pool.append(token_cosine(gs, gt))
        for b in range(ps.shape[0]):
            if len(maps) < keep_maps:
                maps.append((pt[b].cpu(), ps[b].cpu()))
    tok = torch.cat(all_tok)
    n = len(images)
    row = {
        "resolution": r,
        "images": n,
        "patch_cos": float(torch.cat(per_img_patch).mean()),
        "patch_cos_p10": float(torch.quantile(tok[torch.randperm(tok.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]], 0.1)),
        "pooled_cos": float(torch.cat(per_img_pool).mean()) if per_img_pool else float("nan"),
        "student_ms": ts / n,
        "teacher_ms": tt / n,
    }
    return row, maps


def feature_fidelity(student: Encoder, teacher: Encoder, images: Sequence[Path], resolutions: Sequence[int], batch_size: int = 8,
                     keep_maps: int = 0) -> tuple[list[dict], dict[int, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """:func:`fidelity_at` for every resolution: ``(rows, {resolution: maps})``."""
    if not images:
        raise ValueError("feature fidelity needs at least one image")
    rows, maps = [], {}
    for res in resolutions:
        row, m = fidelity_at(student, teacher, images, res, batch_size, keep_maps)
        rows.append(row)
        maps[row["resolution"]] = m
    return rows, maps
