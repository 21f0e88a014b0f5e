"""The search phase for a task other than ZoomNAS: the platform's searchers, driver, study store,
MLflow and CLI on the classification task, with names and costs taken from the task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app
from nasplat.config import load_experiment
from nasplat.errors import ConfigError
from nasplat.orchestration.training import train_supernet
from nasplat.search import build_searcher
from nasplat.search.evaluation import Evaluation
from nasplat.search.predictor import encode_many
from nasplat.store import load_current_study
from nasplat.tasks import get_task
from tests.tasks.conftest import write_classify_experiment

ROOT = Path(__file__).resolve().parents[2]
SEARCH = {"sampler": "nsga2", "n_trials": 6, "num_evaluators": 1, "seed": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classification experiment whose supernet is trained (shared: the search reads it)."""
    root = tmp_path_factory.mktemp("classify_search")
    path = write_classify_experiment(root / "exp", root / "data", search=SEARCH)
    train_supernet(load_experiment(path), mlflow=False)
    return path


def test_an_evaluation_of_another_task_round_trips_and_zoomnas_records_keep_their_form() -> None:
    ev = Evaluation(metrics={"": {"top1": 0.5, "top5": 0.9}}, gflops={"total": 0.1}, params=10, objective="top1")
    back = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back == ev and back.score == 0.5 and back.score_name == "top1"
    assert ev.side_metrics() == {"top5": 0.9} and ev.reported_metrics() == {"top1": 0.5, "top5": 0.9}
    pose = Evaluation(metrics={"wholebody": {"AP": 0.3, "AR": 0.4}, "body": {"AP": 0.5, "AR": 0.6}},
                      gflops={"total": 0.1}, params=1)
    assert "objective" not in pose.to_dict() and pose.score == pose.ap == 0.3
    assert pose.side_metrics() == {"body_AP": 0.5}
    assert pose.reported_metrics() == {"wholebody_AP": 0.3, "body_AP": 0.5, "wholebody_AR": 0.4}
    with pytest.raises(Exception, match="top9"):
        Evaluation.from_dict({**ev.to_dict(), "objective": "top9"})


@pytest.mark.parametrize("sampler", ["random", "evolution", "tpe", "nsga2"])
def test_every_searcher_proposes_valid_archs_of_every_depth_in_the_classification_space(
        tmp_path: Path, sampler: str) -> None:
    exp = load_experiment(write_classify_experiment(tmp_path, tmp_path / "data"))
    space, parts = exp.space, get_task(exp.task).gflops(exp)
    searcher = build_searcher(sampler, space, lambda a: parts(a)["total"], None, seed=0, part_cost=parts)
    archs = [searcher.ask() for _ in range(30)]
    for arch in archs:
        space.validate(arch)
        searcher.tell(arch, Evaluation(metrics={"": {"top1": float(np.mean(arch.depths)) / 4}},
                                       gflops=dict(parts(arch)), params=1, objective="top1"))
    assert len({a.key() for a in archs}) == 30
    assert {d for a in archs for d in a.depths} == set(space.spec.depths)  # inactive blocks are no obstacle
    codes = encode_many(space, archs)  # the predictor's encoding: one row per arch, distinct
    assert codes.shape == (30, len(space.dimensions)) and len({tuple(r) for r in codes}) == 30


def test_nasplat_search_runs_resumes_and_reports_a_classification_study(trained: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(trained), "--local"])
    assert res.exit_code == 0, res.output
    assert "top1" in res.output
    exp = load_experiment(trained)
    store = load_current_study(exp.storage_url, exp.name, arch_type=exp.space.arch_type)
    assert store is not None and store.study.metric_names == ["top1", "GFLOPs"]
    trials = store.trials()
    assert sum(t.evaluation is not None for t in trials) == SEARCH["n_trials"]
    for t in trials:
        ev = t.evaluation
        assert ev is not None and ev.objective == "top1" and 0.0 <= ev.score <= 1.0
        assert ev.gflops["total"] == pytest.approx(get_task(exp.task).gflops(exp)(t.arch)["total"])
        raw = store.study.trials[t.number]
        assert raw.values == [ev.score, ev.total_gflops] and raw.user_attrs["top5"] == ev.metrics[""]["top5"]

    # MLflow: each trial run carries the task's metric names
    import mlflow

    client = mlflow.tracking.MlflowClient(exp.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(exp.tracking_experiment).experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("nasplat.role") == "trial"]
    assert len(trial_runs) == SEARCH["n_trials"]
    assert all({"top1", "top5", "GFLOPs", "num_params"} <= set(r.data.metrics) for r in trial_runs)
    assert not any("wholebody_AP" in r.data.metrics for r in runs)
    assert any("best_top1" in r.data.metrics for r in runs)

    again = runner.invoke(app, ["search", str(trained), "--local"])  # finished: read, nothing added
    assert again.exit_code == 0, again.output
    assert len(load_current_study(exp.storage_url, exp.name, arch_type=exp.space.arch_type).trials()) == len(trials)

    status = runner.invoke(app, ["status", str(trained), "--json"])
    assert status.exit_code == 0, status.output
    best = json.loads(status.output)["best"]
    assert best["metric"] == "top1" and best["ap"] == pytest.approx(max(t.evaluation.score for t in trials), abs=1e-6)


@pytest.mark.parametrize("search, key", [
    ({"objective": "wholebody"}, "search.objective"),
    ({"budget_gflops": {"body": 0.1}}, "search.budget_gflops.body"),
])
def test_a_classification_experiment_refuses_what_its_task_does_not_have(
        tmp_path: Path, search: dict, key: str) -> None:
    path = write_classify_experiment(tmp_path, tmp_path / "data", search=search)
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert e.value.key == key and e.value.source == str(path)


@pytest.mark.parametrize("command", [["search", "--local"], ["run"]])
def test_a_latency_budget_stops_a_task_without_latency_tables_with_one_line(tmp_path: Path, command: list[str]) -> None:
    path = write_classify_experiment(tmp_path, tmp_path / "data", search={"budget_latency_ms": 5.0})
    res = CliRunner().invoke(app, [command[0], str(path), *command[1:]])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "search.budget_latency_ms" in line and "latency" in line
    assert not (tmp_path / "out").exists()


def test_the_space_file_commands_read_a_classification_space_by_its_task_key() -> None:
    space_file = str(ROOT / "search_spaces" / "classification" / "quickstart.yaml")
    runner = CliRunner()
    shown = runner.invoke(app, ["space", "show", space_file, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["task"] == "classification" and "min_gflops" not in data
    assert {d["name"] for d in data["dimensions"]} >= {"resolution", "stage1.depth", "stage1.block4.kernel"}
    for command in (["flops", space_file], ["latency", "profile", space_file, "--out", "lut.json"]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2, res.output
        line = res.output.strip()
        assert "\n" not in line and "quickstart.yaml" in line and "task" in line
