"""Training-step time (forward + backward, bf16 autocast) of the C-GSPN base encoder and the timm
ViT-B with the autograd engine's device threads on (PyTorch's default) and off
(``torch.autograd.set_multithreading_enabled(False)``: the backward runs on the calling thread).
A measurement probe: on the H200's host a gspn2d forward + backward cost 0.73 ms of host time with
the device threads and 0.37 ms without (tools/op_overhead.py, ninth session); this says what that is
worth per training step of a small-batch model.

    PYTHONPATH=$PWD/src python3 tools/autograd_threads_probe.py --batches 1 8 32 --out threads.json
"""

from __future__ import annotations

import argparse
import json

import timm
import torch

import cgspn.models  # noqa: F401  (registers the cgspn_* models with timm)
from cgspn.bench.common import time_fn


def step_ms(model: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    """Median ms of one training step (the benchmarks' timer, cgspn.bench.common.time_fn)."""
    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().mean().backward()

    return time_fn(step, warmup=3, iters=iters, device="cuda")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["cgspn_base_patch16_224", "vit_base_patch16_224"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--px", type=int, default=224)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default="autograd_threads.json")
    args = ap.parse_args()
    rows = []
    for name in args.models:
        model = timm.create_model(name, pretrained=False, num_classes=0, img_size=args.px).cuda()
        for B in args.batches:
            x = torch.randn(B, 3, args.px, args.px, device="cuda")
            row = {"model": name, "batch": B, "px": args.px}
            for mode in (True, False):
                torch.autograd.set_multithreading_enabled(mode)
                row["threads_on_ms" if mode else "threads_off_ms"] = step_ms(model, x, args.iters)
            torch.autograd.set_multithreading_enabled(True)
            row["gain"] = row["threads_on_ms"] / row["threads_off_ms"]
            rows.append(row)
            print(f"{name} B={B} {args.px}px: step {row['threads_on_ms']:.2f} ms (device threads) / "
                  f"{row['threads_off_ms']:.2f} ms (off): {row['gain']:.2f}x", flush=True)
        del model
        torch.cuda.empty_cache()
    json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "rows": rows}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
