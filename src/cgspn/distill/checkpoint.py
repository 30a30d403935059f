"""Atomic training checkpoints.

A checkpoint is a directory ``<run>/checkpoints/<stage>-<step>/`` holding

* ``student.safetensors`` -- the student's weights (with the spec/meta JSON in its metadata),
* ``extra.safetensors``  -- the other trainable weights (stage-2 adapters), possibly empty,
* ``state.pt``           -- optimizer state, step, per-rank RNG and data-stream positions, metrics;
  plain tensors / numbers / strings only, written with ``torch.save`` and read back with
  ``torch.load(weights_only=True)`` (no arbitrary unpickling).

It is written into a hidden temporary directory and renamed into place; the ``latest`` pointer file
is replaced atomically afterwards, so a crash at any moment leaves the previous checkpoint valid.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointManager", "Checkpoint"]


class Checkpoint:
    """A checkpoint directory on disk (read side)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def student_state(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path / "student.safetensors"), device="cpu")

    def extra_state(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        p = self.path / "extra.safetensors"
        return load_file(str(p), device="cpu") if p.is_file() else {}

    def state(self) -> dict[str, Any]:
        return torch.load(self.path / "state.pt", map_location="cpu", weights_only=True)


class CheckpointManager:
    """Writes and finds checkpoints under ``<run_dir>/checkpoints``; keeps the newest ``keep``."""

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = max(1, int(keep))

    def latest(self) -> Checkpoint | None:
        """The checkpoint the ``latest`` pointer names, or None."""
        ptr = self.dir / "latest"
        if not ptr.is_file():
            return None
        name = ptr.read_text().strip()
        path = self.dir / name
        if not (path / "state.pt").is_file():
            raise FileNotFoundError(f"checkpoint pointer names {path}, which is incomplete or missing")
        return Checkpoint(path)

    def save(
        self,
        name: str,
        student_state: dict[str, torch.Tensor],
        extra_state: dict[str, torch.Tensor],
        state: dict[str, Any],
        student_meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``name`` atomically and point ``latest`` at it. Returns its path."""
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / name
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        cpu = lambda sd: {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}  # noqa: E731
        meta = {"cgspn_student": json.dumps(student_meta)} if student_meta else None
        save_file(cpu(student_state), str(tmp / "student.safetensors"), metadata=meta)
        save_file(cpu(extra_state), str(tmp / "extra.safetensors"))
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        ptr_tmp = self.dir / f".latest-{os.getpid()}"
        ptr_tmp.write_text(name + "\n")
        os.replace(ptr_tmp, self.dir / "latest")
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        ckpts = sorted(
            (p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        excess = [p for p in ckpts if p.name != keep_name][: max(0, len(ckpts) - self.keep)]
        for p in excess:
            shutil.rmtree(p, ignore_errors=True)
