"""What a search cost, in MLflow: the study store's summed phase costs as `cost.*` metrics on the
study's search run, logged after each phase, against a local SQLite MLflow store (no Ray)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from nasplat.config import load_experiment
from nasplat.errors import NasplatError
from nasplat.orchestration.phases import Phases
from nasplat.orchestration.tracking import log_costs, tracked_phase_cost
from nasplat.store import ExperimentStateStore
from nasplat.store.costs import PhaseCost, phase_costs, record_piece
from nasplat.tracking.costs import cost_metrics, log_cost_metrics

STUDY = "tiny-study"


def test_cost_metrics_name_every_phase_and_the_total():
    costs = [PhaseCost("training", 2, 100.0, 7200.0, 3600.0), PhaseCost("search", 1, 50.0, 1800.0, 0.0)]
    metrics = cost_metrics(costs)
    assert metrics == pytest.approx({
        "cost.training.wall_s": 100.0, "cost.training.core_hours": 2.0, "cost.training.gpu_hours": 1.0,
        "cost.search.wall_s": 50.0, "cost.search.core_hours": 0.5, "cost.search.gpu_hours": 0.0,
        "cost.total.wall_s": 150.0, "cost.total.core_hours": 2.5, "cost.total.gpu_hours": 1.0,
    })
    assert cost_metrics([]) == {}


def _experiment(tmp_path: Path, tiny_experiment, tracking_uri: str | None = None):  # noqa: ANN001, ANN202
    path = tiny_experiment(tmp_path / "exp")
    if tracking_uri is not None:
        path.write_text(path.read_text() + f"tracking: {{uri: '{tracking_uri}', experiment: tiny}}\n")
    return load_experiment(path)


def _search_run(experiment) -> str:  # noqa: ANN001
    """The study's search run as the search creates it, and the study as the current one."""
    from nasplat.tracking import MlflowTracker

    tracker = MlflowTracker(experiment.tracking_uri, experiment.tracking_experiment, experiment.output_dir / "mlartifacts")
    tracker.start(STUDY, {"sampler": "random"})
    states = ExperimentStateStore(experiment.storage_url)
    try:
        states.update(experiment.name, study_name=STUDY)
    finally:
        states.dispose()
    return tracker.parent_run_id


def _piece(experiment, phase: str, wall_s: float, cpus: float, gpus: float = 0.0) -> None:  # noqa: ANN001
    record_piece(experiment.storage_url, experiment.name, phase, started_at="2026-01-01T00:00:00+00:00", wall_s=wall_s,
                 cpus=cpus, gpus=gpus)


def test_the_search_run_gets_the_stores_sums_of_a_resumed_phase(tmp_path, tiny_experiment):
    from mlflow.tracking import MlflowClient

    experiment = _experiment(tmp_path, tiny_experiment)
    run_id = _search_run(experiment)
    _piece(experiment, "training", 100.0, cpus=2)  # a training killed once and resumed: two pieces
    _piece(experiment, "training", 260.0, cpus=2, gpus=2)
    _piece(experiment, "search", 90.0, cpus=4)
    assert log_costs(experiment) == run_id
    client = MlflowClient(tracking_uri=experiment.tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["cost.training.wall_s"] == pytest.approx(360.0)  # both pieces, not the last one
    assert metrics["cost.training.core_hours"] == pytest.approx(720.0 / 3600)
    assert metrics["cost.training.gpu_hours"] == pytest.approx(520.0 / 3600)
    assert metrics["cost.search.core_hours"] == pytest.approx(360.0 / 3600)
    assert metrics["cost.total.wall_s"] == pytest.approx(450.0)
    assert metrics["cost.total.core_hours"] == pytest.approx(1080.0 / 3600)
    assert metrics["cost.total.gpu_hours"] == pytest.approx(520.0 / 3600)
    # a later piece: the latest value is the new sum, the history keeps one point per logging
    _piece(experiment, "search", 10.0, cpus=4)
    log_costs(experiment)
    assert client.get_run(run_id).data.metrics["cost.search.wall_s"] == pytest.approx(100.0)
    history = client.get_metric_history(run_id, "cost.total.wall_s")
    assert sorted((m.step, m.value) for m in history) == [(3, pytest.approx(450.0)), (4, pytest.approx(460.0))]
    # what `nasplat status` prints comes from the same rows
    total = sum(c.wall_s for c in phase_costs(experiment.storage_url, experiment.name))
    assert client.get_run(run_id).data.metrics["cost.total.wall_s"] == pytest.approx(total)


def test_a_phase_that_fails_is_recorded_and_logged(tmp_path, tiny_experiment):
    from mlflow.tracking import MlflowClient

    experiment = _experiment(tmp_path, tiny_experiment)
    run_id = _search_run(experiment)
    with pytest.raises(ValueError, match="boom"):
        with tracked_phase_cost(experiment, "retrain", cpus=2):
            raise ValueError("boom")
    metrics = MlflowClient(tracking_uri=experiment.tracking_uri).get_run(run_id).data.metrics
    assert set(metrics) >= {"cost.retrain.wall_s", "cost.retrain.core_hours", "cost.retrain.gpu_hours", "cost.total.wall_s"}
    assert metrics["cost.retrain.gpu_hours"] == 0.0


def test_untracked_or_before_any_study_nothing_is_logged_or_created(tmp_path, tiny_experiment):
    from mlflow.tracking import MlflowClient

    experiment = _experiment(tmp_path, tiny_experiment)
    with tracked_phase_cost(experiment, "training", cpus=1):  # before the search: no study, no run
        pass
    assert log_costs(experiment) is None
    assert MlflowClient(tracking_uri=experiment.tracking_uri).get_experiment_by_name("tiny") is None
    run_id = _search_run(experiment)
    with tracked_phase_cost(experiment, "search", cpus=1, track=False):  # --no-mlflow
        pass
    client = MlflowClient(tracking_uri=experiment.tracking_uri)
    assert not any(k.startswith("cost.") for k in client.get_run(run_id).data.metrics)
    # the training's cost reaches the run with the next tracked phase
    with tracked_phase_cost(experiment, "export", cpus=1):
        pass
    logged = client.get_run(run_id).data.metrics
    assert {"cost.training.wall_s", "cost.search.wall_s", "cost.export.wall_s"} <= set(logged)
    assert Phases(experiment).current().study_name == STUDY


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracking_server_that_fails_never_shows_its_password(tmp_path, tiny_experiment, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://nasplat:s3cretpw@127.0.0.1:{_closed_port()}"
    with pytest.raises(NasplatError) as info:
        log_cost_metrics(uri, "tiny", STUDY, {"cost.total.wall_s": 1.0}, 1)
    assert "s3cretpw" not in str(info.value) and "cannot log the phase costs" in str(info.value)
    experiment = _experiment(tmp_path, tiny_experiment, tracking_uri=uri)
    states = ExperimentStateStore(experiment.storage_url)
    try:
        states.update(experiment.name, study_name=STUDY)
    finally:
        states.dispose()
    with caplog.at_level(logging.WARNING):
        with tracked_phase_cost(experiment, "search", cpus=1):  # the phase ends; the failure is a warning
            pass
    assert "cannot log the phase costs" in caplog.text and "s3cretpw" not in caplog.text
    assert [c.phase for c in phase_costs(experiment.storage_url, experiment.name)] == ["search"]
