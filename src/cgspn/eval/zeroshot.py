"""Zero-shot classification for models with a text tower (open_clip-style).

A model qualifies when it has ``encode_image(images (B, 3, H, W)) -> (B, D)`` and
``encode_text(tokens (T, L)) -> (T, D)`` and comes with a tokenizer ``list[str] -> (T, L)``.
:func:`build_zero_shot_classifier` averages the normalised text embeddings of every template for
each class name into a ``(D, K)`` weight matrix, as in CLIP.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["SIMPLE_TEMPLATES", "IMAGENET_TEMPLATES", "has_text_tower", "build_zero_shot_classifier", "zero_shot_predict", "load_open_clip"]

SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
# The 18-template subset of CLIP's ImageNet prompts that open_clip ships as its "simple" ensemble.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a jpeg photo of a {}.",
    "a blurry photo of a {}.",
    "a good photo of a {}.",
    "a photo of one {}.",
    "a rendering of a {}.",
)


def has_text_tower(model: Any) -> bool:
    """True when ``model`` exposes ``encode_text`` and ``encode_image``."""
    return callable(getattr(model, "encode_text", None)) and callable(getattr(model, "encode_image", None))


@torch.no_grad()
def build_zero_shot_classifier(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]] = SIMPLE_TEMPLATES,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> torch.Tensor:
    """Class weights ``(D, K)``: for each of the K class names, the L2-normalised mean of the
    L2-normalised text embeddings of all templates (``"{}"`` is replaced by the name, or a
    template may be a callable ``name -> text``)."""
    if not has_text_tower(model):
        raise ValueError(f"{type(model).__name__} has no text tower (encode_text): zero-shot needs an image-text model")
    if not classnames:
        raise ValueError("zero-shot needs at least one class name")
    texts = [t(c) if callable(t) else t.format(c) for c in classnames for t in templates]
    embs = []
    for s in tqdm(range(0, len(texts), batch_size), desc="class prompts", leave=False, mininterval=2.0):
        tok = tokenizer(texts[s : s + batch_size]).to(device)
        embs.append(F.normalize(model.encode_text(tok).float(), dim=-1))
    e = torch.cat(embs).reshape(len(classnames), len(templates), -1)
    w = F.normalize(e.mean(1), dim=-1)  # (K, D)
    return w.T.contiguous()


@torch.no_grad()
def zero_shot_predict(model: Any, classifier: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``images`` ``(B, 3, H, W)`` normalised for ``model`` -> logits ``(B, K)`` (cosine x 100)."""
    f = F.normalize(model.encode_image(images).float(), dim=-1)
    return 100.0 * f @ classifier.to(f.device)


def load_open_clip(name: str, checkpoint: str | None = None, device: torch.device | str = "cpu") -> tuple[Any, Callable, tuple, tuple, int]:
    """An open_clip model by name with weights from a local ``checkpoint`` (no hub access).

    Returns ``(model, tokenizer, mean, std, image_size)``. Without a checkpoint the weights are
    random (only useful for smoke tests; the caller says so)."""
    try:
        import open_clip
    except ImportError:
        raise FileNotFoundError("zero-shot with open_clip models needs open_clip: pip install open-clip-torch") from None
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {name!r}")
    model = open_clip.create_model(name, pretrained=checkpoint, device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    vis = model.visual
    size = vis.image_size if isinstance(vis.image_size, int) else vis.image_size[0]
    mean = tuple(getattr(vis, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(vis, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return model, tokenizer, mean, std, int(size)
