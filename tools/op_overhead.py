"""CPU-side cost per call of the gspn2d paths on a GPU, on an input so small the kernels take a few
microseconds: wall time of N back-to-back calls, one synchronisation at the end. A measurement
probe (not library code): it says how much of a small-batch model's time is launch work.

    PYTHONPATH=$PWD/src python3 tools/op_overhead.py --out overhead.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cgspn.ops import gspn2d
from cgspn.ops.gspn import triton_backend as TB


def per_call_us(fn, n: int = 300) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="op_overhead.json")
    args = ap.parse_args()
    B, H, W, C, G = 1, 8, 8, 64, 16
    mk = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16)
    x, lam, z, u, dy = mk(B, H, W, C), torch.rand(B, H, W, 4, C, device="cuda").bfloat16(), mk(B, H, W, 4, 3, G), mk(B, H, W, 4, C), mk(B, H, W, 4, C)
    launch, y, h = TB.gspn2d_fwd_launch(x, lam, z, u, None, True)
    xs = [t.clone().requires_grad_() for t in (x, lam, z, u)]
    rows = {
        "empty torch op (x.add_(0))": per_call_us(lambda: x.add_(0)),
        "forward kernel, launch built once": per_call_us(launch.launch),
        "forward: build + launch (gspn2d_fwd_triton)": per_call_us(lambda: TB.gspn2d_fwd_triton(x, lam, z, u, None, True)),
        "forward: public gspn2d, no grad": per_call_us(lambda: gspn2d(x, lam, z, u=u)),
        "forward + backward: public gspn2d with autograd": per_call_us(lambda: torch.autograd.backward(gspn2d(*xs[:3], u=xs[3]), dy)),
    }
    with torch.no_grad():
        rows["forward: public gspn2d under torch.no_grad"] = per_call_us(lambda: gspn2d(x, lam, z, u=u))
    # the backward's layers, to find where a forward + backward's host time goes
    launch_b, grads = TB.gspn2d_bwd_launch(dy, x, lam, z, u, h, None)
    rows["backward kernel, launch built once"] = per_call_us(launch_b.launch)
    rows["backward: build + launch + partial sums (gspn2d_bwd_triton)"] = per_call_us(
        lambda: TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None))
    rows["backward: the custom op (torch.ops.cgspn.gspn2d_bwd)"] = per_call_us(
        lambda: torch.ops.cgspn.gspn2d_bwd(dy, x, lam, z, u, h, 0))
    rows["forward + backward: torch.autograd.grad (no .grad accumulation)"] = per_call_us(
        lambda: torch.autograd.grad(gspn2d(*xs[:3], u=xs[3]), xs, dy))
    for k, v in rows.items():
        print(f"{v:8.1f} us  {k}")
    # a profiler trace of the forward + backward: where the host time goes, by op
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            torch.autograd.grad(gspn2d(*xs[:3], u=xs[3]), xs, dy)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    print(table)
    json.dump(dict(shape=[B, H, W, C, G], dtype="bf16", torch=torch.__version__, per_call_us=rows, profile=table),
              open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
