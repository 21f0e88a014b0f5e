"""Bad services, bad budgets and read-only commands: one line, exit 2, nothing written; a study is
found by its identity; a finished study is read, not written."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app

SEARCH = "search: {{sampler: random, n_trials: 3, budget_gflops: {budget}, objective: analytic}}\n"


def _with(path, text: str):  # noqa: ANN001, ANN202
    path.write_text(path.read_text() + text)
    return path


def _invoke(*args: str):  # noqa: ANN202
    return CliRunner().invoke(app, list(args))


def _one_error_line(res, *needles: str) -> None:  # noqa: ANN001
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _sha(path) -> str:  # noqa: ANN001
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_of_a_never_run_experiment_creates_nothing(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "never")
    res = _invoke("status", str(path), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["phase"] is None
    assert not (tmp_path / "never" / "out").exists()


@pytest.mark.parametrize("extra, key", [
    ("tracking: {uri: 'http://127.0.0.1:1'}\n", "tracking.uri"),
    ("search: {storage: 'postgresql://nasplat:s3cret@127.0.0.1:1/db', objective: analytic}\n", "search.storage"),
])
def test_an_unreachable_service_is_one_line_before_anything_is_written(tmp_path, tiny_experiment, extra, key):
    path = _with(tiny_experiment(tmp_path / "svc"), extra)
    t0 = time.monotonic()
    res = _invoke("search", str(path), "--local")
    _one_error_line(res, str(path), key, "127.0.0.1:1")
    assert "s3cret" not in res.output
    assert time.monotonic() - t0 < 60  # bounded: a refused port answers at once, a silent one in 5 s
    assert not (tmp_path / "svc" / "out").exists()


def test_an_unreachable_cluster_is_one_line(tmp_path, tiny_experiment):
    path = _with(tiny_experiment(tmp_path / "ray"), "search: {objective: analytic}\n")
    path.write_text(path.read_text().replace("cluster: {", "cluster: {address: '127.0.0.1:1', "))
    for command in ("search", "train", "run"):
        _one_error_line(_invoke(command, str(path), "--cluster"), str(path), "cluster.address", "127.0.0.1:1")
    assert not (tmp_path / "ray" / "out").exists()


def test_a_silent_service_times_out(tmp_path, tiny_experiment):
    """A port that accepts nothing and never answers (a listening socket nobody serves) is
    given up after the probe's timeout, not waited on for ever."""
    from nasplat.config import load_experiment
    from nasplat.errors import ConfigError
    from nasplat.orchestration.probe import check_tracking

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        path = _with(tiny_experiment(tmp_path / "silent"), f"tracking: {{uri: 'http://127.0.0.1:{port}'}}\n")
        with pytest.raises(ConfigError, match="does not answer within 0.5 s") as e:
            check_tracking(load_experiment(path), timeout_s=0.5)
        assert e.value.key == "tracking.uri"


def test_budget_below_the_smallest_subnet_and_unknown_objective_write_nothing(tmp_path, tiny_experiment):
    path = _with(tiny_experiment(tmp_path / "budget"), SEARCH.format(budget=0.0001))
    _one_error_line(_invoke("search", str(path), "--local"), str(path), "search.budget_gflops", "smallest subnet")
    _one_error_line(_invoke("run", str(path)), str(path), "search.budget_gflops")
    path.write_text(path.read_text().replace("0.0001", "0.05"))
    _one_error_line(_invoke("search", str(path), "--local", "--objective", "magic"), str(path), "--objective", "magic")
    assert not (tmp_path / "budget" / "out").exists()


def test_identity_picks_the_matching_study_and_a_finished_rerun_writes_nothing(tmp_path, tiny_experiment):
    path = _with(tiny_experiment(tmp_path / "ident"), SEARCH.format(budget=0.05))
    db = tmp_path / "ident" / "out" / "study.db"
    assert _invoke("search", str(path), "--local", "--no-mlflow").exit_code == 0
    assert not (tmp_path / "ident" / "out" / "mlflow.db").exists()  # --no-mlflow
    before = _sha(db)
    res = _invoke("search", str(path), "--local", "--no-mlflow")  # finished: read, not written
    assert res.exit_code == 0, res.output
    assert _sha(db) == before

    other = path.read_text().replace("budget_gflops: 0.05", "budget_gflops: 0.06")
    path.write_text(other)
    _one_error_line(_invoke("search", str(path), "--local", "--no-mlflow"), "--new-study", "0.05")
    assert _invoke("search", str(path), "--local", "--no-mlflow", "--new-study").exit_code == 0

    path.write_text(other.replace("0.06", "0.05"))  # back to the original file: its own study again
    res = _invoke("search", str(path), "--local", "--no-mlflow")
    assert res.exit_code == 0, res.output
    assert "study tiny at " in res.output
    state = json.loads(_invoke("status", str(path), "--json").stdout)
    assert state["study"] == "tiny" and state["differences"] == []

    state = json.loads(_invoke("status", str(path), "--json", "--study", "tiny#2").stdout)
    assert state["study"] == "tiny#2"
    assert state["differences"] == [{"field": "budget_gflops", "stored": 0.06, "file": 0.05}]
    res = _invoke("status", str(path), "--study", "tiny#2")
    assert "differs from study tiny#2" in res.output
    _one_error_line(_invoke("status", str(path), "--study", "nope"), "--study", "nope")
    _one_error_line(_invoke("search", str(path), "--local", "--study", "nope"), "--study", "nope", "--new-study")


def test_a_database_server_that_accepts_and_never_answers_is_one_line_within_the_timeout(tmp_path, tiny_experiment):
    """A TCP port that accepts connections but never speaks: `search` (its preflight) and
    `status` each stop with one line naming search.storage within the 5 s probe, not minutes."""
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        port = server.getsockname()[1]
        path = _with(tiny_experiment(tmp_path / "silentdb"),
                     f"search: {{storage: 'postgresql://nas:secret@127.0.0.1:{port}/studies', objective: analytic}}\n")
        for command in (["search", str(path), "--local", "--no-mlflow"], ["status", str(path)]):
            start = time.monotonic()
            res = _invoke(*command)
            _one_error_line(res, str(path), "search.storage", "does not answer within 5 s")
            assert "secret" not in res.output
            assert time.monotonic() - start < 20, command
    finally:
        server.close()
    assert not (tmp_path / "silentdb" / "out").exists()
