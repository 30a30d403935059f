"""Reports: every evaluation prints a Markdown table and writes the same rows as JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from cgspn.bench.common import print_table, run_metadata, write_json

__all__ = ["emit_report", "peak_memory_bytes", "reset_peak_memory", "format_bytes"]


def emit_report(
    title: str,
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    out_dir: str | os.PathLike | None,
    name: str,
    extra: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> Path | None:
    """Print ``title`` and ``rows`` as a Markdown table; write ``out_dir/name.json`` with the rows,
    the run metadata (command, versions, device) and ``extra``. Returns the JSON path (or None)."""
    print(f"\n## {title}\n", flush=True)
    print_table(rows, list(columns))
    if out_dir is None:
        return None
    payload = {"title": title, "columns": list(columns), "rows": rows, "meta": run_metadata(device)}
    if extra:
        payload.update(extra)
    path = write_json(Path(out_dir) / f"{name}.json", payload)
    print(f"wrote {path}", flush=True)
    return path


def reset_peak_memory(device: torch.device) -> None:
    """Start a peak-memory window (CUDA: allocator peak; CPU: nothing to reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """``(bytes, what)``: CUDA allocator peak since :func:`reset_peak_memory`, or on CPU the
    process's peak resident set size (lifetime high-water mark, includes the model)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)), "peak CUDA memory allocated"
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "peak process RSS"


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{x:.1f} {unit}" if unit != "B" else f"{int(x)} B"
        x /= 1024
    return f"{x:.1f} TiB"
