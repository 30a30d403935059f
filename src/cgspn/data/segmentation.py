"""Semantic-segmentation folders in the ADE20K layout, and the shipped tiny real example.

Layout (ADEChallengeData2016)::

    root/images/<split>/<name>.jpg        RGB photos (any image extension)
    root/annotations/<split>/<name>.png   uint8 label maps, same size as the photo

ADE20K convention: annotation value 0 is "other / unlabelled" and 1..150 are the classes. With
``reduce_zero_label=True`` (the mmseg default for ADE20K) labels become ``value - 1`` and 0 becomes
the ignore index 255, so a 150-class head predicts 0..149. ``root/meta.json`` may hold
``{"classes": [...], "reduce_zero_label": bool}``; it overrides the defaults.

:func:`build_quokka_example` writes such a folder from files already on the machine: imgaug 0.4.0's
``quokka.jpg`` with its polygon annotation (rasterised) as the validation image, and package photos
with the teacher's saliency pseudo-masks (confident foreground / background, unsure pixels
unlabelled) as the training images. Two classes: background, foreground.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "IGNORE_INDEX",
    "ADE20K_NUM_CLASSES",
    "SegmentationFolder",
    "imgaug_quokka_files",
    "quokka_mask",
    "pseudo_mask",
    "build_quokka_example",
]

IGNORE_INDEX = 255
ADE20K_NUM_CLASSES = 150
_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class _Pair:
    name: str
    image: Path
    annotation: Path


class SegmentationFolder:
    """``ds[i] -> (PIL RGB image, labels int64 (H, W))`` for one split of an ADE20K-layout folder.

    ``labels`` use ``0..num_classes-1`` and ``IGNORE_INDEX`` (255). ``num_classes`` defaults to the
    length of ``meta.json``'s class list, else 150. Errors are one line: missing folders, images
    without annotations (or the reverse), unreadable files, size mismatches, labels out of range.
    """

    def __init__(self, root: str | os.PathLike, split: str = "validation", reduce_zero_label: bool | None = None,
                 num_classes: int | None = None, limit: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"segmentation dataset folder not found: {self.root}")
        meta_path = self.root / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.classes: list[str] | None = meta.get("classes")
        self.reduce_zero_label = bool(meta.get("reduce_zero_label", True)) if reduce_zero_label is None else reduce_zero_label
        self.num_classes = int(num_classes or (len(self.classes) if self.classes else ADE20K_NUM_CLASSES))
        self.split = split
        img_dir, ann_dir = self.root / "images" / split, self.root / "annotations" / split
        for d in (img_dir, ann_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"expected ADE20K layout {self.root}/images/{split}/ and {self.root}/annotations/{split}/; missing {d}")
        images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in _IMG_EXT}
        anns = {p.stem: p for p in sorted(ann_dir.iterdir()) if p.suffix.lower() == ".png"}
        if not images:
            raise ValueError(f"no images in {img_dir}")
        lonely = sorted(set(images) - set(anns))
        if lonely:
            raise ValueError(f"{len(lonely)} image(s) in {img_dir} have no annotation PNG in {ann_dir} (e.g. {lonely[0]})")
        self.pairs = [_Pair(n, images[n], anns[n]) for n in sorted(images)]
        if limit is not None:
            self.pairs = self.pairs[:limit]

    def __len__(self) -> int:
        return len(self.pairs)

    def names(self) -> list[str]:
        return [p.name for p in self.pairs]

    def load_labels(self, i: int) -> np.ndarray:
        """Labels of item ``i``: int64 ``(H, W)`` in ``[0, K) ∪ {255}``."""
        pair = self.pairs[i]
        try:
            with Image.open(pair.annotation) as im:
                if im.mode not in ("L", "P", "I", "I;16"):
                    raise ValueError(f"annotation must be a single-channel label PNG, got mode {im.mode}")
                arr = np.asarray(im).astype(np.int64)
        except (OSError, SyntaxError) as e:
            raise ValueError(f"cannot read annotation {pair.annotation}: {e}") from None
        except ValueError as e:
            raise ValueError(f"{pair.annotation}: {e}") from None
        if self.reduce_zero_label:
            arr = np.where(arr == 0, IGNORE_INDEX, arr - 1)
            arr[arr == IGNORE_INDEX - 1] = IGNORE_INDEX  # value 255 stays ignored after the shift
        bad = (arr != IGNORE_INDEX) & ((arr < 0) | (arr >= self.num_classes))
        if bad.any():
            raise ValueError(f"{pair.annotation}: label {int(arr[bad][0])} outside [0, {self.num_classes}) (reduce_zero_label={self.reduce_zero_label})")
        return arr

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        from cgspn.eval.images import load_image

        img = load_image(self.pairs[i].image)
        labels = self.load_labels(i)
        if labels.shape != (img.height, img.width):
            raise ValueError(f"{self.pairs[i].name}: annotation is {labels.shape[1]}x{labels.shape[0]} but the image is {img.width}x{img.height}")
        return img, labels


def imgaug_quokka_files() -> tuple[Path, Path]:
    """``(quokka.jpg, quokka_annotations.json)``: the copies shipped in ``cgspn/assets/quokka``
    (from imgaug 0.4.0, MIT), else an installed imgaug 0.4.0, found without importing it (imgaug
    does not import under NumPy 2)."""
    shipped = Path(__file__).resolve().parent.parent / "assets" / "quokka"
    if (shipped / "quokka.jpg").is_file() and (shipped / "quokka_annotations.json").is_file():
        return shipped / "quokka.jpg", shipped / "quokka_annotations.json"
    spec = importlib.util.find_spec("imgaug")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the quokka example reads imgaug's bundled files: pip install --no-deps imgaug==0.4.0")
    d = Path(spec.origin).parent
    jpg, ann = d / "quokka.jpg", d / "quokka_annotations.json"
    for f in (jpg, ann):
        if not f.is_file():
            raise FileNotFoundError(f"{f.name} is missing from the installed imgaug ({d}); reinstall imgaug==0.4.0")
    return jpg, ann


def quokka_mask(annotation_json: str | os.PathLike, size_wh: tuple[int, int]) -> np.ndarray:
    """Rasterise the quokka polygon(s) to a bool ``(H, W)`` mask at ``size_wh`` = (W, H)."""
    ann = json.loads(Path(annotation_json).read_text())
    polys = ann.get("polygons") or []
    if not polys:
        raise ValueError(f"no polygons in {annotation_json}")
    canvas = Image.new("L", size_wh, 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polys:
        pts = [(float(k["x"]), float(k["y"])) for k in poly["keypoints"]]
        draw.polygon(pts, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def pseudo_mask(saliency: np.ndarray, low: float = 0.3, high: float = 0.6) -> np.ndarray:
    """ADE-style annotation from a saliency map ``(H, W)`` in [0, 1]: 2 = foreground (> ``high``),
    1 = background (< ``low``), 0 = unsure (ignored after zero-label reduction). uint8 ``(H, W)``."""
    out = np.zeros(saliency.shape, dtype=np.uint8)
    out[saliency < low] = 1
    out[saliency > high] = 2
    return out


def build_quokka_example(
    root: str | os.PathLike,
    saliency_fn: Callable[[Image.Image], np.ndarray],
    train_photos: Sequence[str | os.PathLike],
    max_side: int = 640,
) -> Path:
    """Write the tiny example to ``root`` (ADE layout, 2 classes) and return ``root``.

    ``saliency_fn``: PIL image -> saliency ``(H, W)`` in [0, 1] at the image's size (the teacher's
    img-focus map); ``train_photos``: photos to pseudo-label for training. Images are stored with
    the longer side at most ``max_side``. Validation holds the quokka with its hand-drawn polygon.
    """
    from cgspn.eval.images import load_image

    root = Path(root)
    for sub in ("images/training", "annotations/training", "images/validation", "annotations/validation"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def shrink(img: Image.Image) -> Image.Image:
        s = max_side / max(img.size)
        return img if s >= 1 else img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)

    written = []
    for p in train_photos:
        img = shrink(load_image(p))
        name = Path(p).stem
        img.save(root / "images/training" / f"{name}.jpg", quality=92)
        Image.fromarray(pseudo_mask(saliency_fn(img))).save(root / "annotations/training" / f"{name}.png")
        written.append(name)
    jpg, ann = imgaug_quokka_files()
    q = load_image(jpg)
    mask = quokka_mask(ann, q.size)
    q2 = shrink(q)
    m2 = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(q2.size, Image.NEAREST), dtype=bool)
    q2.save(root / "images/validation/quokka.jpg", quality=95)
    Image.fromarray(np.where(m2, 2, 1).astype(np.uint8)).save(root / "annotations/validation/quokka.png")
    meta = {
        "classes": ["background", "foreground"],
        "reduce_zero_label": True,
        "source": "training: package photos with img-focus teacher saliency pseudo-masks (>0.6 fg, <0.3 bg, else ignored); "
                  "validation: imgaug 0.4.0 quokka.jpg with its polygon annotation",
        "training_images": written,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2))
    return root
