"""A device-to-device copy of 2 GiB (what `bench op` measures its "% of copy" against), for Nsight
Compute: which L2 units the copy keeps busy, next to the scan kernels' figures (docs/design.md,
ninth session).

    ncu --metrics breakdown:lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed \
        -k regex:copy --launch-count 1 python3 tools/ncu_copy_probe.py
"""

import torch

n = (2 << 30) // 4
a = torch.empty(n, dtype=torch.float32, device="cuda").normal_()
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
torch.cuda.synchronize()
print("ok", b.numel())
