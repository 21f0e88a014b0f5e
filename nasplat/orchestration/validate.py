"""`nasplat validate`: does the supernet rank subnets as training them alone would?

`plan_validation(experiment, k=...)` picks K subnets of the experiment's current study that span
its results under the budget: the search's choice (the best whole-body AP under the budget, the
subnet `nasplat run` exports) and K-1 more, the completed subnet nearest each of K evenly spaced
points over the range of inherited whole-body AP (`metrics.ranking.spread_picks`). Each is trained
alone as a static network by one Ray Tune trial (`validate_trial`): from scratch with the
experiment's recipe and the supernet's number of epochs by default, or fine-tuned from the sliced
weights (`init="inherited"`; with 0 epochs that is the search's own evaluation again, a check of
the pipeline: the order is then the search's by construction). Every trial evaluates once at its
end, with the search's evaluator (BN recalibrated, the whole val set), so the two APs compared
differ only in the weights.

The sweep lives in `validate/<sweep>` under the storage root, its name a hash of what it trains
(the picks, epochs, init, recipe, supernet checkpoint, seed): the same command after a crash or a
kill `Tuner.restore`s it (finished trials are not run again, interrupted ones continue from their
last epoch), and a finished one is read, not run. The result (`Validation`: per part Kendall tau
and Spearman rho with bootstrap 95% intervals, the overlap of the top 3, the regret of the choice)
is stored as the study's attribute `validation`, where `nasplat status` reads it, and logged to
MLflow (`tracking.validation`). Trials receive the frozen experiment by value and read the
supernet from the storage root, as the retrain phase's do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from nasplat.config import Experiment, TrainerRecipe
from nasplat.errors import ConfigError, StoreError, TrainingError
from nasplat.faults import machine_fault
from nasplat.files import file_sha256
from nasplat.interrupt import run_in_thread, set_activity
from nasplat.metrics.ranking import rank_agreement, regret, spread_picks, top_overlap
from nasplat.orchestration.cluster import init_ray
from nasplat.orchestration.retrain import top_subnets
from nasplat.orchestration.sweeps import (checkpoint_config, error_line, prune_sweep, pruners, restored_tuner,
                                          tune_defaults)
from nasplat.orchestration.tracking import tracked_phase_cost
from nasplat.space import Arch
from nasplat.store import StudyStore, load_current_study
from nasplat.subnet import latest_checkpoint
from nasplat.subnet.retrain import PARTS, SubnetRetrainer
from nasplat.train.checkpoint import atomic_torch_save, load_checkpoint
from nasplat.train.data import ensure_data

log = logging.getLogger(__name__)

ATTR = "validation"  # the study attribute that holds the last validation
STATE = "validate.pt"  # the trial checkpoint's file inside Tune's checkpoint directory
INITS = ("scratch", "inherited")
MIN_SUBNETS = 3  # fewer pairs carry no ranking information worth a number


@dataclass(frozen=True)
class ValidatedSubnet:
    """One of the K subnets: its study trial, inherited per-part AP (the search's evaluation) and
    stand-alone per-part AP (trained alone)."""

    study_trial: int
    arch: Arch
    gflops: float
    inherited: dict[str, float]
    standalone: dict[str, float]
    chosen: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"study_trial": self.study_trial, "arch": self.arch.to_flat(), "gflops": self.gflops,
                "inherited": self.inherited, "standalone": self.standalone, "chosen": self.chosen}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidatedSubnet:
        return cls(study_trial=int(data["study_trial"]), arch=Arch.from_flat(data["arch"]), gflops=float(data["gflops"]),
                   inherited={k: float(v) for k, v in data["inherited"].items()},
                   standalone={k: float(v) for k, v in data["standalone"].items()}, chosen=bool(data["chosen"]))


@dataclass(frozen=True)
class Validation:
    """The result of one validation sweep."""

    sweep: str
    study: str
    init: str
    epochs: int
    subnets: tuple[ValidatedSubnet, ...]  # the chosen subnet first
    parts: dict[str, dict[str, Any]]  # part -> rank_agreement(inherited, standalone)
    top3_overlap: float  # whole-body AP
    regret: float  # best stand-alone whole-body AP among the K minus the chosen one's
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "study": self.study, "init": self.init, "epochs": self.epochs,
                "k": len(self.subnets), "parts": self.parts, "top3_overlap": self.top3_overlap, "regret": self.regret,
                "wall_s": self.wall_s, "subnets": [s.to_json() for s in self.subnets]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Validation:
        return cls(sweep=str(data["sweep"]), study=str(data["study"]), init=str(data["init"]), epochs=int(data["epochs"]),
                   subnets=tuple(ValidatedSubnet.from_json(s) for s in data["subnets"]), parts=dict(data["parts"]),
                   top3_overlap=float(data["top3_overlap"]), regret=float(data["regret"]),
                   wall_s=float(data.get("wall_s", 0.0)))


def summarize_validation(sweep: str, study: str, init: str, epochs: int, subnets: list[ValidatedSubnet], *,
                         seed: int = 0, wall_s: float = 0.0) -> Validation:
    """The statistics of K validated subnets (the chosen one first): per part the agreement of
    inherited and stand-alone AP, on whole-body AP the top-3 overlap and the regret."""
    parts = {p: rank_agreement([s.inherited[p] for s in subnets], [s.standalone[p] for s in subnets], seed=seed)
             for p in PARTS}
    inherited = [s.inherited["wholebody"] for s in subnets]
    standalone = [s.standalone["wholebody"] for s in subnets]
    chosen = next(i for i, s in enumerate(subnets) if s.chosen)
    return Validation(sweep=sweep, study=study, init=init, epochs=epochs, subnets=tuple(subnets), parts=parts,
                      top3_overlap=top_overlap(inherited, standalone, 3), regret=regret(standalone, chosen),
                      wall_s=wall_s)


# ------------------------------------------------------------------------------------------------
# Which subnets, which sweep
# ------------------------------------------------------------------------------------------------


def validation_recipe(experiment: Experiment, epochs: int) -> TrainerRecipe:
    """The recipe a stand-alone trial trains with: the experiment's trainer (its optimizer, warmup
    and augmentation; the sandwich and distillation settings are unused: one subnet per step) over
    `epochs` epochs (at least 1: a schedule has one), the learning-rate milestones that fall
    within them kept."""
    base = experiment.trainer
    schedule = dataclasses.replace(base.schedule, epochs=max(epochs, 1),
                                   milestones=tuple(m for m in base.schedule.milestones if m < epochs))
    return dataclasses.replace(base, schedule=schedule)


def _inherited(trial: Any) -> dict[str, float]:
    metrics = trial.evaluation.metrics
    return {p: float(metrics.get(p, {}).get("AP", float("nan"))) for p in PARTS}


def plan_validation(experiment: Experiment, *, k: int = 10, epochs: int | None = None, init: str = "scratch",
                    study_name: str | None = None) -> tuple[str, dict[str, Any], StudyStore]:
    """The sweep's name, its Tune parameter space and the study it validates. Checks everything
    before anything is written: raises ConfigError (K below 3 or above the distinct completed
    subnets under the budget, an unknown init, negative epochs, 0 epochs from scratch),
    StoreError (no study) and TrainingError (no supernet checkpoint)."""
    source = str(experiment.path)
    if k < MIN_SUBNETS:
        raise ConfigError(f"--subnets {k}: at least {MIN_SUBNETS} subnets are needed to compare two rankings",
                          source=source, key="--subnets")
    if init not in INITS:
        raise ConfigError(f"--init {init!r}: allowed: {', '.join(INITS)}", source=source, key="--init")
    epochs = experiment.trainer.schedule.epochs if epochs is None else epochs
    if epochs < 0 or (epochs == 0 and init == "scratch"):
        raise ConfigError(f"--epochs {epochs}: " + ("must be 0 or more" if epochs < 0 else
                          "a subnet trained from scratch needs at least 1 epoch (0 fits only --init inherited)"),
                          source=source, key="--epochs")
    have = os.cpu_count() or 1
    if experiment.cluster.address is None and trial_cpus(experiment) > have:
        raise ConfigError(f"{trial_cpus(experiment)} CPUs per validation trial, but this machine has {have}",
                          source=source, key="cluster.cpus_per_worker")
    store = load_current_study(experiment.storage_url, experiment.name, study_name)
    if store is None:
        raise StoreError(f"experiment {experiment.name!r} has no study yet; run `nasplat search` first", source=source)
    trials = store.trials()
    candidates = top_subnets(trials, len(trials), store.identity.budget_gflops,  # best first: [0] is the choice
                             store.identity.part_budgets)
    if len(candidates) < k:
        raise ConfigError(f"--subnets {k}: study {store.study_name!r} has {len(candidates)} distinct completed "
                          f"subnet(s) under the budget; validate at most that many", source=source, key="--subnets")
    checkpoint = latest_checkpoint(experiment)
    picks = [candidates[i] for i in spread_picks([t.evaluation.ap for t in candidates], k, 0)]  # type: ignore[union-attr]
    entries = [{"index": i, "study_trial": t.number, "arch": t.arch.to_json(), "chosen": i == 0,
                "gflops": t.evaluation.total_gflops, "inherited": _inherited(t)}  # type: ignore[union-attr]
               for i, t in enumerate(picks)]
    recipe = validation_recipe(experiment, epochs)
    identity = {"subnets": [e["arch"] for e in entries], "epochs": epochs, "init": init,
                "recipe": json.dumps(asdict(recipe), sort_keys=True, default=str),
                "supernet": file_sha256(checkpoint), "seed": experiment.seed, "study": store.study_name}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    space = {"supernet": str(checkpoint), "supernet_sha256": identity["supernet"], "study": store.study_name,
             "epochs": epochs, "init": init, "subnet": entries}
    return f"validate-{digest}", space, store


# ------------------------------------------------------------------------------------------------
# One trial (runs in a Ray worker)
# ------------------------------------------------------------------------------------------------


def validate_trial(config: dict[str, Any], experiment: Experiment, cpus: int = 1) -> None:
    """The Tune trainable (`experiment` bound by value): train one subnet alone for
    `config["epochs"]` epochs, a checkpoint to Tune after every epoch, and evaluate it at the end
    (the last report holds its per-part AP; with 0 epochs the weights as they start). Resumes from
    Tune's checkpoint of the trial. The supernet comes from the storage root, checked against the
    one the sweep was made for."""
    from ray import tune

    ensure_data(experiment)  # this node's copy of a synthetic set
    supernet = latest_checkpoint(experiment)
    if file_sha256(supernet) != config["supernet_sha256"]:
        raise TrainingError(f"the supernet at {supernet} is not the one this validation was planned for; "
                            "run `nasplat validate` again to plan one for it", source=str(experiment.path))
    epochs = int(config["epochs"])
    arch = Arch.from_json(config["subnet"]["arch"])
    device = "cuda" if experiment.cluster.use_gpu else "cpu"
    recipe = replace(validation_recipe(experiment, epochs), torch_threads=cpus)
    trainer = SubnetRetrainer(experiment, arch, recipe, init=config["init"], device=device, checkpoint=supernet)
    resumed = tune.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d:
            trainer.load_state_dict(load_checkpoint(Path(d) / STATE), source=str(Path(d) / STATE))
    if epochs == 0:
        tune.report({"epoch": 0, "done": 1, **trainer.evaluate()})
        return
    while trainer.epoch < epochs:
        loss = trainer.train_epoch()
        last = trainer.epoch == epochs
        metrics = {"epoch": trainer.epoch, "loss": loss, "done": int(last), **(trainer.evaluate() if last else {})}
        with tempfile.TemporaryDirectory() as d:
            atomic_torch_save(trainer.state_dict(), Path(d) / STATE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


# ------------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------------

_progress: list[Callable[[dict[str, Any]], None]] = []  # what the callback reports to in this process


class ValidateCallback(Callback):
    """Hands each epoch's result of each trial to the progress sink."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        for sink in _progress:
            sink({"subnet": trial.config["subnet"]["index"] + 1, "study_trial": trial.config["subnet"]["study_trial"],
                  "epoch": int(result.get("epoch", 0)), "epochs": int(trial.config["epochs"]),
                  "ap": result.get("wholebody_ap"), "inherited": trial.config["subnet"]["inherited"]["wholebody"]})


def _trial_dirname(trial: Any) -> str:
    return f"{trial.trial_id}-subnet{trial.config['subnet']['index'] + 1}-trial{trial.config['subnet']['study_trial']}"


def trial_cpus(experiment: Experiment) -> int:
    """CPUs (and torch threads) of one stand-alone trial: `cluster.cpus_per_worker`."""
    return experiment.cluster.cpus_per_worker


def _tuner(experiment: Experiment, sweep: str, space: dict[str, Any]) -> Any:
    from ray import tune

    cpus = trial_cpus(experiment)
    resources = {"cpu": cpus, "gpu": 1 if experiment.cluster.use_gpu else 0}
    trainable = tune.with_resources(tune.with_parameters(validate_trial, experiment=experiment, cpus=cpus), resources)
    restored = restored_tuner(experiment, "validate", sweep, trainable)
    if restored is not None:
        return restored
    return tune.Tuner(
        trainable,
        param_space={**space, "subnet": tune.grid_search(space["subnet"])},
        tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname),  # every trial to its end: no scheduler
        run_config=tune.RunConfig(
            name=sweep, storage_path=experiment.storage.join("validate"), verbose=0,
            callbacks=[ValidateCallback(), *pruners(experiment)],
            checkpoint_config=checkpoint_config(),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def stored_validation(store: StudyStore, sweep: str | None = None) -> Validation | None:
    """The validation stored with the study (of sweep `sweep` when given), or None."""
    data = store.attrs().get(ATTR)
    if not isinstance(data, dict) or (sweep is not None and data.get("sweep") != sweep):
        return None
    try:
        return Validation.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def run_validation(experiment: Experiment, *, k: int = 10, epochs: int | None = None, init: str = "scratch",
                   study_name: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
                   track: bool = True) -> Validation:
    """Plan, run (or resume, or read when finished) the validation sweep, store its result with
    the study and, with `track`, log it to MLflow. progress(event) after every epoch of every
    trial: {"subnet", "study_trial", "epoch", "epochs", "ap" (at the last epoch), "inherited"}.
    Raises ConfigError / StoreError / TrainingError (see `plan_validation`; a failed trial: its
    error's last line), KeyboardInterrupt when the sweep was interrupted (the same command
    resumes it)."""
    from nasplat.tracking.validation import log_validation

    set_activity("validate")
    sweep, space, store = plan_validation(experiment, k=k, epochs=epochs, init=init, study_name=study_name)
    done = stored_validation(store, sweep)
    if done is None:
        done = _run_sweep(experiment, sweep, space, progress)
        store.set_attr(ATTR, done.to_json())
    else:
        log.info("validation sweep %s is finished; read from study %s", sweep, store.study_name)
    if track:
        log_validation(experiment.tracking_uri, experiment.tracking_experiment, done,
                       artifact_dir=experiment.artifact_location)
    return done


def _run_sweep(experiment: Experiment, sweep: str, space: dict[str, Any],
               progress: Callable[[dict[str, Any]], None] | None) -> Validation:
    tune_defaults()
    (experiment.local_root / "validate").mkdir(parents=True, exist_ok=True)
    cluster = experiment.cluster
    per_trial = trial_cpus(experiment)
    k = len(space["subnet"])
    embedded = cluster.address is None
    cpus = max(per_trial, min(k * per_trial, os.cpu_count() or 1)) if embedded else k * per_trial
    gpus = max(1, cpus // per_trial) if cluster.use_gpu else 0
    init_ray(cluster.address, num_cpus=cpus if embedded else None, num_gpus=gpus if embedded and gpus else None,
             env=cluster.runtime_env)
    tuner = _tuner(experiment, sweep, space)
    if progress is not None:
        _progress.append(progress)
    started = time.monotonic()
    try:
        with tracked_phase_cost(experiment, "validate", cpus=cpus, gpus=gpus, track=False):
            results = run_in_thread(tuner.fit, "ray-tune")  # no Tune SIGINT handler (see retrain)
    finally:
        if progress is not None:
            _progress.remove(progress)
    prune_sweep(experiment, "validate", sweep)
    errors = list(results.errors)
    if errors:
        fault = machine_fault(errors[0])
        what = f"stopped: {fault}" if fault is not None else f"failed: {error_line(errors[0])}"
        raise TrainingError(f"a validation trial {what}; the same command resumes the sweep",
                            source=experiment.storage.show("validate", sweep))
    finished = {int(r.config["subnet"]["index"]): r.metrics for r in results
                if r.metrics is not None and r.metrics.get("done") == 1 and "wholebody_ap" in r.metrics}
    if len(finished) < len(space["subnet"]):
        raise KeyboardInterrupt  # Tune stopped on a signal; the same command resumes the sweep
    subnets = [ValidatedSubnet(study_trial=int(e["study_trial"]), arch=Arch.from_json(e["arch"]), gflops=float(e["gflops"]),
                               inherited={p: float(v) for p, v in e["inherited"].items()},
                               standalone={p: float(finished[e["index"]][f"{p}_ap"]) for p in PARTS},
                               chosen=bool(e["chosen"]))
               for e in space["subnet"]]
    return summarize_validation(sweep, space["study"], space["init"], int(space["epochs"]), subnets,
                                seed=experiment.seed, wall_s=time.monotonic() - started)


__all__ = ["ATTR", "ValidatedSubnet", "Validation", "plan_validation", "run_validation", "stored_validation",
           "summarize_validation", "validate_trial", "validation_recipe"]
