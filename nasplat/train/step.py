"""One sandwich step: max, min and N random subnets on one batch, gradients accumulated.

Each member sees the batch at its own body resolution (the max-resolution crop resized with
F.interpolate; keypoints and boxes mapped with the same pixel-centre convention; body targets
re-rendered at that size). The heads crop per instance either the subnet's own decoded boxes or,
early in training or when a decoded box is poor, the GT boxes. The max member is the teacher:
it learns from ground truth; the others learn from its detached heatmaps (in-place
distillation) and/or ground truth, as the recipe weights say.

The forwards run under the recipe's precision (`nasplat.train.precision`: bf16 / fp16 autocast,
channels_last inputs); heatmaps are cast back to fp32 before box decoding and the losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nasplat.config import TrainerRecipe
from nasplat.data.keypoints import PART_SLICES
from nasplat.data.scaling import resize_batch, scale_boxes, to_scaled
from nasplat.data.targets import body_targets, render_in_boxes
from nasplat.models import decode_part_boxes
from nasplat.train.losses import choose_head_boxes, resample_body_heatmaps, warp_head_heatmaps, weighted_mse
from nasplat.train.precision import Precision, recipe_precision
from nasplat.train.sandwich import SandwichMember

FACE = PART_SLICES["face"]
LEFT_HAND = PART_SLICES["lefthand"]
RIGHT_HAND = PART_SLICES["righthand"]


@dataclass
class _Teacher:
    body: torch.Tensor  # [B, 38, h, w] detached, max resolution
    boxes: torch.Tensor  # [B, 3, 4] expanded boxes the teacher's heads cropped (max-crop pixels)
    face: torch.Tensor  # [B, 68, Rf, Rf]
    hand: torch.Tensor  # [B, 2, 21, Rh, Rh]


def _head_gt_loss(
    kp: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, face: torch.Tensor, hand: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GT MSE of face and hand heatmaps rendered inside the boxes the heads cropped."""
    rf, rh = face.shape[-1], hand.shape[-1]
    face_t, face_w = render_in_boxes(kp[:, FACE], boxes[:, 0], rf, sigma)  # [B, 68, Rf, Rf], [B, 68]
    face_loss = weighted_mse(face, face_t, face_w * valid[:, 0:1])
    b = kp.shape[0]
    hand_kp = torch.stack((kp[:, LEFT_HAND], kp[:, RIGHT_HAND]), dim=1).flatten(0, 1)  # [2B, 21, 3]
    hand_t, hand_w = render_in_boxes(hand_kp, boxes[:, 1:3].flatten(0, 1), rh, sigma)  # [2B, 21, Rh, Rh]
    hand_w = hand_w * valid[:, 1:3].reshape(2 * b, 1)
    hand_loss = weighted_mse(hand.flatten(0, 1), hand_t, hand_w)
    return face_loss, hand_loss


def sandwich_step(
    net: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    members: list[SandwichMember],
    recipe: TrainerRecipe,
    *,
    epoch: int,
    student_weight: float = 1.0,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Forward and backward every member on `batch`, accumulating gradients in `net`.

    `student_weight` scales the loss of every member but the max subnet (the loop ramps it from 0
    to 1 after the max-only warmup, see SandwichConfig.ramp_epochs). `precision` defaults to the
    recipe's on the batch's device; with a `scaler` (fp16) every member's loss is scaled before
    its backward (the caller unscales and steps through the scaler).

    The caller zeroes gradients before and steps the optimizer after. Returns the loss of every
    member and part, keyed "<role>/<part>" and "<role>/total" (unweighted by the recipe's part
    weights for the parts, weighted for the total), plus "total".
    """
    images = batch["image"]  # [B, 3, Hm, Wm] at the max body resolution
    amp = precision or recipe_precision(recipe, images.device)
    hm_, wm_ = images.shape[-2:]
    kp_max = batch["keypoints"]  # [B, 133, 3] max-crop pixels
    boxes_max = batch["part_boxes"]  # [B, 3, 4]
    valid = batch["part_valid"]  # [B, 3]
    gt_only = epoch < recipe.head_boxes.gt_box_epochs
    dist = recipe.distillation
    w = recipe.loss
    logs: dict[str, float] = {}
    teacher: _Teacher | None = None
    grand_total = 0.0
    for member in members:
        net.set_arch(member.arch)
        size = member.arch.body.input_size  # (H, W)
        sx, sy = size[1] / wm_, size[0] / hm_
        x = amp.input(resize_batch(images, size))
        if size == (hm_, wm_):
            kp, boxes_gt = kp_max, boxes_max
            body_t, body_w = batch["target"], batch["target_weight"]
        else:
            kp = torch.cat((to_scaled(kp_max[..., :2], sx, sy), kp_max[..., 2:]), dim=-1)
            boxes_gt = scale_boxes(boxes_max, sx, sy)
            body_t, body_w = body_targets(kp, boxes_gt, valid, size, recipe.heatmap_sigma, recipe.box_sigma)
        with amp.autocast():
            body_hm, features = net.forward_body(x)  # [B, 38, h, w], five feature stages
        body_hm = body_hm.float()
        predicted = decode_part_boxes(body_hm)  # [B, 3, 4]
        crop_boxes, _ = choose_head_boxes(
            predicted, boxes_gt, valid, iou_threshold=recipe.head_boxes.box_iou_threshold, gt_only=gt_only
        )
        with amp.autocast():
            heads = net.forward_heads(features, crop_boxes.detach(), size)
        heads = heads._replace(face_heatmaps=heads.face_heatmaps.float(), hand_heatmaps=heads.hand_heatmaps.float())

        is_student = not member.is_teacher and dist.enabled and teacher is not None
        gt_weight = dist.gt_weight if is_student else 1.0
        parts: dict[str, torch.Tensor] = {}
        total = body_hm.new_zeros(())
        if gt_weight > 0:
            gt_body = weighted_mse(body_hm, body_t, body_w)
            gt_face, gt_hand = _head_gt_loss(kp, heads.boxes, valid, heads.face_heatmaps, heads.hand_heatmaps, recipe.head_sigma)
            parts.update({"body": gt_body, "face": gt_face, "hand": gt_hand})
            total = total + gt_weight * (w.body * gt_body + w.face * gt_face + w.hand * gt_hand)
        if is_student and dist.distill_weight > 0:
            assert teacher is not None
            t_body = resample_body_heatmaps(teacher.body, (sx, sy), tuple(body_hm.shape[-2:]))
            d_body = weighted_mse(body_hm, t_body)
            student_boxes = scale_boxes(heads.boxes.detach(), sx, sy, inverse=True)  # max-crop pixels
            t_face, m_face = warp_head_heatmaps(
                teacher.face, teacher.boxes[:, 0], student_boxes[:, 0], heads.face_heatmaps.shape[-1]
            )
            d_face = weighted_mse(heads.face_heatmaps, t_face, m_face)
            t_hand, m_hand = warp_head_heatmaps(
                teacher.hand.flatten(0, 1),
                teacher.boxes[:, 1:3].flatten(0, 1),
                student_boxes[:, 1:3].flatten(0, 1),
                heads.hand_heatmaps.shape[-1],
            )
            d_hand = weighted_mse(heads.hand_heatmaps.flatten(0, 1), t_hand, m_hand)
            parts.update({"distill_body": d_body, "distill_face": d_face, "distill_hand": d_hand})
            total = total + dist.distill_weight * (w.body * d_body + w.face * d_face + w.hand * d_hand)
        total = total * w.scale
        if not member.is_teacher:
            total = total * student_weight
        (total if scaler is None else scaler.scale(total)).backward()
        if member.is_teacher and dist.enabled:
            teacher = _Teacher(
                body_hm.detach(), heads.boxes.detach(), heads.face_heatmaps.detach(), heads.hand_heatmaps.detach()
            )
        for name, value in parts.items():
            logs[f"{member.role}/{name}"] = float(value.detach())
        logs[f"{member.role}/total"] = float(total.detach())
        grand_total += float(total.detach())
    logs["total"] = grand_total
    return logs


__all__ = ["sandwich_step"]
