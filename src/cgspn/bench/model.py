"""``cgspn bench model``: whole-encoder inference throughput and peak memory vs the isomorphic ViT.

For each pair (a registered C-GSPN encoder and the timm ViT it is isomorphic to, random weights,
same dtype, ``eval()`` under ``torch.inference_mode``) and each resolution (snapped to the nearest
multiple of the model's patch) and batch it reports img/s, ms per batch and peak memory. The ViT
runs with ``dynamic_img_size=True`` (its position embedding is resampled to the grid, as users
run it off its training size). Cases that run out of memory are reported as ``oom``.

``--search`` (default on CUDA) then finds, per model at B = 1, the largest square image that
runs in a single pass: sides grow geometrically from ``--search-start`` until an OOM (then
bisection between the last fit and the OOM), ``--search-max``, or a probe predicted to exceed
``--probe-time-limit`` seconds; the stop reason is reported.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ._measure import DTYPES, is_oom, measure, parse_overrides, release_memory, resolve_device, snap_to_patch, wall_once
from .common import peak_memory, print_table, run_metadata, save_figure, style_resolution_axes, write_json

PAIRS = {
    "tiny": ("cgspn_tiny_patch16_224", "vit_tiny_patch16_224"),
    "small": ("cgspn_small_patch14_dinov2", "vit_small_patch14_dinov2"),
    "base": ("cgspn_base_patch16_224", "vit_base_patch16_224"),
    "large": ("cgspn_large_patch16_224", "vit_large_patch16_224"),
    "so400m": ("cgspn_so400m_patch14_378", "vit_so400m_patch14_siglip_378"),
}
COLUMNS = [
    "pair", "px", "batch", "vit_img_s", "cgspn_img_s", "speedup", "vit_ms", "cgspn_ms", "vit_peak_gib", "cgspn_peak_gib",
]
SEARCH_COLUMNS = ["model", "largest_px", "grid", "tokens", "seconds", "peak_gib", "stopped_by", "first_oom_px"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["so400m", "base"],
                   help="model pairs (default: %(default)s)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[224, 518, 1036, 2058],
                   help="image sides in px, snapped to each model's patch (default: %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 1], help="batch sizes (default: %(default)s)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights and activations (default: %(default)s)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="model argument for both models of each pair, e.g. --set depth=2 (repeatable)")
    p.add_argument("--cgspn-set", dest="cgspn_overrides", action="append", metavar="KEY=VALUE",
                   help="C-GSPN-only argument, e.g. --cgspn-set gate_groups=64 or attn_layers=[8,17,26] (repeatable)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode for --compile, e.g. reduce-overhead (CUDA graphs: the launch-bound B = 1 case)")
    p.add_argument("--vit-nhwc-embed", action="store_true",
                   help="run the ViT's patch convolution in channels-last memory format, so its token stream is "
                        "contiguous (stock timm leaves it strided; cgspn models always do this)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls per case (default: %(default)s)")
    p.add_argument("--iters", type=int, default=10, help="max timed calls per case, median reported (default: %(default)s)")
    p.add_argument("--target-seconds", type=float, default=3.0,
                   help="slow cases use fewer calls, about this long each (default: %(default)s)")
    p.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                   help="largest single-pass resolution at B=1 (default: on for CUDA, off for CPU)")
    p.add_argument("--search-start", type=int, default=1036, help="first probed side in px (default: %(default)s)")
    p.add_argument("--search-max", type=int, default=32768,
                   help="largest probed side in px (default: %(default)s; keeps every scan tensor under 2**31 "
                        "elements at C_c=64)")
    p.add_argument("--search-growth", type=float, default=math.sqrt(2), help="side growth per probe (default: sqrt 2)")
    p.add_argument("--search-refine", type=int, default=3, help="bisection steps after the first OOM (default: %(default)s)")
    p.add_argument("--probe-time-limit", type=float, default=60.0,
                   help="stop growing when the next probe is predicted to take longer (s) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_model.json", help="JSON output path (default: %(default)s)")
    p.add_argument("--plot", default=None, help="write an img/s-vs-resolution PNG here")


def build_model(name: str, overrides: dict[str, Any], device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A registered model with random weights, ``eval()``, in ``dtype`` on ``device``."""
    import timm

    import cgspn  # noqa: F401  registers the cgspn_* models

    kwargs = dict(overrides)
    if name.startswith("vit_"):
        kwargs["dynamic_img_size"] = True
    with torch.device(device):  # initialise on the device: fast for the 400M-parameter models
        model = timm.create_model(name, **kwargs)
    return model.to(dtype=dtype).eval()


def use_nhwc_patch_embed(model: nn.Module) -> nn.Module:
    """Make a timm ViT's patch convolution run in channels-last memory format (hooks, same weights).

    timm's ``PatchEmbed`` convolves NCHW and then flattens + transposes, which leaves the token
    stream (B, N, C) strided (channel stride N): every residual add then takes PyTorch's strided
    elementwise kernel and every LayerNorm copies first. With a channels-last input the conv output
    is physically NHWC and the flattened tokens are contiguous. The function is unchanged.
    """
    pe = model.patch_embed
    pe.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:]))
    pe.register_forward_hook(lambda _m, _args, out: out.contiguous())
    return model


def model_patch(model: nn.Module) -> int:
    ps = model.patch_embed.patch_size
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


def _forward_fn(model: nn.Module, images: torch.Tensor):
    def fwd() -> None:
        with torch.inference_mode():
            model(images)
    return fwd


def _images(batch: int, px: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(batch, 3, px, px, device=device, dtype=dtype)


def probe(model: nn.Module, px: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """One B=1 forward at px x px: seconds and peak memory, or ``{'oom': True}``."""
    release_memory(device)
    try:
        images = _images(1, px, device, dtype)
        seconds = wall_once(_forward_fn(model, images), device)
        peak = peak_memory(device)
        del images
    except Exception as e:  # noqa: BLE001 - only OOM is swallowed
        if not is_oom(e):
            raise
        release_memory(device)
        return {"px": px, "oom": True}
    release_memory(device)
    return {"px": px, "seconds": seconds, "peak_gib": None if peak is None else peak / 2**30}


def search_largest(model: nn.Module, name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Largest square side that runs at B=1 (see the module docstring); every probe is recorded."""
    patch = model_patch(model)
    side = max(1, round(args.search_start / patch))
    max_side = max(side, args.search_max // patch)
    probes: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    oom_side: int | None = None
    stopped_by = "search-max"
    while True:
        r = probe(model, side * patch, device, dtype)
        probes.append(r)
        print(f"  {name} @ {side * patch} px: " + ("OOM" if r.get("oom") else f"{r['seconds']:.2f} s, peak {r['peak_gib'] and round(r['peak_gib'], 1)} GiB"), flush=True)
        if r.get("oom"):
            oom_side, stopped_by = side, "oom"
            break
        best = {**r, "side": side}
        if side >= max_side:
            break
        nxt = min(max_side, max(side + 1, int(side * args.search_growth)))
        if len(probes) >= 2 and not probes[-2].get("oom"):
            prev_side = int(probes[-2]["px"]) // patch
            exponent = math.log(max(r["seconds"], 1e-9) / max(probes[-2]["seconds"], 1e-9)) / math.log((side / prev_side) ** 2)
            exponent = min(2.0, max(1.0, exponent))
        else:
            exponent = 2.0 if name.startswith("vit_") else 1.0
        predicted = r["seconds"] * ((nxt / side) ** 2) ** exponent
        if predicted > args.probe_time_limit:
            stopped_by = f"time (next {nxt * patch} px predicted {predicted:.0f} s)"
            break
        side = nxt
    if oom_side is not None and best is not None:
        lo, hi = best["side"], oom_side
        for _ in range(args.search_refine):
            if hi - lo <= 1:
                break
            mid = (lo + hi) // 2
            r = probe(model, mid * patch, device, dtype)
            probes.append(r)
            print(f"  {name} @ {mid * patch} px: " + ("OOM" if r.get("oom") else f"{r['seconds']:.2f} s"), flush=True)
            if r.get("oom"):
                hi = mid
            else:
                lo, best = mid, {**r, "side": mid}
        oom_side = hi
    row = {"model": name, "stopped_by": stopped_by, "first_oom_px": None if oom_side is None else oom_side * patch}
    if best is not None:
        row.update(
            largest_px=best["side"] * patch, grid=f"{best['side']}x{best['side']}", tokens=best["side"] ** 2,
            seconds=best["seconds"], peak_gib=best["peak_gib"],
        )
    return {"row": row, "probes": probes}


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    overrides = parse_overrides(args.overrides)
    cgspn_overrides = parse_overrides(args.cgspn_overrides)
    do_search = (device.type == "cuda") if args.search is None else args.search
    meta = run_metadata(device)
    meta.update(dtype=args.dtype, overrides=overrides, cgspn_overrides=cgspn_overrides)
    print(f"# {meta['device']}, torch {meta['torch']}, {args.dtype}", flush=True)
    rows: list[dict[str, Any]] = []
    searches: list[dict[str, Any]] = []
    params: dict[str, int] = {}
    for pair in args.pairs:
        cg_name, vit_name = PAIRS[pair]
        for name, extra in ((vit_name, {}), (cg_name, cgspn_overrides)):
            torch.manual_seed(args.seed)
            model = build_model(name, {**overrides, **extra}, device, dtype)
            if name == vit_name and args.vit_nhwc_embed:
                use_nhwc_patch_embed(model)
            params[name] = sum(p.numel() for p in model.parameters())
            runner = torch.compile(model, mode=args.compile_mode) if (args.compile or args.compile_mode) else model
            patch = model_patch(model)
            print(f"# {name}: {params[name] / 1e6:.2f}M parameters, patch {patch}", flush=True)
            for batch in args.batches:
                for px_req in args.resolutions:
                    px = snap_to_patch(px_req, patch)
                    try:
                        images = _images(batch, px, device, dtype)
                    except Exception as e:  # noqa: BLE001
                        if not is_oom(e):
                            raise
                        res = {"oom": True}
                    else:
                        res = measure(_forward_fn(runner, images), device, warmup=args.warmup, iters=args.iters,
                                      target_seconds=args.target_seconds)
                        del images
                    key = "vit" if name == vit_name else "cgspn"
                    row = next((r for r in rows if r["pair"] == pair and r["px_req"] == px_req and r["batch"] == batch), None)
                    if row is None:
                        row = {"pair": pair, "px_req": px_req, "px": px, "batch": batch}
                        rows.append(row)
                    if res.get("oom"):
                        row[f"{key}_ms"] = row[f"{key}_img_s"] = "oom"
                    else:
                        row[f"{key}_ms"] = res["ms"]
                        row[f"{key}_img_s"] = batch / (res["ms"] / 1e3)
                        row[f"{key}_peak_gib"] = res["peak_gib"]
                    if key == "cgspn" and px != row["px"]:
                        row["px"] = f"{row['px']}/{px}"
                    print(f"  {name} {px} px B={batch}: " + (
                        "OOM" if res.get("oom") else f"{res['ms']:.2f} ms, {batch / (res['ms'] / 1e3):.1f} img/s"
                    ), flush=True)
            del model, runner
            release_memory(device)
    for r in rows:
        a, b = r.get("vit_img_s"), r.get("cgspn_img_s")
        r["speedup"] = b / a if isinstance(a, float) and isinstance(b, float) and a > 0 else None
    print()
    table = print_table(rows, COLUMNS)
    payload: dict[str, Any] = {
        "meta": meta, "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "params": params, "rows": rows, "table": table,
    }
    if args.plot:
        payload["plot"] = str(plot_throughput(rows, args.plot, title=f"{args.dtype}, {meta['device']}"))
        print(f"# plot: {payload['plot']}")
    path = write_json(args.out, payload)  # the throughput results are safe before the (long) search
    print(f"# wrote {path}")
    if do_search:
        print("# largest single-pass resolution at B=1", flush=True)
        for pair in args.pairs:
            cg_name, vit_name = PAIRS[pair]
            for name, extra in ((vit_name, {}), (cg_name, cgspn_overrides)):
                torch.manual_seed(args.seed)
                model = build_model(name, {**overrides, **extra}, device, dtype)
                if name == vit_name and args.vit_nhwc_embed:
                    use_nhwc_patch_embed(model)
                searches.append(search_largest(model, name, args, device, dtype))
                payload["search"] = searches
                write_json(args.out, payload)
                del model
                release_memory(device)
        print()
        payload["search_table"] = print_table([s["row"] for s in searches], SEARCH_COLUMNS)
        write_json(args.out, payload)
        print(f"# wrote {path}")
    return 0


def plot_throughput(rows: list[dict[str, Any]], path: str, title: str = "") -> Path:
    """img/s vs resolution, one panel per batch, a line per model (log-log)."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    batches = sorted({r["batch"] for r in rows}, reverse=True)
    pairs = sorted({r["pair"] for r in rows})
    resolutions = sorted({r["px_req"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.0), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for color, pair in enumerate(pairs):
            sel = sorted((r for r in rows if r["pair"] == pair and r["batch"] == batch), key=lambda r: r["px_req"])
            for key, style, label in (("vit_img_s", "o--", "ViT"), ("cgspn_img_s", "s-", "C-GSPN")):
                pts = [(r["px_req"], r[key]) for r in sel if isinstance(r.get(key), float)]
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{color}", label=f"{label} {pair}")
        style_resolution_axes(ax, resolutions, "img/s", f"inference, B={batch}")
    return save_figure(fig, path, title)
