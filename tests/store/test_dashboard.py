"""optuna-dashboard, unmodified, on the study a short nasplat search wrote (SQLite; PostgreSQL too
when NASPLAT_TEST_POSTGRES_URL is set): its JSON API shows the trials, both named objectives, the
params, the constraint values and answers the importance request."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import stop_process

N_TRIALS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 30.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@contextmanager
def dashboard(storage_url: str, directory: Path) -> Iterator[str]:
    """optuna-dashboard on 127.0.0.1 (a free port) serving `storage_url`; yields its base URL.
    The URL goes in a TOML file only its owner can read, not on the command line."""
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    assert exe, "the optuna-dashboard command is not installed (pip install optuna-dashboard)"
    port = _free_port()
    config = directory / "dashboard.toml"
    config.touch(mode=0o600)
    config.write_text(f"[optuna_dashboard]\nstorage = {json.dumps(storage_url)}\n")
    log = (directory / "dashboard.log").open("w")
    # wsgiref: one process that a SIGTERM stops at once (gunicorn, when installed, forks workers
    # and shuts down gracefully, which takes seconds)
    proc = subprocess.Popen([exe, "--from-config", str(config), "--host", "127.0.0.1", "--port", str(port), "--quiet",
                             "--server", "wsgiref"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                from nasplat.store import redact_text

                raise AssertionError("optuna-dashboard exited: "
                                     + redact_text((directory / "dashboard.log").read_text()[-2000:], storage_url))
            try:
                if _get(f"{base}/api/meta", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
            time.sleep(0.2)
        yield base
    finally:
        stop_process(proc)
        log.close()


def _search(directory: Path, tiny_experiment, storage: str | None) -> tuple[Any, Any]:  # noqa: ANN001
    """A short analytic search on the tiny experiment; returns (experiment, result)."""
    from nasplat.config import load_experiment
    from nasplat.orchestration.run import run_search
    from nasplat.search import total_gflops_fn

    path = tiny_experiment(directory)
    space = load_experiment(path).space
    cost = total_gflops_fn(space)
    budget = round((cost(space.min_arch()) + cost(space.max_arch())) / 2, 6)
    store = f", storage: {json.dumps(storage)}" if storage else ""
    with path.open("a") as f:
        f.write(f"search: {{sampler: random, n_trials: {N_TRIALS}, budget_gflops: {budget}, seed: 0, "
                f"objective: analytic, num_evaluators: 1{store}}}\n")
    experiment = load_experiment(path)
    return experiment, run_search(experiment, objective="analytic", local=True, track=False)


def _check_dashboard(directory: Path, tiny_experiment, storage: str | None) -> None:  # noqa: ANN001
    experiment, result = _search(directory, tiny_experiment, storage)
    assert result.n_complete == N_TRIALS
    dims = {d.name for d in experiment.space.dimensions}
    budget = experiment.search.budget_gflops
    with dashboard(experiment.storage_url, directory) as base:
        status, studies = _get(f"{base}/api/studies")
        assert status == 200
        ids = [s["study_id"] for s in studies["study_summaries"] if s["study_name"] == result.study_name]
        assert len(ids) == 1, studies
        status, study = _get(f"{base}/api/studies/{ids[0]}")
        assert status == 200
        assert study["objective_names"] == ["wholebody_AP", "GFLOPs"]
        assert study["directions"] == ["maximize", "minimize"]
        trials = study["trials"]
        assert len(trials) == N_TRIALS and all(t["state"] == "Complete" for t in trials)
        stored = {t.number: t for t in result.trials}
        for t in trials:
            ev = stored[t["number"]].evaluation
            assert {p["name"] for p in t["params"]} == dims
            assert all(p["distribution"]["type"] == "CategoricalDistribution" for p in t["params"])
            flat = stored[t["number"]].arch.to_flat()
            assert all(float(p["param_external_value"]) == pytest.approx(flat[p["name"]]) for p in t["params"])
            assert t["values"] == pytest.approx([ev.ap, ev.total_gflops])
            assert t["constraints"] == pytest.approx([ev.total_gflops - budget])
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert {"body_AP", "face_AP", "num_params"} <= set(attrs)
        assert {p["name"] for p in study["union_search_space"]} == dims
        status, importances = _get(f"{base}/api/studies/{ids[0]}/param_importances", timeout=60)
        assert status == 200, importances
        per_objective = importances["param_importances"]
        assert len(per_objective) == 2
        for entries in per_objective:
            assert entries and {e["name"] for e in entries} <= dims
            assert all(e["importance"] >= 0 for e in entries)


def test_dashboard_on_sqlite_study(tmp_path: Path, tiny_experiment) -> None:  # noqa: ANN001
    _check_dashboard(tmp_path, tiny_experiment, None)


@pytest.mark.postgres
def test_dashboard_on_postgres_study(tmp_path: Path, tiny_experiment) -> None:  # noqa: ANN001
    url = os.environ.get("NASPLAT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("NASPLAT_TEST_POSTGRES_URL is not set")
    import sqlalchemy as sa

    name = f"nasplat_dash_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        _check_dashboard(tmp_path, tiny_experiment,
                         sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
