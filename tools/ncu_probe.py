"""Run the fused forward and backward once on a given shape (for Nsight Compute profiling).

    ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats -k regex:gspn_ python3 tools/ncu_probe.py 32 74 74 64 64
"""

import sys

import torch

from cgspn.ops.gspn import triton_backend as TB

B, H, W, C, G = (int(v) for v in sys.argv[1:6])
dt = torch.bfloat16
x = torch.randn(B, H, W, C, device="cuda", dtype=dt)
lam = torch.randn(B, H, W, 4, C, device="cuda", dtype=dt)
z = torch.randn(B, H, W, 4, 3, G, device="cuda", dtype=dt)
u = torch.randn(B, H, W, 4, C, device="cuda", dtype=dt)
dy = torch.randn(B, H, W, 4, C, device="cuda", dtype=dt)
y, h = TB.gspn2d_fwd_triton(x, lam, z, u, None, True)
TB.gspn2d_bwd_triton(dy, x, lam, z, u, h, None)
torch.cuda.synchronize()
print("ok", y.float().abs().mean().item())
