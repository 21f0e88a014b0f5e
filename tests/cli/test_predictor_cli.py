"""`search.predictor` from the command line: a screened search stores its picks' predictions and
`nasplat status` says what the predictor did; a bad predictor setting is one line and exit 2,
before anything is written."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from nasplat.cli.main import app

SCREENED = ("search: {sampler: evolution, n_trials: 10, budget_gflops: 0.05, objective: analytic, num_evaluators: 1, "
            "evolution: {population: 4, top_k: 2, mutations: 2, crossovers: 2}, "
            "predictor: {kind: gp, warmup: 4, screen: 3}}\n")


def test_status_says_what_the_predictor_picked_and_screened_out(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "screened")
    path.write_text(path.read_text() + SCREENED)
    res = CliRunner().invoke(app, ["search", str(path), "--local", "--no-mlflow"])
    assert res.exit_code == 0, res.output
    status = CliRunner().invoke(app, ["status", str(path), "--json"])
    assert status.exit_code == 0, status.output
    predictor = json.loads(status.stdout)["predictor"]
    assert predictor["kind"] == "gp" and predictor["picked"] == predictor["evaluated"] == 6
    assert predictor["screened_out"] == 12 and predictor["window"] == 20
    text = CliRunner().invoke(app, ["status", str(path)]).output
    assert "predictor (gp): picked 6 trials; 12 candidates screened out (predicted, not evaluated)" in text
    assert "Kendall tau" in text and "RMSE" in text


def test_a_bad_predictor_is_one_line_and_writes_nothing(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "bad")
    path.write_text(path.read_text() + "search: {sampler: tpe, objective: analytic, predictor: {screen: 0}}\n")
    res = CliRunner().invoke(app, ["search", str(path), "--local"])
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"nasplat: error: {path}: search.predictor.screen: "), lines
    assert not (tmp_path / "bad" / "out").exists()
