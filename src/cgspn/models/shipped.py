"""Weights shipped inside the package, as sharded safetensors (each shard under 16 MiB).

Layout of one shipped checkpoint, ``cgspn/weights/<model name>/``::

    model-00001-of-00003.safetensors
    ...
    model.safetensors.index.json   # {"metadata": {...}, "weight_map": {tensor name: shard file}}

the Hugging Face sharded layout, so ``transformers``/``safetensors`` tooling reads it too.

* :func:`shipped_weights` -- the folder for a model name, or None;
* :func:`read_sharded` -- a state dict from a ``.safetensors`` file or a folder of shards;
* :func:`write_sharded` -- write a state dict as shards (atomically: a temp folder renamed).

No pickle anywhere: safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["INDEX_NAME", "MAX_SHARD_BYTES", "shipped_weights", "read_sharded", "write_sharded", "compact_dtype"]

INDEX_NAME = "model.safetensors.index.json"
MAX_SHARD_BYTES = 15 * 2**20  # under the 16 MiB limit per file with room for the header


def shipped_weights(name: str) -> Path | None:
    """``cgspn/weights/<name>`` when it holds an index and all its shards, else None."""
    try:
        root = Path(str(resources.files("cgspn").joinpath("weights").joinpath(name)))
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    index = root / INDEX_NAME
    if not index.is_file():
        return None
    try:
        names = set(json.loads(index.read_text())["weight_map"].values())
    except (ValueError, KeyError):
        return None
    return root if all((root / n).is_file() for n in names) else None


def _files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"weights are read as safetensors; got {path.name} "
                             "(convert it with safetensors.torch.save_file)")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"weights not found: {path}")
    indexes = sorted(path.glob("*.safetensors.index.json"))  # ours is INDEX_NAME; HF names vary
    if indexes:
        index = indexes[0]
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names missing shards: {', '.join(missing[:3])}")
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {path}")
    return files


def read_sharded(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """State dict from a ``.safetensors`` file or a folder of shards (``dtype``: cast floats to it)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in _files(Path(path)):
        try:
            part = load_file(str(f))
        except Exception as e:  # safetensors raises its own types on corrupt headers
            raise ValueError(f"cannot read weights shard {f}: {e}") from None
        dup = set(part) & set(state)
        if dup:
            raise ValueError(f"tensor {sorted(dup)[0]} appears in two shards ({f.name})")
        state.update(part)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def compact_dtype(state: Mapping[str, torch.Tensor], small: int = 4096) -> dict[str, torch.Tensor]:
    """fp16 for large float tensors, fp32 for small ones (norm scales, LayerScale gammas, biases
    whose tiny values fp16 would flush); raises if a value overflows fp16."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.numel() >= small:
            if v.abs().max().item() >= 65504:
                raise ValueError(f"{k} overflows fp16 (max |x| = {v.abs().max().item():.4g})")
            v = v.to(torch.float16)
        elif v.is_floating_point():
            v = v.float()
        out[k] = v.contiguous()
    return out


def write_sharded(state: Mapping[str, torch.Tensor], dest: str | os.PathLike, *,
                  max_shard_bytes: int = MAX_SHARD_BYTES, metadata: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``state`` as ``model-0000i-of-0000N.safetensors`` + index into the folder ``dest``.

    Tensors are packed in name order, a new shard starting when the next tensor would pass
    ``max_shard_bytes`` (a single larger tensor gets a shard of its own). The folder is written
    next to ``dest`` and renamed over it, so a reader never sees half a checkpoint.
    Returns the shard paths.
    """
    from safetensors.torch import save_file

    dest = Path(dest)
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    groups: list[list[str]] = [[]]
    size = 0
    for k in sorted(state):
        n = state[k].numel() * state[k].element_size()
        if groups[-1] and size + n > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += n
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    total = len(groups)
    weight_map: dict[str, str] = {}
    paths = []
    for i, keys in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
        save_file({k: state[k].contiguous() for k in keys}, str(tmp / fname), metadata=meta)
        weight_map.update({k: fname for k in keys})
        paths.append(dest / fname)
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": nbytes, **meta}, "weight_map": weight_map}
    (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1, sort_keys=True))
    if dest.exists():
        old = dest.with_name(dest.name + f".old{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    return paths
