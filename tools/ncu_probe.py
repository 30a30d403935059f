"""Run the fused forward (as benchmarked, then saving the state) and the backward once on a given
shape (for Nsight Compute profiling). A 6th argument ``evict`` runs the dispatch's configs with the
cache eviction hints (``LaunchConfig.evict``); a 7th, the dtype (bf16, fp32; default bf16).

    ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats -k regex:gspn_ python3 tools/ncu_probe.py 32 74 74 64 64
    ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum -k regex:gspn_ \
        python3 tools/ncu_probe.py 32 74 74 64 1 evict
"""

import dataclasses
import sys

import torch

from cgspn.ops.gspn import triton_backend as TB

B, H, W, C, G = (int(v) for v in sys.argv[1:6])
evict = len(sys.argv) > 6 and sys.argv[6] == "evict"
dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[7] if len(sys.argv) > 7 else "bf16"]
x = torch.randn(B, H, W, C, device="cuda", dtype=dt)
lam = torch.randn(B, H, W, 4, C, device="cuda", dtype=dt)
z = torch.randn(B, H, W, 4, 3, G, device="cuda", dtype=dt)
u = torch.randn(B, H, W, 4, C, device="cuda", dtype=dt)
dy = torch.randn(B, H, W, 4, C, device="cuda", dtype=dt)
fwd = TB.gspn2d_forward_config(B, H, W, C, G, dt.itemsize)
bwd = TB.backward_config(max(H, W), C, C // G, B=B, itemsize=dt.itemsize)[0]
if evict:
    fwd, bwd = dataclasses.replace(fwd, evict=True), dataclasses.replace(bwd, evict=True)
y, _ = TB.gspn2d_fwd_triton(x, lam, z, u, None, False, fwd)
y, h = TB.gspn2d_fwd_triton(x, lam, z, u, None, True, fwd)
TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None, bwd)
torch.cuda.synchronize()
print("ok", evict, dt, fwd, bwd, y.float().abs().mean().item())
