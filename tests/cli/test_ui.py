"""`nasplat ui` runs the MLflow server in its own process group and stops all of it when stopped;
it refuses a port it cannot use and an experiment that never logged anything in one line, writes
nothing, and keeps the server's own output off the console."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.append((int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])))
    return out


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    return [pid for pid, state, _, group in _processes() if group == pgid and state != "Z"]


def _children(pid: int) -> list[int]:
    return [p for p, _, parent, _ in _processes() if parent == pid]


def _logged(directory: Path, tiny_experiment) -> Path:
    """A tiny experiment whose MLflow experiment exists (as after `nasplat run`)."""
    from nasplat.config import load_experiment
    from nasplat.orchestration.tracking import open_experiment

    path = tiny_experiment(directory)
    open_experiment(load_experiment(path))
    return path


def _servers_on(port: int) -> list[int]:
    """Live processes whose command line names `port` (an MLflow server nasplat started on it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in args and str(port).encode() in args and any(b"mlflow" in a for a in args):
            found.append(int(cmdline.parent.name))
    return found


def _ui(path: Path, *args: str, logs: Path):  # noqa: ANN202 - a click Result
    from typer.testing import CliRunner

    from nasplat.cli.main import app

    return CliRunner().invoke(app, ["ui", str(path), *args], env={"NASPLAT_LOG_DIR": str(logs)})


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
@pytest.mark.parametrize("stop", [signal.SIGINT])  # SIGTERM takes the same path (serve_until_stopped)
def test_stopping_ui_stops_the_whole_mlflow_server(tmp_path, tiny_experiment, stop):
    path = _logged(tmp_path / "ui", tiny_experiment)
    port = _free_port()
    logs = tmp_path / "logs"
    ui = subprocess.Popen([sys.executable, "-m", "nasplat", "ui", str(path), "--port", str(port)],
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "NASPLAT_LOG_DIR": str(logs)})
    group = None
    try:
        deadline = time.monotonic() + 180
        while True:
            assert ui.poll() is None, ui.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not come up"
                time.sleep(0.5)
        servers = _children(ui.pid)
        assert len(servers) == 1
        group = servers[0]
        assert os.getpgid(group) == group != os.getpgid(ui.pid)  # its own group
        # MLflow's launcher and one uvicorn worker; its defaults (4 workers, a job runner and 7 Huey
        # consumers) were 15 processes on a 2-core machine
        assert 2 <= len(_group(group)) <= 3
        ui.send_signal(stop)
        assert ui.wait(timeout=60) in (0, 130)
        assert _group(group) == []
        out, err = ui.stdout.read().decode(), ui.stderr.read().decode()
        # the server's start-up and shutdown lines and its warnings go to its log file, not the console
        assert "INFO" not in err and "Warning" not in err and "INFO" not in out, err + out
        log = logs / f"mlflow-ui-{port}.log"
        assert str(log) in out and "Uvicorn running" in log.read_text()
    finally:  # a failed assertion leaves no server behind either
        if ui.poll() is None:
            ui.send_signal(signal.SIGINT)
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ui.kill()
        if group is not None and _group(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        ui.stdout.close()
        ui.stderr.close()


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_port_in_use_is_one_line_and_starts_no_server(tmp_path, tiny_experiment):
    """It printed the URL, then uvicorn's "Address already in use", and exited 0."""
    path = _logged(tmp_path / "ui", tiny_experiment)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _ui(path, "--port", str(port), logs=tmp_path / "logs")
        line = f"nasplat: error: --port {port}: 127.0.0.1:{port} is already in use (choose another with --port)"
        assert res.exit_code == 2 and res.output == line + "\n", res.output
        assert _servers_on(port) == []


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_server_that_stops_by_itself_is_one_line_and_a_failure(tmp_path, tiny_experiment, monkeypatch):
    """A port taken between nasplat's check and the server's start: MLflow exits 0 when its
    uvicorn cannot bind, so any exit that nasplat did not ask for is a failure, named in one line."""
    import nasplat.cli.ui

    path = _logged(tmp_path / "ui", tiny_experiment)
    monkeypatch.setattr(nasplat.cli.ui, "_check_port_free", lambda port: None)  # lose the race
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _ui(path, "--port", str(port), logs=tmp_path / "logs")
        log = tmp_path / "logs" / f"mlflow-ui-{port}.log"
        assert res.exit_code == 2, res.output
        # uvicorn's exit status on a failed bind differs by version (0 before, 1 now): any one is named
        assert re.fullmatch(rf"nasplat: error: the MLflow UI server exited by itself \(exit code \d+\); its output is "
                            rf"in {re.escape(str(log))}", res.output.splitlines()[-1]), res.output
        assert "address already in use" in log.read_text().lower()
        assert _servers_on(port) == []


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_a_port_outside_1_to_65535_is_one_line(tmp_path, port):
    """--port 0 printed http://127.0.0.1:0 while the server listened elsewhere; click's range
    check printed usage lines."""
    res = _ui(tmp_path / "never-read.yaml", "--port", port, logs=tmp_path / "logs")
    assert res.exit_code == 2 and res.output == (
        f"nasplat: error: invalid value for '--port': {port} (a port from 1 to 65535 on 127.0.0.1)\n"), res.output


def test_an_experiment_that_never_ran_is_one_line_and_nothing_is_written(tmp_path, tiny_experiment):
    """It created <output_dir>/mlflow.db (opening the store to find the experiment) and started a
    server on the empty store."""
    path = tiny_experiment(tmp_path / "never")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = _ui(path, "--port", str(_free_port()), logs=tmp_path / "logs")
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1, res.output
    db = tmp_path / "never" / "out" / "mlflow.db"
    assert res.output.startswith(f"nasplat: error: {path}: nothing logged yet for this experiment (sqlite:///{db} "
                                 f"does not exist); run `nasplat run {path}` first")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "logs" not in p.parts) == before


def test_serve_until_stopped_returns_the_code_of_a_server_that_exits_by_itself():
    from nasplat.cli.ui import serve_until_stopped

    assert serve_until_stopped([sys.executable, "-c", "raise SystemExit(3)"]) == 3
