"""Classification on frozen features: feature extraction, weighted kNN and a linear probe.

Datasets are indexable ``ds[i] -> (PIL image, int label)`` with ``ds.classes``:
:class:`ImageFolder` (``root/<class>/<image>``) or :class:`cgspn.data.fashion_mnist.FashionMNIST`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .backbone import Encoder
from .images import IMAGE_EXTENSIONS, center_crop_square, load_image, resize_to, to_tensor

__all__ = ["ImageFolder", "preprocess", "extract_features", "knn_classify", "LinearProbeResult", "linear_probe"]


class ImageFolder:
    """``root/<class name>/<image>`` -> ``ds[i] = (PIL RGB image, class index)``; classes sorted."""

    def __init__(self, root: str | os.PathLike, per_class: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder dataset not found: {self.root}")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders (expected root/<class>/<image>)")
        self.samples: list[tuple[Path, int]] = []
        for ci, c in enumerate(self.classes):
            files = sorted(p for p in (self.root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            self.samples += [(p, ci) for p in files[:per_class]]
        if not self.samples:
            raise ValueError(f"no images found under the class folders of {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        p, y = self.samples[i]
        return load_image(p), y


def preprocess(img: Image.Image, size: int, encoder: Encoder) -> torch.Tensor:
    """Centre square crop, resize to ``size`` (a multiple of the patch) and normalise -> ``(3, size, size)``."""
    if size % encoder.patch_size:
        raise ValueError(f"--size {size} is not a multiple of the patch size {encoder.patch_size}")
    return to_tensor(resize_to(center_crop_square(img), (size, size)), encoder.mean, encoder.std)


@torch.no_grad()
def extract_features(encoder: Encoder, dataset: Any, size: int = 224, batch_size: int = 64, pool: str = "model", desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features of a whole dataset: ``(features float32 (N, D), labels int64 (N,))`` on CPU.

    ``pool``: ``model`` (the model's own pooled embedding, e.g. CLS), ``avg`` (mean of patch
    tokens) or ``model+avg`` (both concatenated, D = 2C; the DINOv2 linear-probe recipe).
    """
    if pool not in ("model", "avg", "model+avg"):
        raise ValueError(f"pool must be model, avg or model+avg; got {pool!r}")
    feats, labels = [], []
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False, mininterval=2.0):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        x = torch.stack([preprocess(im, size, encoder) for im, _ in items])
        patch, pooled = encoder(x)
        avg = patch.mean((2, 3))
        f = pooled if pool == "model" else avg if pool == "avg" else torch.cat([pooled, avg], 1)
        feats.append(f.cpu())
        labels.append(torch.tensor([y for _, y in items], dtype=torch.int64))
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int = 20, temperature: float = 0.07,
                 num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Weighted cosine kNN (DINO protocol): each of the ``k`` nearest training features votes for
    its class with weight ``exp(cos / temperature)``. ``train_x`` ``(N, D)``, ``train_y`` ``(N,)``,
    ``test_x`` ``(M, D)`` -> predicted labels ``(M,)``."""
    if train_x.shape[0] == 0:
        raise ValueError("kNN needs training features")
    num_classes = int(num_classes or int(train_y.max()) + 1)
    k = min(k, train_x.shape[0])
    tr = F.normalize(train_x.float(), dim=1)
    preds = []
    for s in range(0, test_x.shape[0], chunk):
        te = F.normalize(test_x[s : s + chunk].float(), dim=1)
        sim, idx = (te @ tr.T).topk(k, dim=1)
        w = (sim / temperature).exp()
        votes = torch.zeros(te.shape[0], num_classes).scatter_add_(1, train_y[idx], w)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


class LinearProbeResult(dict):
    """``{"accuracy": float, "weight_decay": float, "val_accuracy": float, "sweep": {wd: val acc}}``."""


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, max_iter: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + 0.5 * wd * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 weight_decays: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), val_fraction: float = 0.1,
                 max_iter: int = 300, device: torch.device | str = "cpu") -> LinearProbeResult:
    """Multinomial logistic regression on standardised frozen features (full-batch L-BFGS).

    The L2 weight decay is picked on a stratified ``val_fraction`` of the training set, then the
    probe is refitted on all training features and scored on the test features.
    Shapes: ``train_x`` ``(N, D)``, ``train_y`` ``(N,)``, ``test_x`` ``(M, D)``, ``test_y`` ``(M,)``.
    """
    dev = torch.device(device)
    num_classes = int(max(int(train_y.max()), int(test_y.max())) + 1)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr = ((train_x - mean) / std).float().to(dev)
    xte = ((test_x - mean) / std).float().to(dev)
    ytr, yte = train_y.to(dev), test_y.to(dev)
    g = torch.Generator().manual_seed(0)
    val_idx = []
    for c in range(num_classes):
        idx = torch.nonzero(train_y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[: max(1, math.floor(len(idx) * val_fraction))] if len(idx) > 1 else idx[:0])
    val = torch.cat(val_idx).to(dev)
    mask = torch.ones(len(train_y), dtype=torch.bool, device=dev)
    mask[val] = False
    sweep: dict[float, float] = {}
    if len(weight_decays) > 1 and len(val) and mask.any():
        for wd in weight_decays:
            lin = _fit_logreg(xtr[mask], ytr[mask], num_classes, wd, max_iter)
            with torch.no_grad():
                sweep[wd] = float((lin(xtr[val]).argmax(1) == ytr[val]).float().mean())
        best = max(sweep, key=lambda w: (sweep[w], w))
    else:
        best = weight_decays[0]
    lin = _fit_logreg(xtr, ytr, num_classes, best, max_iter)
    with torch.no_grad():
        acc = float((lin(xte).argmax(1) == yte).float().mean())
    return LinearProbeResult(accuracy=acc, weight_decay=best, val_accuracy=sweep.get(best, float("nan")), sweep=sweep)
