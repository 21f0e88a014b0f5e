"""CI: the quickstart's search on a two-node Ray cluster survives losing a node.

Starts a Ray head and a second (worker) node on 127.0.0.1 with `ray start` (our own auth token),
runs the quickstart space's search with `--cluster` against them (the analytic objective, each
evaluation made to take about a second, two evaluators: Ray spreads them over both nodes), and
SIGKILLs the worker node's raylet by its PID once trials have completed and an evaluator runs
there. Asserts that the search finishes on the head with exactly its budget of COMPLETE trials,
each arch once, and that the trial the lost evaluator was running is visibly re-queued
(`failed_attempts` with `lost`). Stops exactly the processes it started (their trees as seen
before stopping). Run: python .ci/run's line, or `python .ci/ray_node_loss.py [--trials 12]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _procs  # noqa: E402 - the CI checks' process helpers, beside this file
from _procs import cmdline, free_port, ray_env, signal_same, stop_started, tree  # noqa: E402


def wait_for(what: str, check, timeout: float) -> None:  # noqa: ANN001
    _procs.wait_for(what, check, timeout, name="ray_node_loss")


# --- the search (run in a child process of this script) ------------------------------------------
def search_child(experiment_file: str, seconds: float) -> None:
    """`nasplat search EXPERIMENT --cluster --objective analytic`, each evaluation taking about
    `seconds` (the CLI's analytic objective is instant, too quick to lose a node mid-search)."""
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.orchestration.run import run_search
    from nasplat.search import AnalyticFactory, calibrate_work

    experiment = for_command(load_experiment(experiment_file), cluster=True)
    factory = AnalyticFactory(str(experiment.space_path), work=calibrate_work(seconds))
    result = run_search(experiment, objective=factory)
    print(json.dumps({"complete": result.n_complete, "failed": result.n_failed, "study": result.study_name}), flush=True)


def write_experiment(directory: Path, address: str, trials: int) -> Path:
    """The quickstart experiment, joined to `address`, its search shortened to `trials`."""
    import yaml

    quick = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    base = ROOT / "experiments"
    quick.update(
        name="nodeloss",
        space=str((base / quick["space"]).resolve()),
        trainer=str((base / quick["trainer"]).resolve()),
        output_dir=str(directory / "out"),
        tracking={"uri": None, "experiment": "nodeloss"},
    )
    quick["data"]["root"] = str(directory / "data")
    quick["cluster"].update(address=address, cpus_per_worker=1)
    quick["search"].update(n_trials=trials, num_evaluators=2, objective="analytic", max_retries=3, storage=None)
    path = directory / "experiment.yaml"
    path.write_text(yaml.safe_dump(quick, sort_keys=False))
    return path


def count_complete(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
    except sqlite3.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of one evaluation")
    parser.add_argument("--child", nargs=2, metavar=("EXPERIMENT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        search_child(args.child[0], float(args.child[1]))
        return

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="rnl", dir="/tmp"))  # short: Ray's socket paths live under it
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    env = ray_env(
        ROOT,
        # a dead node is noticed after ~3 s instead of ~15 s
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
        # spread actors over the nodes (Ray packs the first node up to half its CPUs otherwise)
        RAY_scheduler_spread_threshold="0.0",
    )
    port = free_port()
    address = f"127.0.0.1:{port}"
    started: list[subprocess.Popen] = []
    snapshot: list[tuple[int, int]] = []  # every process seen under ours, for the final stop
    ok = False

    def launch(name: str, cmd: list[str]) -> subprocess.Popen:
        log = (work / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(proc)
        return proc

    def ray_started(name: str) -> bool:
        return "Ray runtime started" in (work / f"{name}.log").read_text(errors="replace")

    try:
        common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats",
                  f"--temp-dir={work / 'ray'}"]
        head = launch("head", [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common])
        wait_for("the Ray head", lambda: ray_started("head") or head.poll() is not None, 120)
        assert head.poll() is None, (work / "head.log").read_text()[-3000:]
        worker = launch("worker", [ray, "start", f"--address={address}", *common])
        wait_for("the Ray worker node", lambda: ray_started("worker") or worker.poll() is not None, 120)
        assert worker.poll() is None, (work / "worker.log").read_text()[-3000:]
        raylets = [p for p, _ in tree(worker.pid) if "raylet" in cmdline(p).split(" ")[0]]
        assert raylets, f"no raylet under the worker node's ray start ({worker.pid})"
        print(f"ray_node_loss: head and worker node up at {address} in {time.monotonic() - t_start:.0f} s; "
              f"worker raylet pid(s) {raylets}", flush=True)

        experiment = write_experiment(work, address, args.trials)
        db = work / "out" / "study.db"
        search = launch("search", [sys.executable, str(Path(__file__).resolve()), "--child", str(experiment), str(args.seconds)])

        def on_worker() -> list[int]:
            return [p for p, _ in tree(worker.pid) if "_EvaluatorActor" in cmdline(p)]

        wait_for("an evaluator on the worker node and 2 completed trials",
                 lambda: search.poll() is not None or (len(on_worker()) > 0 and count_complete(db) >= 2), 300)
        assert search.poll() is None, "the search ended before the node could be lost:\n" + (work / "search.log").read_text()[-3000:]
        victims = tree(worker.pid)
        snapshot += victims
        done_before, evaluators = count_complete(db), on_worker()
        signal_same([(p, s) for p, s in victims if p in raylets], signal.SIGKILL)
        print(f"ray_node_loss: killed the worker node's raylet {raylets} (its evaluator pids {evaluators}) "
              f"after {done_before} completed trials", flush=True)
        try:
            search.wait(timeout=600)
        except subprocess.TimeoutExpired:
            raise SystemExit("ray_node_loss: the search did not finish in 600 s after the node was lost") from None
        log = (work / "search.log").read_text(errors="replace")
        assert search.returncode == 0, f"the search failed (exit {search.returncode}):\n{log[-4000:]}"
        check_store(db, args.trials)
        ok = True
        print(f"ray_node_loss: ok in {time.monotonic() - t_start:.0f} s", flush=True)
    finally:
        stop_started(started, snapshot)  # search / drivers, worker node, head, (S3 server)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"ray_node_loss: logs kept in {work}", file=sys.stderr)


def check_store(db: Path, trials: int) -> None:
    """Exactly `trials` COMPLETE trials, each arch once, and a lost attempt noted on one."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT trial_id, number, state FROM trials ORDER BY number").fetchall()
        attrs: dict[int, dict[str, object]] = {}
        for trial_id, key, value in conn.execute("SELECT trial_id, key, value_json FROM trial_user_attributes"):
            attrs.setdefault(trial_id, {})[key] = json.loads(value)
    complete = [r for r in rows if r[2] == "COMPLETE"]
    keys = [attrs[r[0]]["key"] for r in complete]
    assert len(complete) == trials, f"{len(complete)} COMPLETE trials, expected {trials}: {rows}"
    assert len(set(keys)) == trials, "an arch was evaluated more than once"
    lost = {r[1]: attrs[r[0]]["failed_attempts"] for r in rows if any(a.get("lost") for a in attrs[r[0]].get("failed_attempts", []))}
    assert lost, "no trial records a lost attempt: the node loss was not noticed"
    assert all(r[2] == "COMPLETE" for r in rows if r[1] in lost), "a re-queued trial did not complete"
    print(f"ray_node_loss: {len(complete)} COMPLETE trials, {len(set(keys))} distinct archs, "
          f"re-queued after a lost evaluator: trial(s) {sorted(lost)} {json.dumps(lost)}", flush=True)


if __name__ == "__main__":
    main()
