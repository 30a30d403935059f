"""Where the time of a C-GSPN block goes: a kernel-level torch.profiler table of its sub-layers.

Builds the SO400M-width block of ``cgspn bench block`` (C = 1152, MLP 4304, C_c = 64, G = 16),
runs the mixer sub-layer (``x + mixer(norm1(x))``), the whole C-GSPN block and the ViT block in
bf16 under ``torch.profiler`` and prints, per variant, the GPU kernels sorted by time (ms per
call, share of the variant), then writes everything as JSON. On the GPU machine::

    PYTHONPATH=$PWD/src python3 tools/profile_block.py --batch 32 --px 2058 --out $OUT/profile_block.json

``--compile`` profiles ``torch.compile``d callables as well (both blocks alike). CPU works too
(small shapes, for checking the script): ``--device cpu --batch 1 --px 224 --dim 96 --mlp-dim 384``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

from cgspn.bench._measure import measure
from cgspn.bench.block import block_functions, build_blocks
from cgspn.bench.common import run_metadata


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--px", type=int, nargs="+", default=[2058])
    p.add_argument("--dim", type=int, default=1152)
    p.add_argument("--mlp-dim", type=int, default=4304)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--patch", type=int, default=14)
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--gate-groups", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--scan-backend", default=None)
    p.add_argument("--variants", nargs="+", default=["cgspn_mixer", "cgspn", "vit"])
    p.add_argument("--compile", action="store_true", help="also profile torch.compile'd callables")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="profile_block.json")
    return p.parse_args(argv)


def _kernel_table(prof: torch.profiler.profile, iters: int, device_type: str) -> list[dict[str, Any]]:
    """Device-side time per kernel name (ms per call of the profiled function)."""
    agg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if device_type == "cuda":
            if ev.device_type != torch.autograd.DeviceType.CUDA:
                continue
            t = ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
        else:
            if ev.device_type != torch.autograd.DeviceType.CPU or not ev.name.startswith("aten::"):
                continue
            t = ev.self_cpu_time_total
        agg[ev.name][0] += t
        agg[ev.name][1] += 1
    total = sum(v[0] for v in agg.values()) or 1.0
    rows = [
        {"kernel": k[:110], "ms": v[0] / 1e3 / iters, "calls": v[1] // iters, "share": v[0] / total}
        for k, v in agg.items()
    ]
    return sorted(rows, key=lambda r: -r["ms"])


def print_kernel_table(rows: list[dict[str, Any]], top: int) -> None:
    """The ``top`` kernels of a profile as a markdown table (ms per call, share, calls)."""
    print("| ms | share | calls | kernel |\n| --- | --- | --- | --- |")
    for r in rows[:top]:
        print(f"| {r['ms']:.3f} | {100 * r['share']:.1f}% | {r['calls']} | {r['kernel']} |")


def write_report(path: str, out: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwrote {path}")


def profile_one(fn: Callable, x: torch.Tensor, iters: int, device: torch.device) -> tuple[list[dict[str, Any]], float]:
    """Kernel table of ``iters`` calls of ``fn(x)`` under the profiler, and the median ms per call
    timed outside it (``cgspn.bench._measure.measure``, the benchmarks' own timer)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad():
        timing = measure(lambda: fn(x), device, warmup=2, iters=max(3, iters))
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(iters):
                fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
    return _kernel_table(prof, iters, device.type), timing["ms"]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    ns = argparse.Namespace(
        dim=args.dim, mlp_dim=args.mlp_dim, heads=args.heads, latent_dim=args.latent_dim,
        gate_groups=args.gate_groups, chunk=args.chunk, scan_backend=args.scan_backend,
    )
    mods = build_blocks(ns, device, dtype)
    out: dict[str, Any] = {"meta": run_metadata(device), "args": vars(args), "cases": []}
    for px in args.px:
        g = px // args.patch
        x = torch.randn(args.batch, g * g, args.dim, device=device, dtype=dtype)
        for compiled in [False, True] if args.compile else [False]:
            fns = block_functions(mods, (g, g), compiled)
            for name in args.variants:
                rows, wall = profile_one(fns[name], x, args.iters, device)
                kern_ms = sum(r["ms"] for r in rows)
                tag = f"{name}{' (compiled)' if compiled else ''} @ {px} px, B={args.batch}"
                print(f"\n## {tag}: {wall:.3f} ms per call (median), kernels sum {kern_ms:.3f} ms")
                print_kernel_table(rows, args.top)
                out["cases"].append({"variant": name, "compiled": compiled, "px": px, "batch": args.batch,
                                     "wall_ms": wall, "kernel_ms": kern_ms, "kernels": rows})
                sys.stdout.flush()
        del x
    write_report(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
