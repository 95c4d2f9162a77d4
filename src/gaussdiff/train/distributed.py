"""Processes and devices: one process, or data parallel under ``torchrun`` (torch.distributed DDP).

Rank and world size come from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), never from a
flag. Backend: NCCL on CUDA, gloo otherwise.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA, then MPS, then CPU; an explicit device that is not there is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda or name == "mps" and not mps:
        raise InputError(f"device {name} is not available here; use --device auto or cpu")
    return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)


def launched_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun set them in the environment; (0, 1) without torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def start(device: str) -> Processes:
    """Join the process group when torchrun started us (WORLD_SIZE > 1)."""
    rank, world = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Processes(rank, world, dev)


def stop(procs: Processes) -> None:
    """Leave the process group together: a rank that tore gloo down while rank 0 was still writing its files
    sometimes aborted ("terminate called without an active exception", about 1 run in 5 of the 2-process tests)."""
    if procs.world > 1 and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # a peer is gone (killed): nothing left to wait for
            pass
        dist.destroy_process_group()


def agree(procs: Processes, message: str | None) -> str | None:
    """Rank 0's verdict (an error message or None) for every rank, so that all stop or all go on together."""
    if procs.world == 1:
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(procs: Processes, flag: int) -> int:
    """The largest ``flag`` over ranks (e.g. a signal number one of them received)."""
    if procs.world == 1:
        return flag
    value = torch.tensor([flag], dtype=torch.int64, device=procs.device)  # NCCL reduces on the GPU
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value)


def no_sync(model, last_micro_batch: bool):
    """DDP: skip the gradient all-reduce on every micro-batch but the last of an accumulation."""
    return model.no_sync() if hasattr(model, "no_sync") and not last_micro_batch else nullcontext()


def gather_global(procs: Processes, local: torch.Tensor) -> torch.Tensor:
    """The global batch's values in position order, from each rank's slice (positions rank, rank + world, ...)."""
    if procs.world == 1:
        return local
    on_device = local.to(procs.device).contiguous()  # NCCL gathers CUDA tensors only
    parts = [torch.empty_like(on_device) for _ in range(procs.world)]
    dist.all_gather(parts, on_device)
    return torch.stack(parts, 1).flatten(0, 1).to(local.device)
