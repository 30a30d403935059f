"""``cgspn bench block``: one C-GSPN block against timm's ViT block (SDPA), with the MLP ceiling.

For each resolution (square images, patch p, so an (px/p) x (px/p) grid), batch and mode
(``fwd``: forward under no_grad; ``fwdbwd``: forward + backward) it times, in the same run and dtype:

* ``vit_ms``: timm ``Block`` (SDPA attention + MLP), the block users run today;
* ``cgspn_ms``: :class:`cgspn.layers.CGSPNBlock` (latent propagation + the same MLP);
* ``floor_ms``: the ViT block's own MLP sub-layer (norm + MLP + residual) plus one C x C
  projection: what a block with a free mixer would still cost;
* ``ceiling = vit_ms / floor_ms``: the largest speed-up any mixer could give, and
  ``of_ceiling = speedup / ceiling``;
* ``vit_mixer_ms`` / ``cgspn_mixer_ms``: the mixer sub-layers alone (norm1 + mixer + residual);
* the peak memory of each block.

Defaults are the SO400M width (C = 1152, MLP 4304, 16 heads, patch 14) at 224/518/1036/2058 px,
B = 32 and 1, bf16. ``--plot`` draws latency against resolution with the floor (PNG).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ._measure import DTYPES, measure, resolve_device
from .common import print_table, run_metadata, save_figure, style_resolution_axes, write_json

MODES = ("fwd", "fwdbwd")
COLUMNS = [
    "px", "grid", "batch", "mode", "vit_ms", "cgspn_ms", "speedup", "floor_ms", "ceiling", "of_ceiling",
    "vit_mixer_ms", "cgspn_mixer_ms", "vit_peak_gib", "cgspn_peak_gib",
]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, default=1152, help="width C (default: %(default)s, SO400M)")
    p.add_argument("--mlp-dim", type=int, default=4304, help="MLP hidden width (default: %(default)s)")
    p.add_argument("--heads", type=int, default=16, help="attention heads of the ViT block (default: %(default)s)")
    p.add_argument("--patch", type=int, default=14, help="patch side in px (default: %(default)s)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[224, 518, 1036, 2058],
                   help="image sides in px, multiples of --patch (default: %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 1], help="batch sizes (default: %(default)s)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="fwd and/or fwdbwd (default: both)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="parameter and activation dtype (default: %(default)s)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--latent-dim", type=int, default=None, help="C-GSPN scan width C_c (default: C // 18 rounded up to 16)")
    p.add_argument("--gate-groups", type=int, default=None, help="C-GSPN gate groups G (default: C_c // 4)")
    p.add_argument("--chunk", type=int, default=None, help="C-GSPN scan window (default: global lines)")
    p.add_argument("--scan-backend", choices=("triton", "reference"), default=None,
                   help="gspn2d backend (default: triton on CUDA, reference on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile every timed module (both blocks alike)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for --compile, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--no-mixer-only", action="store_true", help="skip the mixer-sub-layer timings")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls per case (default: %(default)s)")
    p.add_argument("--iters", type=int, default=20, help="max timed calls per case, median reported (default: %(default)s)")
    p.add_argument("--target-seconds", type=float, default=2.0,
                   help="slow cases use fewer calls, about this long each (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_block.json", help="JSON output path (default: %(default)s)")
    p.add_argument("--plot", default=None, help="write a latency-vs-resolution PNG here")


def build_blocks(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, nn.Module]:
    """The ViT block, the C-GSPN block and the floor's C x C projection, in ``dtype`` on ``device``."""
    from timm.models.vision_transformer import Block

    from ..layers import CGSPNBlock

    mlp_ratio = (args.mlp_dim + 0.5) / args.dim  # int(dim * ratio) == mlp_dim exactly
    vit = Block(args.dim, num_heads=args.heads, mlp_ratio=mlp_ratio, qkv_bias=True)
    cgspn = CGSPNBlock(
        args.dim, num_heads=args.heads, mlp_ratio=mlp_ratio, latent_dim=args.latent_dim,
        gate_groups=args.gate_groups, chunk=args.chunk, scan_backend=args.scan_backend,
    )
    assert vit.mlp.fc1.out_features == cgspn.mlp.fc1.out_features == args.mlp_dim
    proj = nn.Linear(args.dim, args.dim)
    return {n: m.to(device=device, dtype=dtype) for n, m in (("vit", vit), ("cgspn", cgspn), ("proj", proj))}


def block_functions(
    mods: dict[str, nn.Module], grid: tuple[int, int], compile_: bool, compile_mode: str | None = None
) -> dict[str, Callable]:
    """Callables x -> y for the timed variants: blocks, floor, mixer sub-layers."""
    vit, cg, proj = mods["vit"], mods["cgspn"], mods["proj"]

    def floor(x: torch.Tensor) -> torch.Tensor:
        return proj(x + vit.mlp(vit.norm2(x)))

    fns: dict[str, Callable] = {
        "vit": lambda x: vit(x),
        "cgspn": lambda x: cg(x, grid),
        "floor": floor,
        "vit_mixer": lambda x: x + vit.attn(vit.norm1(x)),
        "cgspn_mixer": lambda x: x + cg.mixer(cg.norm1(x), grid),
    }
    if compile_ or compile_mode:
        fns = {k: torch.compile(f, mode=compile_mode) for k, f in fns.items()}
    return fns


def _timed(fn: Callable, x: torch.Tensor, mode: str, params: list[nn.Parameter]) -> Callable[[], Any]:
    if mode == "fwd":
        def run_fwd() -> None:
            with torch.no_grad():
                fn(x)
        return run_fwd
    x = x.detach().requires_grad_(True)
    dy = torch.randn_like(x)

    def run_fwdbwd() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        fn(x).backward(dy)
    return run_fwdbwd


def _ms(result: dict[str, Any]) -> float | None:
    return result.get("ms")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    for px in args.resolutions:
        if px % args.patch:
            raise ValueError(f"--resolutions: {px} px is not a multiple of the patch {args.patch}")
    torch.manual_seed(args.seed)
    mods = build_blocks(args, device, dtype)
    params = {
        "vit": list(mods["vit"].parameters()),
        "cgspn": list(mods["cgspn"].parameters()),
        "floor": list(mods["vit"].mlp.parameters()) + list(mods["vit"].norm2.parameters()) + list(mods["proj"].parameters()),
        "vit_mixer": list(mods["vit"].attn.parameters()) + list(mods["vit"].norm1.parameters()),
        "cgspn_mixer": list(mods["cgspn"].mixer.parameters()) + list(mods["cgspn"].norm1.parameters()),
    }
    mixer = mods["cgspn"].mixer
    meta = run_metadata(device)
    meta.update(
        dtype=args.dtype,
        scan_backend=args.scan_backend or ("triton" if device.type == "cuda" else "reference"),
        latent_dim=mixer.latent_dim, gate_groups=mixer.gate_groups, chunk=mixer.chunk,
        vit_block_params=sum(p.numel() for p in params["vit"]),
        cgspn_block_params=sum(p.numel() for p in params["cgspn"]),
    )
    if device.type == "cuda":
        meta["sdpa"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)(),
        }
    print(
        f"# {meta['device']}, torch {meta['torch']}, {args.dtype}; C={args.dim}, MLP {args.mlp_dim}, "
        f"C_c={mixer.latent_dim}, G={mixer.gate_groups}, chunk={mixer.chunk}, scan {meta['scan_backend']}",
        flush=True,
    )
    variants = ["vit", "cgspn", "floor"] + ([] if args.no_mixer_only else ["vit_mixer", "cgspn_mixer"])
    rows: list[dict[str, Any]] = []
    for batch, px, mode in itertools.product(args.batches, args.resolutions, args.modes):
        g = px // args.patch
        fns = block_functions(mods, (g, g), args.compile, args.compile_mode)
        x = torch.randn(batch, g * g, args.dim, device=device, dtype=dtype)
        res = {}
        for name in variants:
            res[name] = measure(
                _timed(fns[name], x, mode, params[name]), device,
                warmup=args.warmup, iters=args.iters, target_seconds=args.target_seconds,
            )
        del x
        speedup = _ratio(_ms(res["vit"]), _ms(res["cgspn"]))
        ceiling = _ratio(_ms(res["vit"]), _ms(res["floor"]))
        row = {
            "px": px, "grid": f"{g}x{g}", "batch": batch, "mode": mode,
            "vit_ms": _ms(res["vit"]) if not res["vit"].get("oom") else "oom",
            "cgspn_ms": _ms(res["cgspn"]) if not res["cgspn"].get("oom") else "oom",
            "speedup": speedup, "floor_ms": _ms(res["floor"]), "ceiling": ceiling,
            "of_ceiling": _ratio(speedup, ceiling),
            "vit_mixer_ms": _ms(res.get("vit_mixer", {})), "cgspn_mixer_ms": _ms(res.get("cgspn_mixer", {})),
            "vit_peak_gib": res["vit"].get("peak_gib"), "cgspn_peak_gib": res["cgspn"].get("peak_gib"),
        }
        rows.append(row)
        print(
            f"{px} px B={batch} {mode}: ViT {_fmt(row['vit_ms'])} ms, C-GSPN {_fmt(row['cgspn_ms'])} ms, "
            f"floor {_fmt(row['floor_ms'])} ms; speedup {_fmt(speedup)}x of ceiling {_fmt(ceiling)}x",
            flush=True,
        )
    print()
    table = print_table(rows, COLUMNS)
    payload = {"meta": meta, "config": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "rows": rows, "table": table}
    if args.plot:
        payload["plot"] = str(plot_latency(rows, args.plot, title=f"C={args.dim}, MLP {args.mlp_dim}, {args.dtype}, {meta['device']}"))
        print(f"# plot: {payload['plot']}")
    path = write_json(args.out, payload)
    print(f"# wrote {path}")
    return 0


def plot_latency(rows: list[dict[str, Any]], path: str, title: str = "") -> Path:
    """Latency vs resolution, one panel per batch (rows) and mode (columns): ViT block, C-GSPN block and the floor
    (the ViT block with a free mixer), log scale; annotated with speedup / ceiling."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    batches = sorted({r["batch"] for r in rows}, reverse=True)
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(len(batches), len(modes), figsize=(5.2 * len(modes), 4.0 * len(batches)), squeeze=False)
    for (i, batch), (j, mode) in itertools.product(enumerate(batches), enumerate(modes)):
        ax = axes[i][j]
        sel = sorted((r for r in rows if r["batch"] == batch and r["mode"] == mode), key=lambda r: r["px"])
        for key, label, style in (
            ("vit_ms", "ViT block (SDPA)", "o-"),
            ("cgspn_ms", "C-GSPN block", "s-"),
            ("floor_ms", "floor: MLP + one CxC (free mixer)", "k--"),
        ):
            pts = [(r["px"], r[key]) for r in sel if isinstance(r.get(key), float)]
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        for r in sel:
            if isinstance(r.get("cgspn_ms"), float) and r.get("speedup") and r.get("ceiling"):
                ax.annotate(f"{r['speedup']:.1f}x/{r['ceiling']:.1f}x", (r["px"], r["cgspn_ms"]),
                            textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7)
        style_resolution_axes(ax, [r["px"] for r in sel], "ms",
                              f"B={batch}, {'forward' if mode == 'fwd' else 'forward+backward'}")
    return save_figure(fig, path, f"{title}  (labels: speedup / ceiling)" if title else None)
