"""`nasplat latency` predicts per part and refuses a foreign table; a latency budget below the
fastest subnet stops `nasplat search` and `nasplat run` with one line, exit 2, and no store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nasplat.cli.main import app
from nasplat.latency import LatencyPredictor
from nasplat.space import load_space
from tests.latency._tables import synthetic_table

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


def test_latency_prints_the_prediction_per_part(tmp_path: Path) -> None:
    space = load_space(QUICKSTART)
    synthetic_table(space, offset=0.5).save(tmp_path / "lut.json")
    res = CliRunner().invoke(app, ["latency", str(QUICKSTART), "--arch", "min", "--lut", str(tmp_path / "lut.json"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    expected = LatencyPredictor(synthetic_table(space, offset=0.5), space)(space.min_arch())
    assert out["predicted_ms"]["total"] == expected and out["measured_ms"] is None
    res = CliRunner().invoke(app, ["latency", "predict", str(QUICKSTART), "--lut", str(tmp_path / "lut.json")])
    assert res.exit_code == 0 and "BodyNet" in res.stdout and "predicted total" in res.stdout


def test_latency_refuses_a_table_of_another_machine(tmp_path: Path) -> None:
    synthetic_table(load_space(QUICKSTART), name="Other CPU").save(tmp_path / "lut.json")
    res = CliRunner().invoke(app, ["latency", str(QUICKSTART), "--lut", str(tmp_path / "lut.json")])
    assert res.exit_code == 2
    assert "measured on another machine" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def _latency_experiment(tmp_path: Path, tiny_experiment, budget_factor: float) -> tuple[Path, float]:  # noqa: ANN001
    path = tiny_experiment(tmp_path)
    space = load_space(tmp_path / "space.yaml")
    table = synthetic_table(space)
    table.save(tmp_path / "lut.json")
    fastest = LatencyPredictor(table, space).fastest()[1]
    budget = round(fastest * budget_factor, 6)
    path.write_text(path.read_text() + f"search: {{sampler: random, n_trials: 3, objective: analytic, "
                    f"budget_latency_ms: {budget}, latency_lut: lut.json}}\n")
    return path, fastest


def test_budget_below_the_fastest_subnet_stops_search_and_run_before_the_store(tmp_path: Path, tiny_experiment) -> None:  # noqa: ANN001
    path, _ = _latency_experiment(tmp_path, tiny_experiment, 0.9)
    for command in (["search", str(path), "--local"], ["run", str(path), "--no-mlflow"]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 2, (command, res.output)
        lines = res.output.strip().splitlines()
        assert "search.budget_latency_ms" in lines[-1] and "below the fastest subnet" in lines[-1], res.output
        assert "Traceback" not in res.output
        assert not (tmp_path / "out").exists(), sorted((tmp_path / "out").rglob("*"))  # no store, no MLflow, no data


def test_a_latency_search_runs_under_its_budget(tmp_path: Path, tiny_experiment) -> None:  # noqa: ANN001
    path, fastest = _latency_experiment(tmp_path, tiny_experiment, 1.5)
    res = CliRunner().invoke(app, ["search", str(path), "--local"])
    assert res.exit_code == 0, res.output
    from nasplat.config import load_experiment
    from nasplat.store import load_current_study

    experiment = load_experiment(path)
    store = load_current_study(experiment.storage_url, experiment.name)
    predictor = LatencyPredictor(synthetic_table(experiment.space), experiment.space)
    trials = store.trials()
    assert len(trials) == 3 and all(predictor(t.arch) <= experiment.search.budget_latency_ms for t in trials)
    assert store.identity.latency_device.startswith(synthetic_table(experiment.space).fingerprint)


def test_profile_then_measure_on_a_one_arch_space(tmp_path: Path) -> None:
    from tests.latency.test_profile import ONE_POINT

    (tmp_path / "space.yaml").write_text(ONE_POINT)
    runner = CliRunner()
    res = runner.invoke(app, ["latency", "profile", str(tmp_path / "space.yaml"), "--backend", "torch", "--threads", "1",
                              "--repeats", "3", "--warmup", "1", "--calibration", "1", "--out", str(tmp_path / "lut.json")])
    assert res.exit_code == 0, res.output
    assert "blocks of tiny" in res.stdout and (tmp_path / "lut.json").exists()
    res = runner.invoke(app, ["latency", str(tmp_path / "space.yaml"), "--lut", str(tmp_path / "lut.json"), "--measure", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["measured_ms"] > 0 and out["predicted_ms"]["total"] > 0 and "torch on cpu" in out["table"]


def test_profile_rejects_an_unknown_backend(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["latency", "profile", str(QUICKSTART), "--backend", "tflite", "--out", str(tmp_path / "l.json")])
    assert res.exit_code == 2 and "--backend" in res.output and not (tmp_path / "l.json").exists()
