"""One sandwich step of the classification supernet, with in-place distillation.

The max subnet learns from the labels (cross-entropy with label smoothing, as Once-for-All
trains); every other member learns from the max subnet's detached soft labels of the same batch
(BigNAS / OFA in-place distillation), plus, with `distillation.gt_weight`, from the labels. Each
member sees the batch resized to its own input resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasplat.config.recipe import TrainerRecipe
from nasplat.train.precision import Precision
from nasplat.train.sandwich import SandwichMember

__all__ = ["LABEL_SMOOTHING", "resize_images", "sandwich_step", "soft_cross_entropy"]

LABEL_SMOOTHING = 0.1  # the teacher's targets, as in Once-for-All's training


def resize_images(images: Tensor, resolution: int) -> Tensor:
    """[B, 3, R, R] -> [B, 3, resolution, resolution], bilinear (the batch itself when equal)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of -sum(p * log softmax(logits)): the KL divergence to `target_probs`
    up to their (constant) entropy. logits, target_probs: [B, C]."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sandwich_step(
    net: nn.Module,
    batch: dict[str, Tensor],
    members: list[SandwichMember],
    recipe: TrainerRecipe,
    *,
    epoch: int,
    student_weight: float = 1.0,
    precision: Precision,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Forward and backward every member on `batch` ({"image": [B, 3, R, R] at the largest
    resolution, "label": [B]}), accumulating gradients in `net`. The first member that is the
    teacher (the max subnet) gives the soft labels when `distillation.enabled`. Returns
    "<role>/ce", "<role>/distill" (students), "<role>/total" and "total"."""
    del epoch  # the schedule of this task does not change within training
    images, labels = batch["image"], batch["label"]
    dist = recipe.distillation
    logs: dict[str, float] = {}
    teacher_probs: Tensor | None = None
    grand_total = 0.0
    for member in members:
        net.set_arch(member.arch)
        x = precision.input(resize_images(images, member.arch.resolution))
        with precision.autocast():
            logits = net(x)
        logits = logits.float()  # [B, C]
        student = not member.is_teacher and dist.enabled and teacher_probs is not None
        total = logits.new_zeros(())
        gt_weight = dist.gt_weight if student else 1.0
        if gt_weight > 0:
            ce = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING if member.is_teacher else 0.0)
            logs[f"{member.role}/ce"] = float(ce.detach())
            total = total + gt_weight * ce
        if student and dist.distill_weight > 0:
            assert teacher_probs is not None
            kd = soft_cross_entropy(logits, teacher_probs)
            logs[f"{member.role}/distill"] = float(kd.detach())
            total = total + dist.distill_weight * kd
        if not member.is_teacher:
            total = total * student_weight
        (total if scaler is None else scaler.scale(total)).backward()
        if member.is_teacher and dist.enabled:
            teacher_probs = F.softmax(logits.detach(), dim=1)
        logs[f"{member.role}/total"] = float(total.detach())
        grand_total += float(total.detach())
    logs["total"] = grand_total
    return logs
