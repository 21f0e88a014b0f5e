from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from nasplat.config import SearchConfig
from nasplat.orchestration.driver import drive
from nasplat.search import AnalyticFactory
from nasplat.space import load_space
from nasplat.tracking import MlflowTracker

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


def _tracking_uri(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/mlflow.db"
    uri = os.environ.get("NASPLAT_TEST_MLFLOW_URI")  # `.ci/run` starts `mlflow server` on 127.0.0.1
    if not uri:
        pytest.skip("NASPLAT_TEST_MLFLOW_URI is not set")
    return uri


@pytest.mark.parametrize("kind", ["sqlite", "server"])
def test_parent_and_nested_runs_pareto_tags_and_figures(tmp_path: Path, kind: str) -> None:
    from mlflow.tracking import MlflowClient

    space = load_space(SPACE)
    uri = _tracking_uri(kind, tmp_path)
    name = f"exp-{uuid.uuid4().hex[:8]}"  # a server outlives the test: a fresh experiment each run
    settings = SearchConfig(
        sampler="nsga2",
        n_trials=8,
        budget_gflops=0.1,
        seed=0,
        objective="analytic",
    )
    result = drive(space, settings, AnalyticFactory(str(SPACE)), study=name, storage_url="sqlite:///" + str(tmp_path / "study.db"),
                   tracker=MlflowTracker(uri, name, tmp_path / "art"))
    # a second tracker on the same store (a resumed driver) must not duplicate trial runs
    again = MlflowTracker(uri, name, tmp_path / "art")
    again.start(result.study_name, {"sampler": "nsga2"})
    again.sync(list(result.trials))
    again.finish(list(result.trials), 0.1, finished=True)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nasplat.role") == "search"]
    children = [r for r in runs if r.data.tags.get("nasplat.role") == "trial"]
    assert len(parents) == 1 and len(children) == 8
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    one = children[0]
    assert one.data.params["body.resolution"] in ("96", "128")
    assert {"wholebody_AP", "gflops_total", "params", "hand_AR"} <= set(one.data.metrics)
    tagged = {int(c.data.tags["nasplat.trial"]) for c in children if c.data.tags.get("pareto") == "true"}
    assert tagged == {t.number for t in result.pareto}
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "pareto_front.html"} <= names
    assert parent.info.status == "FINISHED"


def test_storage_password_never_reaches_mlflow_params(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(uri, "exp", tmp_path / "art")
    tracker.start("s", {"storage": "postgresql://bob:Sup3rSecret@db/nas"})
    run = MlflowClient(tracking_uri=uri).get_run(tracker.parent_run_id)
    assert run.data.params["storage"] == "postgresql://bob:***@db/nas"


@pytest.mark.timeout(300)
def test_the_training_logger_redacts_and_converts_a_dead_server(tmp_path: Path) -> None:
    """A credentialed tracking URI whose server is gone: one NasplatError naming tracking.uri,
    after a bounded number of retries, with the password nowhere in it."""
    from nasplat.errors import NasplatError
    from nasplat.tracking.training import TrainingTracker

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://nasplat:hunter2@127.0.0.1:{port}"
    tracker = TrainingTracker(uri, "dead", tmp_path / "run_id")
    with pytest.raises(NasplatError) as e:
        tracker.start({"storage": uri})
    assert e.value.key == "tracking.uri"
    assert "hunter2" not in str(e.value) and "127.0.0.1" in str(e.value)
    assert not (tmp_path / "run_id").exists()
