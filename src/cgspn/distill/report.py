"""Fidelity of the student to the teacher on held-out images, and the run report.

Metrics (means over held-out images):

* ``patch_cos``   -- cosine between student and teacher final patch tokens (per token);
* ``summary_cos`` -- cosine between the pooled / projected embeddings;
* ``block_cos``   -- cosine between block outputs, averaged over blocks (end-to-end PB taps);
* ``mixer_nmse``  -- stage 1's quantity: each student mixer on the teacher's block input vs the
  teacher's attention output, MSE / target mean square, averaged over blocks;
* ``block_nmse``  -- the same normalised MSE on the end-to-end block outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .encoders import call_mixer, forward_taps
from .losses import feature_mse, token_cosine

__all__ = ["fidelity", "write_report", "format_fidelity"]

FIDELITY_KEYS = ("patch_cos", "summary_cos", "block_cos", "mixer_nmse", "block_nmse")


@torch.no_grad()
def fidelity(student: nn.Module, teacher: Any, images: torch.Tensor, batch_size: int = 10,
             autocast: Any = None) -> dict[str, float]:
    """Held-out fidelity of ``student`` to ``teacher`` on normalised ``images`` (N, 3, H, W)."""
    was_training = student.training
    student.eval()
    sums = {k: 0.0 for k in FIDELITY_KEYS}
    n = 0
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        with ctx:
            t = teacher(x, ("inputs", "pp", "pb"))
            s = forward_taps(student, x, ("pb",))
            mix = []
            for j, blk in enumerate(student.blocks):
                y = call_mixer(blk, blk.norm1(t.block_inputs[j]), t.grid)
                mix.append(feature_mse(y, t.mixer_outputs[j]).item())
        b = x.shape[0]
        p_s, p_t = s.num_prefix_tokens, t.num_prefix_tokens
        sums["patch_cos"] += token_cosine(s.final[:, p_s:], t.final[:, p_t:]).item() * b
        sums["summary_cos"] += token_cosine(s.summary, t.summary).item() * b
        sums["block_cos"] += sum(token_cosine(a, c).item() for a, c in zip(s.block_outputs, t.block_outputs)) / len(
            s.block_outputs) * b
        sums["mixer_nmse"] += sum(mix) / len(mix) * b
        sums["block_nmse"] += sum(feature_mse(a, c).item() for a, c in zip(s.block_outputs, t.block_outputs)) / len(
            s.block_outputs) * b
        n += b
    student.train(was_training)
    return {k: v / n for k, v in sums.items()}


def format_fidelity(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    """A markdown table: one row per (label, metrics)."""
    head = "| when | " + " | ".join(FIDELITY_KEYS) + " |\n|---|" + "---|" * len(FIDELITY_KEYS) + "\n"
    body = "".join(
        f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k in FIDELITY_KEYS) + " |\n" for label, m in rows
    )
    return head + body


def write_report(run_dir: str | os.PathLike, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and a short ``report.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    jpath, mpath = run_dir / "report.json", run_dir / "report.md"
    jpath.write_text(json.dumps(report, indent=2))
    lines = [f"# cgspn distill report: {report.get('run_dir', run_dir)}", ""]
    lines.append(f"- teacher: {report['teacher']['name']} ({report['teacher'].get('source', '')})")
    st = report["student"]
    lines.append(f"- student: {st['model']} ({st['params_m']:.2f}M params; teacher {report['teacher']['params_m']:.2f}M)")
    lines.append(f"- data: {report['data']['kind']} ({report['data'].get('path') or 'built-in photos'}); "
                 f"corrupt samples skipped: {report['data']['skipped']}")
    lines.append(f"- device: {report['device']}, world size {report['world_size']}, precision {report['precision']}")
    lines.append(f"- wall time: {report['time_s']:.1f} s")
    lines.append("")
    lines.append("## Training losses")
    lines.append("")
    lines.append("| stage | steps | resolution | loss (first) | loss (last) | time (s) | img/s |")
    lines.append("|---|---|---|---|---|---|---|")
    for s in report["stages"]:
        lines.append(f"| {s['name']} | {s['steps']} | {s['resolution']} | {s['loss_first']:.4f} | "
                     f"{s['loss_last']:.4f} | {s['time_s']:.1f} | {s['img_s']:.2f} |")
    lines.append("")
    lines.append(f"## Fidelity to the teacher on held-out images ({report['eval']['n_images']} views, "
                 f"{report['eval']['resolution']} px)")
    lines.append("")
    lines.append(format_fidelity([(k, v) for k, v in report["fidelity"].items()]))
    if report["data"].get("bad"):
        lines.append("## Skipped samples")
        lines.append("")
        lines.extend(f"- {b}" for b in report["data"]["bad"][:20])
    lines.append("")
    lines.append(f"Student checkpoint: `{report['checkpoint']}`")
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath
