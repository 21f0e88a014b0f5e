"""The retrain phase (phase 3 of `nasplat run`, also `nasplat retrain`): the searched subnets
retrained as static models on Ray Tune, resumable, then exported.

`run_retrain(experiment)` takes the `retrain.top_k` best subnets by whole-body AP under the
search budget from the study store and runs one Tune trial per (subnet, learning rate of
`retrain.lr`), each a `nasplat.subnet.SubnetRetrainer` that reports its per-part val AP and a
checkpoint to Tune after every epoch. An ASHA scheduler on the whole-body AP stops poor trials
early when there is more than one. The sweep lives in `retrain/<sweep>` under the storage root
(`storage_path`: a folder, or an object store that every node reaches), its name a
hash of what it trains (subnets, learning rates, epochs, init, recipe, supernet checkpoint): the
same command after a crash or a kill finds it and `Tuner.restore`s it, so finished trials are not
run again and interrupted ones continue from their last epoch; a changed `retrain:` section
starts a new sweep. Trials receive the frozen experiment by value (`tune.with_parameters`) and
read the supernet from the storage root, so they run on nodes that share no disk with the driver.
A Tune callback in this (driver) process logs every trial to MLflow (nested
runs, `nasplat.tracking.RetrainTracker`) and reports progress. Finally the best trial of each
subnet is exported to `exports/retrained-<k>` through `export_subnet` (its weights written back
into a supernet checkpoint, see `subnet.retrain.into_supernet`), and the store records the phase
and the best trial. An export of another (earlier) sweep found there is kept, moved to
`exports/<its sweep>/retrained-<k>`: a changed `retrain:` section never replaces a model. A sweep
that is finished and exported is not touched again: the same command reads its result and changes
no state (no Ray, no export, no phase).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from nasplat.config import Experiment
from nasplat.errors import StoreError, TrainingError
from nasplat.faults import machine_fault
from nasplat.files import atomic_write_json, file_sha256
from nasplat.interrupt import run_in_thread, set_activity
from nasplat.orchestration.cluster import init_ray
from nasplat.orchestration.phases import Phase, Phases
from nasplat.orchestration.sweeps import (checkpoint_config, error_line, prune_sweep, pruners, restored_tuner,
                                          tune_defaults)
from nasplat.orchestration.tracking import tracked_phase_cost
from nasplat.search.cost import describe_budget, within_budget
from nasplat.space import Arch
from nasplat.store import StoredTrial, load_current_study
from nasplat.subnet import latest_checkpoint, load_supernet
from nasplat.subnet.retrain import PARTS, SubnetRetrainer, into_supernet, retrain_recipe
from nasplat.train.checkpoint import atomic_torch_save, load_checkpoint, network_payload
from nasplat.train.data import ensure_data
from nasplat.tracking import RetrainTracker

log = logging.getLogger(__name__)

METRIC = "wholebody_ap"
STATE = "retrain.pt"  # the trial checkpoint's file inside Tune's checkpoint directory


@dataclass(frozen=True)
class RetrainedSubnet:
    """The best trial of one retrained subnet."""

    rank: int  # 1: the search's best subnet under the budget
    study_trial: int
    arch: Arch
    trial_id: str
    lr: float
    epochs: int  # epochs trained (fewer when ASHA stopped it)
    before: dict[str, float]  # per-part AP before retraining (inherited or scratch weights)
    after: dict[str, float]  # per-part AP after retraining
    export: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "study_trial": self.study_trial, "trial_id": self.trial_id, "lr": self.lr,
                "epochs": self.epochs, "before": self.before, "after": self.after,
                "export": str(self.export) if self.export else None, "arch": self.arch.to_flat()}


@dataclass(frozen=True)
class RetrainResult:
    sweep: str
    path: Path | str  # the sweep's folder, or its URI in an object store
    n_trials: int
    subnets: tuple[RetrainedSubnet, ...] = field(default_factory=tuple)  # best trial per subnet, by rank

    @property
    def best(self) -> RetrainedSubnet | None:
        return max(self.subnets, key=lambda s: s.after.get(METRIC, float("-inf")), default=None)


# ------------------------------------------------------------------------------------------------
# Which subnets, which sweep
# ------------------------------------------------------------------------------------------------


def top_subnets(trials: list[StoredTrial], k: int, budget_gflops: float | None,
                part_budgets: Mapping[str, float] | None = None) -> list[StoredTrial]:
    """The `k` best completed trials by whole-body AP under the budget (on the total and each part
    budget), one per arch."""
    done = [t for t in trials if t.evaluation is not None
            and within_budget(t.evaluation.gflops, budget_gflops, part_budgets)]
    done.sort(key=lambda t: (-t.evaluation.ap, t.evaluation.total_gflops, t.number))  # type: ignore[union-attr]
    out: list[StoredTrial] = []
    seen: set[str] = set()
    for t in done:
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
        if len(out) == k:
            break
    return out


def _sweep_spec(experiment: Experiment) -> tuple[str, dict[str, Any]]:
    """The sweep's name and Tune parameter space. Raises StoreError (no study / no subnet under
    the budget) and TrainingError (no supernet checkpoint)."""
    rc = experiment.retrain
    assert rc is not None
    store = load_current_study(experiment.storage_url, experiment.name)
    if store is None:
        raise StoreError(f"experiment {experiment.name!r} has no study yet; run `nasplat search` first",
                         source=str(experiment.path))
    budget, parts = store.identity.budget_gflops, store.identity.part_budgets
    subnets = top_subnets(store.trials(), rc.top_k, budget, parts)
    if not subnets:
        raise StoreError(f"study {store.study_name!r} has no completed subnet under the budget "
                         f"({describe_budget(budget, parts)})", source=str(experiment.path), key="retrain.top_k")
    if len(subnets) < rc.top_k:
        log.warning("retrain.top_k is %d but study %s has only %d distinct completed subnet(s) under the budget; "
                    "retraining %s", rc.top_k, store.study_name, len(subnets), "it" if len(subnets) == 1 else "those")
    checkpoint = latest_checkpoint(experiment)
    recipe = retrain_recipe(experiment)
    lrs = list(rc.lr) if rc.lr else [recipe.optimizer.lr]
    entries = [{"rank": i + 1, "study_trial": t.number, "arch": t.arch.to_json()} for i, t in enumerate(subnets)]
    identity = {
        "subnets": [e["arch"] for e in entries], "lr": lrs, "epochs": rc.epochs, "init": rc.init,
        "milestones": list(rc.milestones), "recipe": json.dumps(asdict(recipe), sort_keys=True, default=str),
        "supernet": file_sha256(checkpoint), "seed": experiment.seed,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    space = {"supernet": str(checkpoint), "supernet_sha256": identity["supernet"], "study": store.study_name,
             "subnet": entries, "lr": lrs}
    return f"sweep-{digest}", space


# ------------------------------------------------------------------------------------------------
# One trial (runs in a Ray worker)
# ------------------------------------------------------------------------------------------------


def retrain_trial(config: dict[str, Any], experiment: Experiment) -> None:
    """The Tune trainable (`experiment` bound by value with `tune.with_parameters`): retrain one
    subnet at one learning rate, reporting metrics and a checkpoint after every epoch; resumes
    from Tune's checkpoint of the trial. The supernet comes from the storage root, checked
    against the one the sweep was made for."""
    from ray import tune

    rc = experiment.retrain
    if rc is None:
        raise TrainingError("the experiment file no longer has a retrain section", source=str(experiment.path), key="retrain")
    ensure_data(experiment)  # this node's copy of a synthetic set
    supernet = latest_checkpoint(experiment)
    want = config.get("supernet_sha256")
    if want is not None and file_sha256(supernet) != want:
        raise TrainingError(f"the supernet at {supernet} is not the one this sweep was made for; "
                            "run `nasplat retrain` again to start a sweep for it", source=str(experiment.path))
    arch = Arch.from_json(config["subnet"]["arch"])
    device = "cuda" if experiment.cluster.use_gpu else "cpu"
    # the trial owns its CPUs: one torch thread each (the recipe's count is for a training worker)
    recipe = replace(retrain_recipe(experiment, lr=config["lr"]), torch_threads=rc.trial_cpus(experiment.cluster))
    trainer = SubnetRetrainer(experiment, arch, recipe, init=rc.init, device=device, checkpoint=supernet)
    resumed = tune.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as d:
            trainer.load_state_dict(load_checkpoint(Path(d) / STATE), source=str(Path(d) / STATE))
    while trainer.epoch < rc.epochs:
        metrics = trainer.run_epoch()
        with tempfile.TemporaryDirectory() as d:
            atomic_torch_save(trainer.state_dict(), Path(d) / STATE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


# ------------------------------------------------------------------------------------------------
# The driver's callback: MLflow and progress
# ------------------------------------------------------------------------------------------------

# What the callback reports to in this process (Tune pickles the callback with the sweep, so a
# restored sweep has its own copy; the sink is looked up here at each event).
_progress: list[Callable[[dict[str, Any]], None]] = []


def _epoch_of(result: dict[str, Any]) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)))


def _epoch_metrics(result: dict[str, Any], epoch: int) -> dict[str, float]:
    """What MLflow gets of one epoch's result: per-part AP and AR, the loss; after the first
    epoch also the AP before retraining (`<part>_ap_before`)."""
    keep = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "epoch" and (k.endswith(("_ap", "_ar")) or k == "loss") and not k.startswith("initial_")}
    if epoch == 1:
        keep.update({k.removeprefix("initial_") + "_before": v for k, v in result.items()
                     if k.startswith("initial_") and isinstance(v, (int, float))})
    return keep


def _log_missing_trials(tracker: RetrainTracker, results: Any) -> int:
    """Log the finished trials of `results` whose MLflow runs are missing (a rerun after the
    tracking store was deleted: Tune restores them finished and calls no callback). Returns how
    many were logged."""
    logged = 0
    for r in results:
        frame = getattr(r, "metrics_dataframe", None)
        if r.config is None or frame is None or frame.empty:
            continue
        trial_id = str((r.metrics or {}).get("trial_id") or Path(r.path).name)
        history = [(_epoch_of(row), _epoch_metrics(row, _epoch_of(row))) for row in frame.to_dict("records")]
        logged += tracker.restore_trial(trial_id, f"subnet {r.config['subnet']['rank']} lr {r.config['lr']:g}",
                                        _trial_params(r.config), history)
    return logged


def _trial_params(config: dict[str, Any]) -> dict[str, object]:
    arch = Arch.from_json(config["subnet"]["arch"])
    return {**arch.to_flat(), "lr": config["lr"], "subnet_rank": config["subnet"]["rank"],
            "study_trial": config["subnet"]["study_trial"]}


class RetrainCallback(Callback):
    """Logs every trial to MLflow (when `tracking` holds the tracker's arguments) and hands
    each epoch's result to the progress sink."""

    def __init__(self, tracking: dict[str, Any] | None) -> None:
        self.tracking = tracking
        self._tracker: RetrainTracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking": self.tracking, "_tracker": None}

    def tracker(self) -> RetrainTracker | None:
        if self.tracking is not None and self._tracker is None:
            t = RetrainTracker(**{k: v for k, v in self.tracking.items() if k != "params"})
            t.start(self.tracking["params"])
            self._tracker = t
        return self._tracker

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tracker = self.tracker()
        if tracker is not None:
            c = trial.config
            tracker.trial(trial.trial_id, f"subnet {c['subnet']['rank']} lr {c['lr']:g}", _trial_params(c))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        epoch = _epoch_of(result)
        tracker = self.tracker()
        if tracker is not None:
            tracker.trial(trial.trial_id, f"subnet {trial.config['subnet']['rank']}", _trial_params(trial.config))
            tracker.log_epoch(trial.trial_id, _epoch_metrics(result, epoch), epoch)
        for sink in _progress:
            sink({"trial": trial.trial_id, "subnet": trial.config["subnet"]["rank"], "lr": trial.config["lr"],
                  "epoch": epoch, "ap": result.get(METRIC), "before": result.get(f"initial_{METRIC}")})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tracker = self.tracker()
        if tracker is not None:
            tracker.end_trial(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tracker = self.tracker()
        if tracker is not None:
            tracker.end_trial(trial.trial_id, status="FAILED")



# ------------------------------------------------------------------------------------------------
# The phase
# ------------------------------------------------------------------------------------------------


def _trial_dirname(trial: Any) -> str:
    return f"{trial.trial_id}-subnet{trial.config['subnet']['rank']}-lr{trial.config['lr']:g}"


def _tuner(experiment: Experiment, sweep: str, space: dict[str, Any], track: bool) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    rc = experiment.retrain
    assert rc is not None
    cluster = experiment.cluster
    resources = {"cpu": rc.trial_cpus(cluster), "gpu": 1 if cluster.use_gpu else 0}
    trainable = tune.with_resources(tune.with_parameters(retrain_trial, experiment=experiment), resources)
    restored = restored_tuner(experiment, "retrain", sweep, trainable)
    if restored is not None:
        return restored
    n = len(space["subnet"]) * len(space["lr"])
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=rc.epochs, grace_period=1, reduction_factor=2) if n > 1 else None
    tracking = None
    if track:
        tracking = {"uri": experiment.tracking_uri, "experiment": experiment.tracking_experiment, "sweep": sweep,
                    "study": space["study"], "artifact_dir": experiment.artifact_location,
                    "params": {"epochs": rc.epochs, "init": rc.init, "top_k": rc.top_k, "lr": list(space["lr"]),
                               "supernet": space["supernet"], "study": space["study"]}}
    param_space = {**space, "subnet": tune.grid_search(space["subnet"]), "lr": tune.grid_search(space["lr"])}
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler,
                                    max_concurrent_trials=rc.concurrent_trials, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=sweep, storage_path=experiment.storage.join("retrain"), verbose=0,
            callbacks=[RetrainCallback(tracking), *pruners(experiment)],
            checkpoint_config=checkpoint_config(),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def _best_per_subnet(results: Any) -> list[tuple[Any, dict[str, Any]]]:
    by_rank: dict[int, tuple[Any, dict[str, Any]]] = {}
    for r in results:
        if r.metrics is None or r.checkpoint is None or METRIC not in r.metrics:
            continue
        rank = int(r.config["subnet"]["rank"])
        if rank not in by_rank or r.metrics[METRIC] > by_rank[rank][1][METRIC]:
            by_rank[rank] = (r, r.metrics)
    return [by_rank[k] for k in sorted(by_rank)]


def _export(experiment: Experiment, result: Any, metrics: dict[str, Any], sweep_dir: Path,
            register: bool) -> RetrainedSubnet:
    """Export the trial's retrained weights to `exports/retrained-<rank>` via `run.publish_export`
    (registered in the Model Registry when `register`; under an object-store root the folder is
    written here and uploaded). `sweep_dir` is this process's folder of the sweep (its weights)."""
    from nasplat.orchestration.run import publish_export, unchanged_export  # the export phase's home
    config = result.config
    rank = int(config["subnet"]["rank"])
    arch = Arch.from_json(config["subnet"]["arch"])
    _keep_earlier_export(experiment, rank, sweep_dir.name)
    out = experiment.exports_dir / f"retrained-{rank}"
    # what this export is made of: the sweep (a digest of its subnets, recipe and supernet), the
    # subnet, and the trial's checkpoint; the same again (a rerun) writes and registers nothing
    inputs = hashlib.sha256(json.dumps([sweep_dir.name, rank, str(result.path), str(result.checkpoint.path),
                                        float(config["lr"])]).encode()).hexdigest()[:16]
    done = unchanged_export(experiment, out, inputs, register=register)
    if done is not None and (out / "retrain.json").is_file():
        saved = json.loads((out / "retrain.json").read_text())
        return RetrainedSubnet(rank=rank, study_trial=int(config["subnet"]["study_trial"]), arch=arch,
                               trial_id=str(saved["trial_id"]), lr=float(saved["lr"]), epochs=int(saved["epochs"]),
                               before=saved["before"], after=saved["after"], export=out)
    with result.checkpoint.as_directory() as d:
        state = load_checkpoint(Path(d) / STATE)
    supernet_ckpt = latest_checkpoint(experiment)  # this driver's copy (another driver may have made the sweep)
    supernet, _ = load_supernet(supernet_ckpt, "cpu")
    into_supernet(supernet, arch, state["model"])
    weights = sweep_dir / f"subnet-{rank}.pt"
    atomic_torch_save(network_payload(experiment, supernet, retrained_from=str(supernet_ckpt),
                                      retrain_trial=result.path), weights)
    publish_export(experiment, arch, out, register=register, checkpoint=weights, inputs=inputs,
                   origin={"study_trial": int(config["subnet"]["study_trial"]), "retrain_sweep": sweep_dir.name,
                           "lr": float(config["lr"])})
    sub = RetrainedSubnet(
        rank=rank, study_trial=int(config["subnet"]["study_trial"]), arch=arch, trial_id=str(metrics.get("trial_id")),
        lr=float(config["lr"]), epochs=int(state["epoch"]),
        before={p: float(metrics.get(f"initial_{p}_ap", float("nan"))) for p in PARTS},
        after={p: float(metrics.get(f"{p}_ap", float("nan"))) for p in PARTS},
        export=out,
    )
    atomic_write_json({**sub.to_json(), "init": state["init"], "history": state["history"], "sweep": sweep_dir.name},
                      out / "retrain.json")
    experiment.storage.upload(out, f"exports/retrained-{rank}")
    return sub


def _tracker(experiment: Experiment, sweep: str, space: dict[str, Any]) -> RetrainTracker:
    return RetrainTracker(experiment.tracking_uri, experiment.tracking_experiment, sweep, space["study"],
                          experiment.artifact_location)


def _finished_sweep(experiment: Experiment, sweep: str, space: dict[str, Any]) -> RetrainResult | None:
    """The recorded result of sweep `sweep` when it is finished and each of its subnets' exports
    is in place (`exports/retrained-<k>/retrain.json` names the sweep); else None (run it)."""
    state = Phases(experiment).current()
    if state is None or not state.retrain_best or state.phase not in (Phase.RETRAINED.value, Phase.EXPORTED.value):
        return None
    try:
        summary = json.loads(state.retrain_best)
    except ValueError:
        return None
    if not isinstance(summary, dict) or summary.get("sweep") != sweep or not summary.get("subnets"):
        return None
    archs = {int(e["rank"]): Arch.from_json(e["arch"]) for e in space["subnet"]}
    subnets = []
    for s in summary["subnets"]:
        rank = int(s["rank"])
        if _export_sweep(experiment, rank) != sweep or rank not in archs:
            return None
        subnets.append(RetrainedSubnet(rank=rank, study_trial=int(s["study_trial"]), arch=archs[rank],
                                       trial_id=str(s["trial_id"]), lr=float(s["lr"]), epochs=int(s["epochs"]),
                                       before=dict(s["before"]), after=dict(s["after"]),
                                       export=experiment.exports_dir / f"retrained-{rank}"))
    return RetrainResult(sweep=sweep, path=summary.get("path") or experiment.storage.join("retrain", sweep),
                         n_trials=int(summary.get("trials") or 0), subnets=tuple(subnets))


def _export_sweep(experiment: Experiment, rank: int) -> str | None:
    """The sweep whose export `exports/retrained-<rank>` holds (its `retrain.json`), or None. Under
    an object-store root the stored copy is read when this machine has none."""
    local = experiment.exports_dir / f"retrained-{rank}" / "retrain.json"
    try:
        if local.is_file():
            saved = json.loads(local.read_text())
        elif experiment.storage.is_remote and experiment.storage.exists(f"exports/retrained-{rank}/retrain.json"):
            saved = json.loads(experiment.storage.read_bytes(f"exports/retrained-{rank}/retrain.json"))
        else:
            return None
    except (OSError, ValueError):
        return None
    return saved.get("sweep") if isinstance(saved, dict) else None


def _keep_earlier_export(experiment: Experiment, rank: int, sweep: str) -> None:
    """Before sweep `sweep` exports subnet `rank`: an export of another sweep in
    `exports/retrained-<rank>` is moved to `exports/<that sweep>/retrained-<rank>` (uploaded there
    too under an object-store root), so that no sweep replaces another's model."""
    earlier = _export_sweep(experiment, rank)
    if earlier is None or earlier == sweep or not re.fullmatch(r"sweep-[0-9a-f]+", earlier):
        return
    out = experiment.exports_dir / f"retrained-{rank}"
    key = f"exports/retrained-{rank}"
    if experiment.storage.is_remote and not (out / "retrain.json").is_file():
        experiment.storage.download_dir(key, out)
    kept = experiment.exports_dir / earlier / f"retrained-{rank}"
    if kept.exists():
        shutil.rmtree(out)  # already kept there
    else:
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, kept)
    if experiment.storage.is_remote:
        experiment.storage.upload(kept, f"exports/{earlier}/retrained-{rank}")
    log.warning("exports/retrained-%d held the export of the earlier sweep %s: kept in %s", rank, earlier,
                experiment.storage.show("exports", earlier, f"retrained-{rank}"))


def run_retrain(experiment: Experiment, *, progress: Callable[[dict[str, Any]], None] | None = None,
                track: bool = True) -> RetrainResult | None:
    """Run or resume the experiment's retrain sweep, export the best trial of each subnet and
    record the phase. Returns None when the experiment has no `retrain:` section.

    progress(event) after every epoch of every trial: {"trial", "subnet", "lr", "epoch", "ap",
    "before"}. Raises StoreError (no study, nothing under the budget), TrainingError (no supernet,
    a failed trial: its error's last line), KeyboardInterrupt when the sweep was interrupted
    (its state is kept: the same command resumes it).
    """
    rc = experiment.retrain
    if rc is None:
        return None
    set_activity("retrain")
    sweep, space = _sweep_spec(experiment)
    finished = _finished_sweep(experiment, sweep, space)
    if finished is not None and (not track or _tracker(experiment, sweep, space).has_trials(finished.n_trials)):
        log.info("retrain sweep %s is finished and exported; nothing to do", sweep)  # read, not run again
        return finished
    # a finished sweep whose MLflow runs are gone is restored (no trial runs again) to log them:
    # its phase stays as it is
    local = experiment.local_root / "retrain"  # the sweep itself when the root is a folder
    local.mkdir(parents=True, exist_ok=True)
    phases = Phases(experiment)
    if finished is None:
        phases.mark(Phase.RETRAINING)
    tune_defaults()
    embedded = experiment.cluster.address is None
    cpus = rc.concurrent_trials * rc.trial_cpus(experiment.cluster)
    if embedded:  # a local Ray no larger than the machine: trials beyond it wait their turn
        cpus = max(rc.trial_cpus(experiment.cluster), min(cpus, os.cpu_count() or 1))
    init_ray(experiment.cluster.address, num_cpus=cpus if embedded else None,
             num_gpus=rc.concurrent_trials if embedded and experiment.cluster.use_gpu else None,
             env=experiment.cluster.runtime_env)
    tuner = _tuner(experiment, sweep, space, track)
    if progress is not None:
        _progress.append(progress)
    gpus = rc.concurrent_trials if experiment.cluster.use_gpu else 0
    try:
        with tracked_phase_cost(experiment, "retrain", cpus=cpus, gpus=gpus, track=track):
            # a worker thread: Tune installs no SIGINT handler there (it would stop the sweep and
            # return its trials as if finished, which were then exported); Tune saved its state
            # at every step, so the same command resumes the sweep
            results = run_in_thread(tuner.fit, "ray-tune")
    finally:
        if progress is not None:
            _progress.remove(progress)
    sweep_uri = experiment.storage.join("retrain", sweep)
    prune_sweep(experiment, "retrain", sweep)  # the final state is saved: keep only what it names
    errors = list(results.errors)
    if errors:
        fault = machine_fault(errors[0])  # a full disk, a trial killed for memory: not the subnet's fault
        if fault is not None:
            raise TrainingError(f"a retrain trial stopped: {fault}; the same command resumes the sweep",
                                source=experiment.storage.show("retrain", sweep))
        raise TrainingError(f"a retrain trial failed: {error_line(errors[0])}",
                            source=experiment.storage.show("retrain", sweep))
    n = len(space["subnet"]) * len(space["lr"])
    if results.num_terminated < n:
        raise KeyboardInterrupt  # Tune stopped on a signal; `nasplat run` again resumes the sweep
    (local / sweep).mkdir(parents=True, exist_ok=True)
    subnets = tuple(_export(experiment, r, m, local / sweep, track) for r, m in _best_per_subnet(results))
    result = RetrainResult(sweep=sweep, path=Path(sweep_uri) if experiment.storage.local else sweep_uri,
                           n_trials=len(results), subnets=subnets)
    best = result.best
    summary = {"sweep": sweep, "path": str(result.path), "trials": result.n_trials,
               "best": best.to_json() if best else None, "subnets": [s.to_json() for s in subnets]}
    if finished is None:
        phases.mark(Phase.RETRAINED, retrain_best=json.dumps(summary))
    if track and best is not None:
        tracker = _tracker(experiment, sweep, space)
        tracker.start({})
        _log_missing_trials(tracker, results)
        tracker.finish({f"{p}_ap": best.after[p] for p in PARTS} | {f"{p}_ap_before": best.before[p] for p in PARTS})
    return result


__all__ = ["RetrainResult", "RetrainedSubnet", "retrain_trial", "run_retrain", "top_subnets"]
