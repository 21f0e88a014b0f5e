"""Processes for the CI checks: free ports on 127.0.0.1, process trees read from /proc (no psutil),
and stopping exactly the processes a check started (a pid is signalled only while it is still the
process that was seen, not a reused one)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- processes, by pid (no psutil) --------------------------------------------------------------
def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of `pid`, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of `root` and all its descendants now, children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
    out: list[tuple[int, int]] = []

    def walk(pid: int) -> None:
        for c in children.get(pid, []):
            walk(c)
        st = _stat(pid)
        if st is not None:
            out.append((pid, st[1]))

    walk(root)
    return out


def signal_same(procs: list[tuple[int, int]], sig: int) -> None:
    """Send `sig` to each (pid, start time) that is still that process (not a reused pid)."""
    for pid, start in procs:
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def stop(procs: list[tuple[int, int]], grace: float = 15.0) -> None:
    """TERM the processes, KILL what is left after `grace` seconds."""
    signal_same(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.2)
    signal_same(procs, signal.SIGKILL)


def _alive(proc: tuple[int, int]) -> bool:
    st = _stat(proc[0])
    if st is None or st[1] != proc[1]:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{proc[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ray_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a check's Ray nodes and drivers: this checkout importable, no usage
    stats, and our own auth token (the one `.ci/run` exported, else a new one), so no other Ray
    session on this machine can interfere; plus `extra`."""
    import secrets

    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{path}" if path else str(root), RAY_USAGE_STATS_ENABLED="0",
                RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32),
                **extra)


def stop_started(started: list, seen: list[tuple[int, int]]) -> None:  # noqa: ANN001 - Popen
    """Stop the processes a check started (`started`, last first) and every process seen under
    them (now, or earlier in `seen`), then reap them."""
    import subprocess

    for proc in reversed(started):
        seen = seen + tree(proc.pid)
    stop(seen)
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def wait_for(what: str, check, timeout: float, *, name: str = "ci") -> None:  # noqa: ANN001
    """Poll `check` until it is true; SystemExit naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


__all__ = ["cmdline", "free_port", "ray_env", "signal_same", "stop", "stop_started", "tree", "wait_for"]
