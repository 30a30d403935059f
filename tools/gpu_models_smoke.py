"""Build the four registered C-GSPN encoders on the GPU and run them at a non-square size (bf16)."""

import time

import timm
import torch

import cgspn  # noqa: F401  (registers the models)

for name in ("cgspn_small_patch14_dinov2", "cgspn_base_patch16_224", "cgspn_large_patch16_224", "cgspn_so400m_patch14_378"):
    model = timm.create_model(name).cuda().to(torch.bfloat16).eval()
    p = model.patch_size
    for hw in ((p * 16, p * 16), (p * 37, p * 53)):
        x = torch.randn(2, 3, *hw, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad():
            model(x)
            torch.cuda.synchronize()
            t = time.perf_counter()
            feats = model.forward_features(x)
            torch.cuda.synchronize()
        ok = bool(torch.isfinite(feats).all())
        print(f"{name} {hw[0]}x{hw[1]}: features {tuple(feats.shape)} finite={ok} {1e3 * (time.perf_counter() - t):.1f} ms", flush=True)
