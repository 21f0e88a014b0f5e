"""Optimizer, learning-rate schedule and the sandwich students' loss ramp: pure functions of the
recipe and the global step, so a resumed run continues the same curves."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from nasplat.config import TrainerRecipe


def make_optimizer(params: Iterable[torch.nn.Parameter], recipe: TrainerRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over `params` (adam, adamw or sgd with momentum)."""
    o = recipe.optimizer
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def lr_at(recipe: TrainerRecipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global step `step`: linear warmup, then x gamma at every milestone epoch."""
    s = recipe.schedule
    epoch = step // max(steps_per_epoch, 1)
    lr = recipe.optimizer.lr * s.gamma ** sum(1 for m in s.milestones if epoch >= m)
    if s.warmup_steps and step < s.warmup_steps:
        frac = step / s.warmup_steps
        lr *= s.warmup_ratio + (1 - s.warmup_ratio) * frac
    return lr


def student_weight(recipe: TrainerRecipe, step: int, steps_per_epoch: int) -> float:
    """The sandwich students' loss weight at global step `step`: 0 during the max-only warmup,
    then rising linearly to 1 over `sandwich.ramp_epochs` epochs."""
    sw = recipe.sandwich
    start = sw.warmup_epochs * steps_per_epoch
    ramp = sw.ramp_epochs * steps_per_epoch
    if step < start:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / ramp)


__all__ = ["lr_at", "make_optimizer", "student_weight"]
