"""Metrics: feature cosine, confusion matrices, mIoU, binary IoU, accuracy.

All functions take torch tensors and return Python floats / tensors on the CPU; labels use
``ignore_index`` (default 255, the ADE20K convention after zero-label reduction) for pixels that
do not count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "token_cosine",
    "confusion_matrix",
    "iou_from_confusion",
    "miou",
    "binary_iou",
    "accuracy",
]


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension.

    ``a``, ``b``: ``(..., C)`` with the same shape. Returns ``(...)`` in float32.
    """
    if a.shape != b.shape:
        raise ValueError(f"feature shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """``(K, K)`` int64 confusion matrix, rows = ground truth, columns = prediction.

    ``pred``, ``target``: integer tensors of the same shape (any, e.g. ``(B, H, W)``); pixels whose
    target is ``ignore_index`` are skipped. Predictions outside ``[0, K)`` raise ``ValueError``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = pred.reshape(-1).long()
    t = target.reshape(-1).long()
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target labels must be in [0, {num_classes}) or {ignore_index}; found {int(t.min())}..{int(t.max())}")
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"predicted labels must be in [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``(K,)`` float64 from a confusion matrix; NaN for classes absent from both
    ground truth and prediction (they are left out of the mean, as in mmseg)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp / union
    iou[union == 0] = float("nan")
    return iou


def miou(conf: torch.Tensor) -> float:
    """Mean IoU over classes present (ground truth or prediction) in ``conf`` ``(K, K)``."""
    iou = iou_from_confusion(conf)
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")


def binary_iou(a: torch.Tensor, b: torch.Tensor, ignore: torch.Tensor | None = None) -> float:
    """IoU of two boolean masks of the same shape (``ignore``: optional mask of pixels to skip).

    Two empty masks give 1.0 (perfect agreement on "nothing").
    """
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.bool(), b.bool()
    if ignore is not None:
        keep = ~ignore.bool()
        a, b = a & keep, b & keep
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of equal entries (``pred``, ``target``: ``(N,)`` integer)."""
    if pred.numel() == 0:
        return math.nan
    return float((pred.reshape(-1) == target.reshape(-1)).float().mean())
