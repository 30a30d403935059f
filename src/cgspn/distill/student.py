"""The student: a C-GSPN encoder isomorphic to the teacher, initialised from it.

:func:`student_spec_from_teacher` reads the teacher ViT's shape (width, depth, heads, MLP ratio,
patch, prefix tokens, norms, pooling, head, activation) into a JSON-able :class:`StudentSpec`
(a registered timm model name plus keyword arguments), so the exported student can always be
rebuilt with ``timm.create_model(spec.name, **spec.kwargs)``.

:func:`init_student_from_teacher` copies everything the two share -- patch embedding, prefix
tokens, ``norm_pre``, per-block ``norm1``/``norm2``/``mlp``/``ls1``/``ls2``, final ``norm``,
``fc_norm``, the MAP ``attn_pool`` and the ``head`` -- and starts each propagation mixer from the
teacher's attention with the mixer's own ``init_from_attention`` (output projection copied, value
path from the SVD of the teacher's value projection, gates "propagate straight"). Hybrid blocks
(``attn_layers``) copy the teacher's attention exactly. The positional embedding is dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "StudentSpec",
    "student_spec_from_teacher",
    "create_student",
    "init_student_from_teacher",
    "build_student",
    "save_student",
    "load_student",
    "mixer_parameters",
]

_GENERIC_NAME = "cgspn_base_patch16_224"
_BLOCK_ATTN = re.compile(r"^blocks\.(\d+)\.attn\.(.+)$")


@dataclass
class StudentSpec:
    """A registered C-GSPN model name plus constructor kwargs (JSON-able).

    ``norm_eps`` is stored as a number and turned into ``norm_layer`` when the model is built.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _register_models() -> None:
    import cgspn.models  # noqa: F401  (registers cgspn_* with timm)


_ACT_NAMES = {"QuickGELU": "quick_gelu", "GELUTanh": "gelu_tanh", "SiLU": "silu", "Swish": "silu",
              "ReLU": "relu"}


def _act_name(act: nn.Module) -> str:
    """timm ``get_act_layer`` name of the teacher MLP's activation module."""
    n = type(act).__name__
    if n == "GELU":
        return "gelu_tanh" if getattr(act, "approximate", "none") == "tanh" else "gelu"
    if n in _ACT_NAMES:
        return _ACT_NAMES[n]
    raise ValueError(f"teacher MLP activation {n} is not supported by the student builder")


def student_spec_from_teacher(
    teacher_model: nn.Module, teacher_name: str = "", name: str = "auto", overrides: dict[str, Any] | None = None
) -> StudentSpec:
    """The C-GSPN shape isomorphic to a timm ViT teacher. ``overrides`` (e.g. ``latent_dim``,
    ``attn_layers``, ``chunks``, ``drop_path_rate``) are applied last."""
    _register_models()
    from timm.layers import LayerScale

    from ..models import ISOMORPHIC_VIT

    blk = teacher_model.blocks[0]
    attn, mlp = blk.attn, blk.mlp
    if not hasattr(mlp, "fc1") or not hasattr(mlp, "fc2"):
        raise ValueError(f"teacher MLP {type(mlp).__name__} is not a timm Mlp (fc1/act/fc2)")
    dim = int(teacher_model.embed_dim)
    pe = teacher_model.patch_embed
    img = pe.img_size[0] if isinstance(pe.img_size, (tuple, list)) else pe.img_size
    ps = pe.patch_size[0] if isinstance(pe.patch_size, (tuple, list)) else pe.patch_size
    head = getattr(teacher_model, "head", nn.Identity())
    kw: dict[str, Any] = dict(
        img_size=int(img),
        patch_size=int(ps),
        embed_dim=dim,
        depth=len(teacher_model.blocks),
        num_heads=int(attn.num_heads),
        mlp_ratio=mlp.fc1.out_features / dim,
        qkv_bias=attn.qkv.bias is not None,
        qk_norm=not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity),
        proj_bias=mlp.fc1.bias is not None,
        init_values=1e-5 if isinstance(blk.ls1, LayerScale) else None,
        class_token=getattr(teacher_model, "cls_token", None) is not None,
        reg_tokens=int(teacher_model.reg_token.shape[1]) if getattr(teacher_model, "reg_token", None) is not None else 0,
        pre_norm=not isinstance(getattr(teacher_model, "norm_pre", nn.Identity()), nn.Identity),
        final_norm=not isinstance(getattr(teacher_model, "norm", nn.Identity()), nn.Identity),
        fc_norm=not isinstance(getattr(teacher_model, "fc_norm", nn.Identity()), nn.Identity),
        global_pool="map" if getattr(teacher_model, "attn_pool", None) is not None else (teacher_model.global_pool or ""),
        pool_include_prefix=bool(getattr(teacher_model, "pool_include_prefix", False)),
        num_classes=int(head.out_features) if isinstance(head, nn.Linear) else 0,
        act_layer=_act_name(mlp.act),
    )
    if not isinstance(head, (nn.Linear, nn.Identity)):
        raise ValueError(f"teacher head {type(head).__name__} is not Linear/Identity")
    eps = float(getattr(blk.norm1, "eps", 1e-6))
    if abs(eps - 1e-6) > 1e-12:
        kw["norm_eps"] = eps
    if name == "auto":
        base = teacher_name.split(".")[0]
        name = next((k for k, v in ISOMORPHIC_VIT.items() if v == base), _GENERIC_NAME)
    kw.update(overrides or {})
    return StudentSpec(name, kw)


def create_student(spec: StudentSpec) -> nn.Module:
    """Build the student described by ``spec`` (random init)."""
    _register_models()
    import timm
    from timm.layers import LayerNorm

    if not timm.is_model(spec.name):
        raise ValueError(f"unknown student model '{spec.name}' (registered C-GSPN models: "
                         f"{', '.join(timm.list_models('cgspn_*'))})")
    kw = dict(spec.kwargs)
    eps = kw.pop("norm_eps", None)
    if eps is not None:
        kw["norm_layer"] = partial(LayerNorm, eps=float(eps))
    try:
        return timm.create_model(spec.name, pretrained=False, **kw)
    except TypeError as e:
        raise ValueError(f"bad student kwargs for {spec.name}: {e}") from e


def mixer_parameters(student: nn.Module) -> list[nn.Parameter]:
    """Parameters of every block's token mixer (what stage 1 trains)."""
    return [p for b in student.blocks for p in b.mixer.parameters()]


@torch.no_grad()
def init_student_from_teacher(student: nn.Module, teacher_model: nn.Module) -> dict[str, Any]:
    """Copy the shared weights from a timm ViT teacher and initialise the mixers from its attention.

    Returns a summary ``{"copied": n_tensors, "mixers_from_attention": n, "attention_copied": n,
    "dropped": [teacher keys not used]}``. Raises ValueError on any shape mismatch or on a
    student tensor outside the mixers that the teacher cannot provide.
    """
    t_sd = teacher_model.state_dict()
    s_sd = student.state_dict()
    new: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    attn_copied = 0
    for k, v in t_sd.items():
        if k == "pos_embed":
            dropped.append(k)
            continue
        m = _BLOCK_ATTN.match(k)
        if m is not None:
            i, rest = int(m.group(1)), m.group(2)
            sk = f"blocks.{i}.mixer.{rest}"
            if getattr(student.blocks[i], "mixer_type", "propagation") == "attention" and sk in s_sd:
                new[sk] = v
                attn_copied += 1
            continue
        if k not in s_sd:
            dropped.append(k)
            continue
        if tuple(s_sd[k].shape) != tuple(v.shape):
            raise ValueError(f"teacher '{k}' has shape {tuple(v.shape)}, student {tuple(s_sd[k].shape)}")
        new[k] = v
    missing, unexpected = student.load_state_dict(new, strict=False)
    assert not unexpected, unexpected
    not_mixer = [k for k in missing if not re.match(r"^blocks\.\d+\.mixer\.", k)]
    if not_mixer:
        raise ValueError(f"the teacher cannot initialise student tensors {not_mixer[:8]}")
    from_attn = 0
    for i, blk in enumerate(student.blocks):
        if getattr(blk, "mixer_type", "propagation") != "attention":
            blk.mixer.init_from_attention(teacher_model.blocks[i].attn)
            from_attn += 1
    return {"copied": len(new), "mixers_from_attention": from_attn, "attention_copied": attn_copied,
            "dropped": dropped}


def build_student(
    teacher_model: nn.Module,
    teacher_name: str = "",
    name: str = "auto",
    overrides: dict[str, Any] | None = None,
    init_from_teacher: bool = True,
) -> tuple[nn.Module, StudentSpec, dict[str, Any]]:
    """(student, spec, init summary) for a timm ViT teacher."""
    spec = student_spec_from_teacher(teacher_model, teacher_name, name, overrides)
    student = create_student(spec)
    info = init_student_from_teacher(student, teacher_model) if init_from_teacher else {"copied": 0}
    return student, spec, info


def save_student(path: str | os.PathLike, student: nn.Module, spec: StudentSpec,
                 meta: dict[str, Any] | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``<path>`` (safetensors weights) and ``<path minus suffix>.json`` (spec + meta), atomically.

    The JSON holds ``{"model": spec.name, "kwargs": spec.kwargs, **meta}`` (teacher, pixel
    mean/std, resolution); :func:`load_student` rebuilds the model from it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else student.state_dict()
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    info = {"model": spec.name, "kwargs": spec.kwargs, **(meta or {})}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(sd, str(tmp), metadata={"cgspn_student": json.dumps(info)})
    os.replace(tmp, path)
    jtmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    jtmp.write_text(json.dumps(info, indent=2))
    os.replace(jtmp, path.with_suffix(".json"))


def load_student(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a student written by :func:`save_student`. Returns (model in eval mode, info)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "cgspn_student" not in meta:
        raise ValueError(f"{path} is not a cgspn student checkpoint (no 'cgspn_student' metadata)")
    info = json.loads(meta["cgspn_student"])
    model = create_student(StudentSpec(info["model"], info["kwargs"]))
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device).eval(), info
