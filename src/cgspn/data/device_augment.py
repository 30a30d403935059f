"""Device-side augmentation for small map-style datasets (the built-in photos, small folders).

The PIL loader path decodes and augments every sample on the CPU, which caps a fast accelerator
at a few hundred images per second however small the dataset is. :class:`DeviceAugmentStream`
decodes every record once, keeps the images on the device as uint8 mip pyramids and makes each
batch there: random resized crops (one batched bilinear ``grid_sample`` from the pyramid level
where the downscale is at most 2x), horizontal flips, colour jitter and greyscale, all batched.

It is a drop-in replacement for :class:`~cgspn.data.stream.DataStream` over the same records:

* the global sample order is :class:`~cgspn.data.stream.StreamSampler`'s (seeded epoch
  permutations, rank ``r`` of ``w`` takes positions ``r, r + w, ...``), so ranks are disjoint;
* a sample's parameters come from ``np.random.default_rng([seed, position, 5])`` in the same draw
  order as :class:`~cgspn.data.augment.Augment`, so the crop boxes, flips and jitter factors are
  exactly those of the PIL path (only the resampling and the hue algorithm differ);
* the stream is a pure function of (seed, position): ``state_dict()`` after k batches lets a new
  stream continue with batch k + 1 exactly;
* corrupt records are replaced by the next readable one and reported through ``skipped`` /
  ``bad`` every time they are drawn, as :class:`~cgspn.data.stream.RecordDataset` does.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import Augment, AugmentConfig
from .images import CorruptSample, open_rgb
from .records import Record
from .stream import StreamSampler

__all__ = ["DeviceAugmentStream", "LUMA", "hue_matrix"]

_MAX_BAD_KEPT = 50
# ITU-R 601-2 luma, as PIL's convert("L") (used by ImageEnhance.Color / Contrast and greyscale)
LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ (FCC); hue rotation acts on the (I, Q) chroma plane
_RGB2YIQ = np.array([[0.299, 0.587, 0.114],
                     [0.595716, -0.274453, -0.321263],
                     [0.211456, -0.522591, 0.311135]], dtype=np.float64)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def hue_matrix(shift: np.ndarray) -> np.ndarray:
    """(N,) hue shifts as fractions of the colour wheel -> (N, 3, 3) RGB matrices.

    A rotation of the YIQ chroma plane that keeps luma; positive shifts go red -> yellow -> green
    like PIL's HSV hue (the YIQ hue angle decreases in that direction, hence the minus sign).
    """
    theta = -2.0 * np.pi * np.asarray(shift, dtype=np.float64)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.zeros((len(theta), 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = c, -s
    rot[:, 2, 1], rot[:, 2, 2] = s, c
    return _YIQ2RGB[None] @ rot @ _RGB2YIQ[None]


class DeviceAugmentStream:
    """An infinite, resumable stream of augmented batches made on ``device``.

    Batches: ``{"images": (B, 3, S, S) float32 in [0, 1] on device, "texts": list[str | None],
    "skipped": int, "bad": list[str]}``. Attributes ``batches``, ``skipped``, ``bad`` and
    ``streaming`` (False) and the state dict keys are those of
    :class:`~cgspn.data.stream.DataStream`; setting ``stream.batches = k`` before iterating
    starts at batch k + 1.

    records: the map-style dataset; size: crop size S; augment_cfg: the augmentation
    (:class:`AugmentConfig`); batch_size: B per rank. Every record is decoded once in the
    constructor; each readable image is stored as uint8 (3, H, W) plus antialiased halvings
    until the longer side is at most 2 S, so that crops never downscale by more than 2x.
    Raises ValueError when no record is readable.
    """

    streaming = False
    chunk = 64  # crops sampled per grid_sample call (bounds the padded region buffer)

    def __init__(
        self,
        records: Sequence[Record],
        size: int,
        augment_cfg: AugmentConfig | None,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if not records:
            raise ValueError("empty dataset")
        self.records = list(records)
        self.size = int(size)
        self.cfg = augment_cfg or AugmentConfig()
        self.augment = Augment(self.size, self.cfg)  # for crop_box: the same sampling as the PIL path
        self.batch_size = int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_workers = 0
        self.batches = 0
        self.skipped = 0
        self.bad: list[str] = []
        # decode everything once; pyramids[k] is None for an unreadable record
        self.pyramids: list[list[torch.Tensor] | None] = []
        self.decode_errors: dict[int, str] = {}
        for i, rec in enumerate(self.records):
            try:
                img = open_rgb(rec.path)
            except CorruptSample as e:
                self.decode_errors[i] = f"{rec.path}: {e}"
                self.pyramids.append(None)
                continue
            arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
            self.pyramids.append(self._pyramid(arr.to(self.device).contiguous()))
        n = len(self.records)
        if len(self.decode_errors) == n:
            first = next(iter(self.decode_errors.values()))
            raise ValueError(f"none of the {n} images is readable (first error: {first})")
        # index -> (readable index used instead, messages of the unreadable ones skipped on the way),
        # the replacement rule of RecordDataset (next record, cyclically)
        self._resolve: list[tuple[int, list[str]]] = []
        for i in range(n):
            bad: list[str] = []
            k = i
            while self.pyramids[k] is None:
                bad.append(self.decode_errors[k])
                k = (k + 1) % n
            self._resolve.append((k, bad))

    # ------------------------------------------------------------------ storage

    def _pyramid(self, img: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (3, H, W) -> [level 0, level 1, ...]: antialiased halvings (floor sizes) while the
        longer side exceeds 2 S and the shorter stays at least 4 px."""
        levels = [img]
        while max(levels[-1].shape[1:]) > 2 * self.size and min(levels[-1].shape[1:]) >= 8:
            h, w = levels[-1].shape[1:]
            x = levels[-1][None].float()
            x = F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=False, antialias=True)
            levels.append(x[0].round_().clamp_(0, 255).to(torch.uint8).contiguous())
        return levels

    @property
    def num_images(self) -> int:
        """Readable images held on the device."""
        return sum(p is not None for p in self.pyramids)

    def nbytes(self) -> int:
        """Device memory of the stored pyramids, in bytes."""
        return sum(lv.numel() for p in self.pyramids if p is not None for lv in p)

    def describe(self) -> str:
        """One line for the run log: the data path and its size."""
        depths = [len(p) for p in self.pyramids if p is not None]
        return (f"device augmentation on {self.device} ({self.num_images} images, pyramid levels "
                f"{min(depths)}-{max(depths)}, {self.nbytes() / 2**20:.1f} MiB)")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "skipped": self.skipped,
            "bad": list(self.bad),
            "cursors": {},
            "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accepts the state of a DeviceAugmentStream or of a map-style DataStream."""
        self.batches = int(state.get("batches", 0))
        self.skipped = int(state.get("skipped", 0))
        self.bad = list(state.get("bad", []))

    # ------------------------------------------------------------------ sampling

    def _params(self, index: int, position: int) -> dict[str, Any]:
        """Parameters of one sample, drawn in :class:`Augment`'s order from its position's seed."""
        k, bad = self._resolve[index]
        lv0 = self.pyramids[k][0]  # type: ignore[index]
        h, w = int(lv0.shape[1]), int(lv0.shape[2])
        rng = np.random.default_rng([self.seed, position, 5])
        cfg = self.cfg
        box = self.augment.crop_box(w, h, rng)
        flip = bool(rng.random() < cfg.hflip)
        jitter = None
        if cfg.jitter > 0 and rng.random() < cfg.jitter_p:
            j = cfg.jitter
            ops = rng.permutation(4)
            factors = rng.uniform(max(0.0, 1 - j), 1 + j, size=3)
            hue = float(rng.uniform(-cfg.hue, cfg.hue))  # drawn even when unused, as Augment does
            if cfg.hue <= 0:
                hue = 0.0
            jitter = (ops, factors, hue)
        grey = bool(rng.random() < cfg.grayscale)
        return {"record": k, "box": box, "flip": flip, "jitter": jitter, "grey": grey, "bad": bad}

    def _crops(self, params: list[dict[str, Any]]) -> torch.Tensor:
        """Random resized crops, flipped where asked: (B, 3, S, S) float in [0, 1].

        Each sample's region of interest (its crop box plus a 1 px margin, at the pyramid level
        where the box shrinks by at most 2x) is copied into one zero-padded uint8 buffer
        (B, 3, Ph, Pw); one bilinear ``grid_sample`` then samples all crops, with the sampling
        points clamped into each region (PIL's edge handling).
        """
        S, B = self.size, len(params)
        rows = []  # per sample: level origin in region pixels and step, region size
        regions = []
        for p in params:
            levels = self.pyramids[p["record"]]
            h0, w0 = levels[0].shape[1:]
            x0, y0, x1, y1 = p["box"]
            f = max(x1 - x0, y1 - y0) / S  # downscale factor at level 0
            li = 0
            while li + 1 < len(levels) and f * levels[li].shape[2] / w0 > 2.0:
                li += 1
            lv = levels[li]
            hl, wl = lv.shape[1:]
            sx, sy = wl / w0, hl / h0
            X0, X1, Y0, Y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
            rx0, ry0 = max(0, math.floor(X0) - 1), max(0, math.floor(Y0) - 1)
            rx1, ry1 = min(wl, math.ceil(X1) + 1), min(hl, math.ceil(Y1) + 1)
            regions.append(lv[:, ry0:ry1, rx0:rx1])
            # pixel-centre coordinate of output column i (row j) inside the region:
            #   X0 + (i + 0.5) * (X1 - X0) / S - 0.5 - rx0
            rows.append((X0 - rx0 + 0.5 * (X1 - X0) / S - 0.5, (X1 - X0) / S,
                         Y0 - ry0 + 0.5 * (Y1 - Y0) / S - 0.5, (Y1 - Y0) / S,
                         rx1 - rx0, ry1 - ry0, 1.0 if p["flip"] else 0.0))
        ph = max(r.shape[1] for r in regions)
        pw = max(r.shape[2] for r in regions)
        buf = torch.zeros((B, 3, ph, pw), dtype=torch.uint8, device=self.device)
        for b, r in enumerate(regions):
            buf[b, :, : r.shape[1], : r.shape[2]].copy_(r)
        t = torch.tensor(rows, dtype=torch.float64).to(self.device)  # (B, 7)
        ax, dx, ay, dy, rw, rh, flip = t.unbind(1)
        i = torch.arange(S, device=self.device, dtype=torch.float64)
        col = torch.where(flip[:, None] > 0, S - 1 - i[None], i[None])  # (B, S): hflip of the output
        cx = (ax[:, None] + col * dx[:, None]).clamp(min=0).minimum(rw[:, None] - 1)
        cy = (ay[:, None] + i[None] * dy[:, None]).clamp(min=0).minimum(rh[:, None] - 1)
        gx = ((2 * cx + 1) / pw - 1).float()  # align_corners=False normalisation
        gy = ((2 * cy + 1) / ph - 1).float()
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, S, S, 2)
        out = F.grid_sample(buf.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.mul_(1.0 / 255.0).clamp_(0.0, 1.0)

    def _photometric(self, x: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
        """Colour jitter (per-sample factors and op order) and greyscale on (B, 3, S, S) in [0, 1].

        Every op is a per-sample affine colour map ``x -> M x + c`` (brightness: f I; contrast:
        f I with c = (1 - f) * mean luma; saturation: f I + (1 - f) 1 luma^T; hue: a YIQ rotation),
        so step k of the random order applies each sample's k-th op as one batched (B, 3, 3)
        matrix, clamping to [0, 1] after each op as PIL does.
        """
        B = len(params)
        jit = [b for b, p in enumerate(params) if p["jitter"] is not None]
        grey = [b for b, p in enumerate(params) if p["grey"]]
        if not jit and not grey:
            return x
        luma = np.asarray(LUMA, dtype=np.float64)
        ones_luma = np.outer(np.ones(3), luma)  # grey(x) broadcast to 3 channels
        eye = np.eye(3)
        if jit:
            mats = np.tile(eye, (4, B, 1, 1))  # (step, B, 3, 3)
            contrast = np.zeros((4, B))  # contrast factor per step (0: no contrast op) -> bias from the mean
            is_contrast = np.zeros((4, B), dtype=bool)
            for b in jit:
                ops, factors, hue = params[b]["jitter"]
                hm = hue_matrix(np.array([hue]))[0]
                for k, op in enumerate(ops):
                    if op == 0:
                        mats[k, b] = factors[0] * eye
                    elif op == 1:
                        mats[k, b] = factors[1] * eye
                        contrast[k, b] = factors[1]
                        is_contrast[k, b] = True
                    elif op == 2:
                        mats[k, b] = factors[2] * eye + (1 - factors[2]) * ones_luma
                    else:
                        mats[k, b] = hm
            m = torch.from_numpy(mats).float().to(self.device)
            cf = torch.from_numpy(contrast).float().to(self.device)
            cmask = torch.from_numpy(is_contrast).to(self.device)
            lw = torch.tensor(LUMA, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
            for k in range(4):
                y = torch.einsum("bij,bjhw->bihw", m[k], x)
                if is_contrast[k].any():
                    mean = (x * lw).sum(1).mean((1, 2))  # (B,) mean luma of the input of this op
                    bias = torch.where(cmask[k], (1 - cf[k]) * mean, torch.zeros_like(mean))
                    y = y + bias.view(B, 1, 1, 1)
                x = y.clamp_(0.0, 1.0)
        if grey:
            g = torch.zeros(B, dtype=torch.bool)
            g[grey] = True
            g = g.to(self.device).view(B, 1, 1, 1)
            lw = torch.tensor(LUMA, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
            y = (x * lw).sum(1, keepdim=True).expand_as(x)
            x = torch.where(g, y, x).clamp_(0.0, 1.0)
        return x

    def make_batch(self, samples: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """The batch of ``(index, global_position)`` pairs (as StreamSampler yields them)."""
        params = [self._params(i, g) for i, g in samples]
        with torch.no_grad():
            crops = [self._crops(params[i: i + self.chunk]) for i in range(0, len(params), self.chunk)]
            images = self._photometric(crops[0] if len(crops) == 1 else torch.cat(crops), params)
        bad = [m for p in params for m in p["bad"]]
        return {
            "images": images.contiguous(),
            "texts": [self.records[p["record"]].text for p in params],
            "skipped": len(bad),
            "bad": bad,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sampler = iter(StreamSampler(len(self.records), self.seed, self.rank, self.world_size,
                                     start=self.batches * self.batch_size))
        while True:
            batch = self.make_batch([next(sampler) for _ in range(self.batch_size)])
            self.batches += 1
            self.skipped += batch["skipped"]
            if batch["bad"] and len(self.bad) < _MAX_BAD_KEPT:
                self.bad.extend(batch["bad"][: _MAX_BAD_KEPT - len(self.bad)])
            yield batch
