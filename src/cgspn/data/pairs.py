"""Image-text pairs listed in a CSV (header row) or JSONL file.

Columns/keys are auto-detected (image: ``filepath``, ``image``, ``image_path``, ``path``, ``file``;
text: ``caption``, ``text``, ``title``) or named explicitly. Relative image paths are resolved
against the list file's directory. Malformed lines are skipped and counted.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .records import Record

__all__ = ["read_pairs", "IMAGE_KEYS", "TEXT_KEYS"]

IMAGE_KEYS = ("filepath", "image", "image_path", "path", "file", "filename")
TEXT_KEYS = ("caption", "text", "title", "label")


def _pick(keys: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if wanted:
        if wanted not in keys:
            raise ValueError(f"{path}: no {what} column '{wanted}' (columns: {', '.join(keys)})")
        return wanted
    for c in candidates:
        if c in keys:
            return c
    raise ValueError(f"{path}: cannot find the {what} column among {', '.join(keys)}; name it with data.{what}_key")


def read_pairs(
    path: str | os.PathLike, image_key: str | None = None, text_key: str | None = None
) -> tuple[list[Record], int]:
    """Read ``path`` (.csv, .tsv or .jsonl). Returns (records, number of malformed lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    base = path.parent
    rows: list[dict] = []
    bad = 0
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
                else:
                    bad += 1
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            rows = [r for r in reader]
    else:
        raise ValueError(f"pairs file must be .csv, .tsv or .jsonl: {path}")
    if not rows:
        raise ValueError(f"{path}: no rows")
    keys = sorted({k for r in rows for k in r.keys() if k is not None})
    ik = _pick(keys, image_key, IMAGE_KEYS, "image", path)
    tk = _pick(keys, text_key, TEXT_KEYS, "text", path)
    out = []
    for r in rows:
        img, txt = r.get(ik), r.get(tk)
        if not img or not isinstance(img, str):
            bad += 1
            continue
        p = Path(img)
        out.append(Record(str(p if p.is_absolute() else base / p), None if txt is None else str(txt)))
    return out, bad
