"""Does the inputs' memory layout set the forward's bandwidth ceiling?

A measurement probe (not library code). ``gspn2d`` takes lam, u (B,H,W,4,C) and the logits
(B,H,W,4,3,G) as strided views. In the default layout the four directions' slices of a pixel are
interleaved (direction stride C), so each scan program reads 64-128-byte pieces scattered over
the whole tensor at every step. Direction-major planes (storage (4,B,H,W,C), viewed as
(B,H,W,4,C)) make a row walk read one contiguous run per step and a column walk whole pixels;
y follows lam's layout. This times the dispatched forward (and a few launch configs) on both
layouts, same bytes, and reports the % of the copy bandwidth.

    PYTHONPATH=$PWD/src python3 tools/layout_probe.py --out layout_probe.json
"""

from __future__ import annotations

import argparse
import json

import torch

from cgspn.bench.common import copy_bandwidth_gbs, time_fn
from cgspn.bench.op import op_bytes
from cgspn.ops.gspn import triton_backend as TB
from cgspn.ops.gspn.triton_backend import LaunchConfig


def direction_major(t: torch.Tensor) -> torch.Tensor:
    """The same values, stored with the direction axis (dim 3) outermost."""
    perm = [3, 0, 1, 2] + list(range(4, t.dim()))
    inv = [perm.index(i) for i in range(t.dim())]
    return t.permute(perm).contiguous().permute(inv)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="32,147,147,64;32,74,74,64")
    ap.add_argument("--groups", default="C,16,1")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default="layout_probe.json")
    args = ap.parse_args()
    copy = copy_bandwidth_gbs("cuda")
    rows = []
    for shape in args.shapes.split(";"):
        B, H, W, C = (int(v) for v in shape.split(","))
        L = max(H, W)
        for dname in args.dtypes.split(","):
            dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dname]
            for gt in args.groups.split(","):
                G = C if gt == "C" else int(gt)
                mk = lambda *s: torch.randn(*s, device="cuda").to(dtype)
                x, lam, z, u = mk(B, H, W, C), mk(B, H, W, 4, C), mk(B, H, W, 4, 3, G), mk(B, H, W, 4, C)
                nbytes = op_bytes(B, H, W, C, G, dtype.itemsize, True)["fwd"]
                want = TB.gspn2d_fwd_triton(x, lam, z, u, None, False)[0]
                heur = TB.gspn2d_forward_config(B, H, W, C, G, dtype.itemsize)
                tiles = TB._split_tiles(L)
                cfgs = [("heuristic", heur)]
                if tiles is not None:
                    k, r = tiles
                    for bc, w in ((64, 16), (32, 16), (16, 8)):
                        cfgs.append((f"scratch bc={bc} w={w}", LaunchConfig(k, bc, w, 1, 1, False, r, True)))
                for layout in ("interleaved", "direction-major"):
                    if layout == "direction-major":
                        lam_l, z_l, u_l = direction_major(lam), direction_major(z), direction_major(u)
                    else:
                        lam_l, z_l, u_l = lam, z, u
                    for name, cfg in cfgs:
                        try:
                            y = TB.gspn2d_fwd_triton(x, lam_l, z_l, u_l, None, False, cfg)[0]
                            err = float((y.float() - want.float()).abs().max())
                            ms = time_fn(lambda: TB.gspn2d_fwd_triton(x, lam_l, z_l, u_l, None, False, cfg), iters=args.iters)
                        except Exception as e:
                            rows.append({"shape": shape, "G": G, "dtype": dname, "layout": layout, "config": name, "error": str(e)[:200]})
                            continue
                        pct = 100 * nbytes / ms / 1e6 / copy
                        rows.append({"shape": shape, "G": G, "dtype": dname, "layout": layout, "config": name,
                                     "cfg": cfg.__dict__, "y_strides": list(y.stride()), "ms": ms, "pct_copy": pct, "max_abs_err": err})
                        print(f"{shape} G={G} {dname} {layout:15s} {name:22s} {ms:.4f} ms {pct:5.1f}% err {err:.1e}", flush=True)
                del x, lam, z, u
                torch.cuda.empty_cache()
                with open(args.out, "w") as f:
                    json.dump({"copy_GBs": copy, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
