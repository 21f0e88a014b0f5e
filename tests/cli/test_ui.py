"""`nasplat ui` runs the MLflow server in its own process group and stops all of it when stopped."""

from __future__ import annotations

import os
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


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
@pytest.mark.parametrize("stop", [signal.SIGINT])  # SIGTERM takes the same path (serve_until_stopped)
def test_stopping_ui_stops_the_whole_mlflow_server(tmp_path, tiny_experiment, stop):
    path = tiny_experiment(tmp_path / "ui")
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "nasplat", "ui", str(path), "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        assert len(_group(group)) >= 2  # the server and its worker(s)
        ui.send_signal(stop)
        assert ui.wait(timeout=60) in (0, 130)
        assert _group(group) == []
    finally:
        if ui.poll() is None:
            ui.kill()
        ui.stderr.close()
