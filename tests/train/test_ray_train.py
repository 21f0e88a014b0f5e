"""The same experiment trains through Ray Train with 2 CPU workers, and a re-run resumes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_ray_workers_train_and_a_rerun_resumes_from_rays_checkpoint(tmp_path, tiny_experiment):
    from nasplat.config import load_experiment
    from nasplat.orchestration.training import train_supernet

    path = tiny_experiment(tmp_path / "ray", num_workers=2)
    experiment = load_experiment(path)
    events: list[dict] = []
    ckpt = train_supernet(experiment, mlflow=True, evaluate=False, progress=events.append)
    payload = torch.load(ckpt, weights_only=True)
    # rank 0 logged from its Ray worker (cwd: Ray's) into the experiment the driver opened
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=experiment.tracking_uri)
    exp = client.get_experiment_by_name(experiment.tracking_experiment)
    assert exp.artifact_location == (experiment.output_dir / "mlartifacts").as_uri()
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["nasplat.role"] == "supernet" and "default_worker" not in run.data.tags["mlflow.source.name"]
    assert run.info.artifact_uri.startswith(exp.artifact_location + "/")
    assert payload["world_size"] == 2
    # 6 train images hold > 8 persons: at least one global batch of 2 x 4 per epoch, 3 epochs
    assert payload["epoch"] == 3 and payload["step"] >= 3
    # rank 0's progress reached this process: every step once, then the epoch ends
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, payload["step"] + 1))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert all(set(e) <= {"event", "epoch", "step", "batch", "steps_per_epoch", "lr", "samples_per_s", "losses", "val"}
               for e in events)
    assert any((experiment.output_dir / "ray" / experiment.name).glob("checkpoint_*"))

    # Ray keeps no more checkpoints than the output directory does (checkpoint.keep + the latest)
    kept = [p for p in (experiment.output_dir / "ray" / experiment.name).glob("checkpoint_*") if p.is_dir()]
    assert 1 <= len(kept) <= experiment.trainer.checkpoint.keep + 1

    # Ray's restore on its own: the output directory's checkpoints are gone (a training that
    # stopped as it ended: a finished one is not resumed at all)
    from nasplat.orchestration.phases import Phase, Phases

    saved = {p.name: p.read_bytes() for p in experiment.checkpoint_dir.glob("*.pt")}
    for p in experiment.checkpoint_dir.glob("*.pt"):
        p.unlink()
    Phases(experiment).mark(Phase.TRAINING)
    train_supernet(experiment, mlflow=False)  # nothing left: resumes at the end and stops
    final = json.loads((experiment.checkpoint_dir / "final.json").read_text())
    assert final["resume_source"] == "worker_context" and final["resumed_from_step"] == payload["step"]
    again = torch.load(final["checkpoint"], weights_only=True)
    assert all(torch.equal(again["model"][k], payload["model"][k]) for k in payload["model"])

    # the output directory's checkpoint on its own: Ray's storage is gone
    shutil.rmtree(experiment.output_dir / "ray")
    for name, data in saved.items():
        (experiment.checkpoint_dir / name).write_bytes(data)
    Phases(experiment).mark(Phase.TRAINING)
    train_supernet(experiment, mlflow=False)
    final = json.loads((experiment.checkpoint_dir / "final.json").read_text())
    assert final["resume_source"] == "checkpoint_dir" and final["resumed_from_step"] == payload["step"]


def test_a_finished_training_is_read_not_run_again(trained_tiny):
    """The phase recorded as trained and the checkpoint at the schedule's end: the same path back,
    nothing trained, logged or written; a longer schedule trains on."""
    import dataclasses

    from nasplat.orchestration.phases import Phases
    from nasplat.orchestration.training import finished_training, train_supernet

    experiment = trained_tiny
    final = experiment.checkpoint_dir / "final.json"
    before = {p: p.stat().st_mtime_ns for p in (final, experiment.output_dir / "train_log.jsonl")}
    path = finished_training(experiment)
    assert path is not None and train_supernet(experiment, mlflow=False) == path
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert Phases(experiment).current().phase == "trained"
    schedule = dataclasses.replace(experiment.trainer.schedule, epochs=experiment.trainer.schedule.epochs + 1)
    longer = dataclasses.replace(experiment, trainer=dataclasses.replace(experiment.trainer, schedule=schedule))
    assert finished_training(longer) is None


def test_progress_message_keeps_the_losses_and_val_ap_and_drops_the_network():
    from nasplat.train.distributed import progress_message

    net = torch.nn.Linear(2, 2)
    step = {"event": "step", "epoch": 0, "step": 3, "batch": 3, "steps_per_epoch": 10, "lr": 1e-3,
            "samples_per_s": 12.5, "losses": {"total": torch.tensor(0.5).item(), "max/body": 0.1}}
    assert progress_message(step) == step  # every loss travels: the driver logs them to MLflow
    epoch = {"event": "epoch", "epoch": 1, "step": 10, "losses": {"total": torch.tensor(0.25)}, "samples_per_s": 11.0,
             "net": net}
    message = progress_message(epoch, {"val/max/wholebody_AP": 0.5})
    assert message == {"event": "epoch", "epoch": 1, "step": 10, "samples_per_s": 11.0, "losses": {"total": 0.25},
                       "val": {"val/max/wholebody_AP": 0.5}}
    assert type(message["losses"]["total"]) is float  # a plain float, not a tensor


def test_a_nasplat_error_on_a_worker_is_found_inside_rays_wrapper():
    from ray.train.v2.api.exceptions import WorkerGroupError

    from nasplat.errors import DataError, NasplatError
    from nasplat.train.distributed import worker_cause

    bad = DataError("no images", source="data.json", key="images")
    wrapped = WorkerGroupError("rank 1 failed", {1: RuntimeError("peer gone"), 0: RuntimeError("in loop")})
    wrapped.worker_failures[0].__cause__ = bad
    assert worker_cause(wrapped) is bad
    assert worker_cause(WorkerGroupError("x", {0: RuntimeError("plain")})) is None
    assert isinstance(worker_cause(NasplatError("direct")), NasplatError)
