"""Experiment files (`experiments/*.yaml`): one job of the platform, validated once here.

An experiment names a search space, a trainer recipe, the data, an output directory, a seed and
the cluster / search / tracking settings. `load_experiment(path)` validates the file (pydantic
dataclasses, frozen, unknown keys rejected), resolves every path against the file's folder, loads
the space and the recipe, and returns a frozen `Experiment`. Every phase (training, search,
export) and every component (the search driver, the searchers, the evaluators) reads these frozen
sections directly. Every error is one `ConfigError` naming the file, the key path, the value and
what was allowed.
"""

from __future__ import annotations

import dataclasses

import errno
import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass as pdataclass
from pydantic_core import ArgsKwargs

from nasplat.config.recipe import TrainerRecipe, load_trainer
from nasplat.errors import ConfigError
from nasplat.files import STRICT, read_yaml, resolve_path, validate
from nasplat.flops import GFlops
from nasplat.space import SearchSpace
from nasplat.storage import Storage, cache_root
from nasplat.tasks.base import Task
from nasplat.tasks.registry import DEFAULT_TASK, get_task



@pdataclass(config=STRICT, frozen=True)
class SyntheticConfig:
    train: int = Field(400, ge=1)
    val: int = Field(100, ge=1)
    seed: int = 0
    # Part sizes as fractions of the person height (the generator's defaults are real proportions;
    # a CPU-sized crop of 128 px leaves a real-size hand box 3 heatmap pixels wide).
    hand_length: float = Field(0.12, gt=0.02, le=0.4)
    face_width: float = Field(0.13, gt=0.02, le=0.4)


@pdataclass(config=STRICT, frozen=True)
class DataFile:
    """The `data` section as written."""

    # a folder in the COCO-WholeBody layout (relative to the experiment file), or a URI
    # (s3://bucket/prefix, gs://bucket/prefix, file:///folder) of one that every node copies
    # into its node-local cache before reading it
    root: str
    synthetic: SyntheticConfig | None = None  # generate into root when it has no annotations
    detections: Path | None = None  # COCO results file of person detections for val


@pdataclass(config=STRICT, frozen=True)
class DataConfig:
    """The `data` section loaded. `root` is the local folder every reader reads; for a URI
    `data.root` it is the node-local cache folder the data set is copied into (`source`)."""

    root: Path  # COCO-WholeBody layout; absolute after loading
    synthetic: SyntheticConfig | None = None  # generate into root when it has no annotations
    detections: Path | None = None  # COCO results file of person detections for val
    # the URI `data.root` named (secrets included), synced into `root` by `ensure_data`; None:
    # `root` is the data set itself
    source: str | None = None


@pdataclass(config=STRICT, frozen=True)
class ClusterConfig:
    address: str | None = None  # None: embedded local Ray; "auto" / "ray://host:port"
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1)
    # Ray's runtime_env for every task and actor of the job, passed to Ray as it is (pip,
    # py_modules, env_vars, working_dir, image_uri, ...): how nodes without nasplat installed get it
    runtime_env: dict[str, Any] | None = None


@pdataclass(config=STRICT, frozen=True)
class EvolutionConfig:
    """The evolution searcher's settings; the defaults are mmrazor's (population 50, top 10,
    25 mutations + 25 crossovers per generation)."""

    population: int = Field(50, ge=2)
    top_k: int = Field(10, ge=1)
    mutations: int = Field(25, ge=0)
    crossovers: int = Field(25, ge=0)
    mutation_prob: float = Field(0.1, ge=0, le=1)


@pdataclass(config=STRICT, frozen=True)
class LatencyProfileConfig:
    """How `nasplat run` profiles the latency table when `search.latency_lut` does not exist yet
    (see `nasplat latency profile`)."""

    backend: Literal["onnx", "torch"] = "onnx"  # onnxruntime, or eager torch
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(2, ge=1)
    batch: int = Field(1, ge=1)
    repeats: int = Field(25, ge=3)
    passes: int = Field(3, ge=1)  # passes over each group of blocks, `repeats` timed runs each
    calibration: int = Field(6, ge=0)  # whole subnets measured to fit the correction


@pdataclass(config=STRICT, frozen=True)
class PredictorConfig:
    """`search.predictor`: an accuracy predictor that screens candidates before they are evaluated
    for real (`nasplat.search.predictor`). Once `warmup` evaluations are complete, every searcher
    proposes `screen` candidates per real evaluation, and the predictor, refitted on every
    completed trial of the study, picks the one evaluated."""

    kind: Literal["mlp_ensemble", "gp"] = "mlp_ensemble"  # an ensemble of small MLPs, or a Gaussian process
    warmup: int = Field(20, ge=2)  # real evaluations before the predictor is first fitted
    screen: int = Field(10, ge=1, le=1000)  # candidates screened per real evaluation
    # ehvi: expected improvement of the (AP, cost) hypervolume under the budget; ei: expected
    # improvement of the best AP; ucb: predicted AP + beta * its std
    acquisition: Literal["ehvi", "ei", "ucb"] = "ehvi"
    beta: float = Field(1.0, ge=0, allow_inf_nan=False)  # ucb's exploration weight (unused by the others)


@pdataclass(config=STRICT, frozen=True)
class GflopsBudget:
    """`search.budget_gflops`: limits on a subnet's analytic GFLOPs (`nasplat.flops`), each > 0.

    A number in the file is `total` alone; a mapping names at least one part and may name `total`.
    `hand` limits one hand's head, as `nasplat.flops.GFlops.hand` counts it (the total counts it
    once per hand).
    """

    total: float | None = Field(None, gt=0)
    body: float | None = Field(None, gt=0)
    face: float | None = Field(None, gt=0)
    hand: float | None = Field(None, gt=0)

    @property
    def parts(self) -> dict[str, float]:
        """The limit of each part given (body, face, hand)."""
        given = {"body": self.body, "face": self.face, "hand": self.hand}
        return {part: limit for part, limit in given.items() if limit is not None}

    @property
    def total_limit(self) -> float | None:
        """`total`; without it, the total the three part limits allow when all are given, else
        None (no limit on the total)."""
        if self.total is not None:
            return self.total
        if self.body is None or self.face is None or self.hand is None:
            return None
        return GFlops.of(self.body, self.face, self.hand).total


# `SearchConfig(budget_gflops=...)` and `dataclasses.replace` build it by field name; a file writes
# `budget_gflops` (`nasplat.files.validate` reads keys by alias only)
@pdataclass(config=ConfigDict(extra="forbid", validate_by_name=True), frozen=True)
class SearchConfig:
    sampler: Literal["random", "evolution", "tpe", "nsga2"] = "nsga2"
    n_trials: int = Field(50, ge=1)
    # the GFLOPs budget as written (`budget_gflops`: a number, or limits per part); read it as
    # `budget_gflops` (the total) and `part_budgets`
    gflops_budget: GflopsBudget | None = Field(None, alias="budget_gflops")
    seed: int = 0
    num_evaluators: int = Field(2, ge=1)
    # what scores a subnet: one of the task's `Task.search_objectives` (checked by the loader);
    # None in the file: the task's first (ZoomNAS: wholebody, the trained supernet's AP)
    objective: str = "wholebody"
    storage: str | None = None  # SQLAlchemy URL; None: sqlite:///<output_dir>/study.db
    evolution: EvolutionConfig = EvolutionConfig()
    max_retries: int = Field(2, ge=0)  # extra attempts of a failed or lost evaluation
    # trials that may fail for good (after their retries) before the search stops; None: n_trials
    max_failures: int | None = Field(None, ge=0)
    # an evaluation running longer is abandoned (its Ray actor replaced) and retried once on
    # another slot, then failed; None: 10x the median evaluation so far, at least 120 s, and
    # 1 h until the first evaluation completes. The in-process (--local) pool has no timeout.
    trial_timeout_s: float | None = Field(None, gt=0)
    # predicted latency budget in ms on the latency table's device (beside or instead of GFLOPs)
    budget_latency_ms: float | None = Field(None, gt=0)
    # the latency table (relative to the experiment file); None: <output_dir>/latency_lut.json,
    # profiled by `nasplat run` with `latency_profile` when missing
    latency_lut: str | None = None
    latency_profile: LatencyProfileConfig = LatencyProfileConfig()
    cost: Literal["gflops", "latency"] = "gflops"  # NSGA-II's second objective, evolution's Pareto parents
    # dimensions the search keeps at one value, by the space's flat names (`nasplat space show`),
    # e.g. {face.resolution: 32}: the search samples only archs with these values (the supernet
    # is the whole space's); a changed fix is another study. None: nothing pinned
    fix: dict[str, int | float] | None = None
    # an accuracy predictor picks which of `screen` proposed candidates is evaluated; None: every
    # proposal is evaluated
    predictor: PredictorConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _budget_by_its_key_wins(cls, data: Any) -> Any:
        # `dataclasses.replace(search, budget_gflops=...)` also passes the old `gflops_budget`
        if isinstance(data, ArgsKwargs) and data.kwargs and "budget_gflops" in data.kwargs:
            return ArgsKwargs(data.args, {k: v for k, v in data.kwargs.items() if k != "gflops_budget"})
        return data

    @field_validator("gflops_budget", mode="before")
    @classmethod
    def _number_is_the_total(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):
            return {"total": value}
        if isinstance(value, Mapping) and set(value) <= {"total"}:
            raise ValueError("name at least one of body, face, hand (a number is a budget on the total alone)")
        if value is not None and not isinstance(value, (Mapping, GflopsBudget)):
            raise ValueError("give a number (the budget on the total) or a mapping of body, face, hand, total")
        return value

    @property
    def budget_gflops(self) -> float | None:
        """The limit on the total GFLOPs (`GflopsBudget.total_limit`); None: no limit."""
        return None if self.gflops_budget is None else self.gflops_budget.total_limit

    @property
    def part_budgets(self) -> dict[str, float] | None:
        """The GFLOPs limit of each part given (`GflopsBudget.parts`); None: no part is limited."""
        parts = self.gflops_budget.parts if self.gflops_budget is not None else {}
        return parts or None

    @property
    def uses_latency(self) -> bool:
        """Whether the search needs a latency table (a latency budget or latency as its cost)."""
        return self.budget_latency_ms is not None or self.cost == "latency"


@pdataclass(config=STRICT, frozen=True)
class TrackingConfig:
    uri: str | None = None  # None: sqlite:///<output_dir>/mlflow.db
    experiment: str | None = None  # None: the experiment's name


@pdataclass(config=STRICT, frozen=True)
class RetrainConfig:
    """Retraining the searched subnets as static models (phase 3 of `nasplat run`), one Ray Tune
    trial per (subnet, learning rate). The recipe is the experiment's trainer recipe (or
    `trainer`) without the sandwich: one subnet, the same joint loss, heatmaps and GT-box
    fallback, `epochs` epochs, lr x the recipe's gamma at each of `milestones`."""

    top_k: int = Field(1, ge=1, le=32)  # the k best subnets by AP under the budget
    epochs: int = Field(10, ge=1, le=100_000)
    init: Literal["inherited", "scratch"] = "inherited"  # supernet's sliced weights, or fresh
    trainer: str | None = None  # a recipe file; None: the experiment's trainer
    # the sweep: finite, at most 10 (a larger one only diverges), each once
    lr: tuple[Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)], ...] | None = Field(None, min_length=1,
                                                                                             max_length=8)
    milestones: tuple[int, ...] = ()
    concurrent_trials: int = Field(2, ge=1)  # Tune trials at once
    cpus_per_trial: int | None = Field(None, ge=1)  # CPUs (and torch threads) per trial; None: cluster.cpus_per_worker

    def trial_cpus(self, cluster: ClusterConfig) -> int:
        return self.cpus_per_trial if self.cpus_per_trial is not None else cluster.cpus_per_worker

    @field_validator("milestones")
    @classmethod
    def _milestones_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if list(value) != sorted(set(value)) or (value and value[0] < 1):
            raise ValueError(f"milestones must be increasing epochs from 1, got {list(value)}")
        return value

    @field_validator("lr")
    @classmethod
    def _lr_once(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"each learning rate once, got {list(value)}")
        return value


@pdataclass(config=STRICT, frozen=True)
class ExperimentFile:
    """The experiment YAML as written (paths still relative to the file)."""

    name: str
    space: str
    trainer: str
    data: DataFile
    output_dir: str
    # where everything durable that more than one process writes or reads goes (checkpoints,
    # Ray Train's run, Tune's sweeps, exports, the latency table, MLflow artifacts of a local
    # store): a folder (NFS on a cluster) or s3://bucket/prefix, gs://bucket/prefix; None: output_dir
    storage_path: str | None = None
    seed: int = 0
    cluster: ClusterConfig = ClusterConfig()
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()
    retrain: RetrainConfig | None = None  # None (or absent): no retraining phase
    # what the experiment searches networks for (`nasplat.tasks`): the task reads `space` and
    # `data` and gives the supernet, the training step and the metrics
    task: str = DEFAULT_TASK


@functools.cache
def experiment_file(data_file: type) -> type:
    """The schema of an experiment file whose `data:` section is a `data_file` (a task's)."""
    if data_file is DataFile:
        return ExperimentFile
    fields = {"__annotations__": {"data": data_file}, "__module__": __name__, "__doc__": ExperimentFile.__doc__}
    return pdataclass(config=STRICT, frozen=True)(type(f"ExperimentFile[{data_file.__name__}]", (ExperimentFile,), fields))


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment: every path absolute, the space and the trainer recipe loaded."""

    name: str
    path: Path  # the experiment file
    space: SearchSpace  # the task's space (`Task.load_space`); a `SearchSpace` for zoomnas
    space_path: Path
    trainer: TrainerRecipe
    trainer_path: Path
    data: DataConfig
    output_dir: Path  # this process's working folder (the study and MLflow databases by default)
    seed: int
    cluster: ClusterConfig
    search: SearchConfig
    tracking: TrackingConfig
    retrain: RetrainConfig | None = None
    retrain_trainer: TrainerRecipe | None = None  # retrain.trainer loaded (None: `trainer`)
    retrain_trainer_path: Path | None = None
    storage_root: Storage | None = None  # `storage_path` as given; None: the output directory
    task: str = DEFAULT_TASK  # `nasplat.tasks.get_task(task)` gives what depends on it

    @property
    def storage(self) -> Storage:
        """The storage root: `storage_path`, else the output directory (so an experiment whose
        output directory is replaced keeps everything in the new one)."""
        return self.storage_root if self.storage_root is not None else Storage(str(self.output_dir))

    @property
    def local_root(self) -> Path:
        """Where this node writes what belongs under the storage root: the root itself when it
        is a folder, else the output directory (a working copy that is uploaded to the root)."""
        return self.storage.local or self.output_dir

    @property
    def checkpoint_dir(self) -> Path:
        return self.local_root / "checkpoints"

    @property
    def exports_dir(self) -> Path:
        return self.local_root / "exports"

    @property
    def artifact_location(self) -> Path | str:
        """The MLflow artifact location of a new experiment in a local tracking store."""
        return self.storage.local / "mlartifacts" if self.storage.local else self.storage.join("mlartifacts")

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.output_dir / 'mlflow.db'}"

    @property
    def tracking_experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def latency_lut(self) -> Path:
        """The latency table the search reads (`search.latency_lut`, else in the output dir)."""
        lut = self.search.latency_lut
        return _resolve(self.path.parent, lut, self.path, "search.latency_lut") if lut else self.local_root / "latency_lut.json"

    @property
    def storage_url(self) -> str:
        return self.search.storage or f"sqlite:///{self.output_dir / 'study.db'}"

    @property
    def search_space(self) -> SearchSpace:
        """The space the search samples: `space` with the dimensions of `search.fix` pinned (`space`
        itself without a fix). Its archs are archs of `space`, which the supernet, the objective
        and FLOPs counting keep."""
        return self.space.pinned(self.search.fix or {})



def _resolve(base: Path, value: str | Path, source: Path | None = None, key: str | None = None) -> Path:
    """`value` resolved against `base` (an absolute one as given). Raises ConfigError naming
    `source` and `key` for a loop of symbolic links."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else resolve_path(base / p, source=str(source) if source else None, key=key)


def _referenced_file(base: Path, value: str | Path, source: Path, key: str) -> Path:
    path = _resolve(base, value, source, key)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        problem = "is a loop of symbolic links" if e.errno == errno.ELOOP else "not found"
        raise ConfigError(f"file {str(value)!r} {problem} (resolved to {path})", source=str(source), key=key) from e
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{str(value)!r} is not a regular file (resolved to {path})", source=str(source), key=key)
    return path


def data_cache_dir(uri: str) -> Path:
    """The folder for a copy of the data set at `uri`: `cache_root()/data/<key>`, the key a hash
    of the URI without its secrets (new credentials reuse the copy)."""
    key = hashlib.sha256(Storage(uri).redacted().encode()).hexdigest()[:16]
    return (cache_root().expanduser() / "data" / key).resolve()


def _data_config(raw: DataFile, base: Path, file: Path, detections: Path | None) -> DataConfig:
    """A folder `root` is resolved against the experiment's folder; a URI one is validated and
    read from its cache folder, resolved here, on the driver: the same absolute path is used on
    every node, so `$NASPLAT_CACHE_DIR` must name a node-local folder that exists on each."""
    text = raw.root.strip()
    if "://" not in text or len(urlsplit(text).scheme) == 1:  # a path (C://x is a drive letter)
        return DataConfig(root=_resolve(base, raw.root, file, "data.root"), synthetic=raw.synthetic, detections=detections)
    store = Storage.parse(text, base, source=str(file), key="data.root")
    if raw.synthetic is not None:
        raise ConfigError(f"{store.redacted()!r} is a URI; data.synthetic generates into a local folder: "
                          "give a folder as data.root, or drop data.synthetic", source=str(file), key="data.synthetic")
    uri = store.uri if store.is_remote else Path(store.uri).as_uri()  # file:// stays a URI to copy from
    return DataConfig(root=data_cache_dir(uri), detections=detections, source=uri)


def load_experiment(path: str | Path) -> Experiment:
    """Load an experiment file, resolving paths relative to it and loading its space and recipe.

    Raises ConfigError naming the file, the key path, the value and what was allowed; a missing
    referenced file (space, trainer, detections) is an error naming its key. The data root is not
    checked here: a cluster experiment names a data set that lives on the workers, and training
    raises a DataError naming `data.root` when it is missing there. A URI `data.root` is parsed
    (scheme, bucket), not reached; `ensure_data` copies it on each node.
    """
    p = resolve_path(path)
    text = read_yaml(p)
    task = _task(text, p)
    raw: ExperimentFile = validate(experiment_file(task.data_file), text, p)
    base = p.parent
    space_path = _referenced_file(base, raw.space, p, "space")
    trainer_path = _referenced_file(base, raw.trainer, p, "trainer")
    data = task.data_config(raw.data, base, p)
    retrain_trainer_path = None
    if raw.retrain is not None and raw.retrain.trainer is not None:
        retrain_trainer_path = _referenced_file(base, raw.retrain.trainer, p, "retrain.trainer")
    if raw.retrain is not None and raw.retrain.top_k > raw.search.n_trials:
        raise ConfigError(f"value {raw.retrain.top_k} not allowed: the search completes only search.n_trials = "
                          f"{raw.search.n_trials} subnets to retrain", source=str(p), key="retrain.top_k")
    output_dir = _resolve(base, raw.output_dir, p, "output_dir")
    storage = Storage.parse(raw.storage_path, base, source=str(p)) if raw.storage_path is not None else None
    space = task.load_space(space_path)
    try:
        space.pinned(raw.search.fix or {})
    except ConfigError as e:
        raise ConfigError(e.detail, source=str(p), key=f"search.fix.{e.key}") from e
    search = _task_search(raw.search, text, task, p)
    return Experiment(
        name=raw.name,
        path=p,
        space=space,
        space_path=space_path,
        trainer=load_trainer(trainer_path),
        trainer_path=trainer_path,
        data=data,
        output_dir=output_dir,
        seed=raw.seed,
        cluster=raw.cluster,
        search=search,
        tracking=raw.tracking,
        retrain=raw.retrain,
        retrain_trainer=load_trainer(retrain_trainer_path) if retrain_trainer_path else None,
        retrain_trainer_path=retrain_trainer_path,
        storage_root=storage,
        task=task.name,
    )


def _task_search(search: SearchConfig, text: Any, task: Task, file: Path) -> SearchConfig:
    """`search` with the task's default objective when the file names none. Raises ConfigError
    for an objective the task does not have, or a budget on a part it does not count."""
    written = text.get("search") if isinstance(text, Mapping) else None
    named = isinstance(written, Mapping) and "objective" in written
    if not named and task.search_objectives and search.objective != task.search_objectives[0]:
        search = dataclasses.replace(search, objective=task.search_objectives[0])
    if task.search_objectives and search.objective not in task.search_objectives:
        raise ConfigError(f"value {search.objective!r} not allowed; allowed: {', '.join(sorted(task.search_objectives))}",
                          source=str(file), key="search.objective")
    unknown = [part for part in search.part_budgets or {} if part not in task.cost_parts]
    if unknown:
        raise ConfigError(f"task {task.name!r} counts no {unknown[0]} GFLOPs; a budget may name "
                          f"{', '.join(task.cost_parts)}", source=str(file), key=f"search.budget_gflops.{unknown[0]}")
    return search


def _task(text: Any, file: Path) -> Task:
    """The task the file names (`task:`; the default when absent). Raises ConfigError naming
    `task` for a value that is not a registered task's name."""
    name = text.get("task", DEFAULT_TASK) if isinstance(text, Mapping) else DEFAULT_TASK
    if not isinstance(name, str):
        raise ConfigError(f"value {name!r} not allowed: a task's name", source=str(file), key="task")
    try:
        return get_task(name)
    except ConfigError as e:
        raise ConfigError(e.detail, source=str(file), key="task") from e


def wholebody_data_config(raw: DataFile, base: Path, file: Path) -> DataConfig:
    """The zoomnas task's `data:` section loaded: `detections` must exist; a URI `data.root` is
    read from its node-local cache folder."""
    detections = None
    if raw.detections is not None:
        detections = _referenced_file(base, raw.detections, file, "data.detections")
    return _data_config(raw, base, file, detections)


__all__ = [
    "ClusterConfig",
    "DataConfig",
    "DataFile",
    "EvolutionConfig",
    "Experiment",
    "LatencyProfileConfig",
    "ExperimentFile",
    "PredictorConfig",
    "GflopsBudget",
    "RetrainConfig",
    "SearchConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "data_cache_dir",
    "experiment_file",
    "load_experiment",
    "wholebody_data_config",
]
