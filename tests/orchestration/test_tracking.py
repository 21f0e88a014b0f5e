"""Where a finished `nasplat run` left its MLflow runs and artifacts: one experiment, opened by the
driver, with everything under `<output_dir>/mlartifacts` whatever the working directory."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app


def _runs(client, exp_id: str) -> dict[str, list]:  # noqa: ANN001
    out: dict[str, list] = {}
    for r in client.search_runs([exp_id], max_results=1000):
        out.setdefault(r.data.tags.get("nasplat.role", "?"), []).append(r)
    return out


@pytest.mark.ray  # the search's evaluators: `nasplat run` starts a local Ray
@pytest.mark.slow
def test_nasplat_run_keeps_every_artifact_under_the_output_directory(tmp_path, tiny_experiment, monkeypatch):
    from mlflow.tracking import MlflowClient

    from nasplat.config import load_experiment

    path = tiny_experiment(tmp_path / "exp")
    path.write_text(path.read_text() + "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: analytic,"
                                       " num_evaluators: 1}\n")
    elsewhere = tmp_path / "cwd"  # like a Ray worker's working directory: nothing may land here
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    experiment = load_experiment(path)
    out = experiment.output_dir
    client = MlflowClient(tracking_uri=experiment.tracking_uri)
    exp = client.get_experiment_by_name(experiment.tracking_experiment)
    assert exp.artifact_location == (out / "mlartifacts").as_uri()
    runs = _runs(client, exp.experiment_id)
    assert {k: len(v) for k, v in runs.items()} == {"supernet": 1, "search": 1, "trial": 3, "export": 1}
    assert all(r.info.artifact_uri.startswith(exp.artifact_location + "/") for rs in runs.values() for r in rs)
    search, supernet = runs["search"][0], runs["supernet"][0]
    folder = Path(unquote(urlparse(search.info.artifact_uri).path))
    assert folder.is_relative_to(out / "mlartifacts")
    assert {p.name for p in folder.iterdir()} == {"pareto_front.png", "pareto_front.html"}
    assert list(elsewhere.iterdir()) == []  # no ./mlruns, no ./mlartifacts
    # the search run links the supernet run and its checkpoint; the supernet's source is the command
    assert search.data.tags["nasplat.supernet_run"] == supernet.info.run_id
    assert search.data.tags["nasplat.supernet_checkpoint"].endswith(".pt")
    assert supernet.data.tags["mlflow.source.name"].startswith(("nasplat", "python", "pytest"))
    assert "default_worker" not in supernet.data.tags["mlflow.source.name"]
    assert "time" not in supernet.data.metrics
    # what each phase cost, as the study store sums it, on the search run
    costs = {k for k in search.data.metrics if k.startswith("cost.")}
    assert {f"cost.{p}.{m}" for p in ("training", "search", "export", "total")
            for m in ("wall_s", "core_hours", "gpu_hours")} <= costs
    # the exported best subnet is an artifact of the best trial's run
    best = next(r for r in runs["trial"] if r.info.run_id == search.data.tags["best_trial_run_id"])
    exported = {p.name for p in (out / "exports" / "best").iterdir()}
    assert {os.path.basename(a.path) for a in client.list_artifacts(best.info.run_id, "best_subnet")} == exported
    # the end of the run says where to look: the runs view of the Pareto front
    url = f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    assert url in res.output and "tags.pareto = 'true'" in unquote(res.output)


def test_a_training_run_logged_elsewhere_uses_the_drivers_experiment(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from nasplat.tracking import TrainingTracker
    from nasplat.tracking.client import client_for, experiment_id

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id = experiment_id(client_for(uri), uri, "exp", tmp_path / "out" / "mlartifacts")
    worker = tmp_path / "ray_session"
    worker.mkdir()
    monkeypatch.chdir(worker)
    tracker = TrainingTracker(uri, "exp", tmp_path / "run_id.txt", experiment_id=exp_id, source="nasplat train e.yaml")
    run_id = tracker.start({"lr": 0.1})
    tracker.close()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.experiment_id == exp_id and [e.name for e in client.search_experiments()] == ["exp", "Default"]
    assert run.info.artifact_uri.startswith((tmp_path / "out" / "mlartifacts").as_uri())
    assert run.data.tags["mlflow.source.name"] == "nasplat train e.yaml"


def test_the_runs_view_url_filters_the_front_and_sorts_by_ap() -> None:
    from nasplat.tracking.client import runs_view_url

    url = runs_view_url("http://127.0.0.1:5000/", "7")  # the default: the Pareto front, best AP first
    path, query = url.split("?")
    assert path == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert query.split("&") == ["workflowType=machine_learning", "searchFilter=tags.pareto%20%3D%20%27true%27",
                                "orderByKey=metrics.%60wholebody_AP%60", "orderByAsc=false"]


def test_the_ui_url_of_a_server_has_no_credentials_and_a_local_store_uses_nasplat_ui(tmp_path, tiny_experiment):
    from nasplat.config import load_experiment
    from nasplat.orchestration.tracking import runs_url, ui_base

    path = tiny_experiment(tmp_path / "exp")
    local = load_experiment(path)
    assert ui_base(local, 5001) == "http://127.0.0.1:5001"
    path.write_text(path.read_text() + "tracking: {uri: 'https://bob:S3cret@mlflow.example:8443/ml/'}\n")
    server = load_experiment(path)
    assert ui_base(server) == "https://mlflow.example:8443/ml"
    assert runs_url(server, "3").startswith("https://mlflow.example:8443/ml/#/experiments/3/runs?")
