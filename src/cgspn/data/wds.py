"""WebDataset tar shards (img2dataset layout: ``{000000..000099}.tar`` holding ``key.jpg`` +
``key.txt``), streamed with shard shuffling, a sample shuffle buffer and optional resampling.

Determinism: each (rank, worker) slot reads a raw sample stream that is a pure function of the
seed, the shard list and the slot; samples are augmented with a generator seeded by their raw
position. Each yielded sample carries the slot's raw cursor, so a resumed run skips exactly the
raw samples already consumed (without decoding them) and continues bit-identically.

Shards are opened with ``webdataset.gopen`` (local files, ``pipe:`` commands, URLs when the user
allows them) and read as a tar stream; unreadable shards, samples without an image, and images
that do not decode are skipped and counted, never fatal.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .augment import Augment
from .images import CorruptSample, open_rgb

__all__ = ["expand_shards", "iter_tar_samples", "WebDatasetSource"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "caption", "text")


def expand_shards(urls: str | list[str]) -> list[str]:
    """Brace-expand ``dir/{000000..000099}.tar`` (``::`` joins several sources) into a list."""
    from webdataset.shardlists import expand_urls

    if isinstance(urls, (list, tuple)):
        out: list[str] = []
        for u in urls:
            out.extend(expand_urls(str(u)))
        return out
    return list(expand_urls(str(urls)))


def _split_name(name: str) -> tuple[str, str]:
    """'dir/abc.seg.jpg' -> ('dir/abc', 'seg.jpg') (webdataset's key/extension convention)."""
    d, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (os.path.join(d, stem) if d else stem), ext.lower()


def iter_tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """Group the files of one tar shard into samples ``{"__key__", "__url__", ext: bytes}``.

    A shard that cannot be opened or ends early yields one ``{"__error__": message}`` item.
    """
    from webdataset import gopen

    current: dict[str, Any] | None = None
    try:
        stream = gopen(url, "rb")
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                f = tf.extractfile(member)
                data = f.read() if f is not None else b""
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": url}
                current[ext] = data
        if current is not None:
            yield current
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if current is not None:
            yield current
        yield {"__error__": f"{url}: {type(e).__name__}: {e}", "__url__": url, "__key__": ""}


def _caption(sample: dict[str, Any]) -> str | None:
    for ext in TEXT_EXTS:
        if ext in sample:
            return bytes(sample[ext]).decode("utf-8", errors="replace").strip()
    if "json" in sample:
        import json

        try:
            meta = json.loads(sample["json"])
        except ValueError:
            return None
        if isinstance(meta, dict):
            for k in ("caption", "text", "title"):
                if isinstance(meta.get(k), str):
                    return meta[k]
    return None


class WebDatasetSource(IterableDataset):
    """Infinite stream of augmented samples from tar shards.

    Each item: ``{"image": (3, S, S) float in [0, 1], "text": str | None, "skipped": int,
    "bad": list[str], "cursor": (worker_id, raw_position_after_this_sample)}``.

    resampled: each epoch every slot draws shards with replacement (webdataset's resampling);
    otherwise each epoch is a seeded permutation of the shards split over the slots (or, with
    fewer shards than slots, every slot reads all shards and keeps every ``slots``-th sample).
    """

    def __init__(
        self,
        urls: str | list[str],
        augment: Augment,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resampled: bool = True,
        shuffle_buffer: int = 1000,
        max_bad_per_item: int = 1000,
    ) -> None:
        super().__init__()
        self.urls = expand_shards(urls)
        if not self.urls:
            raise ValueError(f"no shards in {urls!r}")
        local = [u for u in self.urls if "://" not in u and not u.startswith("pipe:")]
        if local and not any(Path(u).is_file() for u in local):
            raise FileNotFoundError(f"no shard files found for {urls!r} (first: {local[0]})")
        self.augment = augment
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.resampled = bool(resampled)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.max_bad_per_item = max_bad_per_item
        self.start_cursors: dict[int, int] = {}
        self.worker_offset = 0

    def set_start(self, cursors: dict[int, int], worker_offset: int = 0) -> None:
        """Resume: raw positions per (logical) worker id, and which logical worker produces the
        next batch (the DataLoader always starts its round-robin at worker 0, so worker ``i`` of the
        new loader plays logical worker ``(i + worker_offset) % num_workers``)."""
        self.start_cursors = {int(k): int(v) for k, v in cursors.items()}
        self.worker_offset = int(worker_offset)

    def _raw(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        n = len(self.urls)
        epoch = 0
        while True:
            produced = 0
            if self.resampled:
                rng = np.random.default_rng([self.seed, epoch, slot, 1])
                mine = [self.urls[i] for i in rng.integers(0, n, size=max(1, n // slots))]
                keep: Callable[[int], bool] = lambda i: True  # noqa: E731
            else:
                perm = np.random.default_rng([self.seed, epoch, 2]).permutation(n)
                if n >= slots:
                    mine = [self.urls[i] for i in perm[slot::slots]]
                    keep = lambda i: True  # noqa: E731
                else:
                    mine = [self.urls[i] for i in perm]
                    keep = lambda i: i % slots == slot  # noqa: E731
            counter = 0
            for url in mine:
                for s in iter_tar_samples(url):
                    if keep(counter):
                        produced += 1
                        yield s
                    counter += 1
            if produced == 0:
                raise ValueError(f"shards {self.urls[0]}... yielded no samples for loader slot {slot}")
            epoch += 1

    def _shuffled(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, slot, 3])
        buf: list[dict[str, Any]] = []
        for s in self._raw(slot, slots):
            buf.append(s)
            if len(buf) >= self.shuffle_buffer:
                j = int(rng.integers(0, len(buf)))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        wid = (wid + self.worker_offset) % nworkers
        slot, slots = self.rank * nworkers + wid, self.world_size * nworkers
        pos = 0
        start = self.start_cursors.get(wid, 0)
        skipped, bad = 0, []
        for raw in self._shuffled(slot, slots):
            pos += 1
            if pos <= start:
                continue
            if "__error__" in raw:
                skipped += 1
                bad.append(raw["__error__"])
                continue
            ext = next((e for e in IMAGE_EXTS if e in raw), None)
            try:
                if ext is None:
                    raise CorruptSample("no image in sample")
                img = open_rgb(raw[ext])
            except CorruptSample as e:
                skipped += 1
                bad.append(f"{raw['__url__']}:{raw['__key__']}: {e}")
                if skipped > self.max_bad_per_item:
                    raise ValueError(f"more than {self.max_bad_per_item} corrupt samples in a row in {raw['__url__']}")
                continue
            rng = np.random.default_rng([self.seed, slot, pos, 4])
            image = self.augment(img, rng)
            yield {"image": image, "text": _caption(raw), "skipped": skipped, "bad": bad, "cursor": (wid, pos)}
            skipped, bad = 0, []
