"""Augmentation that makes a few real photos go a long way (random resized crops, flips, colour
jitter, greyscale), driven by an explicit ``numpy.random.Generator`` so that every sample's
augmentation is a pure function of its seed: runs are reproducible, resumable and independent
of the number of loader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

__all__ = ["AugmentConfig", "Augment", "eval_transform", "to_tensor"]


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


@dataclass
class AugmentConfig:
    """scale/ratio: RandomResizedCrop area fraction and aspect range; hflip: flip probability;
    jitter: strength of brightness/contrast/saturation changes (factor in [1-j, 1+j]), applied with
    probability ``jitter_p``; hue: max hue shift as a fraction of the colour wheel; grayscale: probability."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    jitter: float = 0.4
    jitter_p: float = 0.8
    hue: float = 0.1
    grayscale: float = 0.1


class Augment:
    """Random resized crop to ``size`` x ``size`` plus photometric jitter.

    __call__(img: PIL RGB, rng) -> (3, size, size) float tensor in [0, 1].
    """

    def __init__(self, size: int, cfg: AugmentConfig | None = None) -> None:
        self.size = int(size)
        self.cfg = cfg or AugmentConfig()

    def crop_box(self, w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """torchvision's RandomResizedCrop sampling: (left, top, right, bottom) in pixels."""
        area = w * h
        lo, hi = math.log(self.cfg.ratio[0]), math.log(self.cfg.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(self.cfg.scale[0], self.cfg.scale[1])
            ar = math.exp(rng.uniform(lo, hi))
            cw = math.sqrt(target * ar)
            ch = math.sqrt(target / ar)
            if 1 <= cw <= w and 1 <= ch <= h:
                x0 = rng.uniform(0, w - cw)
                y0 = rng.uniform(0, h - ch)
                return x0, y0, x0 + cw, y0 + ch
        # fallback: central crop with the ratio clamped to the allowed range
        in_ratio = w / h
        if in_ratio < self.cfg.ratio[0]:
            cw, ch = w, w / self.cfg.ratio[0]
        elif in_ratio > self.cfg.ratio[1]:
            ch, cw = h, h * self.cfg.ratio[1]
        else:
            cw, ch = w, h
        x0, y0 = (w - cw) / 2, (h - ch) / 2
        return x0, y0, x0 + cw, y0 + ch

    def _jitter(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        j = self.cfg.jitter
        ops = rng.permutation(4)
        factors = rng.uniform(max(0.0, 1 - j), 1 + j, size=3)
        hue = rng.uniform(-self.cfg.hue, self.cfg.hue)
        for op in ops:
            if op == 0:
                img = ImageEnhance.Brightness(img).enhance(float(factors[0]))
            elif op == 1:
                img = ImageEnhance.Contrast(img).enhance(float(factors[1]))
            elif op == 2:
                img = ImageEnhance.Color(img).enhance(float(factors[2]))
            elif self.cfg.hue > 0:
                hsv = np.array(img.convert("HSV"), dtype=np.uint8)
                hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(hue * 255))) % 256
                img = Image.fromarray(hsv, "HSV").convert("RGB")
        return img

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        box = self.crop_box(img.width, img.height, rng)
        out = img.resize((self.size, self.size), Image.BICUBIC, box=box)
        if rng.random() < self.cfg.hflip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        if self.cfg.jitter > 0 and rng.random() < self.cfg.jitter_p:
            out = self._jitter(out, rng)
        if rng.random() < self.cfg.grayscale:
            out = out.convert("L").convert("RGB")
        return to_tensor(out)


def eval_transform(img: Image.Image, size: int, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """Deterministic view: the region ``box`` (fractions l, t, r, b of the image; default the
    central square) resized to ``size`` x ``size``. Returns (3, size, size) in [0, 1]."""
    w, h = img.size
    if box is None:
        s = min(w, h)
        px = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    else:
        px = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    return to_tensor(img.resize((size, size), Image.BICUBIC, box=px))
