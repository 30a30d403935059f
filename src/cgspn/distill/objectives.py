"""The trainable side of each stage: a module holding the student (and adapters) that turns a
batch plus the teacher's taps into a loss. The engine wraps it in DDP/FSDP and optimises
``trainable_parameters()``.

Stage 1 (sub-layer alignment): every mixer ``i`` receives the teacher's normalised block input
``norm1(x_i^T)`` (the student's ``norm1`` is the teacher's copy, frozen) and matches the
teacher's attention output before ``ls1`` (see :mod:`cgspn.distill.encoders` for the tap
convention). Blocks are independent -- no gradient flows between them -- so all mixers train in
one pass. Only mixer parameters train.

Stage 2 (end-to-end alignment) and the high-resolution stages: the whole student trains; per
block a PP tap (mixer output) and a PB tap (block output) pass through adapters and meet the
teacher's taps with ``MSE + l1 * KL``; plus optional final-feature and summary losses
(cosine + smooth-L1) and an image-text loss against the teacher's frozen text tower.

Default KL temperature: 4. Raw ViT features carry a few very large channels, so the per-token
softmax over channels at T = 1 is nearly one-hot and its KL fights the MSE. Measured on the CPU
default (DINOv2 ViT-S/14 teacher, 112 px, 100 stage-2 steps from the same stage-1 student), held-out
patch-token cosine to the teacher: T=1, l1=1: 0.549; l1=0: 0.599; l1=0.1: 0.601; T=4, l1=1: 0.603
(also the best block-output cosine, 0.701).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from .adapters import AdapterBank
from .encoders import Taps, call_mixer, forward_taps
from .losses import (
    clip_distill_loss,
    clip_loss,
    cosine_smooth_l1,
    feature_mse,
    siglip_loss,
    tap_loss,
    token_cosine,
)
from .student import mixer_parameters

__all__ = ["Stage1Objective", "Stage2Objective", "STAGE2_LOSS_DEFAULTS"]

STAGE2_LOSS_DEFAULTS: dict[str, Any] = {
    "pp": 1.0,  # a: weight of the PP taps
    "pb": 1.0,  # b: weight of the PB taps
    "kl": 1.0,  # l1: weight of the channel-softmax KL inside each tap loss
    "temperature": 4.0,  # see the module docstring
    "normalize": True,  # divide each tap MSE by the target's mean square
    "adapter_ratio": 0.25,  # adapter hidden width C * ratio (0 = no adapters)
    "feature": 1.0,  # final patch tokens: cosine + smooth-L1
    "summary": 1.0,  # pooled / projected embedding: cosine + smooth-L1
    "feature_alpha": 0.9,
    "feature_beta": 0.1,
    "itc": 0.0,  # image-text loss against the teacher's text tower (needs captions)
    "itc_kind": "auto",  # auto (siglip if the teacher has a logit bias) | clip | siglip
    "itc_distill": 0.0,  # soft-label KD of the teacher's image-text logits
}


class Stage1Objective(nn.Module):
    """Per-block mixer alignment on the teacher's activations.

    forward(taps) with taps.block_inputs / taps.mixer_outputs -> (loss, metrics); the loss is the
    mean over blocks of ``MSE(mixer_i(norm1_i(x_i)), attn_i)`` (normalised per layer when
    ``normalize``), plus ``cosine_weight * (1 - cos)``.
    """

    def __init__(self, student: nn.Module, normalize: bool = True, cosine_weight: float = 0.0) -> None:
        super().__init__()
        self.student = student
        self.normalize = normalize
        self.cosine_weight = float(cosine_weight)
        for p in student.parameters():
            p.requires_grad_(False)
        for p in mixer_parameters(student):
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, taps: Taps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses, coss = [], []
        for i, block in enumerate(self.student.blocks):
            x = taps.block_inputs[i]
            y = call_mixer(block, block.norm1(x), taps.grid)
            t = taps.mixer_outputs[i]
            li = feature_mse(y, t, self.normalize)
            c = token_cosine(y, t)
            if self.cosine_weight:
                li = li + self.cosine_weight * (1 - c)
            losses.append(li)
            coss.append(c.detach())
        loss = torch.stack(losses).mean()
        metrics = {"loss": loss.detach(), "mixer_cos": torch.stack(coss).mean()}
        for i, li in enumerate(losses):
            metrics[f"layer/{i:02d}"] = li.detach()
        return loss, metrics


class Stage2Objective(nn.Module):
    """End-to-end tap alignment (also used by the high-resolution stages).

    forward(images (B, 3, H, W), taps, text=None, teacher_logit_scale=..., ...) -> (loss, metrics).
    ``text``: (B_all, D) L2-normalised text embeddings matching the (gathered) images when the
    image-text loss is on; ``gather``: callable gathering image embeddings across ranks (with grad).
    """

    def __init__(
        self,
        student: nn.Module,
        loss_cfg: dict[str, Any] | None = None,
        grad_checkpointing: bool = False,
        trainable: str = "all",
    ) -> None:
        super().__init__()
        cfg = dict(STAGE2_LOSS_DEFAULTS)
        unknown = set(loss_cfg or {}) - set(cfg)
        if unknown:
            raise ValueError(f"unknown stage2.loss keys {sorted(unknown)}; known: {sorted(cfg)}")
        cfg.update(loss_cfg or {})
        self.cfg = cfg
        self.student = student
        self.grad_checkpointing = grad_checkpointing
        dim, depth = int(student.embed_dim), len(student.blocks)
        ratio = float(cfg["adapter_ratio"])
        self.adapters = (
            AdapterBank(dim, depth, ratio, pp=cfg["pp"] > 0, pb=cfg["pb"] > 0) if ratio > 0 else None
        )
        for p in student.parameters():
            p.requires_grad_(trainable == "all")
        if trainable == "mixers":
            for p in mixer_parameters(student):
                p.requires_grad_(True)
        elif trainable != "all":
            raise ValueError(f"trainable must be 'all' or 'mixers', got {trainable!r}")
        self._freeze_unused()

    def _freeze_unused(self) -> None:
        """Freeze the parts no enabled loss reaches (DDP requires every trainable parameter to get
        a gradient): the pooling head without summary / image-text losses, and the final norm when
        the final tokens are not used either."""
        c = self.cfg
        uses_summary = c["summary"] > 0 or c["itc"] > 0 or c["itc_distill"] > 0
        parts = [] if uses_summary else ["attn_pool", "fc_norm", "head"]
        if not uses_summary and c["feature"] <= 0:
            parts.append("norm")
        for name in parts:
            mod = getattr(self.student, name, None)
            if isinstance(mod, nn.Module):
                for p in mod.parameters():
                    p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def want(self) -> tuple[str, ...]:
        """Teacher taps this objective needs."""
        w = []
        if self.cfg["pp"] > 0:
            w.append("pp")
        if self.cfg["pb"] > 0:
            w.append("pb")
        return tuple(w)

    def _adapt(self, kind: str, i: int, v: torch.Tensor) -> torch.Tensor:
        if self.adapters is None:
            return v
        bank = getattr(self.adapters, kind)
        return bank[i](v) if bank is not None else v

    def _taps_loss(self, kind: str, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        losses = [
            tap_loss(self._adapt(kind, i, s), t, c["kl"], c["temperature"], c["normalize"])
            for i, (s, t) in enumerate(zip(student, teacher))
        ]
        return torch.stack(losses).mean()

    def forward(
        self,
        images: torch.Tensor,
        taps: Taps,
        text: torch.Tensor | None = None,
        logit_scale: float = 100.0,
        logit_bias: float | None = None,
        gather: Any = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.cfg
        s = forward_taps(self.student, images, self.want, grad_checkpointing=self.grad_checkpointing)
        if s.grid != taps.grid or s.final.shape != taps.final.shape:
            raise ValueError(f"student grid {s.grid} / tokens {tuple(s.final.shape)} do not match the teacher's "
                             f"{taps.grid} / {tuple(taps.final.shape)}")
        terms: dict[str, torch.Tensor] = {}
        if c["pp"] > 0:
            terms["pp"] = self._taps_loss("pp", s.mixer_outputs, taps.mixer_outputs)
        if c["pb"] > 0:
            terms["pb"] = self._taps_loss("pb", s.block_outputs, taps.block_outputs)
        if c["feature"] > 0:
            terms["feature"] = cosine_smooth_l1(s.final, taps.final, c["feature_alpha"], c["feature_beta"])
        if c["summary"] > 0:
            terms["summary"] = cosine_smooth_l1(s.summary, taps.summary, c["feature_alpha"], c["feature_beta"])
        if (c["itc"] > 0 or c["itc_distill"] > 0) and text is not None:
            img = torch.nn.functional.normalize(s.summary.float(), dim=-1)
            timg = torch.nn.functional.normalize(taps.summary.float(), dim=-1)
            if gather is not None:
                img, timg = gather(img), gather(timg)
            kind = c["itc_kind"]
            if kind == "auto":
                kind = "siglip" if logit_bias is not None else "clip"
            if c["itc"] > 0:
                terms["itc"] = (siglip_loss(img, text, logit_scale, logit_bias or 0.0) if kind == "siglip"
                                else clip_loss(img, text, logit_scale))
            if c["itc_distill"] > 0:
                terms["itc_distill"] = clip_distill_loss(img, timg, text, logit_scale)
        weights = {"pp": c["pp"], "pb": c["pb"], "feature": c["feature"], "summary": c["summary"],
                   "itc": c["itc"], "itc_distill": c["itc_distill"]}
        loss = sum(weights[k] * v for k, v in terms.items())
        metrics = {k: v.detach() for k, v in terms.items()}
        metrics["loss"] = loss.detach()
        with torch.no_grad():
            metrics["feat_cos"] = token_cosine(s.final[:, s.num_prefix_tokens:], taps.final[:, taps.num_prefix_tokens:])
            metrics["summary_cos"] = token_cosine(s.summary, taps.summary)
        return loss, metrics
