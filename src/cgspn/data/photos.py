"""The built-in default set of real photos, found inside installed packages (no download).

Sources, each optional: scikit-image's bundled sample photos (``skimage/data``), matplotlib's
``grace_hopper.jpg``, scikit-learn's ``china.jpg`` / ``flower.jpg``, and Debian's desktop
background photos (``/usr/share/backgrounds``). Files are located with ``importlib.util.find_spec``
so none of these packages is imported. A fixed subset is held out for evaluation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Photo", "default_photos", "export_photos", "HOLDOUT", "BACKGROUND_DIRS"]

# file name in skimage/data -> caption
_SKIMAGE = {
    "astronaut.png": "a photo of an astronaut",
    "chelsea.png": "a photo of a cat",
    "coffee.png": "a photo of a cup of coffee",
    "rocket.jpg": "a photo of a rocket on a launch pad",
    "hubble_deep_field.jpg": "a photo of galaxies in deep space",
    "retina.jpg": "a photo of a retina",
    "motorcycle_left.png": "a photo of a motorcycle",
    "motorcycle_right.png": "a photo of a motorcycle",
    "ihc.png": "a microscope photo of stained tissue",
    "camera.png": "a black and white photo of a cameraman",
    "coins.png": "a black and white photo of coins",
    "moon.png": "a black and white photo of the moon",
    "brick.png": "a black and white photo of a brick wall",
    "grass.png": "a black and white photo of grass",
    "gravel.png": "a black and white photo of gravel",
    "cell.png": "a microscope photo of a cell",
    "clock_motion.png": "a black and white photo of a clock",
}
_SKLEARN = {"china.jpg": "a photo of a chinese temple", "flower.jpg": "a photo of a flower"}
BACKGROUND_DIRS = ("/usr/share/backgrounds",)
# held out from training, used for the before/after fidelity report
HOLDOUT = ("grace_hopper", "coffee", "rocket", "coins")


@dataclass(frozen=True)
class Photo:
    name: str
    path: Path
    caption: str

    @property
    def holdout(self) -> bool:
        return self.name in HOLDOUT


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_photos(split: str = "all", backgrounds: bool = True) -> list[Photo]:
    """Real photos available offline, sorted by name.

    split: "all", "train" (not held out) or "holdout" (:data:`HOLDOUT`).
    backgrounds: include Debian background photos when present.
    """
    if split not in ("all", "train", "holdout"):
        raise ValueError(f"split must be all/train/holdout, got {split!r}")
    photos: list[Photo] = []
    d = _package_dir("skimage")
    if d is not None:
        for fname, cap in _SKIMAGE.items():
            p = d / "data" / fname
            if p.is_file():
                photos.append(Photo(Path(fname).stem, p, cap))
    d = _package_dir("matplotlib")
    if d is not None:
        p = d / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            photos.append(Photo("grace_hopper", p, "a photo of a woman in a navy uniform"))
    d = _package_dir("sklearn")
    if d is not None:
        for fname, cap in _SKLEARN.items():
            p = d / "datasets" / "images" / fname
            if p.is_file():
                photos.append(Photo(Path(fname).stem, p, cap))
    if backgrounds:
        for root in BACKGROUND_DIRS:
            r = Path(root)
            if not r.is_dir():
                continue
            for p in sorted(r.rglob("*")):
                if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file():
                    photos.append(Photo(f"bg_{p.parent.name}_{p.stem}", p, "a landscape photo"))
    photos.sort(key=lambda ph: ph.name)
    if split == "train":
        photos = [p for p in photos if not p.holdout]
    elif split == "holdout":
        photos = [p for p in photos if p.holdout]
    if not photos:
        raise FileNotFoundError(
            "no built-in photos found: install scikit-image and matplotlib (pip install 'cgspn[train]') "
            "or pass data.kind=folder data.path=<dir>"
        )
    return photos


def export_photos(dest: str | Path, backgrounds: bool = False) -> tuple[Path, Path]:
    """Copy the built-in photos into ``dest/train`` and ``dest/holdout`` (image folders), for
    machines where the source packages are not installed. Returns the two directories."""
    import shutil

    dest = Path(dest)
    dirs = {"train": dest / "train", "holdout": dest / "holdout"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for ph in default_photos("all", backgrounds=backgrounds):
        shutil.copyfile(ph.path, dirs["holdout" if ph.holdout else "train"] / f"{ph.name}{ph.path.suffix.lower()}")
    return dirs["train"], dirs["holdout"]
