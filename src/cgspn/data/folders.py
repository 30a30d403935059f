"""Image folders: every image file under a directory (recursively).

A caption per image comes from a sidecar ``<stem>.txt`` (the img2dataset folder layout) when
present, else from the class sub-directory name ("a photo of a {class}") when the folder has
class sub-directories, else none.
"""

from __future__ import annotations

import os
from pathlib import Path

from .images import IMAGE_EXTENSIONS
from .records import Record

__all__ = ["folder_records"]


def folder_records(root: str | os.PathLike, template: str = "a photo of a {}.") -> list[Record]:
    """All images under ``root`` as :class:`Record` s (sorted, so order is reproducible)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    has_classes = any(p.parent != root for p in files)
    out = []
    for p in files:
        side = p.with_suffix(".txt")
        if side.is_file():
            text = side.read_text(encoding="utf-8", errors="replace").strip()
        elif has_classes:
            text = template.format(p.parent.name.replace("_", " "))
        else:
            text = None
        out.append(Record(str(p), text))
    return out
