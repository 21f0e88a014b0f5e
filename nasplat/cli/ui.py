"""`nasplat ui`: browse an experiment's MLflow runs, the Pareto front first.

For a local tracking store (a SQLite file or a folder) it runs the MLflow server on 127.0.0.1 in
its own process group until Ctrl-C or SIGTERM, then stops the whole group. The server is a
viewer for one user: one uvicorn worker and no job runner (MLflow's Huey consumers run GenAI
evaluation jobs; on a 2-core machine its default 4 workers and 7 consumers took ~30 s to answer).
Its own output goes to a log file under nasplat's log directory unless `--verbose`.

It writes nothing to the experiment: before anything was logged it says so instead of letting
MLflow create an empty store, and a port already in use is one line before the server starts.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import typer

# What the server process gets unless the user's environment says otherwise.
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="Experiment YAML."),
    # Checked in the command (not by click's min/max) so that a bad port is one error line.
    port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1 (1 to 65535)."),
) -> None:
    """Start the MLflow UI on 127.0.0.1 for the experiment (Ctrl-C stops it) and print the URL of
    its runs view: the Pareto-front trials, best whole-body AP first. For a tracking server, only
    print that URL.

    \b
    Example:
      nasplat ui experiments/quickstart.yaml --port 5001
    """
    from nasplat.config import load_experiment
    from nasplat.errors import NasplatError
    from nasplat.files import shell_command
    from nasplat.orchestration.tracking import find_experiment, runs_url, ui_base
    from nasplat.store.redact import redact_url
    from nasplat.tracking.client import is_local

    if not 1 <= port <= 65535:
        raise NasplatError(f"invalid value for '--port': {port} (a port from 1 to 65535 on 127.0.0.1)")
    experiment = load_experiment(experiment_file)
    uri = experiment.tracking_uri
    local = is_local(uri)
    store = _local_store(uri) if local else None
    if store is not None and not store.exists():  # opening it would create an empty store
        raise NasplatError(f"nothing logged yet for this experiment ({redact_url(uri)} does not exist); "
                           f"run `{shell_command('nasplat', 'run', experiment_file)}` first", source=str(experiment_file))
    exp_id = find_experiment(experiment)
    url = runs_url(experiment, exp_id, port) if exp_id else f"{ui_base(experiment, port)} (nothing logged yet)"
    if not local:
        typer.echo(f"tracking.uri is a server; the Pareto front is at {url}")
        return
    _check_port_free(port)
    verbose = _verbose()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    where = experiment.artifact_location  # a folder, or the object store of storage_path
    cmd += ["--default-artifact-root", where if isinstance(where, str) else where.resolve().as_uri()]
    if not verbose:
        cmd += ["--uvicorn-opts", "--no-access-log"]  # a line per request of the page: noise in the log
    env = {**_SERVER_ENV, **os.environ}
    log, output = (None, None) if verbose else _server_log(port)
    try:
        said = "" if log is None else f"; its log: {log}"
        typer.echo(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop{said}); the Pareto front: {url}")
        code = serve_until_stopped(cmd, env=env, output=output)
    finally:
        if output is not None:
            output.close()
    if code is not None:
        raise NasplatError(f"the MLflow UI server exited by itself (exit code {code}); "
                           + (f"its output is in {log}" if log is not None else "its output is above"))


def _verbose() -> bool:
    from nasplat.cli.main import _options

    return bool(_options["verbose"]) or os.environ.get("NASPLAT_VERBOSE") == "1"


def _local_store(uri: str) -> Path | None:
    """The file (SQLite) or folder of a local tracking store; None for an in-memory one."""
    if uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        return Path(database).expanduser() if database and database != ":memory:" else None
    if uri.startswith("file:"):
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        return Path(url2pathname(urlsplit(uri).path))
    return Path(uri).expanduser()


def _check_port_free(port: int) -> None:
    """Raise NasplatError unless a server can listen on 127.0.0.1:`port` (bound the way uvicorn
    binds, so a port left in TIME_WAIT by a stopped server counts as free)."""
    from nasplat.errors import NasplatError

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            why = ("is already in use (choose another with --port)" if e.errno == errno.EADDRINUSE
                   else f"cannot be listened on ({e.strerror or e})")
            raise NasplatError(f"--port {port}: 127.0.0.1:{port} {why}") from None


def _server_log(port: int) -> tuple[Path | None, IO[bytes] | None]:
    """The file the server's output goes to, `mlflow-ui-<port>.log` under nasplat's log directory
    (the temporary directory when that cannot be written), opened for writing."""
    from nasplat.cli.main import log_dir

    for folder in (log_dir(), Path(tempfile.gettempdir())):
        path = folder / f"mlflow-ui-{port}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return path, path.open("wb")
        except OSError:
            continue
    return None, None


def serve_until_stopped(cmd: list[str], *, env: dict[str, str] | None = None, output: IO[bytes] | None = None,
                        grace_s: float = 10.0) -> int | None:
    """Run a server command in its own process group until it exits or this process is stopped
    (Ctrl-C or SIGTERM); then stop the whole group (the server and its workers): TERM, and KILL
    what is left after `grace_s`. `output`: where its stdout and stderr go (None: this process's).
    Returns the server's exit code when it exited by itself, None when this process was stopped."""

    def _terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminated)  # before the start: no SIGTERM leaves it running
    proc: subprocess.Popen | None = None
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=output, stderr=output)
        return proc.wait()
    except KeyboardInterrupt:
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc is not None:
            _stop_group(proc, grace_s)


def _stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    proc.wait(timeout=grace_s)


def register(app: typer.Typer) -> None:
    """Add `ui` to the nasplat app."""
    app.command("ui")(ui)
