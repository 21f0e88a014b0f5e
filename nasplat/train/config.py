"""Experiment files and trainer recipes: validated once here, frozen everywhere else.

An experiment (`experiments/*.yaml`) names a search space, a trainer recipe, the data, an output
directory, a seed and the cluster / search / tracking settings. A trainer recipe
(`trainers/*.yaml`) is everything about how the supernet is trained: optimizer, schedule,
augmentation, sandwich rule, in-place distillation, box fallback, BN recalibration, checkpoints.

Both schemas are pydantic dataclasses (frozen, `extra="forbid"`), so a value inside the program is
a plain frozen dataclass that was validated at the edge. Every error is one `ConfigError` line that
names the file, the key path, the value and what was allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from nasplat.errors import ConfigError, NasplatError

if TYPE_CHECKING:  # pragma: no cover
    from nasplat.space import SearchSpace

_STRICT = ConfigDict(extra="forbid")

# ------------------------------------------------------------------------------------------------
# Trainer recipe
# ------------------------------------------------------------------------------------------------


@pdataclass(config=_STRICT, frozen=True)
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)  # per-worker base learning rate
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only


@pdataclass(config=_STRICT, frozen=True)
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


@pdataclass(config=_STRICT, frozen=True)
class AugmentationConfig:
    scale: float = Field(0.5, ge=0, lt=1)  # random scale in [1 - scale, 1 + scale]
    rotation: float = Field(40.0, ge=0, le=180)  # degrees, +-
    rotation_prob: float = Field(0.6, ge=0, le=1)
    flip: bool = True
    half_body_prob: float = Field(0.0, ge=0, le=1)


@pdataclass(config=_STRICT, frozen=True)
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


@pdataclass(config=_STRICT, frozen=True)
class DistillationConfig:
    """In-place distillation: the max subnet's detached heatmaps supervise the other members.

    BigNAS practice is students distillation-only (gt_weight 0, distill_weight 1); the max subnet
    always learns from ground truth only.
    """

    enabled: bool = True
    gt_weight: float = Field(0.0, ge=0)  # weight of the ground-truth loss on the students
    distill_weight: float = Field(1.0, ge=0)  # weight of the teacher loss on the students


@pdataclass(config=_STRICT, frozen=True)
class LossConfig:
    body: float = Field(1.0, ge=0)
    face: float = Field(1.0, ge=0)
    hand: float = Field(1.0, ge=0)
    # Heatmap MSE is tiny (mostly zeros); the usual mmpose loss keeps 0.5 * mean, we scale the
    # joint loss so Adam's first steps are not dominated by epsilon.
    scale: float = Field(1.0, gt=0)


@pdataclass(config=_STRICT, frozen=True)
class HeadBoxConfig:
    """Which boxes the heads crop during training.

    Early in training the boxes BodyNet decodes are meaningless, so the heads are trained on GT
    boxes per instance: during the first `gt_box_epochs` epochs always, afterwards whenever the
    predicted box's IoU with the GT box is below `box_iou_threshold`. Instances without a valid
    part get zero head loss.
    """

    gt_box_epochs: int = Field(1, ge=0)
    box_iou_threshold: float = Field(0.5, ge=0, le=1)


@pdataclass(config=_STRICT, frozen=True)
class BNRecalibrationConfig:
    images: int = Field(2000, ge=1)  # training images whose per-batch statistics are averaged
    batch_size: int = Field(50, ge=1)


@pdataclass(config=_STRICT, frozen=True)
class CheckpointConfig:
    every_steps: int = Field(0, ge=0)  # 0: only at the end of every epoch
    keep: int = Field(2, ge=1)  # how many step checkpoints to keep besides the latest


@pdataclass(config=_STRICT, frozen=True)
class EvalConfig:
    flip_test: bool = True
    every_epochs: int = Field(1, ge=0)  # val AP of max and min subnets; 0: never during training
    max_images: int | None = Field(None, ge=1)  # val persons for the per-epoch AP (None: all)
    batch_size: int = Field(32, ge=1)


@pdataclass(config=_STRICT, frozen=True)
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
    log_every_steps: int = Field(10, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap for quick runs / benchmarks


# ------------------------------------------------------------------------------------------------
# Experiment
# ------------------------------------------------------------------------------------------------


@pdataclass(config=_STRICT, frozen=True)
class SyntheticConfig:
    train: int = Field(400, ge=1)
    val: int = Field(100, ge=1)
    seed: int = 0
    # Part sizes as fractions of the person height (the generator's defaults are real proportions;
    # a CPU-sized crop of 128 px leaves a real-size hand box 3 heatmap pixels wide).
    hand_length: float = Field(0.12, gt=0.02, le=0.4)
    face_width: float = Field(0.13, gt=0.02, le=0.4)


@pdataclass(config=_STRICT, frozen=True)
class DataConfig:
    root: Path  # COCO-WholeBody layout; absolute after loading
    synthetic: SyntheticConfig | None = None  # generate into root when it has no annotations
    detections: Path | None = None  # COCO results file of person detections for val


@pdataclass(config=_STRICT, frozen=True)
class ClusterConfig:
    address: str | None = None  # None: embedded local Ray; "auto" / "ray://host:port"
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1)


@pdataclass(config=_STRICT, frozen=True)
class EvolutionConfig:
    population: int = Field(50, ge=2)
    top_k: int = Field(10, ge=1)
    mutations: int = Field(25, ge=0)
    crossovers: int = Field(25, ge=0)
    mutation_prob: float = Field(0.1, ge=0, le=1)


@pdataclass(config=_STRICT, frozen=True)
class SearchConfig:
    sampler: Literal["random", "evolution", "tpe", "nsga2"] = "nsga2"
    n_trials: int = Field(50, ge=1)
    budget_gflops: float | None = Field(None, gt=0)
    seed: int = 0
    num_evaluators: int = Field(2, ge=1)
    objective: Literal["wholebody", "analytic"] = "wholebody"
    storage: str | None = None  # SQLAlchemy URL; None: sqlite:///<output_dir>/study.db
    evolution: EvolutionConfig = EvolutionConfig()


@pdataclass(config=_STRICT, frozen=True)
class TrackingConfig:
    uri: str | None = None  # None: sqlite:///<output_dir>/mlflow.db
    experiment: str | None = None  # None: the experiment's name


@pdataclass(config=_STRICT, frozen=True)
class ExperimentFile:
    """The experiment YAML as written (paths still relative to the file)."""

    name: str
    space: str
    trainer: str
    data: DataConfig
    output_dir: str
    seed: int = 0
    cluster: ClusterConfig = ClusterConfig()
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment: every path absolute, the space and the trainer recipe loaded."""

    name: str
    path: Path  # the experiment file
    space: SearchSpace
    space_path: Path
    trainer: TrainerRecipe
    trainer_path: Path
    data: DataConfig
    output_dir: Path
    seed: int
    cluster: ClusterConfig
    search: SearchConfig
    tracking: TrackingConfig

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.output_dir / 'mlflow.db'}"

    @property
    def tracking_experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def storage_url(self) -> str:
        return self.search.storage or f"sqlite:///{self.output_dir / 'study.db'}"


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ConfigError("file not found", source=str(path)) from e
    except OSError as e:
        raise ConfigError(f"cannot read ({e.strerror})", source=str(path)) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({e})".replace("\n", " "), source=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping, got {type(data).__name__}", source=str(path))
    return data


def _section_keys(schema: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the section at `loc` of a dataclass schema (empty if unknown)."""
    import dataclasses
    import typing

    current = schema
    for part in loc:
        if not dataclasses.is_dataclass(current):
            return []
        hints = typing.get_type_hints(current)
        if part not in hints:
            return []
        hint = hints[part]
        args = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        current = args[0] if args else hint
    if not dataclasses.is_dataclass(current):
        return []
    return [f.name for f in dataclasses.fields(current)]


def _validation_error(path: Path, err: ValidationError, schema: Any = None) -> ConfigError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    value = first.get("input")
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _section_keys(schema, tuple(first["loc"][:-1])) if schema is not None else []
        msg = f"unknown key (value {value!r}); allowed: {', '.join(allowed) or 'see the docs'}"
    elif first["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = f"value {value!r} not allowed: {first['msg']}"
    more = len(err.errors()) - 1
    if more:
        msg += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(msg, source=str(path), key=key)


def _validate(schema: Any, data: dict[str, Any], path: Path) -> Any:
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as e:
        raise _validation_error(path, e, schema) from e


def load_trainer(path: str | Path) -> TrainerRecipe:
    """Load and validate a trainer recipe. Raises ConfigError (file, key, value, allowed)."""
    p = Path(path).resolve()
    recipe: TrainerRecipe = _validate(TrainerRecipe, _read_yaml(p), p)
    return recipe


def _resolve(base: Path, value: str | Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_experiment(path: str | Path) -> Experiment:
    """Load an experiment file, resolving paths relative to it and loading its space and recipe.

    Raises ConfigError naming the file, the key path, the value and what was allowed; a missing
    referenced file (space, trainer, detections) is an error
    naming its key. The data root is checked when training starts.
    """
    from nasplat.space import load_space

    p = Path(path).resolve()
    raw: ExperimentFile = _validate(ExperimentFile, _read_yaml(p), p)
    base = p.parent
    space_path = _resolve(base, raw.space)
    if not space_path.is_file():
        raise ConfigError(f"file {raw.space!r} not found (resolved to {space_path})", source=str(p), key="space")
    trainer_path = _resolve(base, raw.trainer)
    if not trainer_path.is_file():
        raise ConfigError(
            f"file {raw.trainer!r} not found (resolved to {trainer_path})", source=str(p), key="trainer"
        )
    # The data root is not checked here: a cluster experiment names a data set that lives on the
    # workers; `nasplat.train` raises a DataError naming `data.root` when it is missing at train time.
    root = _resolve(base, raw.data.root)
    detections = None
    if raw.data.detections is not None:
        detections = _resolve(base, raw.data.detections)
        if not detections.is_file():
            raise ConfigError(
                f"file {str(raw.data.detections)!r} not found (resolved to {detections})",
                source=str(p),
                key="data.detections",
            )
    try:
        space = load_space(space_path)
    except ConfigError:
        raise
    except NasplatError as e:  # pragma: no cover - space errors are ConfigErrors by contract
        raise ConfigError(str(e), source=str(p), key="space") from e
    trainer = load_trainer(trainer_path)
    data = DataConfig(root=root, synthetic=raw.data.synthetic, detections=detections)
    return Experiment(
        name=raw.name,
        path=p,
        space=space,
        space_path=space_path,
        trainer=trainer,
        trainer_path=trainer_path,
        data=data,
        output_dir=_resolve(base, raw.output_dir),
        seed=raw.seed,
        cluster=raw.cluster,
        search=raw.search,
        tracking=raw.tracking,
    )


__all__ = [
    "AugmentationConfig",
    "BNRecalibrationConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "DataConfig",
    "DistillationConfig",
    "EvalConfig",
    "EvolutionConfig",
    "Experiment",
    "HeadBoxConfig",
    "LossConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "SandwichConfig",
    "SearchConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainerRecipe",
    "load_experiment",
    "load_trainer",
]
