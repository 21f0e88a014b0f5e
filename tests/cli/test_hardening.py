"""Bad services, bad budgets and read-only commands: one line, exit 2, nothing written; a study is
found by its identity; a finished study is read, not written."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app

ROOT = Path(__file__).resolve().parents[2]

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


def test_part_budgets_bad_impossible_and_changed_are_one_line(tmp_path, tiny_experiment):
    """A bad part key and a part budget below the smallest subnet's part write nothing; a search
    under part budgets reports them, and a changed one is another study."""
    path = _with(tiny_experiment(tmp_path / "parts"), SEARCH.format(budget="{body: 0.003, feet: 0.001}"))
    _one_error_line(_invoke("search", str(path), "--local"), str(path), "search.budget_gflops.feet", "unknown key")
    path.write_text(path.read_text().replace("feet: 0.001", "hand: 0.0001"))  # the tiny space's smallest hand: 0.00018
    _one_error_line(_invoke("search", str(path), "--local"), str(path), "search.budget_gflops.hand", "smallest subnet")
    _one_error_line(_invoke("run", str(path)), str(path), "search.budget_gflops.hand")
    assert not (tmp_path / "parts" / "out").exists()

    path.write_text(path.read_text().replace("hand: 0.0001", "hand: 0.0006"))
    assert _invoke("search", str(path), "--local", "--no-mlflow").exit_code == 0
    res = _invoke("status", str(path))
    assert "budget body <= 0.003, hand <= 0.0006 GFLOPs" in res.output, res.output
    path.write_text(path.read_text().replace("hand: 0.0006", "hand: 0.0007"))
    _one_error_line(_invoke("search", str(path), "--local", "--no-mlflow"), "part budgets", "--new-study")


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


# --- a corrupt, read-only or unreadable study database: one line, exit 2 (issues 28, 29) --------

def _searched(tmp_path, tiny_experiment, name: str):  # noqa: ANN001, ANN202
    """A tiny experiment whose 3-trial search is done, and its study.db."""
    path = _with(tiny_experiment(tmp_path / name), SEARCH.format(budget=0.05))
    res = _invoke("search", str(path), "--local", "--no-mlflow")
    assert res.exit_code == 0, res.output
    return path, (tmp_path / name / "out" / "study.db").resolve()


@pytest.mark.parametrize("table, what", [
    ("trial_user_attributes", "database disk image is malformed"),  # read by Optuna
    ("nasplat_experiment", "database disk image is malformed"),  # read by nasplat
    (None, "file is not a database"),
])
def test_a_corrupt_study_db_is_one_line_for_status_and_search(tmp_path, tiny_experiment, table, what):
    from tests.store.conftest import corrupt_sqlite

    path, db = _searched(tmp_path, tiny_experiment, "corrupt")
    corrupt_sqlite(db, table)
    line = f"{db}: {what} (the SQLite file is corrupt; restore it from a copy or delete it to start over)"
    for command in (["status", str(path)], ["status", str(path), "--json"], ["search", str(path), "--local", "--no-mlflow"]):
        _one_error_line(_invoke(*command), line)


def test_a_trial_value_that_is_not_json_is_one_line_naming_the_study_and_trial(tmp_path, tiny_experiment):
    """`status` cannot show a study Optuna cannot read (and a search must not resume from part of
    its history): one line names the study, the trial, the attribute and the table to repair."""
    import sqlite3

    path, db = _searched(tmp_path, tiny_experiment, "badjson")
    result_of_1 = "key = 'result' AND trial_id = (SELECT trial_id FROM trials WHERE number = 1)"
    with sqlite3.connect(db) as conn:
        good = conn.execute(f"SELECT value_json FROM trial_user_attributes WHERE {result_of_1}").fetchone()[0]
        conn.execute(f"UPDATE trial_user_attributes SET value_json = ? WHERE {result_of_1}", ('{"tell_seq": ',))
    conn.close()
    for command in (["status", str(path)], ["status", str(path), "--json"], ["search", str(path), "--local", "--no-mlflow"]):
        _one_error_line(_invoke(*command), "study 'tiny': trial 1: user attr 'result' is not valid JSON",
                        "trial_user_attributes")
    with sqlite3.connect(db) as conn:  # a nasplat value Optuna reads but nasplat cannot
        conn.execute(f"UPDATE trial_user_attributes SET value_json = ? WHERE {result_of_1}", (good,))
        conn.execute("UPDATE trial_user_attributes SET value_json = '\"not an arch\"' "
                     "WHERE key = 'arch' AND trial_id = (SELECT trial_id FROM trials WHERE number = 2)")
    conn.close()
    _one_error_line(_invoke("status", str(path)), "study 'tiny': trial 2: user attr 'arch' cannot be read")


def _error_line(code: int, output: str, *needles: str) -> None:
    """Exit 2 and one error line; `run` may have printed its phase header before it."""
    assert code == 2 and "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("nasplat:")]
    assert len(errors) == 1 and errors[0] == output.strip().splitlines()[-1], output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def _read_only_sqlite(conn, record) -> None:  # noqa: ANN001 - a pool "connect" hook
    conn.execute("PRAGMA query_only = ON")  # SQLite refuses every write: SQLITE_READONLY


def test_a_read_only_study_db_is_one_line_for_run_and_search(tmp_path, tiny_experiment):
    """Every SQLite connection read-only, as a read-only file or mount makes it (this works as
    root, where file modes do not stop writes; the next test uses the file system itself)."""
    import sqlalchemy as sa

    path, db = _searched(tmp_path, tiny_experiment, "ro")
    path.write_text(path.read_text().replace("n_trials: 3", "n_trials: 4"))  # a search that must write
    sa.event.listen(sa.pool.Pool, "connect", _read_only_sqlite)
    try:
        for command in (["search", str(path), "--local", "--no-mlflow"], ["run", str(path), "--no-mlflow"]):
            res = _invoke(*command)
            _error_line(res.exit_code, res.output, f"nasplat: error: {db}: the database is read-only")
        _one_error_line(_invoke("search", str(path), "--local", "--no-mlflow", "--new-study"), f"{db}: ", "read-only")
    finally:
        sa.event.remove(sa.pool.Pool, "connect", _read_only_sqlite)


def _read_only_runner(paths):  # noqa: ANN001, ANN202
    """How to run a command with `paths` read-only: file modes for a normal user; as root (whom
    modes do not stop) a read-only bind mount in a private mount namespace; None when neither."""
    import os
    import shutil
    import subprocess
    import sys

    base = [sys.executable, "-m", "nasplat"]
    if os.geteuid() != 0:
        def run(*args: str):  # noqa: ANN202
            modes = {p: p.stat().st_mode for p in paths}
            for p in paths:
                p.chmod(0o555 if p.is_dir() else 0o444)
            try:
                return subprocess.run(base + list(args), capture_output=True, text=True, timeout=300)
            finally:
                for p, mode in modes.items():
                    p.chmod(mode)
        return run
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        return None

    def run_ro(*args: str):  # noqa: ANN202
        mounts = " && ".join(f"mount --bind {p} {p} && mount -o remount,ro,bind {p}" for p in paths)
        script = f'{mounts} && exec "$@"'
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *base, *args], capture_output=True,
                              text=True, timeout=300)
    return run_ro


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_study_file_or_folder_is_one_line(tmp_path, tiny_experiment, what):
    path, db = _searched(tmp_path, tiny_experiment, f"ro-{what}")
    path.write_text(path.read_text().replace("n_trials: 3", "n_trials: 4"))
    run = _read_only_runner([db] if what == "file" else [db.parent])
    if run is None:
        pytest.skip("root without mount namespaces: nothing here can make a file read-only for root")
    for command in (["search", str(path), "--local", "--no-mlflow"], ["run", str(path), "--no-mlflow"]):
        res = run(*command)
        _error_line(res.returncode, res.stdout + res.stderr, str(db.parent))
        # a read-only folder may stop another write before the database's (the lease file beside it)
        assert "read-only" in res.stderr.lower() or what == "folder" and "permission denied" in res.stderr.lower(), \
            res.stderr


def test_a_read_only_study_db_is_one_line_for_retrain(tmp_path, tiny_experiment, trained_tiny):
    """`retrain` records its phase before it starts Ray: a read-only study is one line there too."""
    import shutil

    import sqlalchemy as sa

    path = _with(tiny_experiment(tmp_path / "rt"),
                 SEARCH.format(budget=0.05) + "retrain: {top_k: 1, epochs: 1, concurrent_trials: 1}\n")
    shutil.copytree(trained_tiny.output_dir, tmp_path / "rt" / "out")  # a trained supernet
    assert _invoke("search", str(path), "--local", "--no-mlflow").exit_code == 0
    db = (tmp_path / "rt" / "out" / "study.db").resolve()
    sa.event.listen(sa.pool.Pool, "connect", _read_only_sqlite)
    try:
        res = _invoke("retrain", str(path), "--no-mlflow")
    finally:
        sa.event.remove(sa.pool.Pool, "connect", _read_only_sqlite)
    _error_line(res.exit_code, res.output, f"nasplat: error: {db}: the database is read-only")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare (a private tmpfs)")
@pytest.mark.timeout(600)
def test_a_full_disk_under_the_study_is_one_line_and_the_same_command_resumes(tmp_path, tiny_experiment):
    """The study database's disk fills during the search: one line naming the database (not an
    internal error), the same while it is still full, and once there is room the same command
    finishes the study with every trial."""
    path = tiny_experiment(tmp_path / "full")
    out = tmp_path / "full" / "small"
    out.mkdir()
    path.write_text(path.read_text().replace("output_dir: out", f"output_dir: {out}")
                    + "search: {sampler: random, n_trials: 400, budget_gflops: 0.05, objective: analytic}\n")
    search = f"{shlex.quote(sys.executable)} -m nasplat search {shlex.quote(str(path))} --local --no-mlflow"
    script = (f"mount -t tmpfs -o size=600k tmpfs {shlex.quote(str(out))} || exit 99\n"
              f"{search} 2>first.err; echo first=$?\n"
              f"{search} 2>second.err; echo second=$?\n"
              f"mount -o remount,size=20m {shlex.quote(str(out))}\n"
              f"{search} 2>third.err; echo third=$?\n"
              f"{shlex.quote(sys.executable)} -m nasplat status {shlex.quote(str(path))} --json\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=540)
    if "exit 99" in res.stdout or res.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    codes = dict(line.split("=") for line in res.stdout.splitlines() if line.split("=")[0] in ("first", "second", "third"))
    assert codes == {"first": "2", "second": "2", "third": "0"}, res.stdout + res.stderr
    line = (f"nasplat: error: {out}/study.db: no space left on the device for the study database (what was written "
            "is kept: free space there, or set search.storage to another place, and the same command resumes)")
    for name in ("first.err", "second.err"):
        assert (tmp_path / name).read_text().strip().splitlines()[-1] == line
    status = json.loads(res.stdout.strip().splitlines()[-1])
    assert status["trials"]["COMPLETE"] == 400 and status["phase"] == "searched"
