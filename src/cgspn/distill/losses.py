"""Distillation losses. Token tensors are (B, N, C); every loss returns a float32 scalar.

* :func:`feature_mse` -- MSE, optionally divided by the target's mean square ("normalised per
  layer by the target RMS", so deep layers with large activations do not dominate).
* :func:`channel_kl` -- ``KL(softmax(s/T) || softmax(t/T))`` over channels per token (the
  student distribution first, as in the C-GSPN recipe), times ``T^2`` so gradients keep their
  scale across temperatures; mean over tokens.
* :func:`tap_loss` -- the per-tap loss of stage 2: ``MSE(A(v_s), v_t) + l1 * KL(...)``.
* :func:`cosine_smooth_l1` -- AM-RADIO's feature / summary loss
  ``alpha * (1 - cos) + beta * smooth_L1``.
* :func:`clip_loss`, :func:`siglip_loss`, :func:`clip_distill_loss` -- image-text losses against a
  frozen text tower (features gathered across ranks by the caller).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "feature_mse",
    "channel_kl",
    "tap_loss",
    "cosine_smooth_l1",
    "token_cosine",
    "clip_loss",
    "siglip_loss",
    "clip_distill_loss",
]


def feature_mse(pred: torch.Tensor, target: torch.Tensor, normalize: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """mean((pred - target)^2), divided by mean(target^2) when ``normalize``. Shapes equal."""
    pred, target = pred.float(), target.float()
    mse = (pred - target).pow(2).mean()
    if normalize:
        mse = mse / (target.pow(2).mean().detach() + eps)
    return mse


def channel_kl(student: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(student/T) || softmax(target/T)) over the last axis, mean over the rest, x T^2."""
    t = float(temperature)
    log_p = F.log_softmax(student.float() / t, dim=-1)
    log_q = F.log_softmax(target.float() / t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.mean() * (t * t)


def tap_loss(
    adapted: torch.Tensor, target: torch.Tensor, kl_weight: float = 1.0, temperature: float = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    """``MSE(A(v_s), v_t) + kl_weight * KL(softmax(A(v_s)/T) || softmax(v_t/T))``; (B, N, C) each."""
    loss = feature_mse(adapted, target, normalize)
    if kl_weight:
        loss = loss + kl_weight * channel_kl(adapted, target, temperature)
    return loss


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last axis, averaged over everything else."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean()


def cosine_smooth_l1(
    pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.9, beta: float = 0.1
) -> torch.Tensor:
    """``alpha * mean(1 - cos(pred, target)) + beta * smooth_L1(pred, target)``; (..., C) each."""
    pred, target = pred.float(), target.float()
    cos = F.cosine_similarity(pred, target, dim=-1).mean()
    return alpha * (1.0 - cos) + beta * F.smooth_l1_loss(pred, target)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Symmetric InfoNCE. image (B, D), text (B, D), both L2-normalised; row i matches column i."""
    logits = logit_scale * image.float() @ text.float().t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: float, logit_bias: float) -> torch.Tensor:
    """Sigmoid loss (SigLIP): ``-mean_i sum_j log sigmoid(z_ij * (s <x_i, y_j> + b))``, z = +1 on the diagonal."""
    logits = logit_scale * image.float() @ text.float().t() + logit_bias
    z = 2 * torch.eye(logits.shape[0], device=logits.device) - 1
    return -F.logsigmoid(z * logits).sum() / logits.shape[0]


def clip_distill_loss(
    student_image: torch.Tensor, teacher_image: torch.Tensor, text: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """Soft-label distillation of image-text logits (open_clip's ``DistillClipLoss`` term):
    cross-entropy of the student's logits against the teacher's softmax, both directions."""
    s = logit_scale * student_image.float() @ text.float().t()
    t = logit_scale * teacher_image.float() @ text.float().t()
    i2t = -(t.softmax(1) * s.log_softmax(1)).sum(1).mean()
    t2i = -(t.t().softmax(1) * s.t().log_softmax(1)).sum(1).mean()
    return 0.5 * (i2t + t2i)
