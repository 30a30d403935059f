"""Decoding images safely: anything unreadable becomes a :class:`CorruptSample`, never a crash."""

from __future__ import annotations

import io
import os
import warnings
from typing import Union

from PIL import Image

__all__ = ["CorruptSample", "open_rgb", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class CorruptSample(Exception):
    """A sample that cannot be decoded (truncated file, wrong format, missing file, ...)."""


def open_rgb(source: Union[str, os.PathLike, bytes]) -> Image.Image:
    """Decode an image file or bytes into an RGB PIL image (fully loaded).

    Raises :class:`CorruptSample` for missing, truncated or non-image data.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF / palette transparency
            if isinstance(source, (bytes, bytearray, memoryview)):
                img = Image.open(io.BytesIO(bytes(source)))
            else:
                img = Image.open(source)
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                img = img.point(lambda v: v * (1 / 256)).convert("L")
            img = img.convert("RGB")
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        raise CorruptSample(f"{type(e).__name__}: {e}") from e
    if img.width < 2 or img.height < 2:
        raise CorruptSample(f"degenerate image of size {img.size}")
    return img
