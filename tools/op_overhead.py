"""CPU-side cost per call of the gspn2d paths, on an input so small the kernels take a few
microseconds: wall time of N back-to-back calls, one synchronisation at the end. A measurement
probe (not library code): it says how much of a small-batch model's time is launch work.

    PYTHONPATH=$PWD/src python3 tools/op_overhead.py --out overhead.json            # on a GPU
    TRITON_INTERPRET=1 PYTHONPATH=$PWD/src python3 tools/op_overhead.py --host-only  # anywhere

``--host-only`` measures the host work alone, on any machine: the Triton launch itself is replaced
by a no-op (``KernelLaunch.launch``; the interpreter would otherwise run the kernel), so the rows
are the Python of the op paths (checks, configs, allocations, the custom-op and autograd machinery)
without Triton's launcher (on the H200 ~35-50 us per launch, the rows "launch built once").
``--shape B,H,W,C,G`` picks the input (the default is tiny; a latent shape selects the split kernels).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cgspn.ops import gspn2d
from cgspn.ops.gspn import op as _registers_the_ops  # noqa: F401  (torch.ops.cgspn.*)
from cgspn.ops.gspn import triton_backend as TB


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def per_call_us(fn, device: str, n: int = 300) -> float:
    for _ in range(10):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(3):  # the best of three rounds: this probe measures the code, not the machine's noise
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="op_overhead.json")
    ap.add_argument("--shape", default="1,8,8,64,16", help="B,H,W,C,G (default: %(default)s)")
    ap.add_argument("--host-only", action="store_true",
                    help="CPU tensors, Triton launches replaced by a no-op: the op paths' host Python alone")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    B, H, W, C, G = (int(v) for v in args.shape.split(","))
    device = "cpu" if args.host_only else "cuda"
    if args.host_only:
        from cgspn.ops.backends import _interpreting

        if not _interpreting():
            raise SystemExit("--host-only needs TRITON_INTERPRET=1 (the triton backend's CPU mode)")
        TB.KernelLaunch.launch = lambda self: None  # measure the host paths only: no kernel runs
    mk = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
    x, lam, z, u, dy = mk(B, H, W, C), torch.rand(B, H, W, 4, C, device=device).bfloat16(), mk(B, H, W, 4, 3, G), mk(B, H, W, 4, C), mk(B, H, W, 4, C)
    launch, y, h = TB.gspn2d_fwd_launch(x, lam, z, u, None, True)
    xs = [t.clone().requires_grad_() for t in (x, lam, z, u)]
    us = lambda fn: per_call_us(fn, device, args.iters)
    rows = {
        "empty torch op (x.add_(0))": us(lambda: x.add_(0)),
        "forward kernel, launch built once": us(launch.launch),
        "forward: build + launch (gspn2d_fwd_triton)": us(lambda: TB.gspn2d_fwd_triton(x, lam, z, u, None, True)),
        "forward: the custom op (torch.ops.cgspn.gspn2d_fwd)": us(lambda: torch.ops.cgspn.gspn2d_fwd(x, lam, z, u, 0, False)),
        "forward: public gspn2d, no grad": us(lambda: gspn2d(x, lam, z, u=u, backend="triton")),
        "forward: public gspn2d, inputs requiring grad": us(lambda: gspn2d(*xs[:3], u=xs[3], backend="triton")),
        "forward + backward: public gspn2d with autograd": us(lambda: torch.autograd.backward(gspn2d(*xs[:3], u=xs[3], backend="triton"), dy)),
    }
    with torch.no_grad():
        rows["forward: public gspn2d under torch.no_grad"] = us(lambda: gspn2d(x, lam, z, u=u, backend="triton"))
    # the backward's layers, to find where a forward + backward's host time goes
    launch_b, grads = TB.gspn2d_bwd_launch(dy, x, lam, z, u, h, None)
    rows["backward kernel, launch built once"] = us(launch_b.launch)
    rows["backward: build + launch + partial sums (gspn2d_bwd_triton)"] = us(lambda: TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None))
    rows["backward: the custom op (torch.ops.cgspn.gspn2d_bwd)"] = us(lambda: torch.ops.cgspn.gspn2d_bwd(dy, x, lam, z, u, h, 0))
    rows["forward + backward: torch.autograd.grad (no .grad accumulation)"] = us(
        lambda: torch.autograd.grad(gspn2d(*xs[:3], u=xs[3], backend="triton"), xs, dy))
    # the autograd engine's own share: a Function that launches nothing, same inputs (on CUDA the
    # backward runs on the engine's device thread, on CPU on the caller's)
    class _Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c, d):
            ctx.save_for_backward(a, b, c, d)
            return torch.empty_like(b)

        @staticmethod
        def backward(ctx, g):
            return tuple(torch.empty_like(t) for t in ctx.saved_tensors)

    rows["autograd floor: a Function that launches nothing, forward + torch.autograd.grad"] = us(
        lambda: torch.autograd.grad(_Empty.apply(*xs), xs, dy))
    # the library's eager Function with timers inside its forward and backward: what the engine adds
    from cgspn.ops.gspn import op as OP

    spent = {"fwd": 0.0, "bwd": 0.0, "n": 0}

    class _Timed(OP._Gspn2dEager):
        @staticmethod
        def forward(ctx, *a):
            t0 = time.perf_counter()
            out = OP._Gspn2dEager.forward(ctx, *a)
            spent["fwd"] += time.perf_counter() - t0
            return out

        @staticmethod
        def backward(ctx, g):
            t0 = time.perf_counter()
            out = OP._Gspn2dEager.backward(ctx, g)
            spent["bwd"] += time.perf_counter() - t0
            spent["n"] += 1
            return out

    total = us(lambda: torch.autograd.grad(_Timed.apply(*xs, 0, False), xs, dy))
    n = max(1, spent["n"])
    rows["eager Function with timers: forward + torch.autograd.grad"] = total
    rows["  of which inside the forward body"] = spent["fwd"] / n * 1e6
    rows["  of which inside the backward body"] = spent["bwd"] / n * 1e6
    # the backward's host work timed alone, but each call after an unrelated autograd forward + backward
    # (the empty Function): does code amid other code run slower than looped alone (cold caches)?
    total_s = 0.0
    for _ in range(args.iters):
        torch.autograd.grad(_Empty.apply(*xs), xs, dy)
        _sync(device)
        t0 = time.perf_counter()
        TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None)
        total_s += time.perf_counter() - t0
    rows["backward: build + launch + partial sums, each call after an empty autograd step"] = total_s / args.iters * 1e6
    # the backward's host work on another Python thread (as the engine's device thread runs it)
    import threading

    box: dict[str, float] = {}

    def on_thread() -> None:
        if device == "cuda":
            torch.cuda.set_device(x.device)
        box["v"] = us(lambda: TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None))

    worker = threading.Thread(target=on_thread)
    worker.start()
    worker.join()
    rows["backward: build + launch + partial sums, on a second Python thread"] = box["v"]
    # the same forward + backward with the autograd engine's device threads off: the backward then runs
    # on the calling thread (no hand-off between threads); then a profile of our Python in that mode
    torch.autograd.set_multithreading_enabled(False)
    try:
        rows["forward + backward: torch.autograd.grad, engine multithreading off"] = us(
            lambda: torch.autograd.grad(gspn2d(*xs[:3], u=xs[3], backend="triton"), xs, dy))
        rows["autograd floor, engine multithreading off"] = us(lambda: torch.autograd.grad(_Empty.apply(*xs), xs, dy))
        import cProfile
        import io
        import pstats

        prof_py = cProfile.Profile()
        prof_py.enable()
        for _ in range(200):
            torch.autograd.grad(gspn2d(*xs[:3], u=xs[3], backend="triton"), xs, dy)
        _sync(device)
        prof_py.disable()
        buf = io.StringIO()
        pstats.Stats(prof_py, stream=buf).sort_stats("tottime").print_stats(25)
        py_profile = buf.getvalue()
    finally:
        torch.autograd.set_multithreading_enabled(True)
    for k, v in rows.items():
        print(f"{v:8.1f} us  {k}")
    print("# cProfile of 200 forward + backward calls, engine multithreading off (tottime):")
    print(py_profile)
    table = None
    if not args.host_only:  # a profiler trace of the forward + backward: where the host time goes, by op
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                torch.autograd.grad(gspn2d(*xs[:3], u=xs[3]), xs, dy)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        print(table)
    json.dump(dict(shape=[B, H, W, C, G], dtype="bf16", torch=torch.__version__, host_only=args.host_only,
                   device=torch.cuda.get_device_name() if device == "cuda" else "cpu (kernels not launched)",
                   per_call_us=rows, profile=table, python_profile=py_profile),
              open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
