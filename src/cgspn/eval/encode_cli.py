"""``cgspn encode``: one image, any resolution, one pass; features to safetensors, PCA to PNG.

    cgspn encode photo.jpg --size 2048 --out feats.safetensors --show pca.png [--compare-teacher]

The image is resized (aspect kept) so that its longer side is ``--size`` (``--side short`` /
``square`` for the other conventions), rounded to a multiple of the patch size, and encoded in a
single forward pass -- no tiling. The time of that pass and the peak memory are printed.

Written tensors (float32, or float16 with ``--half``): ``patch_features`` ``(1, C, H/p, W/p)``,
``pooled`` ``(1, C)``; with ``--compare-teacher`` also ``teacher_patch_features`` and
``teacher_pooled``. The file's metadata records the model, weights, image and sizes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .backbone import DEFAULT_MODEL, Encoder, load_encoder, load_teacher, parse_model_args
from .images import load_image, resize_to, target_size, to_tensor
from .metrics import token_cosine
from .report import format_bytes, peak_memory_bytes, reset_peak_memory

__all__ = ["configure", "run", "encode_image"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (jpg/png/...)")
    parser.add_argument("--size", type=int, default=518, help="target size in px of the longer side (default 518); rounded to the patch")
    parser.add_argument("--side", choices=("long", "short", "square"), default="long", help="which side --size sets (square: resize to size x size)")
    parser.add_argument("--out", default=None, help="write features to this .safetensors file")
    parser.add_argument("--show", default=None, help="write a PNG: the image and the PCA of its patch features")
    parser.add_argument("--compare-teacher", action="store_true", help="also encode with the attention teacher; show it alongside and print the cosine")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name, or 'teacher' (default {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", default=None, help="safetensors file or folder of shards for --model")
    parser.add_argument("--model-args", default=None, help='JSON of extra timm create_model kwargs, e.g. \'{"depth": 2}\'')
    parser.add_argument("--random-init", action="store_true", help="allow random weights when the model has no shipped weights (for smoke tests only)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default)")
    parser.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 or auto (bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--repeat", type=int, default=1, help="time this many passes and report the fastest too (default 1)")
    parser.add_argument("--half", action="store_true", help="store features as float16")


def encode_image(encoder: Encoder, x: torch.Tensor, repeat: int = 1) -> dict:
    """Encode a normalised ``(1, 3, H, W)`` batch; return features, times (ms) and peak memory.

    Returns ``{"patch": (1, C, h, w), "pooled": (1, C), "first_ms", "best_ms", "peak_bytes", "peak_what"}``.
    """
    dev = encoder.device
    reset_peak_memory(dev)
    times = []
    for _ in range(max(1, repeat)):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        patch, pooled = encoder(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    peak, what = peak_memory_bytes(dev)
    return {"patch": patch.cpu(), "pooled": pooled.cpu(), "first_ms": times[0], "best_ms": min(times), "peak_bytes": peak, "peak_what": what}


def _describe(tag: str, enc: Encoder, res: dict, hw: tuple[int, int]) -> None:
    h, w = hw
    grid = tuple(res["patch"].shape[-2:])
    timing = f"{res['first_ms']:.1f} ms" + (f" (fastest of repeats {res['best_ms']:.1f} ms)" if res["best_ms"] != res["first_ms"] else "")
    print(f"{tag}: {enc.name} [{enc.source}] {h}x{w} px -> {grid[0]}x{grid[1]} tokens x {res['patch'].shape[1]} ch; "
          f"one pass {timing}; {res['peak_what']} {format_bytes(res['peak_bytes'])} on {enc.device}", flush=True)


def run(args: argparse.Namespace) -> int:
    img = load_image(args.image)
    student = load_encoder(args.model, args.checkpoint, random_init=args.random_init, device=args.device, dtype=args.dtype,
                           model_kwargs=parse_model_args(args.model_args))
    if "RANDOM" in student.source:
        print(f"note: {student.name} runs on RANDOM weights (--random-init): the features mean nothing", flush=True)
    hw = target_size(img.width, img.height, args.size, student.patch_size, args.side)
    x = to_tensor(resize_to(img, hw), student.mean, student.std)[None]
    res = encode_image(student, x, args.repeat)
    _describe("student", student, res, hw)

    tensors = {"patch_features": res["patch"], "pooled": res["pooled"]}
    meta = {
        "model": student.name, "weights": student.source, "image": str(Path(args.image).resolve()),
        "image_size_wh": json.dumps([img.width, img.height]), "input_hw": json.dumps(list(hw)),
        "grid_hw": json.dumps(list(res["patch"].shape[-2:])), "patch_size": str(student.patch_size),
        "pass_ms": f"{res['first_ms']:.2f}", "peak_bytes": str(res["peak_bytes"]), "device": str(student.device),
    }
    maps = [(f"{student.name}", res["patch"][0])]
    if args.compare_teacher:
        teacher = load_teacher(device=args.device, dtype=args.dtype)
        if teacher.patch_size != student.patch_size:
            raise ValueError(f"teacher patch {teacher.patch_size} != student patch {student.patch_size}: grids differ")
        xt = to_tensor(resize_to(img, hw), teacher.mean, teacher.std)[None]
        tres = encode_image(teacher, xt, args.repeat)
        _describe("teacher", teacher, tres, hw)
        tensors["teacher_patch_features"] = tres["patch"]
        tensors["teacher_pooled"] = tres["pooled"]
        if tres["patch"].shape == res["patch"].shape:
            cos_p = token_cosine(res["patch"].flatten(2).transpose(1, 2), tres["patch"].flatten(2).transpose(1, 2)).mean().item()
            cos_g = token_cosine(res["pooled"], tres["pooled"]).mean().item()
            print(f"cosine to teacher: patch tokens {cos_p:.4f}, pooled {cos_g:.4f}; speed ratio teacher/student {tres['first_ms'] / res['first_ms']:.2f}x", flush=True)
            meta["cosine_patch_to_teacher"] = f"{cos_p:.6f}"
            meta["cosine_pooled_to_teacher"] = f"{cos_g:.6f}"
        maps.insert(0, ("teacher", tres["patch"][0]))
    if args.out:
        from safetensors.torch import save_file

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        dt = torch.float16 if args.half else torch.float32
        save_file({k: v.to(dt).contiguous() for k, v in tensors.items()}, str(out), metadata=meta)
        print(f"wrote {out} ({', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())})", flush=True)
    if args.show:
        from .viz import save_pca_comparison

        p = save_pca_comparison(args.show, img, maps, shared_basis=True)
        print(f"wrote {p}", flush=True)
    return 0
