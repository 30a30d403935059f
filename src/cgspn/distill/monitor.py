"""Progress and logs: a tqdm bar (step, loss, img/s, ETA), a JSONL log and TensorBoard scalars.

Only the main rank writes. TensorBoard is optional (skipped with a note when not installed).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Monitor"]


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


class Monitor:
    """Collects per-step scalars of one run.

    log_path: JSONL file (one object per logged step / event); tb_dir: TensorBoard directory or
    None; progress: "auto" (a bar when stderr is a terminal), True or False.
    """

    def __init__(self, log_path: Path | None, tb_dir: Path | None, progress: Any = "auto", enabled: bool = True) -> None:
        self.enabled = enabled
        self.log = open(log_path, "a", encoding="utf-8") if (enabled and log_path) else None
        self.tb = None
        if enabled and tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tb_dir))
            except ImportError:
                self.event("note", message="tensorboard is not installed; TensorBoard scalars are off")
        self.progress = (sys.stderr.isatty() if progress == "auto" else bool(progress)) and enabled
        self.bar = None
        self._t0 = time.time()
        self._global = 0
        self._stage: tuple[str, int, int, float] = ("", 0, 0, 0.0)  # name, total, first step, start time
        self._last_line = 0.0
        self.line_every_s = 30.0  # without a bar: one progress line at most this often

    def start_stage(self, stage: str, total: int, initial: int) -> None:
        self._stage = (stage, total, initial, time.time())
        self._last_line = time.time()
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=stage, unit="step", dynamic_ncols=True, leave=True)
        self.event("stage_start", stage=stage, total_steps=total, start_step=initial)

    def step(self, stage: str, step: int, scalars: dict[str, Any], global_step: int) -> None:
        if not self.enabled:
            return
        self._global = global_step
        rec = {"stage": stage, "step": step, "time": round(time.time() - self._t0, 3)}
        rec.update({k: _num(v) for k, v in scalars.items()})
        if self.log:
            self.log.write(json.dumps(rec) + "\n")
            self.log.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(_num(v), float):
                    self.tb.add_scalar(f"{stage}/{k}", float(v), global_step)
        if self.bar is not None:
            shown = {k: f"{float(scalars[k]):.4g}" for k in ("loss", "img_s") if k in scalars}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(step - self.bar.n)
        else:
            name, total, first, t_start = self._stage
            now = time.time()
            if now - self._last_line >= self.line_every_s or step == total:
                self._last_line = now
                done = max(1, step - first)
                eta = (now - t_start) / done * max(0, total - step)
                print(f"{stage} {step}/{total} loss {float(scalars.get('loss', float('nan'))):.4f} "
                      f"{float(scalars.get('img_s', 0.0)):.1f} img/s eta {eta / 60:.1f} min",
                      file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        """A human-readable line (through tqdm when a bar is active)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        if self.enabled and self.log:
            self.log.write(json.dumps({"event": kind, "time": round(time.time() - self._t0, 3),
                                       **{k: _num(v) if not isinstance(v, (dict, list)) else v
                                          for k, v in fields.items()}}) + "\n")
            self.log.flush()

    def scalars(self, prefix: str, values: dict[str, float], global_step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", float(v), global_step)

    def end_stage(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.end_stage()
        if self.log:
            self.log.close()
            self.log = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
