"""Training data for distillation: real photos, image folders, image-text pair lists and
WebDataset shards, with heavy augmentation and resumable, distributed, corruption-tolerant streams.

Entry points:

* :func:`build_stream` -- a :class:`DataStream` of augmented batches for one rank (or, for small
  map-style datasets on an accelerator, a :class:`DeviceAugmentStream` that augments on the device);
* :func:`holdout_images` -- a fixed, deterministic evaluation batch (held-out photos or a folder).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from .augment import Augment, AugmentConfig, eval_transform, to_tensor
from .device_augment import DeviceAugmentStream
from .folders import folder_records
from .images import CorruptSample, open_rgb
from .pairs import read_pairs
from .photos import HOLDOUT, Photo, default_photos, export_photos
from .records import Record
from .stream import DataStream, RecordDataset, StreamSampler, collate
from .wds import WebDatasetSource, expand_shards, iter_tar_samples

__all__ = [
    "DATA_KINDS",
    "build_records",
    "build_stream",
    "holdout_images",
    "HOLDOUT_VIEWS",
    "Augment",
    "AugmentConfig",
    "eval_transform",
    "to_tensor",
    "CorruptSample",
    "open_rgb",
    "Record",
    "Photo",
    "default_photos",
    "export_photos",
    "HOLDOUT",
    "folder_records",
    "read_pairs",
    "DataStream",
    "DeviceAugmentStream",
    "device_augment_mode",
    "RecordDataset",
    "StreamSampler",
    "collate",
    "WebDatasetSource",
    "expand_shards",
    "iter_tar_samples",
]

DATA_KINDS = ("photos", "folder", "pairs", "wds")
MAP_KINDS = ("photos", "folder", "pairs")

# Deterministic evaluation views of each held-out image: the central square and four
# overlapping 60% corner crops (fractions l, t, r, b).
HOLDOUT_VIEWS: tuple[tuple[float, float, float, float] | None, ...] = (
    None,
    (0.0, 0.0, 0.6, 0.6),
    (0.4, 0.0, 1.0, 0.6),
    (0.0, 0.4, 0.6, 1.0),
    (0.4, 0.4, 1.0, 1.0),
)


def _augment_config(cfg: Mapping[str, Any] | None) -> AugmentConfig:
    cfg = dict(cfg or {})
    known = set(AugmentConfig.__dataclass_fields__)
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown data.augment keys {sorted(unknown)}; known: {sorted(known)}")
    for k in ("scale", "ratio"):
        if k in cfg:
            cfg[k] = tuple(float(v) for v in cfg[k])
    return AugmentConfig(**cfg)


def build_records(kind: str, path: str | os.PathLike | None = None, *, image_key: str | None = None,
                  text_key: str | None = None, caption_template: str = "a photo of a {}.") -> list[Record]:
    """Records of a map-style source: ``photos`` (built-in train split), ``folder`` or ``pairs``."""
    if kind == "photos":
        return [Record(str(p.path), p.caption) for p in default_photos("train")]
    if kind == "folder":
        if not path:
            raise ValueError("data.kind=folder needs data.path=<directory>")
        return folder_records(path, caption_template)
    if kind == "pairs":
        if not path:
            raise ValueError("data.kind=pairs needs data.path=<file.csv|file.jsonl>")
        records, _ = read_pairs(path, image_key, text_key)
        return records
    raise ValueError(f"unknown data kind '{kind}'; known: {', '.join(DATA_KINDS)}")


def device_augment_mode(value: Any) -> str:
    """Normalise ``data.device_augment`` (auto | true | false, YAML booleans included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    v = str(value if value is not None else "auto").strip().lower()
    if v in ("true", "on", "yes", "1"):
        return "true"
    if v in ("false", "off", "no", "0"):
        return "false"
    if v == "auto":
        return "auto"
    raise ValueError(f"data.device_augment must be auto, true or false, got {value!r}")


def build_stream(
    cfg: Mapping[str, Any],
    resolution: int,
    batch_size: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
) -> DataStream | DeviceAugmentStream:
    """A batch stream for one rank from a ``data`` config section.

    cfg keys: kind, path, image_key, text_key, caption_template, num_workers, shuffle_buffer,
    resampled, cache_images (keep decoded images in memory when the dataset has at most this many),
    augment (see :class:`AugmentConfig`), device_augment. ``resolution`` is the crop size.

    device_augment: ``true`` -> a :class:`DeviceAugmentStream` on ``device`` (CPU when None; map-style
    sources only); ``false`` -> a :class:`DataStream` (PIL augmentation in loader workers);
    ``auto`` (default) -> the device stream when ``device`` is CUDA, the source is map-style and it
    has at most ``cache_images`` records. Both make the same sample order and crop parameters for a
    given seed, and each resumes from the other's state.
    """
    kind = cfg.get("kind", "photos")
    mode = device_augment_mode(cfg.get("device_augment", "auto"))
    aug_cfg = _augment_config(cfg.get("augment"))
    augment = Augment(resolution, aug_cfg)
    if kind == "wds":
        if mode == "true":
            raise ValueError("data.device_augment=true needs a map-style source (photos, folder, pairs); "
                             "data.kind=wds streams samples through loader workers (use auto or false)")
        if not cfg.get("path"):
            raise ValueError("data.kind=wds needs data.path='<dir>/{000000..000099}.tar'")
        source: Any = WebDatasetSource(
            cfg["path"], augment, seed=seed, rank=rank, world_size=world_size,
            resampled=bool(cfg.get("resampled", True)), shuffle_buffer=int(cfg.get("shuffle_buffer", 1000)),
        )
    else:
        records = build_records(kind, cfg.get("path"), image_key=cfg.get("image_key"),
                                text_key=cfg.get("text_key"),
                                caption_template=cfg.get("caption_template", "a photo of a {}."))
        small = len(records) <= int(cfg.get("cache_images", 0))
        on_cuda = device is not None and torch.device(device).type == "cuda"
        if mode == "true" or (mode == "auto" and on_cuda and small and kind in MAP_KINDS):
            return DeviceAugmentStream(records, resolution, aug_cfg, batch_size, seed=seed, rank=rank,
                                       world_size=world_size, device=device)
        source = RecordDataset(records, augment, seed=seed, cache=small)
    return DataStream(source, batch_size, seed=seed, rank=rank, world_size=world_size,
                      num_workers=int(cfg.get("num_workers", 0)))


def holdout_images(resolution: int, path: str | os.PathLike | None = None,
                   limit: int = 64) -> tuple[torch.Tensor, list[str]]:
    """A fixed evaluation batch: (N, 3, S, S) in [0, 1] and one name per view.

    path None: the built-in held-out photos (:data:`HOLDOUT`); otherwise up to ``limit`` images
    from the folder ``path``. Five views of each image (:data:`HOLDOUT_VIEWS`). Unreadable files
    are skipped.
    """
    images, names = [], []
    if path is None:
        sources = [(ph.name, ph.path) for ph in default_photos("holdout")]
    else:
        sources = [(os.path.splitext(os.path.basename(r.path))[0], r.path) for r in folder_records(path)[:limit]]
    for name, src in sources:
        try:
            img = open_rgb(src)
        except CorruptSample:
            continue
        for v, box in enumerate(HOLDOUT_VIEWS):
            images.append(eval_transform(img, resolution, box))
            names.append(f"{name}#{v}")
    if not images:
        raise FileNotFoundError(f"no readable evaluation images ({path or 'built-in held-out photos'})")
    return torch.stack(images), names
