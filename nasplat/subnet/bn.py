"""BN recalibration: the running statistics a subnet needs before it is evaluated.

A supernet's running statistics are a blend over every subnet trained; a subnet evaluated with
them is measurably worse. Before evaluating one subnet we reset every BatchNorm's statistics and
recompute them as the true (cumulative, `momentum=None`) average of K training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def _is_batchnorm(module: nn.Module) -> bool:
    # Elastic BNs need not subclass _BatchNorm; what matters is that they keep torch's running
    # statistics and honour `momentum=None` (cumulative average) like F.batch_norm does.
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or (
        hasattr(module, "running_mean")
        and hasattr(module, "running_var")
        and hasattr(module, "momentum")
        and hasattr(module, "num_batches_tracked")
    )


def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm-like module of `model` that tracks running statistics."""
    return [m for m in model.modules() if _is_batchnorm(m) and getattr(m, "running_mean", None) is not None]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], Any] | None = None,
    *,
    num_batches: int | None = None,
) -> int:
    """Reset every BN's running statistics and recompute them over `batches`.

    Each BN ends with the exact average of the per-batch means and (unbiased) variances of the
    batches it saw. `forward(model, batch)` runs one batch (default: `model(batch)`); at most
    `num_batches` batches are used. The model's train/eval flags and BN momenta are restored.
    Returns the number of batches used; 0 leaves the statistics reset (mean 0, var 1).
    """
    bns = batchnorm_modules(model)
    saved_momentum = [m.momentum for m in bns]
    saved_training = {m: m.training for m in model.modules()}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the true mean over the batches seen
    model.train()
    used = 0
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            if forward is None:
                model(batch)
            else:
                forward(model, batch)
            used += 1
    finally:
        for m, mom in zip(bns, saved_momentum):
            m.momentum = mom
        for m, training in saved_training.items():
            m.training = training
    return used



@contextmanager
def kept_bn_statistics(net: nn.Module) -> Iterator[None]:
    """Inside, `net`'s BN running statistics and train/eval mode may change; on exit (however the
    block ends) both are what they were on entry."""
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in batchnorm_modules(net)]
    was_training = net.training
    try:
        yield
    finally:
        net.train(was_training)
        with torch.no_grad():
            for m, (mean, var, n) in zip(batchnorm_modules(net), saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)


__all__ = ["batchnorm_modules", "kept_bn_statistics", "recalibrate_bn"]
