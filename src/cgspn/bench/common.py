"""Shared benchmark plumbing: timing with device events, run metadata, tables and JSON."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["time_fn", "run_metadata", "print_table", "write_json", "copy_bandwidth_gbs", "peak_memory", "style_resolution_axes", "save_figure"]


def time_fn(fn: Callable[[], Any], *, warmup: int = 3, iters: int = 20, device: torch.device | str | None = None) -> float:
    """Median milliseconds of ``fn()``: CUDA events on a GPU, a synchronised wall clock on CPU.

    On a GPU the calls run back to back: each is bracketed by its own pair of events, and the host
    synchronises once after the last, so the CPU-side launch work of a call overlaps the previous
    call's kernels (as ``triton.testing.do_bench`` does) and the time is the GPU's. (Until
    2026-12-01 it synchronised after every call, which also counted the launch path of calls
    shorter than it, tens of microseconds; docs/benchmarks.md says which tables predate this.)"""
    dev = torch.device(device) if device is not None else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    for _ in range(warmup):
        fn()
    times = []
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for a, b in events:
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize(dev)
        times = [a.elapsed_time(b) for a, b in events]
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbs(device: torch.device | str = "cuda", nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    n = nbytes // 4
    a = torch.empty(n, dtype=torch.float32, device=device).normal_()
    b = torch.empty_like(a)
    ms = time_fn(lambda: b.copy_(a), warmup=3, iters=20, device=device)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def run_metadata(device: torch.device | str | None = None) -> dict[str, Any]:
    """Command line, versions and device, recorded with every benchmark result."""
    meta: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in ["cgspn"] + sys.argv[1:]) if Path(sys.argv[0]).name == "cgspn" else " ".join(shlex.quote(a) for a in sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception:
        meta["triton"] = None
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        meta["device"] = p.name
        meta["device_memory_gib"] = round(p.total_memory / 2**30, 1)
        meta["sm_count"] = p.multi_processor_count
    else:
        meta["device"] = platform.processor() or "cpu"
    return meta


def peak_memory(device: torch.device | str) -> int | None:
    """Peak allocated bytes since the last reset (CUDA only)."""
    dev = torch.device(device)
    return torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None


def print_table(rows: list[dict[str, Any]], columns: list[str], file=None) -> str:
    """Print rows as a Markdown table (so it pastes straight into docs) and return it."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    text = "\n".join(lines)
    print(text, file=file or sys.stdout, flush=True)
    return text


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, p)
    return p


def style_resolution_axes(ax, sides: list[int], ylabel: str, title: str) -> None:
    """Log-log axes over image sides (px) with one labelled tick per measured side."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sides)
    ax.set_xticklabels([str(s) for s in sides])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("image side (px)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def save_figure(fig, path: str | os.PathLike, suptitle: str | None = None) -> Path:
    """Lay out, save as PNG (folders created) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
