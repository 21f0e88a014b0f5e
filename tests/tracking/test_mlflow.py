from __future__ import annotations

import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from nasplat.config import PredictorConfig, SearchConfig
from nasplat.orchestration.driver import drive
from nasplat.search import AnalyticFactory
from nasplat.search.objectives import Objective
from nasplat.space import Arch, load_space
from nasplat.tracking import MlflowTracker, pareto_html
from nasplat.tracking.plots import FrontPoint

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local MLflow store for the module (a new SQLite store costs seconds of migrations);
    each test uses its own experiment in it."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def _fresh() -> str:
    return f"exp-{uuid.uuid4().hex[:8]}"


def _tracking_uri(kind: str, local_store: str) -> str:
    if kind == "sqlite":
        return local_store
    uri = os.environ.get("NASPLAT_TEST_MLFLOW_URI")  # `.ci/run` starts `mlflow server` on 127.0.0.1
    if not uri:
        pytest.skip("NASPLAT_TEST_MLFLOW_URI is not set")
    return uri


@pytest.mark.parametrize("kind", ["sqlite", "server"])
def test_parent_and_nested_runs_pareto_tags_and_figures(tmp_path: Path, local_store: str, kind: str) -> None:
    from mlflow.tracking import MlflowClient

    space = load_space(SPACE)
    uri = _tracking_uri(kind, local_store)
    name = f"exp-{uuid.uuid4().hex[:8]}"  # a server outlives the test: a fresh experiment each run
    settings = SearchConfig(
        sampler="nsga2",
        n_trials=8,
        budget_gflops=0.1,
        seed=0,
        objective="analytic",
    )
    result = drive(space, settings, AnalyticFactory(str(SPACE)), study=name, storage_url="sqlite:///" + str(tmp_path / "study.db"),
                   tracker=MlflowTracker(uri, name, tmp_path / "art", supernet=("abc123", "/ckpt/final.pt"), source="nasplat x"))
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
    assert parent.info.run_name == f"search-{result.study_name}"
    assert parent.data.tags["mlflow.source.name"] == "nasplat x"
    assert parent.data.tags["nasplat.supernet_run"] == "abc123"
    assert parent.data.tags["nasplat.supernet_checkpoint"] == "/ckpt/final.pt"
    assert set(parent.data.metrics) == {"pareto_size", "best_wholebody_AP"}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    by_trial = {int(c.data.tags["nasplat.trial"]): c for c in children}
    assert {n: c.info.run_name for n, c in by_trial.items()} == {n: f"trial-{n}" for n in by_trial}
    best = by_trial[result.best.number]
    assert parent.data.tags["best_trial"] == f"trial-{result.best.number}"
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert f"#/experiments/{exp.experiment_id}/runs/{best.info.run_id}" in parent.data.tags["mlflow.note.content"]
    one = children[0]
    assert one.data.params["body.resolution"] in ("96", "128")
    assert set(one.data.metrics) == {"wholebody_AP", "wholebody_AR", "body_AP", "foot_AP", "face_AP", "hand_AP",
                                     "GFLOPs", "GFLOPs_body", "GFLOPs_face", "GFLOPs_hand", "num_params"}
    front = {t.number for t in result.pareto}
    assert {n: c.data.tags.get("pareto") for n, c in by_trial.items()} == {n: str(n in front).lower() for n in by_trial}
    for n, c in by_trial.items():  # the arch of every front trial, as an artifact of its run
        files = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert files == ({"arch.json"} if n in front else set())
    arch_file = client.download_artifacts(by_trial[min(front)].info.run_id, "arch.json", str(tmp_path))
    assert Arch.from_json(Path(arch_file).read_text()) == next(t.arch for t in result.trials if t.number == min(front))
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "pareto_front.html"} <= names
    assert parent.info.status == "FINISHED"


def test_a_screened_search_logs_predictions_apart_from_results_and_the_predictors_quality(
        tmp_path: Path, local_store: str) -> None:
    """Each pick of the predictor has its prediction under its own name (never as wholebody_AP);
    the search run has the predictor's trailing Kendall tau and RMSE per evaluated pick, logged
    once even when a resumed search finishes again."""
    from mlflow.tracking import MlflowClient

    name = _fresh()
    settings = SearchConfig(sampler="random", n_trials=12, budget_gflops=0.1, seed=0, objective="analytic",
                            predictor=PredictorConfig(kind="gp", warmup=4, screen=3))
    result = drive(load_space(SPACE), settings, AnalyticFactory(str(SPACE)), study=name,
                   storage_url="sqlite:///" + str(tmp_path / "study.db"), tracker=MlflowTracker(local_store, name, tmp_path / "art"))
    again = MlflowTracker(local_store, name, tmp_path / "art")
    again.start(result.study_name, {})
    again.finish(list(result.trials), 0.1, finished=True)
    client = MlflowClient(tracking_uri=local_store)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=1000)
    trials = {t.number: t for t in result.trials}
    for run in runs:
        if run.data.tags.get("nasplat.role") != "trial":
            continue
        trial = trials[int(run.data.tags["nasplat.trial"])]
        assert run.data.metrics["wholebody_AP"] == pytest.approx(trial.evaluation.ap)
        if trial.prediction is None:
            assert "predicted_wholebody_AP" not in run.data.metrics and "screened_out" not in run.data.tags
        else:
            assert run.data.metrics["predicted_wholebody_AP"] == pytest.approx(trial.prediction.ap)
            assert run.data.metrics["predicted_wholebody_AP_std"] == pytest.approx(trial.prediction.std)
            assert run.data.tags["screened_out"] == "2"
    parent = next(r for r in runs if r.data.tags.get("nasplat.role") == "search")
    history = client.get_metric_history(parent.info.run_id, "predictor_rmse")
    assert sorted(m.step for m in history) == list(range(1, 12 - 4 + 1))  # picks 1..8, each once
    taus = client.get_metric_history(parent.info.run_id, "predictor_kendall_tau")
    assert {m.step for m in taus} <= set(range(3, 9)) and all(-1 <= m.value <= 1 for m in taus)


def test_storage_password_never_reaches_mlflow_params(tmp_path: Path, local_store: str) -> None:
    from mlflow.tracking import MlflowClient

    uri = local_store
    tracker = MlflowTracker(uri, _fresh(), tmp_path / "art")
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


def test_pareto_html_embeds_plotly_so_it_works_offline(tmp_path: Path) -> None:
    points = [FrontPoint(0, 0.05, 0.4, True), FrontPoint(1, 0.08, 0.3, False)]
    html = pareto_html(points, 0.1, tmp_path / "front.html", "t").read_text()
    assert not re.search(r"<script[^>]*src=[\"']?https?:", html)
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js itself is in the page


def test_trial_runs_take_the_evaluations_start_and_end_times(tmp_path: Path, local_store: str) -> None:
    from mlflow.tracking import MlflowClient

    uri = local_store
    space = load_space(SPACE)
    tracker = MlflowTracker(uri, _fresh(), tmp_path / "art")
    tracker.start("s", {})
    evaluation = AnalyticFactory(str(SPACE))().evaluate(space.max_arch())
    from nasplat.store import StoredTrial

    tracker.log_trial(StoredTrial(0, "COMPLETE", space.max_arch(), evaluation, 0, 0, None, None, None), 1000.0, 1009.25)
    tracker.flush()
    run = MlflowClient(tracking_uri=uri).search_runs([tracker.experiment_id], "tags.`nasplat.role` = 'trial'")[0]
    assert (run.info.start_time, run.info.end_time) == (1_000_000, 1_009_250)
    assert "params" not in run.data.metrics and run.data.metrics["num_params"] == evaluation.params


def test_trials_synced_after_a_crash_keep_their_stored_times(tmp_path: Path, local_store: str) -> None:
    """A driver that died before MLflow got its trials: the next one logs them from the store, each
    run spanning the trial as the store recorded it (start and result), not the time of the sync."""
    from mlflow.tracking import MlflowClient

    from nasplat.store import load_current_study

    space = load_space(SPACE)
    settings = SearchConfig(sampler="random", n_trials=4, budget_gflops=0.1, seed=0, objective="analytic")
    url = "sqlite:///" + str(tmp_path / "study.db")
    result = drive(space, settings, AnalyticFactory(str(SPACE)), study="s", storage_url=url)  # no tracker: MLflow has none
    time.sleep(1.1)  # a sync that took its own time would be at least this much later
    synced_at = time.time()
    trials = load_current_study(url, "s").trials()
    assert len(trials) == len(result.trials) == 4 and all(t.started and t.ended for t in trials)
    tracker = MlflowTracker(local_store, _fresh(), tmp_path / "art")
    tracker.start("s", {})
    tracker.sync(trials)
    tracker.flush()
    runs = MlflowClient(tracking_uri=local_store).search_runs([tracker.experiment_id], "tags.`nasplat.role` = 'trial'")
    by_trial = {int(r.data.tags["nasplat.trial"]): r.info for r in runs}
    assert set(by_trial) == {t.number for t in trials}
    for t in trials:
        info = by_trial[t.number]
        assert (info.start_time, info.end_time) == (int(t.started * 1000), int(t.ended * 1000))
        assert info.start_time <= info.end_time < synced_at * 1000 - 1000


@dataclass(frozen=True)
class _SlowFactory:
    """The analytic objective, taking at least `seconds` per evaluation."""

    space_path: str
    seconds: float

    def __call__(self) -> Objective:
        inner = AnalyticFactory(self.space_path)()
        seconds = self.seconds

        class Slow(Objective):
            name = "slow"

            def evaluate(self, arch: Arch):  # noqa: ANN201
                time.sleep(seconds)
                return inner.evaluate(arch)

        return Slow()


def test_the_driver_hands_each_trial_its_evaluation_times(tmp_path: Path, local_store: str) -> None:
    """The run lasts at least the evaluation, not just the logging (lower bounds only)."""
    from mlflow.tracking import MlflowClient

    uri = local_store
    settings = SearchConfig(sampler="random", n_trials=3, budget_gflops=0.1, seed=0, objective="analytic")
    before = int(time.time() * 1000)
    tracker = MlflowTracker(uri, _fresh(), tmp_path / "art")
    drive(load_space(SPACE), settings, _SlowFactory(str(SPACE), 0.2), study="s",
          storage_url=f"sqlite:///{tmp_path}/study.db", tracker=tracker)
    runs = MlflowClient(tracking_uri=uri).search_runs([tracker.experiment_id], "tags.`nasplat.role` = 'trial'")
    assert len(runs) == 3
    for r in runs:
        assert r.info.start_time >= before and r.info.end_time - r.info.start_time >= 200
    ordered = sorted(runs, key=lambda r: int(r.data.tags["nasplat.trial"]))
    assert all(a.info.end_time <= b.info.start_time + 50 for a, b in zip(ordered, ordered[1:]))  # one slot: in turn


@pytest.mark.parametrize("argv, source", [
    (["/venv/bin/nasplat", "run", "experiments/quickstart.yaml", "--cluster"], "nasplat run quickstart.yaml --cluster"),
    (["/src/nasplat/__main__.py", "search", "/abs/exp.yaml"], "nasplat search exp.yaml"),
    (["/venv/lib/pytest/__main__.py", "-q"], "pytest"),
])
def test_a_runs_source_is_the_nasplat_command_as_the_ui_shows_it(monkeypatch, argv: list[str], source: str) -> None:
    from nasplat.tracking.client import command_line

    monkeypatch.setattr("sys.argv", argv)
    assert command_line() == source


def test_an_existing_experiment_keeps_its_artifact_location_and_says_so(tmp_path: Path, local_store: str,
                                                                       caplog) -> None:
    from nasplat.tracking.client import client_for, experiment_id

    uri, name = local_store, _fresh()
    client = client_for(uri)
    first = experiment_id(client, uri, name, tmp_path / "a")
    with caplog.at_level("WARNING", logger="nasplat.tracking.client"):
        assert experiment_id(client, uri, name, tmp_path / "a") == first
        assert caplog.records == []  # the same place: nothing to say
        assert experiment_id(client, uri, name, tmp_path / "b") == first
    assert client.get_experiment(first).artifact_location == (tmp_path / "a").as_uri()
    assert [r.getMessage() for r in caplog.records] == [
        f"MLflow experiment {name!r} keeps its artifacts at {(tmp_path / 'a').as_uri()}, not {(tmp_path / 'b').as_uri()} "
        "(it was created there)"]
