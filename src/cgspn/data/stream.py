"""Resumable, distributed, infinite batch streams over any data source.

* Map-style sources (photos, folders, pairs) are read in a global order made of consecutive
  seeded permutations ("epochs"); rank ``r`` of ``w`` takes global positions ``r, r+w, ...``.
  A sample's augmentation seed is its global position, so the stream is a pure function of
  (seed, position) whatever the number of workers, and resuming means starting the sampler at
  the consumed position.
* Streaming sources (:class:`~cgspn.data.wds.WebDatasetSource`) resume from per-worker raw
  cursors carried in the batches.

Corrupt samples are skipped (map-style: the next record is used instead, keeping batch shapes
fixed), counted and reported through the batch's ``skipped`` / ``bad`` fields and the stream's
running totals.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import Augment
from .images import CorruptSample, open_rgb
from .records import Record
from .wds import WebDatasetSource

__all__ = ["RecordDataset", "StreamSampler", "collate", "DataStream"]

_MAX_BAD_KEPT = 50


class RecordDataset(Dataset):
    """Augmented samples from a list of :class:`Record` s.

    ``dataset[(index, position)]`` -> ``{"image": (3, S, S) float in [0, 1], "text": str | None,
    "skipped": int, "bad": list[str]}``; ``position`` seeds the augmentation. A record that does
    not decode is replaced by the next one (up to ``max_retries``). ``cache`` keeps decoded images
    in memory (per loader worker), for small datasets such as the built-in photos.
    """

    def __init__(self, records: Sequence[Record], augment: Augment, seed: int = 0, max_retries: int = 64,
                 cache: bool = False) -> None:
        if not records:
            raise ValueError("empty dataset")
        self.records = list(records)
        self.augment = augment
        self.seed = int(seed)
        self.max_retries = max_retries
        self.cache = cache  # keep decoded images in memory (per worker): small datasets, e.g. the photos
        self._decoded: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, position = key
        bad: list[str] = []
        n = len(self.records)
        for k in range(min(self.max_retries, n)):
            rec = self.records[(index + k) % n]
            try:
                img = self._decoded[rec.path] if rec.path in self._decoded else open_rgb(rec.path)
            except CorruptSample as e:
                bad.append(f"{rec.path}: {e}")
                continue
            if self.cache:
                self._decoded[rec.path] = img
            rng = np.random.default_rng([self.seed, position, 5])
            return {"image": self.augment(img, rng), "text": rec.text, "skipped": len(bad), "bad": bad}
        raise ValueError(f"{len(bad)} unreadable images in a row starting at {self.records[index].path}")


class StreamSampler(Sampler):
    """Infinite sampler yielding ``(index, global_position)`` for one rank, from ``start`` on.

    Global position g maps to epoch ``g // n`` and slot ``g % n`` of that epoch's seeded
    permutation (or the identity when ``shuffle`` is off); this rank reads g = rank + world * p
    for p = start, start + 1, ...
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world = int(n), int(seed), int(rank), int(world_size)
        self.start = int(start)
        self.shuffle = shuffle

    def _perm(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch, 6]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start
        cached_epoch, perm = -1, None
        while True:
            g = self.rank + self.world * p
            epoch, i = divmod(g, self.n)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, self._perm(epoch)
            yield int(perm[i]), g
            p += 1

    def __len__(self) -> int:  # DataLoader only needs this for len(loader); the stream is unbounded
        return 2**62


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B, 3, S, S); gather texts; sum skip counts; keep the last worker cursor."""
    out: dict[str, Any] = {
        "images": torch.stack([s["image"] for s in samples]),
        "texts": [s["text"] for s in samples],
        "skipped": int(sum(s["skipped"] for s in samples)),
        "bad": [b for s in samples for b in s["bad"]],
    }
    if "cursor" in samples[-1]:
        out["cursor"] = samples[-1]["cursor"]
    return out


class DataStream:
    """An infinite iterator of batches with a resumable state.

    Batches: ``{"images": (B, 3, S, S) float in [0, 1], "texts": list[str | None], "skipped": int,
    "bad": list[str]}``. ``state_dict()`` after consuming k batches lets a new stream built with the
    same arguments continue with batch k + 1 exactly.
    """

    def __init__(
        self,
        source: RecordDataset | WebDatasetSource,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.source = source
        self.batch_size = int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.num_workers = int(num_workers)
        self.shuffle = shuffle
        self.batches = 0
        self.skipped = 0
        self.bad: list[str] = []
        self.cursors: dict[int, int] = {}

    @property
    def streaming(self) -> bool:
        return isinstance(self.source, WebDatasetSource)

    def describe(self) -> str:
        """One line for the run log: the data path."""
        what = "WebDataset shards" if self.streaming else f"{len(self.source)} records"
        return f"loader with {self.num_workers} workers ({what}, PIL augmentation)"

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "skipped": self.skipped,
            "bad": list(self.bad),
            "cursors": {str(k): v for k, v in self.cursors.items()},
            "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches = int(state.get("batches", 0))
        self.skipped = int(state.get("skipped", 0))
        self.bad = list(state.get("bad", []))
        self.cursors = {int(k): int(v) for k, v in state.get("cursors", {}).items()}
        if self.streaming and int(state.get("num_workers", self.num_workers)) != self.num_workers:
            raise ValueError(
                f"resuming a WebDataset stream needs the same data.num_workers as the interrupted run "
                f"({state.get('num_workers')}), got {self.num_workers}"
            )

    def _loader(self) -> DataLoader:
        kw: dict[str, Any] = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=False,
        )
        if self.num_workers > 0:
            kw.update(persistent_workers=False, prefetch_factor=2)
        if self.streaming:
            self.source.set_start(self.cursors, self.batches % max(1, self.num_workers))
            return DataLoader(self.source, **kw)
        sampler = StreamSampler(
            len(self.source), self.seed, self.rank, self.world_size, start=self.batches * self.batch_size,
            shuffle=self.shuffle,
        )
        return DataLoader(self.source, sampler=sampler, **kw)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._loader():
            self.batches += 1
            self.skipped += batch["skipped"]
            if batch["bad"] and len(self.bad) < _MAX_BAD_KEPT:
                self.bad.extend(batch["bad"][: _MAX_BAD_KEPT - len(self.bad)])
            if "cursor" in batch:
                wid, pos = batch.pop("cursor")
                self.cursors[int(wid)] = int(pos)
            yield batch
