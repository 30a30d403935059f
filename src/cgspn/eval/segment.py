"""Semantic segmentation with a frozen backbone and a linear head; mIoU at several resolutions.

Protocol (the linear-probe variant of the ADE20K setting used for C-GSPN, simplified):

* training: each training image is resized so its *shorter* side is ``train_size`` (512) and
  encoded once, plus its horizontal flip; the frozen patch features ``(C', h, w)`` (the last
  ``layers`` blocks concatenated) are cached on the CPU in float16 together with the labels at
  ``label_scale`` times the patch grid (nearest; 4 by default, i.e. 3.5 px cells at patch 14).
  A :class:`LinearHead` (BatchNorm + 1x1 conv) is trained on them with AdamW; logits are
  upsampled bilinearly to the label grid and scored by cross-entropy ignoring 255.
* evaluation: each validation image is resized to shorter side ``R`` for every ``R`` in
  ``resolutions`` and encoded in a *single pass* (no sliding window, no tiling); logits are
  upsampled to the original annotation size; a confusion matrix gives mIoU per resolution.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .backbone import Encoder
from .images import resize_to, target_size, to_tensor
from .metrics import confusion_matrix, iou_from_confusion, miou

__all__ = ["LinearHead", "encode_for_segmentation", "train_linear_head", "evaluate_segmentation", "SegResult", "colorize"]

IGNORE = 255


class LinearHead(nn.Module):
    """BatchNorm + 1x1 conv over patch features: ``(B, C, h, w)`` -> logits ``(B, K, h, w)``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


@torch.no_grad()
def encode_for_segmentation(encoder: Encoder, img: Image.Image, short_side: int, layers: int = 1, flip: bool = False) -> torch.Tensor:
    """Frozen features of one image resized to shorter side ``short_side`` (patch multiples):
    ``(C * layers, h, w)`` float32 on the CPU."""
    hw = target_size(img.width, img.height, short_side, encoder.patch_size, "short")
    im = resize_to(img, hw)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    x = to_tensor(im, encoder.mean, encoder.std)[None]
    return encoder.layer_features(x, layers)[0].cpu()


def _labels_at(labels: np.ndarray, hw: tuple[int, int], flip: bool = False) -> torch.Tensor:
    lab = Image.fromarray(labels.astype(np.uint8)).resize((hw[1], hw[0]), Image.NEAREST)
    if flip:
        lab = lab.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(lab).astype(np.int64))


def train_linear_head(
    encoder: Encoder,
    dataset: Any,
    num_classes: int,
    train_size: int = 512,
    layers: int = 1,
    iters: int = 2000,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    flip: bool = True,
    label_scale: int = 4,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> tuple[LinearHead, dict[str, Any]]:
    """Train a :class:`LinearHead` on cached frozen features of ``dataset`` (``ds[i] -> (image,
    labels int (H, W) with 255 = ignore)``). Returns ``(head in eval mode, info)``; ``info`` has
    the number of cached views, the final loss and the times (s) for encoding and training."""
    dev = torch.device(device) if device is not None else encoder.device
    t0 = time.perf_counter()
    feats: list[torch.Tensor] = []
    labs: list[torch.Tensor] = []
    for i in tqdm(range(len(dataset)), desc="encode train", unit="img", leave=False, mininterval=2.0):
        img, labels = dataset[i]
        for fl in ((False, True) if flip else (False,)):
            f = encode_for_segmentation(encoder, img, train_size, layers, fl)
            hw = (f.shape[-2] * label_scale, f.shape[-1] * label_scale)
            feats.append(f.half())
            labs.append(_labels_at(labels, hw, fl).to(torch.uint8))
    if not feats:
        raise ValueError("the training split is empty")
    t_encode = time.perf_counter() - t0
    torch.manual_seed(seed)
    head = LinearHead(feats[0].shape[0], num_classes).to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, iters) / max(1, iters))))
    g = torch.Generator().manual_seed(seed)
    head.train()
    t1 = time.perf_counter()
    loss_val = float("nan")
    bar = tqdm(range(iters), desc="train head", unit="it", leave=False, mininterval=2.0)
    for _ in bar:
        idx = torch.randint(len(feats), (min(batch_size, len(feats)),), generator=g).tolist()
        # Same-size views go through BatchNorm together; different sizes are averaged.
        losses = []
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j in idx:
            by_shape.setdefault(tuple(feats[j].shape), []).append(j)
        for js in by_shape.values():
            x = torch.stack([feats[j] for j in js]).to(dev).float()
            y = torch.stack([labs[j] for j in js]).to(dev).long()
            y[y == 255] = IGNORE
            logits = F.interpolate(head(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
            if bool((y != IGNORE).any()):
                losses.append(F.cross_entropy(logits, y, ignore_index=IGNORE) * len(js))
        if not losses:
            continue
        loss = torch.stack(losses).sum() / len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        bar.set_postfix(loss=f"{loss_val:.3f}", refresh=False)
    head.eval()
    return head, {"train_views": len(feats), "final_loss": loss_val, "encode_s": t_encode, "train_s": time.perf_counter() - t1}


@dataclass
class SegResult:
    """Per-resolution result: ``miou``, per-class ``iou`` (NaN = absent), pixel ``accuracy``,
    ``confusion`` ``(K, K)`` and the time per image (ms) of the backbone pass."""

    resolution: int
    miou: float
    iou: list[float]
    accuracy: float
    confusion: torch.Tensor
    ms_per_image: float
    grid: tuple[int, int]


@torch.no_grad()
def predict(encoder: Encoder, head: LinearHead, img: Image.Image, short_side: int, layers: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """Single-pass prediction at shorter side ``short_side``, upsampled to ``out_hw``: labels ``(H, W)``."""
    f = encode_for_segmentation(encoder, img, short_side, layers)
    dev = next(head.parameters()).device
    logits = head(f[None].to(dev))
    logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].cpu()


@torch.no_grad()
def evaluate_segmentation(encoder: Encoder, head: LinearHead, dataset: Any, num_classes: int, resolutions: Sequence[int] = (512,),
                          layers: int = 1, keep_predictions: int = 0) -> tuple[list[SegResult], dict[int, list[np.ndarray]]]:
    """mIoU of ``head`` on ``dataset`` at each shorter-side resolution (single pass per image).

    Returns the per-resolution results and, for the first ``keep_predictions`` images, their
    predicted label maps ``(H, W)`` per resolution (for pictures)."""
    results, kept = [], {}
    for r in resolutions:
        conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        times, grid = [], (0, 0)
        kept[r] = []
        for i in tqdm(range(len(dataset)), desc=f"eval {r}px", unit="img", leave=False, mininterval=2.0):
            img, labels = dataset[i]
            if encoder.device.type == "cuda":
                torch.cuda.synchronize(encoder.device)
            t0 = time.perf_counter()
            pred = predict(encoder, head, img, r, layers, labels.shape)
            if encoder.device.type == "cuda":
                torch.cuda.synchronize(encoder.device)
            times.append((time.perf_counter() - t0) * 1e3)
            hw = target_size(img.width, img.height, r, encoder.patch_size, "short")
            grid = (hw[0] // encoder.patch_size, hw[1] // encoder.patch_size)
            conf += confusion_matrix(pred, torch.from_numpy(labels), num_classes, IGNORE)
            if i < keep_predictions:
                kept[r].append(pred.numpy().astype(np.int32))
        tot = conf.sum().item()
        acc = float(conf.diag().sum().item() / tot) if tot else float("nan")
        results.append(SegResult(r, miou(conf), [float(v) for v in iou_from_confusion(conf)], acc, conf, float(np.median(times)) if times else float("nan"), grid))
    return results, kept


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label map ``(H, W)`` -> ``(H, W, 3)`` uint8 with a fixed palette; 255 is black."""
    rng = np.random.default_rng(3)
    palette = rng.integers(40, 256, size=(max(num_classes, 1), 3), dtype=np.uint8)
    if num_classes == 2:
        palette = np.array([[40, 40, 160], [240, 200, 40]], dtype=np.uint8)
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = (labels >= 0) & (labels < num_classes)
    out[valid] = palette[labels[valid]]
    return out
