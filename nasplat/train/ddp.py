"""Data parallelism for sandwich steps, on plain torch.distributed.

DDP's reducer assumes one forward/backward per step over one fixed graph. A sandwich step runs
several subnets that use different slices of the same weights, and a parameter used only by an
earlier member would never be marked ready. So we do it by hand: identical initial weights
(broadcast from rank 0), each rank accumulates its members' gradients locally, and once per step
the accumulated gradients are averaged across ranks with one all-reduce per flat bucket.

Every rank trains the same subnets at a step (the sampler is a function of the step), so the set
of parameters that have a gradient is the same on every rank; a parameter no member touched keeps
`grad is None` everywhere, exactly as in a single process.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (no-op outside a process group)."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def _buckets(tensors: list[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    buckets: list[list[torch.Tensor]] = []
    current: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if current and (size + nbytes > bucket_bytes or t.dtype != current[0].dtype or t.device != current[0].device):
            buckets.append(current)
            current, size = [], 0
        current.append(t)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


@torch.no_grad()
def allreduce_gradients(parameters: Iterable[nn.Parameter], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> int:
    """Average the `.grad` of `parameters` over all ranks, in flat buckets. Returns the number of
    all-reduce calls made (0 outside a process group, where gradients are left untouched)."""
    if not is_distributed():
        return 0
    world = dist.get_world_size()
    grads = [p.grad for p in parameters if p.grad is not None]
    calls = 0
    for bucket in _buckets(grads, bucket_bytes):
        flat = torch.cat([g.reshape(-1) for g in bucket])  # [sum of numels]
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for g in bucket:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n
        calls += 1
    return calls


@torch.no_grad()
def allreduce_scalars(values: dict[str, float]) -> dict[str, float]:
    """Mean of named float metrics over ranks (identity outside a process group)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


__all__ = ["allreduce_gradients", "allreduce_scalars", "broadcast_module", "is_distributed"]
