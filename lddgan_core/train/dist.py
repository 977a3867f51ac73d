"""Data parallelism over torch.distributed (torchrun): NCCL on GPUs, gloo on CPU.

Why not the DistributedDataParallel wrapper: each D step runs D twice (real and fake pairs) and the lazy R1
penalty differentiates D's output with torch.autograd.grad, which the DDP reducer does not support (its
documentation: DDP "doesn't work with torch.autograd.grad()"). Instead every process computes gradients on
its slice of the global batch and one coalesced all-reduce per network averages them before the optimizer
step — the same arithmetic DDP performs, without its hooks. Weights are broadcast from rank 0 at the start,
so all ranks hold identical weights at every step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_from_env(device: str | torch.device | None = None) -> World:
    """Join the process group torchrun describes (WORLD_SIZE / RANK / LOCAL_RANK / MASTER_ADDR / MASTER_PORT),
    or return a single-process World when there is none."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = device is not None and torch.device(device).type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local)


def device_for(world: World, requested: str) -> torch.device:
    """cuda:LOCAL_RANK under torchrun on GPUs; otherwise the requested device ("auto": cuda if available)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(requested)
    if dev.type == "cuda" and world.active:
        dev = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(dev)
    return dev


def split_batch(batch_size: int, micro_batch: int | None, world: World) -> tuple[int, int]:
    """(per-process batch, micro batch) of a global batch split over the processes of ``world``."""

    if batch_size % world.size:
        raise ConfigError(f"batch size {batch_size} must be divisible by the number of processes ({world.size})")
    local = batch_size // world.size
    micro = micro_batch or local
    if local % micro:
        raise ConfigError(f"micro batch {micro} must divide the per-process batch {local}")
    return local, micro


def broadcast_module(module: torch.nn.Module, world: World) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not world.active:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params, world: World) -> None:
    """Mean of each parameter's .grad over the ranks (one flat all-reduce); missing grads count as zero."""
    if not world.active:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world.size)
    i = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[i:i + n].view_as(p.grad))
        i += n


def average_scalars(values: dict[str, float], world: World, device) -> dict[str, float]:
    """Mean over the ranks of a dict of floats (for the loss log)."""
    if not world.active or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist())}


def any_true(flag: bool, world: World, device) -> bool:
    """True on every rank if it is True on any (so that all ranks stop at the same iteration)."""
    if not world.active:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def broadcast_tensor(t: torch.Tensor | None, world: World, device) -> torch.Tensor:
    """Rank 0's tensor (any shape/dtype) on every rank, returned on the CPU."""
    if not world.active:
        return t
    meta = [None if t is None else (tuple(t.shape), str(t.dtype).replace("torch.", ""))]
    dist.broadcast_object_list(meta, src=0)
    shape, dtype = meta[0]
    buf = t.to(device).contiguous() if world.is_main else torch.empty(shape, dtype=getattr(torch, dtype), device=device)
    dist.broadcast(buf, src=0)
    return buf.cpu()


def max_rank_difference(modules, world: World, device) -> float:
    """Largest |w_rank - w_rank0| over all parameters of `modules` and all ranks (0.0 when in sync)."""
    if not world.active:
        return 0.0
    with torch.no_grad():
        flat = torch.cat([p.detach().float().reshape(-1) for m in modules for p in m.parameters()]).to(device)
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        diff = (flat - ref).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
