"""Where the time of a whole registered encoder goes: a kernel-level torch.profiler table.

Builds the named timm models (random weights, ``eval()``, one dtype) exactly as ``cgspn bench
model`` does, times ``model(images)`` under ``torch.inference_mode`` with the benchmarks' own
``measure()``, profiles a few calls and prints the GPU kernels sorted by time (ms per call, share),
then writes everything as JSON. Compare the per-block share with ``tools/profile_block.py``. On
the GPU machine::

    PYTHONPATH=$PWD/src python3 tools/profile_model.py --models cgspn_so400m_patch14_378 --batch 32 --px 2058 --out $OUT/profile_model.json

CPU works too (tiny sizes, for checking the script):
``--device cpu --models cgspn_base_patch16_224 --batch 1 --px 64 --model-args depth=2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from cgspn.bench._measure import DTYPES, measure, parse_overrides
from cgspn.bench.common import run_metadata
from cgspn.bench.model import build_model, model_patch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_block import _kernel_table, print_kernel_table, write_report  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cgspn_so400m_patch14_378", "vit_so400m_patch14_siglip_378"])
    p.add_argument("--model-args", nargs="*", default=[], help="key=value overrides for every model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--px", type=int, nargs="+", default=[2058])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="profile_model.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    overrides = parse_overrides(args.model_args)
    out: dict[str, Any] = {"meta": run_metadata(device), "args": vars(args), "cases": []}
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, overrides, device, dtype)
        patch = model_patch(model)
        depth = len(getattr(model, "blocks", []))
        for px in args.px:
            px = max(patch, round(px / patch) * patch)
            x = torch.randn(args.batch, 3, px, px, device=device, dtype=dtype)
            with torch.inference_mode():
                timing = measure(lambda: model(x), device, warmup=2, iters=max(3, args.iters))
                with torch.profiler.profile(activities=acts) as prof:
                    for _ in range(args.iters):
                        model(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
            rows = _kernel_table(prof, args.iters, device.type)
            kern_ms = sum(r["ms"] for r in rows)
            print(f"\n## {name} @ {px} px, B={args.batch}: {timing['ms']:.2f} ms per call (median), "
                  f"kernels sum {kern_ms:.2f} ms, {depth} blocks -> {timing['ms'] / max(depth, 1):.2f} ms per block")
            print_kernel_table(rows, args.top)
            out["cases"].append({"model": name, "px": px, "batch": args.batch, "depth": depth,
                                 "wall_ms": timing["ms"], "kernel_ms": kern_ms, "kernels": rows})
            sys.stdout.flush()
            del x
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_report(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
