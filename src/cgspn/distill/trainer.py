"""The training loop of one stage: data -> teacher taps -> objective -> optimizer, with DDP/FSDP,
bf16 autocast, gradient accumulation, the warm-up + cosine schedule, logging, atomic checkpoints,
exact resume and clean stops on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import DeviceAugmentStream, build_stream
from .checkpoint import Checkpoint, CheckpointManager
from .distributed import DistEnv, all_reduce_mean, any_flag, gather_objects, gather_with_grad
from .encoders import mixer_of
from .monitor import Monitor
from .objectives import Stage1Objective, Stage2Objective
from .optim import build_optimizer, lr_factor, param_groups, set_lr

__all__ = ["StagePlan", "StageContext", "Interrupted", "train_stage", "StopFlag", "wrap_objective",
           "full_state", "autocast_ctx", "check_ranks_in_sync"]


class Interrupted(Exception):
    """Training stopped on request (SIGTERM / SIGINT) after saving a checkpoint."""

    def __init__(self, stage: str, step: int, checkpoint: str) -> None:
        super().__init__(f"interrupted in {stage} at step {step}; checkpoint saved to {checkpoint}")
        self.stage, self.step, self.checkpoint = stage, step, checkpoint


class StopFlag:
    """Set from a signal handler; read by the loop once per optimizer step."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def set(self, name: str) -> None:
        self.requested = True
        self.signal_name = name


@dataclass
class StagePlan:
    """One stage of the run.

    kind: "stage1" (mixer alignment) or "stage2" (end-to-end; also the high-resolution stages).
    resolution: student crop size; resolutions: multi-scale choices (empty: fixed).
    teacher_resolution: for curriculum stages, the resolution the frozen previous student sees.
    opt: lr, min_lr_ratio, warmup_steps, weight_decay, mixer_lr_mult. loss: stage-2 loss config.
    """

    name: str
    kind: str
    index: int
    steps: int
    batch_size: int
    resolution: int
    resolutions: list[int] = field(default_factory=list)
    opt: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    teacher_resolution: int | None = None
    teacher_mode: str = "original"
    previous: str | None = None


@dataclass
class StageContext:
    """Everything a stage needs besides its plan."""

    cfg: dict[str, Any]
    env: DistEnv
    student: nn.Module
    teacher: Any
    monitor: Monitor
    ckpts: CheckpointManager
    stop: StopFlag
    student_meta: dict[str, Any]
    history: dict[str, Any]
    callbacks: Sequence[Callable[[str, int], None]] = ()
    global_step: int = 0
    time_origin: float = field(default_factory=time.time)  # wall-clock start, shifted back by earlier sessions


def autocast_ctx(env: DistEnv, precision: str) -> Any:
    """bf16 autocast on the run's device (a no-op context for fp32)."""
    if precision == "bf16":
        return torch.autocast(env.device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"engine.precision must be fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


def _distributed_mode(cfg: dict[str, Any], env: DistEnv) -> str:
    mode = cfg["engine"]["distributed"]
    if mode == "auto":
        return "ddp" if env.world_size > 1 else "none"
    if mode not in ("none", "ddp", "fsdp"):
        raise ValueError(f"engine.distributed must be auto, none, ddp or fsdp, got {mode!r}")
    if mode != "none" and env.world_size == 1:
        return "none"
    return mode


def wrap_objective(objective: nn.Module, plan: StagePlan, cfg: dict[str, Any], env: DistEnv) -> tuple[nn.Module, str]:
    """DDP / FSDP2 wrapping of the objective for multi-process runs. Returns (module to call, mode)."""
    mode = _distributed_mode(cfg, env)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(objective, device_ids=None, broadcast_buffers=False, find_unused_parameters=False), mode
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = None
        if cfg["engine"]["precision"] == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        kw = {"mp_policy": mp} if mp is not None else {}
        units = ([mixer_of(b) for b in objective.student.blocks] if plan.kind == "stage1"
                 else list(objective.student.blocks))
        for u in units:
            fully_shard(u, **kw)
        fully_shard(objective, **kw)
        return objective, mode
    return objective, mode


def full_state(objective: nn.Module, optimizer: torch.optim.Optimizer | None, mode: str,
               all_ranks: bool = False) -> tuple[dict, dict | None]:
    """(full model state dict on CPU, optimizer state dict keyed by parameter names).

    Uses ``torch.distributed.checkpoint.state_dict`` so that DDP, FSDP and single-process runs
    share one on-disk format. Every rank must call this under FSDP; the full tensors land on rank 0
    only (CPU offload) unless ``all_ranks``.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)
    model_sd = get_model_state_dict(objective, options=opts)
    if all_ranks:
        model_sd = {k: v.detach().to("cpu") for k, v in model_sd.items()}
    optim_sd = get_optimizer_state_dict(objective, optimizer, options=opts) if optimizer is not None else None
    return model_sd, optim_sd


def _rng_state(env: DistEnv) -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if env.device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(env.device)
    return st


def _set_rng_state(st: dict[str, Any], env: DistEnv) -> None:
    torch.set_rng_state(st["torch"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and env.device.type == "cuda":
        torch.cuda.set_rng_state(st["cuda"], env.device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _normalizer(teacher: Any, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = torch.tensor(teacher.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(teacher.std, device=device).view(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def _step_resolution(plan: StagePlan, seed: int, step: int) -> int:
    if not plan.resolutions:
        return plan.resolution
    return random.Random(seed * 1_000_003 + plan.index * 7919 + step).choice(list(plan.resolutions))


def build_objective(plan: StagePlan, ctx: StageContext) -> nn.Module:
    if plan.kind == "stage1":
        return Stage1Objective(ctx.student, normalize=bool(plan.loss.get("normalize", True)),
                               cosine_weight=float(plan.loss.get("cosine_weight", 0.0)))
    return Stage2Objective(ctx.student, plan.loss, grad_checkpointing=bool(ctx.cfg["engine"]["grad_checkpointing"]))


def _save(ctx: StageContext, plan: StagePlan, step: int, done: bool, objective: nn.Module,
          optimizer: torch.optim.Optimizer, stream: Any, mode: str, metrics: dict[str, float]) -> str:
    """Checkpoint after ``step`` optimizer steps of ``plan``; all ranks call this."""
    model_sd, optim_sd = full_state(objective, optimizer, mode)
    rank_state = {"rng": _rng_state(ctx.env), "data": stream.state_dict()}
    ranks = gather_objects(rank_state, ctx.env)
    name = f"{plan.name}-{step:07d}"
    ctx.history["_time_before"] = time.time() - ctx.time_origin
    path = ""
    if ctx.env.is_main:
        student_sd = {k[len("student."):]: v for k, v in model_sd.items() if k.startswith("student.")}
        extra_sd = {k: v for k, v in model_sd.items() if not k.startswith("student.")}
        state = {
            "format": 1,
            "stage": plan.name,
            "step": step,
            "stage_done": done,
            "global_step": ctx.global_step,
            "world_size": ctx.env.world_size,
            "optimizer": optim_sd,
            "ranks": ranks,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "history": ctx.history,
        }
        path = str(ctx.ckpts.save(name, student_sd, extra_sd, state, ctx.student_meta))
    ctx.env.barrier()
    return path


def train_stage(plan: StagePlan, ctx: StageContext, teacher: Any, resume: Checkpoint | None = None) -> dict[str, Any]:
    """Run (or continue) one stage. Returns its summary (losses, time, throughput)."""
    cfg, env = ctx.cfg, ctx.env
    eng = cfg["engine"]
    seed = int(cfg["seed"])
    accum = max(1, int(eng["grad_accum"]))
    _seed_everything(seed + 1000 * plan.index + env.rank)
    objective = build_objective(plan, ctx).to(env.device)
    state = resume.state() if resume is not None else None
    start = int(state["step"]) if state is not None else 0
    if state is not None:
        # weights first (before wrapping) so DDP broadcasts the resumed values
        model_sd = {f"student.{k}": v for k, v in resume.student_state().items()}
        model_sd.update(resume.extra_state())
        objective.load_state_dict(model_sd, strict=True)
    wrapped, mode = wrap_objective(objective, plan, cfg, env)
    opt = plan.opt
    groups = param_groups(objective, float(opt["lr"]), float(opt["weight_decay"]),
                          float(opt.get("mixer_lr_mult", 1.0)))
    optimizer = build_optimizer(groups, eng["optimizer"], tuple(eng["betas"]))
    crop = max([plan.resolution] + list(plan.resolutions))
    stream = build_stream(cfg["data"], crop, plan.batch_size, seed=seed + 7 * plan.index,
                          rank=env.rank, world_size=env.world_size, device=env.device)
    data_path = stream.describe()
    ctx.monitor.line(f"data: {data_path}")
    ctx.monitor.event("data", stage=plan.name, path=data_path,
                      device_augment=isinstance(stream, DeviceAugmentStream))
    if state is not None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(objective, optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        ranks = state["ranks"]
        if len(ranks) == env.world_size:
            stream.load_state_dict(ranks[env.rank]["data"])
            _set_rng_state(ranks[env.rank]["rng"], env)
        else:
            if int(state.get("world_size", 1)) != env.world_size:
                ctx.monitor.line(f"note: resuming with world size {env.world_size} instead of "
                                 f"{state.get('world_size')}: data order restarts from the saved step")
            stream.batches = start * accum
        ctx.global_step = int(state.get("global_step", ctx.global_step))
    normalize = _normalizer(teacher, env.device)
    amp = autocast_ctx(env, eng["precision"])
    want = ("inputs", "pp") if plan.kind == "stage1" else objective.want
    text_tower = getattr(teacher, "text", None)
    use_text = plan.kind == "stage2" and text_tower is not None and (
        float(plan.loss.get("itc", 0)) > 0 or float(plan.loss.get("itc_distill", 0)) > 0)
    clip = float(eng["clip_grad"])
    log_every = max(1, int(eng["log_every"]))
    ckpt_every = int(eng["ckpt_every"])
    losses: list[float] = list(ctx.history.get("_stage_losses", {}).get(plan.name, [])) if state else []
    ctx.monitor.start_stage(plan.name, plan.steps, start)
    wrapped.train()
    t_stage = time.time()
    prior_time = float(ctx.history.get("_stage_time", {}).get(plan.name, 0.0)) if state else 0.0
    images_seen = 0
    it = iter(stream)
    metrics_f: dict[str, float] = {}
    step = start
    for step in range(start, plan.steps):
        t0 = time.time()
        lr = set_lr(optimizer, lr_factor(step, plan.steps, int(opt["warmup_steps"]), float(opt["min_lr_ratio"])))
        res = _step_resolution(plan, seed, step)
        agg: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = next(it)
            images = normalize(batch["images"].to(env.device, non_blocking=True))
            if images.shape[-1] != res:
                images = F.interpolate(images, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
            with amp:
                taps = teacher(images, want)
            sync = contextlib.nullcontext()
            if mode == "ddp" and micro < accum - 1:
                sync = wrapped.no_sync()
            with sync:
                with amp:
                    if plan.kind == "stage1":
                        loss, metrics = wrapped(taps)
                    else:
                        text = None
                        # every rank must take the same branch (the gathers are collectives)
                        if use_text and not any_flag(any(t is None for t in batch["texts"]), env):
                            text = gather_with_grad(text_tower.encode(batch["texts"]), env)
                        loss, metrics = wrapped(
                            images, taps, text=text,
                            logit_scale=getattr(text_tower, "logit_scale", 100.0),
                            logit_bias=getattr(text_tower, "logit_bias", None),
                            gather=(lambda x: gather_with_grad(x, env)) if env.initialized else None,
                        )
                (loss / accum).backward()
            for k, v in metrics.items():
                agg[k] = agg.get(k, 0) + v.float() / accum
            images_seen += images.shape[0]
        if clip > 0:
            if mode == "fsdp":
                gnorm = torch.nn.utils.clip_grad_norm_(objective.trainable_parameters(), clip)
                gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm
            else:
                gnorm = torch.nn.utils.clip_grad_norm_(objective.trainable_parameters(), clip)
            agg["grad_norm"] = gnorm.detach().float()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ctx.global_step += 1
        done_steps = step + 1
        if done_steps % log_every == 0 or done_steps == plan.steps or done_steps == start + 1:
            names = sorted(agg)
            vec = all_reduce_mean(torch.stack([agg[k].to(env.device) for k in names]), env).cpu()
            metrics_f = {k: float(v) for k, v in zip(names, vec)}
            dt = max(time.time() - t0, 1e-9)
            metrics_f.update(lr=lr, res=res, img_s=plan.batch_size * accum * env.world_size / dt,
                             skipped=stream.skipped)
            ctx.monitor.step(plan.name, done_steps, metrics_f, ctx.global_step)
            losses.append(metrics_f["loss"])
        for cb in ctx.callbacks:
            cb(plan.name, done_steps)
        stop = any_flag(ctx.stop.requested, env)
        if (stop or (ckpt_every > 0 and done_steps % ckpt_every == 0)) and done_steps < plan.steps:
            ctx.history.setdefault("_stage_losses", {})[plan.name] = losses
            ctx.history.setdefault("_stage_time", {})[plan.name] = prior_time + time.time() - t_stage
        if stop and done_steps < plan.steps:
            path = _save(ctx, plan, done_steps, False, objective, optimizer, stream, mode, metrics_f)
            ctx.monitor.end_stage()
            ctx.monitor.event("interrupted", stage=plan.name, step=done_steps, checkpoint=path,
                              signal=ctx.stop.signal_name)
            raise Interrupted(plan.name, done_steps, path)
        if ckpt_every > 0 and done_steps % ckpt_every == 0 and done_steps < plan.steps:
            _save(ctx, plan, done_steps, False, objective, optimizer, stream, mode, metrics_f)
    elapsed = time.time() - t_stage
    summary = {
        "name": plan.name,
        "kind": plan.kind,
        "steps": plan.steps,
        "batch_size": plan.batch_size * accum * env.world_size,
        "resolution": plan.resolution,
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
        "loss_first5": sum(losses[:5]) / max(1, len(losses[:5])),
        "loss_last5": sum(losses[-5:]) / max(1, len(losses[-5:])),
        "time_s": prior_time + elapsed,
        "img_s": images_seen * env.world_size / max(elapsed, 1e-9),
        "final_metrics": metrics_f,
    }
    ctx.history.setdefault("_stage_losses", {})[plan.name] = losses
    ctx.history.setdefault("stages", []).append(summary)
    ctx.history.setdefault("completed", []).append(plan.name)
    ctx.history["data_skipped"] = int(ctx.history.get("data_skipped", 0)) + stream.skipped
    bad = list(ctx.history.get("data_bad", []))
    ctx.history["data_bad"] = (bad + [b for b in stream.bad if b not in bad])[:50]
    _save(ctx, plan, plan.steps, True, objective, optimizer, stream, mode, metrics_f)
    ctx.monitor.end_stage()
    if env.initialized:
        sums = check_ranks_in_sync(objective, mode, env)
        ctx.monitor.event("ranks_in_sync", stage=plan.name, checksums=sums)
    if mode == "fsdp":
        # hand back a plain student for the next stage / evaluation
        model_sd, _ = full_state(objective, None, mode, all_ranks=True)
        student_sd = {k[len("student."):]: v for k, v in model_sd.items() if k.startswith("student.")}
        ctx.student = _unshard_student(ctx, student_sd)
    return summary


def check_ranks_in_sync(objective: nn.Module, mode: str, env: DistEnv) -> list[list[float]]:
    """All ranks hold identical weights: gathers a (sum, sum of squares, sum |x|) checksum of the
    full parameters from every rank and raises RuntimeError on any difference."""
    if mode == "fsdp":
        model_sd, _ = full_state(objective, None, mode, all_ranks=True)
        tensors = list(model_sd.values())
    else:
        tensors = [p.detach() for p in objective.parameters()]
    acc = torch.zeros(3, dtype=torch.float64)
    for t in tensors:
        t = t.double().cpu()
        acc += torch.stack([t.sum(), t.pow(2).sum(), t.abs().sum()])
    sums = gather_objects([float(v) for v in acc], env)
    if any(s != sums[0] for s in sums):
        raise RuntimeError(f"ranks diverged: parameter checksums {sums}")
    return sums


def _unshard_student(ctx: StageContext, student_sd: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh, unsharded student holding ``student_sd`` (after an FSDP stage)."""
    from .student import StudentSpec, create_student

    spec = StudentSpec(ctx.student_meta["model"], ctx.student_meta["kwargs"], ctx.student_meta.get("pos_antialias"))
    fresh = create_student(spec)
    fresh.load_state_dict(student_sd, strict=True)
    return fresh.to(ctx.env.device)
