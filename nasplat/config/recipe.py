"""Trainer recipes (`trainers/*.yaml`): everything about how a supernet is trained.

Optimizer, schedule, augmentation, sandwich rule, in-place distillation, GT-box fallback for the
heads, BN recalibration, checkpoints and per-epoch evaluation. The schema is a set of pydantic
dataclasses (frozen, unknown keys rejected): a recipe inside the program is a plain frozen value
that was validated once, here. Every error is one `ConfigError` naming the file, the key path,
the value and what was allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from nasplat.files import STRICT, read_yaml, resolve_path, validate


@pdataclass(config=STRICT, frozen=True)
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)  # per-worker base learning rate
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only


@pdataclass(config=STRICT, frozen=True)
class ScheduleConfig:
    epochs: int = Field(210, ge=1)
    milestones: tuple[int, ...] = (170, 200)  # epochs at which lr is multiplied by gamma
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0)  # linear warmup from lr * warmup_ratio
    warmup_ratio: float = Field(0.001, gt=0, le=1)

    @model_validator(mode="after")
    def _milestones_sorted(self) -> ScheduleConfig:
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {list(self.milestones)}")
        return self


@pdataclass(config=STRICT, frozen=True)
class AugmentationConfig:
    scale: float = Field(0.5, ge=0, lt=1)  # random scale in [1 - scale, 1 + scale]
    rotation: float = Field(40.0, ge=0, le=180)  # degrees, +-
    rotation_prob: float = Field(0.6, ge=0, le=1)
    flip: bool = True
    half_body_prob: float = Field(0.0, ge=0, le=1)


@pdataclass(config=STRICT, frozen=True)
class SandwichConfig:
    num_random: int = Field(2, ge=0)  # N random subnets besides max and min per batch
    train_max: bool = True
    train_min: bool = True
    # The first N epochs train the max subnet alone (Once-for-All trains the full network before
    # shrinking): a teacher worth distilling from, and shared weights the small subnets refine
    # rather than pull apart from scratch. 0: the sandwich from the first step (BigNAS).
    warmup_epochs: int = Field(0, ge=0)
    # After the warmup, the other members' losses are weighted by a factor that rises linearly from
    # 0 to 1 over this many epochs, so their gradients (large at first: they start from weights
    # trained for the max subnet) do not swamp the max subnet's and Adam's step sizes adapt.
    ramp_epochs: float = Field(0.0, ge=0)


@pdataclass(config=STRICT, frozen=True)
class DistillationConfig:
    """In-place distillation: the max subnet's detached heatmaps supervise the other members.

    BigNAS practice is students distillation-only (gt_weight 0, distill_weight 1); the max subnet
    always learns from ground truth only.
    """

    enabled: bool = True
    gt_weight: float = Field(0.0, ge=0)  # weight of the ground-truth loss on the students
    distill_weight: float = Field(1.0, ge=0)  # weight of the teacher loss on the students


@pdataclass(config=STRICT, frozen=True)
class LossConfig:
    body: float = Field(1.0, ge=0)
    face: float = Field(1.0, ge=0)
    hand: float = Field(1.0, ge=0)
    # Heatmap MSE is tiny (mostly zeros); the usual mmpose loss keeps 0.5 * mean, we scale the
    # joint loss so Adam's first steps are not dominated by epsilon.
    scale: float = Field(1.0, gt=0)


@pdataclass(config=STRICT, frozen=True)
class HeadBoxConfig:
    """Which boxes the heads crop during training.

    Early in training the boxes BodyNet decodes are meaningless, so the heads are trained on GT
    boxes per instance: during the first `gt_box_epochs` epochs always, afterwards whenever the
    predicted box's IoU with the GT box is below `box_iou_threshold`. Instances without a valid
    part get zero head loss.
    """

    gt_box_epochs: int = Field(1, ge=0)
    box_iou_threshold: float = Field(0.5, ge=0, le=1)


@pdataclass(config=STRICT, frozen=True)
class BNRecalibrationConfig:
    images: int = Field(2000, ge=1)  # training images whose per-batch statistics are averaged
    batch_size: int = Field(50, ge=1)


@pdataclass(config=STRICT, frozen=True)
class CheckpointConfig:
    every_steps: int = Field(0, ge=0)  # 0: only at the end of every epoch
    keep: int = Field(2, ge=1)  # how many step checkpoints to keep besides the latest


@pdataclass(config=STRICT, frozen=True)
class EvalConfig:
    flip_test: bool = True
    every_epochs: int = Field(1, ge=0)  # val AP of max and min subnets; 0: never during training
    max_images: int | None = Field(None, ge=1)  # val persons for the per-epoch AP (None: all)
    batch_size: int = Field(32, ge=1)


@pdataclass(config=STRICT, frozen=True)
class TrainerRecipe:
    """How the supernet is trained. One file per recipe under `trainers/`."""

    name: str
    batch_size: int = Field(16, ge=1)  # per worker
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    heatmap_sigma: float = Field(3.0, gt=0)  # body heatmaps, in heatmap pixels
    # BodyNet's 15 face/hand box keypoints, in heatmap pixels (None: heatmap_sigma). Narrower than
    # the box helps tiny boxes: at a quarter of a 128-pixel crop a hand box is 2 pixels wide.
    box_sigma: float | None = Field(None, gt=0)
    head_sigma: float = Field(2.0, gt=0)  # head heatmaps, in head heatmap pixels
    augmentation: AugmentationConfig = AugmentationConfig()
    sandwich: SandwichConfig = SandwichConfig()
    distillation: DistillationConfig = DistillationConfig()
    loss: LossConfig = LossConfig()
    head_boxes: HeadBoxConfig = HeadBoxConfig()
    bn_recalibration: BNRecalibrationConfig = BNRecalibrationConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    grad_clip: float | None = Field(None, gt=0)
    # Re-initialise the final 1x1 heatmap convs N(0, std), bias 0, before training starts (HRNet
    # practice, 0.001). Large initial outputs keep MSE heatmap training on its all-zero plateau for
    # hundreds of steps. None keeps the model's own initialisation.
    final_init_std: float | None = Field(0.001, gt=0)
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes per training worker
    # torch intra-op threads per training worker (None: torch's default). On a shared or
    # oversubscribed CPU, OpenMP's spinning threads can slow a step down tenfold: use 1 there.
    torch_threads: int | None = Field(None, ge=1)
    # Autocast of every forward (training, BN recalibration, evaluation, retraining): auto is bf16
    # on CUDA and fp32 on CPU; fp16 adds a gradient scaler. Weights, BN statistics and losses stay
    # fp32. channels_last lays out the net and its inputs NHWC (tensor-core convs on GPUs; on CPU,
    # oneDNN's NHWC kernels run narrow convs faster: trainers/cpu_small.yaml turns it on).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    log_every_steps: int = Field(10, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap for quick runs / benchmarks



def load_trainer(path: str | Path) -> TrainerRecipe:
    """Load and validate a trainer recipe. Raises ConfigError (file, key, value, allowed)."""
    p = resolve_path(path)
    recipe: TrainerRecipe = validate(TrainerRecipe, read_yaml(p), p)
    return recipe


__all__ = [
    "AugmentationConfig",
    "BNRecalibrationConfig",
    "CheckpointConfig",
    "DistillationConfig",
    "EvalConfig",
    "HeadBoxConfig",
    "LossConfig",
    "OptimizerConfig",
    "SandwichConfig",
    "ScheduleConfig",
    "TrainerRecipe",
    "load_trainer",
]
