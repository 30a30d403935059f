"""Pictures for reports: PCA of patch features as RGB (side by side) and metric-vs-resolution plots.

PCA panels are composed with PIL only (no matplotlib needed for ``cgspn encode --show``);
line plots use matplotlib (Agg backend).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PCABasis", "fit_pca", "pca_rgb", "compose_panels", "save_pca_comparison", "plot_metric_vs_resolution", "overlay_mask"]


@dataclass
class PCABasis:
    """A 3-component PCA of feature vectors with per-component colour ranges.

    ``mean``: ``(C,)``; ``components``: ``(3, C)``; ``lo``/``hi``: ``(3,)`` 1st/99th percentiles
    of the projections of the fitting set (mapped to 0 / 255).
    """

    mean: torch.Tensor
    components: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` -> ``(N, 3)`` raw projections."""
        return (feats.float() - self.mean) @ self.components.T


def _as_tokens(feat_map: torch.Tensor) -> torch.Tensor:
    if feat_map.ndim == 4:
        if feat_map.shape[0] != 1:
            raise ValueError("pass one image's feature map (C, h, w) or (1, C, h, w)")
        feat_map = feat_map[0]
    if feat_map.ndim != 3:
        raise ValueError(f"expected a feature map (C, h, w), got {tuple(feat_map.shape)}")
    return feat_map.flatten(1).T.float().cpu()


def fit_pca(*feat_maps: torch.Tensor, max_tokens: int = 200_000) -> PCABasis:
    """Fit a 3-component PCA on the tokens of one or more feature maps ``(C, h, w)``.

    The first component's sign is fixed so that most tokens project positive (stable colours
    across models fitted separately)."""
    x = torch.cat([_as_tokens(f) for f in feat_maps], 0)
    if x.shape[0] > max_tokens:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:max_tokens]]
    mean = x.mean(0)
    xc = x - mean
    # Covariance eigenvectors: C x C, cheap for C <= a few thousand, exact and deterministic.
    cov = xc.T.double() @ xc.double() / max(1, xc.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    comps = evecs[:, -3:].flip(-1).T.float()  # (3, C), largest first
    proj = xc @ comps.T
    signs = torch.where((proj > 0).float().mean(0) >= 0.5, 1.0, -1.0)
    comps = comps * signs[:, None]
    proj = proj * signs
    lo = torch.quantile(proj, 0.01, dim=0) if proj.shape[0] > 1 else proj.min(0).values
    hi = torch.quantile(proj, 0.99, dim=0) if proj.shape[0] > 1 else proj.max(0).values + 1
    return PCABasis(mean=mean, components=comps, lo=lo, hi=hi)


def pca_rgb(feat_map: torch.Tensor, basis: PCABasis | None = None) -> np.ndarray:
    """A feature map ``(C, h, w)`` -> ``(h, w, 3)`` uint8 image of its first 3 PCA components
    (``basis`` fitted on this map when not given)."""
    basis = basis or fit_pca(feat_map)
    c, h, w = (feat_map[0] if feat_map.ndim == 4 else feat_map).shape
    proj = basis.project(_as_tokens(feat_map))
    rgb = (proj - basis.lo) / (basis.hi - basis.lo).clamp_min(1e-6)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).reshape(h, w, 3).numpy()


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def compose_panels(panels: Sequence[tuple[str, np.ndarray | Image.Image]], height: int = 384, pad: int = 8) -> Image.Image:
    """Panels side by side at a common height (nearest-neighbour for small maps, so patches stay
    visible), each with its title above. ``panels``: ``(title, HxWx3 uint8 array or PIL image)``."""
    ims = []
    for title, im in panels:
        im = Image.fromarray(im) if isinstance(im, np.ndarray) else im.convert("RGB")
        w = max(1, round(im.width * height / im.height))
        resample = Image.NEAREST if im.height < height / 2 else Image.BICUBIC
        ims.append((title, im.resize((w, height), resample)))
    font = _font(16)
    title_h = 24
    total_w = sum(im.width for _, im in ims) + pad * (len(ims) + 1)
    canvas = Image.new("RGB", (total_w, height + title_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for title, im in ims:
        draw.text((x, pad), title, fill=(0, 0, 0), font=font)
        canvas.paste(im, (x, pad + title_h))
        x += im.width + pad
    return canvas


def save_pca_comparison(
    path: str | os.PathLike,
    image: Image.Image,
    maps: Sequence[tuple[str, torch.Tensor]],
    shared_basis: bool = True,
    height: int = 384,
) -> Path:
    """Write ``image`` and the PCA-RGB of each feature map ``(C, h, w)`` side by side.

    With ``shared_basis`` (and equal widths) the PCA is fitted on the *first* map (the
    reference, e.g. the teacher) and every map is projected on it, so equal colours mean equal
    features; otherwise each map gets its own PCA.
    """
    panels: list[tuple[str, np.ndarray | Image.Image]] = [("image", image)]
    dims = {m.shape[-3] for _, m in maps}
    basis = fit_pca(maps[0][1]) if shared_basis and len(dims) == 1 else None
    for title, m in maps:
        own = basis is None or m is maps[0][1]
        panels.append((title + (" (PCA)" if own else f" (PCA of {maps[0][0]})"), pca_rgb(m, basis)))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compose_panels(panels, height=height).save(out)
    return out


def overlay_mask(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.45) -> Image.Image:
    """``image`` with a boolean ``(H, W)`` mask (resized to the image) tinted in ``color``."""
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.NEAREST)
    m = np.asarray(m) > 127
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    arr[m] = (1 - alpha) * arr[m] + alpha * np.asarray(color, dtype=np.float32)
    return Image.fromarray(arr.astype(np.uint8))


def plot_metric_vs_resolution(
    path: str | os.PathLike,
    series: dict[str, tuple[Sequence[int], Sequence[float]]],
    ylabel: str,
    title: str = "",
) -> Path:
    """Line plot of one metric per series against resolution (px). ``series``: label -> (xs, ys)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FileNotFoundError("plots need matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=label)
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
