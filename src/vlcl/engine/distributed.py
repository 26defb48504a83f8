"""torch.distributed for the engine: process group, data shards, gradient averaging, feature gathering.

``torchrun --nproc_per_node N -m vlcl run CONFIG`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`init_distributed` then joins the group (NCCL on CUDA,
gloo on CPU). Outside torchrun every function here is a no-op on one process.

Gradients are averaged with one all-reduce per step over a flat buffer rather
than through ``DistributedDataParallel``: methods call the towers directly
(and through PEFT wrappers, frozen teachers and projectors), so wrapping one
module's ``forward`` would miss most of the graph. With the losses' ``gather``
(local queries against gathered keys, gradients kept) the averaged gradient
equals the single-process gradient of the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Mean of every parameter's gradient over the processes (one flat all-reduce)."""
    info = current()
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_processes(value: float) -> float:
    info = current()
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / info.world


def shard_range(count: int) -> tuple[int, int]:
    """Contiguous rows [start, end) of ``count`` that this process handles (evaluation)."""
    info = current()
    per = -(-count // info.world)
    start = min(count, info.rank * per)
    return start, min(count, start + per)


def gather_rows(local: torch.Tensor, count: int) -> torch.Tensor:
    """Concatenate every process's shard (from :func:`shard_range`) back into ``count`` rows, in order."""
    info = current()
    if not info.enabled:
        return local
    per = -(-count // info.world)
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = padded.to(device)
    parts = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:count].to(local.device)
