"""Helpers shared by ``cgspn bench block`` and ``cgspn bench model``: devices, dtypes, OOM-safe timing."""

from __future__ import annotations

import gc
import time
from typing import Any, Callable

import torch

from .common import peak_memory, time_fn

__all__ = ["DTYPES", "resolve_device", "is_oom", "release_memory", "measure", "wall_once", "snap_to_patch", "parse_overrides"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(name: str | None) -> torch.device:
    """``None`` -> CUDA if present, else CPU; ``cuda`` without a GPU is a clear error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here; pass --device cpu (with tiny sizes)")
    return dev


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA allocator or CPU allocation)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, (RuntimeError, MemoryError)) and "out of memory" in str(err).lower()


def release_memory(device: torch.device) -> None:
    """Free cached blocks and reset the peak counter so the next measurement starts clean (CUDA)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def wall_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one synchronised call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    warmup: int = 3,
    iters: int = 20,
    target_seconds: float = 2.0,
    min_iters: int = 3,
) -> dict[str, Any]:
    """Median ms of ``fn`` and the peak memory it reached; ``{'oom': True}`` if it ran out of memory.

    ``warmup`` untimed calls come first (the first may compile kernels; the second estimates the
    cost); slow cases then use fewer timed calls (at most ``iters``, at least ``min_iters`` unless
    ``iters`` is smaller) so that each case takes about ``target_seconds``.
    """
    release_memory(device)
    try:
        first = wall_once(fn, device)  # may include one-off work (kernel compilation, autotuning)
        estimate = wall_once(fn, device) if warmup >= 2 else first
        n = max(1, min(iters, max(min_iters, int(target_seconds / max(estimate, 1e-6)))))
        extra_warmup = max(0, min(warmup - 2, n))
        ms = time_fn(fn, warmup=extra_warmup, iters=n, device=device)
    except Exception as e:  # noqa: BLE001 - only OOM is swallowed
        if not is_oom(e):
            raise
        release_memory(device)
        return {"oom": True}
    peak = peak_memory(device)
    release_memory(device)
    return {"ms": ms, "iters": n, "peak_gib": None if peak is None else peak / 2**30}


def snap_to_patch(px: int, patch: int) -> int:
    """The multiple of ``patch`` nearest to ``px`` (at least one patch)."""
    return max(patch, int(round(px / patch)) * patch)


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if text.startswith(("[", "(")) and text.endswith(("]", ")")):
        inner = text[1:-1].strip()
        return [] if not inner else [_parse_value(v.strip()) for v in inner.split(",")]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``['embed_dim=32', 'attn_layers=[0,5]']`` -> ``{'embed_dim': 32, 'attn_layers': [0, 5]}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out
