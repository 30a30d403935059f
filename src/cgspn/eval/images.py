"""Image input for evaluation: listing folders, loading with clear errors, resizing to the patch grid.

Every function here works on PIL images or ``float32`` tensors laid out ``(3, H, W)`` /
``(B, 3, H, W)``; normalisation (mean/std) is applied by :func:`to_tensor`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "list_images",
    "load_image",
    "round_to_multiple",
    "target_size",
    "resize_to",
    "center_crop_square",
    "to_tensor",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Let very large photos (e.g. 5640x3172 backgrounds, or bigger) through PIL's bomb check; the
# user chose the file, and we never decode at more than the size they asked for.
Image.MAX_IMAGE_PIXELS = 1 << 30


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """All image files under ``folder`` (sorted), by extension.

    Raises ``FileNotFoundError`` when the folder does not exist and ``ValueError`` when it holds
    no image.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"not an image file (extension {root.suffix!r}): {root}")
        return [root]
    it = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load an image file as RGB, raising one-line errors for missing or corrupt files."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image not found: {p}")
    if p.is_dir():
        raise ValueError(f"expected an image file, got a directory: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                arr = (255.0 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)).astype(np.uint8)
                return Image.fromarray(arr).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {p}: {type(e).__name__}: {e}") from None


def round_to_multiple(x: float, multiple: int) -> int:
    """Nearest positive multiple of ``multiple`` (at least ``multiple``)."""
    return max(multiple, int(round(x / multiple)) * multiple)


def target_size(width: int, height: int, size: int, patch: int, side: str = "long") -> tuple[int, int]:
    """Output ``(H, W)``, multiples of ``patch``, keeping the aspect ratio.

    ``side='long'`` makes the longer side ``size``; ``'short'`` the shorter side; ``'square'``
    gives ``size x size``. ``size`` is rounded to a multiple of ``patch`` first.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    s = round_to_multiple(size, patch)
    if side == "square":
        return s, s
    if side not in ("long", "short"):
        raise ValueError(f"side must be 'long', 'short' or 'square', got {side!r}")
    ref = max(width, height) if side == "long" else min(width, height)
    scale = s / ref
    return round_to_multiple(height * scale, patch), round_to_multiple(width * scale, patch)


def resize_to(img: Image.Image, hw: tuple[int, int], resample: int = Image.BICUBIC) -> Image.Image:
    """Resize a PIL image to ``(H, W)`` (antialiased when shrinking)."""
    h, w = hw
    if img.size == (w, h):
        return img
    return img.resize((w, h), resample=resample, reducing_gap=3.0 if resample != Image.NEAREST else None)


def center_crop_square(img: Image.Image) -> Image.Image:
    """The largest centred square of ``img``."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def to_tensor(img: Image.Image, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """PIL RGB image -> normalised ``float32`` tensor ``(3, H, W)``."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (t - m) / s
