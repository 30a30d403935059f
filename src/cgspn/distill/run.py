"""``distill(cfg)``: the whole job -- teacher, student, stage 1, stage 2, optional high-resolution
curriculum, held-out fidelity before/after, final export and report -- resumable at any step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..data import holdout_images
from .checkpoint import CheckpointManager
from .config import dump_config
from .distributed import DistEnv, broadcast_object, init_distributed
from .highres import UpsampledTeacher, curriculum
from .monitor import Monitor
from .report import fidelity, format_fidelity, write_report
from .student import StudentSpec, build_student, load_student, save_student
from .teachers import Teacher, build_teacher
from .trainer import Interrupted, StageContext, StagePlan, StopFlag, autocast_ctx, train_stage

__all__ = ["distill", "make_plans", "Interrupted"]


def _check_res(r: int, patch: int, what: str) -> int:
    r = int(r)
    if r <= 0 or r % patch:
        raise ValueError(f"{what}={r} must be a positive multiple of the patch size {patch}")
    return r


def make_plans(cfg: dict[str, Any], patch: int) -> list[StagePlan]:
    """The stages this config runs, in order."""
    data = cfg["data"]
    res = _check_res(data["resolution"], patch, "data.resolution")
    multi = [_check_res(r, patch, "data.resolutions[]") for r in (data.get("resolutions") or [])]
    plans: list[StagePlan] = []
    opt_keys = ("lr", "min_lr_ratio", "warmup_steps", "weight_decay", "mixer_lr_mult")
    s1 = cfg["stage1"]
    if s1["enabled"] and int(s1["steps"]) > 0:
        plans.append(StagePlan("stage1", "stage1", len(plans), int(s1["steps"]), int(s1["batch_size"]), res, multi,
                               {k: s1.get(k, 1.0) for k in opt_keys},
                               {"normalize": s1["normalize"], "cosine_weight": s1["cosine_weight"]}))
    s2 = cfg["stage2"]
    if s2["enabled"] and int(s2["steps"]) > 0:
        plans.append(StagePlan("stage2", "stage2", len(plans), int(s2["steps"]), int(s2["batch_size"]), res, multi,
                               {k: s2.get(k, 1.0) for k in opt_keys}, dict(s2["loss"])))
    hr = cfg["highres"]
    if hr["enabled"]:
        if hr["teacher"] not in ("previous", "original"):
            raise ValueError(f"highres.teacher must be previous or original, got {hr['teacher']!r}")
        for t_res, s_res in curriculum(res, list(hr["resolutions"]), patch):
            prev = plans[-1].name if plans else None
            if hr["teacher"] == "previous" and prev is None:
                raise ValueError("highres.teacher=previous needs stage1 or stage2 before it")
            plans.append(StagePlan(f"highres{s_res}", "stage2", len(plans), int(hr["steps"]), int(hr["batch_size"]),
                                   s_res, [], {k: hr.get(k, 1.0) for k in opt_keys}, dict(s2["loss"]),
                                   teacher_resolution=t_res, teacher_mode=hr["teacher"], previous=prev))
    if not plans:
        raise ValueError("no stage enabled (stage1, stage2 and highres are all off)")
    return plans


@contextlib.contextmanager
def _signals(stop: StopFlag) -> Iterator[None]:
    """SIGTERM / first Ctrl-C request a clean stop (checkpoint, exit); a second Ctrl-C aborts."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set(name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run_dir(cfg: dict[str, Any], env: DistEnv, resume_dir: str | None) -> Path:
    if resume_dir:
        return Path(resume_dir)
    if cfg.get("out_dir"):
        return Path(cfg["out_dir"])
    stamp = broadcast_object(datetime.now().strftime("%Y%m%d-%H%M%S"), env)
    name = cfg.get("run_name") or f"distill-{stamp}"
    return Path("runs") / name


def _stage_teacher(plan: StagePlan, base: Teacher, run_dir: Path, env: DistEnv) -> Any:
    if plan.teacher_resolution is None:
        return base
    if plan.teacher_mode == "original":
        return base
    prev_path = run_dir / "stages" / plan.previous / "student.safetensors"
    model, info = load_student(prev_path, device=env.device)
    # a ViT student resamples its position grid as the original teacher did (recorded in the export)
    frozen = Teacher(model, name=f"{plan.previous} student", mean=base.mean, std=base.std, text=base.text,
                     source=str(prev_path), pos_antialias=bool(info.get("pos_antialias", True)))
    return UpsampledTeacher(frozen, plan.teacher_resolution)


def _cpu_threads(setting: Any, env: DistEnv) -> int:
    """Threads for torch's CPU ops (0: leave torch's default).

    "auto" on CPU runs: the cores other processes leave idle (from the 1-minute load average),
    at most all but one and at least one, divided among the local ranks. OpenMP threads that spin
    at barriers on oversubscribed cores slow small-op workloads down by an order of magnitude
    (measured: 1.5 s vs 20 s per stage-2 step on a busy 2-core machine), so it errs low.
    """
    if setting in (None, "auto"):
        if env.device.type != "cpu":
            return 0
        n = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        free = int(n - busy + 0.5)
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size)))
        return max(1, min(n - 1, free) // local)
    try:
        return int(setting)
    except (TypeError, ValueError):
        raise ValueError(f"engine.threads must be auto or an integer, got {setting!r}") from None


def _load_student_weights(student: torch.nn.Module, spec: StudentSpec, path: str | os.PathLike) -> dict[str, Any]:
    """Load an exported student (``save_student``) into ``student``; the architectures must match."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    import json

    info = json.loads(meta.get("cgspn_student", "{}"))
    if info and (info.get("model"), info.get("kwargs")) != (spec.name, spec.kwargs):
        raise ValueError(f"student checkpoint {path} is a {info.get('model')} with other kwargs than the student "
                         f"this config builds ({spec.name})")
    missing, unexpected = student.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ValueError(f"student checkpoint {path} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return {"checkpoint": str(path)}


def distill(
    cfg: dict[str, Any],
    *,
    resume_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Callable[[str, int], None]] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the distillation job described by ``cfg`` (see ``distill_default.yaml``).

    resume_dir: continue the run in this directory from its latest checkpoint (exactly: same step,
    optimizer, data position and RNG). callbacks: called as ``cb(stage, step)`` after every
    optimizer step. Returns the report dict (also written as ``report.json`` / ``report.md``).
    Raises :class:`Interrupted` after saving a checkpoint when SIGTERM / Ctrl-C arrives.
    """
    t_start = time.time()
    eng = cfg["engine"]
    env = init_distributed(eng["device"], eng["backend"])
    threads = _cpu_threads(eng.get("threads", "auto"), env)
    if threads > 0:
        torch.set_num_threads(threads)
    if env.device.type == "cuda" and eng.get("tf32", True):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    monitor = None
    try:
        run_dir = _run_dir(cfg, env, str(resume_dir) if resume_dir else None)
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
        env.barrier()
        monitor = Monitor(run_dir / "log.jsonl", run_dir / "tb" if eng["tensorboard"] else None,
                          eng["progress"], enabled=env.is_main)
        say = log or monitor.line
        ckpts = CheckpointManager(run_dir, int(eng["keep_checkpoints"]))
        latest = ckpts.latest() if resume_dir else None
        if resume_dir and latest is None:
            raise FileNotFoundError(f"nothing to resume in {run_dir} (no checkpoints/latest)")
        if not resume_dir and ckpts.latest() is not None:
            raise ValueError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another --out")

        t = cfg["teacher"]
        torch.manual_seed(int(cfg["seed"]))
        teacher = build_teacher(t["kind"], t.get("name"), checkpoint=t.get("checkpoint"), pretrained=t.get("pretrained"),
                                allow_network=bool(t.get("allow_network")), keep_head=bool(t.get("keep_head")),
                                model_kwargs=t.get("model_kwargs") or {}, cache_dir=t.get("cache_dir"))
        teacher = teacher.to(env.device)
        plans = make_plans(cfg, teacher.patch_size)
        s = cfg["student"]
        student, spec, init_info = build_student(teacher.model, teacher.name, s["name"], s.get("kwargs") or {},
                                                 bool(s["init_from_teacher"]), pos_antialias=teacher.pos_antialias)
        if s.get("checkpoint"):
            init_info = _load_student_weights(student, spec, s["checkpoint"])
        student = student.to(env.device)
        meta = {"model": spec.name, "kwargs": spec.kwargs, "teacher": teacher.name, "teacher_source": teacher.source,
                "mean": list(teacher.mean), "std": list(teacher.std), "resolution": plans[-1].resolution}
        if spec.pos_antialias is not None:
            meta["pos_antialias"] = spec.pos_antialias
        history: dict[str, Any] = {}
        if latest is not None:
            history = dict(latest.state().get("history", {}))
            student.load_state_dict(latest.student_state(), strict=True)
        say(f"teacher {teacher.name} ({teacher.source}); student {spec.name} "
            f"({sum(p.numel() for p in student.parameters()) / 1e6:.2f}M params); run dir {run_dir}")

        ev = cfg["eval"]
        eval_res = _check_res(ev.get("resolution") or cfg["data"]["resolution"], teacher.patch_size, "eval.resolution")
        amp = autocast_ctx(env, eng["precision"])
        held = None
        if ev["enabled"]:
            imgs, names = holdout_images(eval_res, ev.get("holdout"))
            mean = torch.tensor(teacher.mean).view(1, 3, 1, 1)
            std = torch.tensor(teacher.std).view(1, 3, 1, 1)
            held = ((imgs - mean) / std).to(env.device)
            history.setdefault("eval_names", names)
            if "before" not in history.get("fidelity", {}):
                f0 = fidelity(student, teacher, held, int(ev["batch_size"]), amp)
                history.setdefault("fidelity", {})["before"] = f0
                say("held-out fidelity before distillation:\n" + format_fidelity([("before", f0)]))

        stop = StopFlag()
        ctx = StageContext(cfg, env, student, teacher, monitor, ckpts, stop, meta, history, callbacks,
                           time_origin=t_start - float(history.get("_time_before", 0.0)))
        state = latest.state() if latest is not None else None
        with _signals(stop):
            for plan in plans:
                if plan.name in history.get("completed", []):
                    continue
                resume_ckpt = latest if (state is not None and state["stage"] == plan.name and not state["stage_done"]) else None
                stage_teacher = _stage_teacher(plan, teacher, run_dir, env)
                summary = train_stage(plan, ctx, stage_teacher, resume_ckpt)
                latest, state = None, None
                if env.is_main:
                    save_student(run_dir / "stages" / plan.name / "student.safetensors", ctx.student, spec,
                                 dict(meta, resolution=plan.resolution, stage=plan.name))
                env.barrier()
                say(f"{plan.name}: loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f} "
                    f"in {summary['time_s']:.1f} s ({summary['img_s']:.2f} img/s)")
                if held is not None:
                    fk = fidelity(ctx.student, teacher, held, int(ev["batch_size"]), amp)
                    history.setdefault("fidelity", {})[f"after {plan.name}"] = fk
                    monitor.scalars("fidelity", fk, ctx.global_step)
                    say(format_fidelity([(f"after {plan.name}", fk)]))
        final = run_dir / "student.safetensors"
        if env.is_main:
            save_student(final, ctx.student, spec, dict(meta, stage="final"))
        env.barrier()
        n_params = sum(p.numel() for p in ctx.student.parameters())
        report = {
            "run_dir": str(run_dir),
            "teacher": dict(teacher.describe(), params_m=teacher.describe()["params"] / 1e6),
            "student": {"model": spec.name, "kwargs": spec.kwargs, "params_m": n_params / 1e6, "init": init_info},
            "data": {"kind": cfg["data"]["kind"], "path": cfg["data"].get("path"),
                     "skipped": int(history.get("data_skipped", 0)), "bad": history.get("data_bad", [])},
            "device": str(env.device),
            "world_size": env.world_size,
            "precision": eng["precision"],
            "stages": history.get("stages", []),
            "fidelity": history.get("fidelity", {}),
            "eval": {"n_images": 0 if held is None else int(held.shape[0]), "resolution": eval_res,
                     "names": history.get("eval_names", [])},
            "time_s": time.time() - ctx.time_origin,
            "checkpoint": str(final),
        }
        if env.is_main:
            write_report(run_dir, report)
            monitor.event("done", report=str(run_dir / "report.md"))
        return report
    finally:
        if monitor is not None:
            monitor.close()
        env.shutdown()
