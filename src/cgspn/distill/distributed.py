"""Process-group plumbing for single-process and ``torchrun`` runs (DDP / FSDP; NCCL or gloo)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "all_reduce_mean", "gather_with_grad", "broadcast_object",
           "gather_objects", "any_flag"]


@dataclass
class DistEnv:
    """rank / world_size / local_rank of this process, its device and whether a group is up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def shutdown(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str = "auto", backend: str = "auto", timeout_minutes: float = 30.0) -> DistEnv:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1), else run alone.

    device: "auto" (CUDA when available), "cpu" or "cuda". backend: "auto" (NCCL on CUDA, gloo
    on CPU), "nccl" or "gloo".
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"engine.device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("engine.device=cuda but no CUDA device is available")
        torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    env = DistEnv(rank, world, local, dev)
    if world > 1:
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            kw: dict[str, Any] = dict(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
            if dev.type == "cuda":
                kw["device_id"] = dev
            dist.init_process_group(**kw)
        env.initialized, env.backend = True, backend
    return env


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; identity when alone)."""
    t = t.detach().clone()
    if env.initialized:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= env.world_size
    return t


def any_flag(flag: bool, env: DistEnv) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    if not env.initialized:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_with_grad(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate (B, D) tensors from all ranks along dim 0, keeping gradients to the local part."""
    if not env.initialized:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.initialized:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not env.initialized:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
