"""CI: `nasplat run --cluster` on a two-node Ray cluster whose nodes share no disk, with an S3 store.

As on KubeRay or a cloud `ray up` cluster: an S3-compatible server (moto) on 127.0.0.1 holds the
experiment's `storage_path`; the Ray head starts with `--num-cpus=0` (so every training worker,
evaluator and retrain trial runs on the worker node); the worker node runs in its own mount
namespace (`unshare -m --propagation private`) with a tmpfs over the folder that holds the
experiment, its data and its outputs, so it sees none of the driver's files (it has nasplat
installed, as a container image would). Then:

1. `nasplat run EXP --cluster` of a tiny experiment with a `retrain:` section must finish every
   phase; the supernet checkpoint, Ray Train's run, the retrain sweep and both exports'
   `model.onnx` must be objects in the bucket; the study holds its whole budget of trials.
2. The same experiment with another search seed and budget (`--new-study`): the driver is
   SIGKILLed once the search has completed some trials, and `nasplat run` of that file again
   finds the study by its identity and resumes it to the budget with each arch once, training
   nothing again.

Every process is started here and stopped by the id it was started with. Run by `.ci/run`, or
`python .ci/cluster_no_shared_disk.py [--trials 8] [--keep]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
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
sys.path.insert(0, str(ROOT))
from _procs import free_port, ray_env, signal_same, stop_started, tree, wait_for  # noqa: E402

NAME = "cluster_no_shared_disk"
BUCKET = "nasplat-ci"


def say(text: str) -> None:
    print(f"{NAME}: {text}", flush=True)


def write_experiment(folder: Path, address: str, trials: int, *, seed: int) -> Path:
    """The test suite's tiny space and recipe, 2 Ray Train workers, 2 evaluators, a retrain
    section, everything durable under s3://BUCKET/exp."""
    from tests.conftest import TINY_RECIPE, TINY_SPACE

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(TINY_SPACE)
    (folder / "trainer.yaml").write_text(TINY_RECIPE)
    path = folder / f"experiment-seed{seed}.yaml"
    path.write_text(
        "name: nsd\n"
        "space: space.yaml\n"
        "trainer: trainer.yaml\n"
        f"data: {{root: {folder / 'data'}, synthetic: {{train: 6, val: 3, seed: 0}}}}\n"
        f"output_dir: {folder / 'out'}\n"
        f"storage_path: s3://{BUCKET}/exp\n"
        "seed: 0\n"
        f"cluster: {{address: '{address}', num_workers: 2, cpus_per_worker: 1}}\n"
        f"search: {{sampler: nsga2, n_trials: {trials}, num_evaluators: 2, seed: {seed}, max_retries: 3}}\n"
        "retrain: {top_k: 1, epochs: 1, lr: [1.0e-3], concurrent_trials: 1, cpus_per_trial: 1}\n"
    )
    return path


def bucket_keys(s3: object, prefix: str = "exp/") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):  # type: ignore[attr-defined]
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def study_trials(db: Path, seed: int) -> list[tuple[int, str, str]]:
    """(number, state, arch key) of the trials of the study whose search seed is `seed`."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            studies = conn.execute("SELECT study_id, value_json FROM study_user_attributes WHERE key = 'identity'").fetchall()
            ids = [sid for sid, value in studies if json.loads(json.loads(value)).get("seed") == seed]
            if not ids:
                return []
            rows = conn.execute("SELECT trial_id, number, state FROM trials WHERE study_id = ?", (ids[0],)).fetchall()
            keys = dict(conn.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'key'").fetchall())
    except sqlite3.Error:
        return []
    return [(number, state, json.loads(keys.get(tid, '""'))) for tid, number, state in rows]


def complete(db: Path, seed: int) -> int:
    return sum(1 for _, state, _ in study_trials(db, seed) if state == "COMPLETE")


def check_study(db: Path, seed: int, trials: int) -> None:
    rows = study_trials(db, seed)
    done = [r for r in rows if r[1] == "COMPLETE"]
    assert len(done) == trials, f"{len(done)} COMPLETE trials, expected {trials}: {rows}"
    assert len({r[2] for r in done}) == trials, f"an arch was evaluated more than once: {rows}"
    say(f"study (search seed {seed}): {len(done)} COMPLETE trials, {len({r[2] for r in done})} distinct archs, "
        f"{len(rows) - len(done)} other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    t_start = time.monotonic()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit(f"{NAME}: needs root and unshare(1) for a worker node with its own mount namespace")

    work = Path(tempfile.mkdtemp(prefix="nsd", dir="/tmp"))  # short: Ray's socket paths live under it
    hidden = work / "exp"  # the driver's files; the worker node sees an empty tmpfs here
    hidden.mkdir()
    bindir = Path(sys.executable).parent
    ray = shutil.which("ray", path=str(bindir)) or "ray"
    moto = shutil.which("moto_server", path=str(bindir)) or "moto_server"
    s3_port, ray_port = free_port(), free_port()
    address = f"127.0.0.1:{ray_port}"
    env = ray_env(
        ROOT,
        # the standard variables, and nothing nasplat-specific, reach the object store
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
        AWS_ACCESS_KEY_ID="nasplat-ci",
        AWS_SECRET_ACCESS_KEY=secrets.token_hex(16),
        AWS_DEFAULT_REGION="us-east-1",
        # node-local caches inside the hidden folder: the driver's and the worker's are different
        NASPLAT_CACHE_DIR=str(hidden / "cache"),
        NASPLAT_LOG_DIR=str(work / "logs"),
    )
    started: list[subprocess.Popen] = []
    snapshot: list[tuple[int, int]] = []
    ok = False

    def launch(name: str, cmd: list[str]) -> subprocess.Popen:
        log = (work / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    def text(name: str) -> str:
        return (work / f"{name}.log").read_text(errors="replace")

    def finish(name: str, proc: subprocess.Popen, timeout: float) -> str:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{NAME}: `{name}` did not finish in {timeout:.0f} s:\n{text(name)[-4000:]}") from None
        out = text(name)
        assert proc.returncode == 0, f"`{name}` failed (exit {proc.returncode}):\n{out[-6000:]}"
        return out

    try:
        server = launch("s3", [moto, "-H", "127.0.0.1", "-p", str(s3_port)])
        import boto3

        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])

        def s3_up() -> bool:
            if server.poll() is not None:
                return True
            try:
                s3.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_for("the S3 server", s3_up, 60, name=NAME)
        assert server.poll() is None, text("s3")[-3000:]
        s3.create_bucket(Bucket=BUCKET)

        common = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        head = launch("head", [ray, "start", "--head", f"--port={ray_port}", "--num-cpus=0", "--include-dashboard=false",
                               f"--temp-dir={work / 'rh'}", *common])
        wait_for("the Ray head", lambda: "Ray runtime started" in text("head") or head.poll() is not None, 120, name=NAME)
        assert head.poll() is None, text("head")[-3000:]
        # the worker node: its own mount namespace, an empty tmpfs over the driver's folder
        inner = (f"mount -t tmpfs -o size=2g nasplat-worker {hidden} && ls -A {hidden} | wc -l > {work / 'worker-sees'} "
                 f"&& exec {ray} start --address={address} --num-cpus=2 --temp-dir={work / 'rw'} {' '.join(common)}")
        worker = launch("worker", ["unshare", "-m", "--propagation", "private", "sh", "-c", inner])
        wait_for("the Ray worker node", lambda: "Ray runtime started" in text("worker") or worker.poll() is not None,
                 120, name=NAME)
        assert worker.poll() is None, text("worker")[-3000:]
        assert (work / "worker-sees").read_text().strip() == "0", "the worker node sees the driver's folder"
        say(f"S3 on 127.0.0.1:{s3_port}, Ray head (0 CPUs) and worker node (own mount namespace, 2 CPUs) "
            f"at {address} in {time.monotonic() - t_start:.0f} s")

        # --- 1. every phase, on a cluster that shares no disk ------------------------------------
        first = write_experiment(hidden, address, args.trials, seed=0)
        t = time.monotonic()
        out = finish("run1", launch("run1", [sys.executable, "-m", "nasplat", "run", str(first), "--cluster"]), 1500)
        say(f"`nasplat run --cluster` finished every phase in {time.monotonic() - t:.0f} s")
        lines = out.splitlines()
        head_at = next((i for i, ln in enumerate(lines) if re.search(r"cluster .*: 2 node\(s\)", ln)), None)
        assert head_at is not None, f"no per-node preflight table with two nodes:\n{out[-4000:]}"
        table = lines[head_at:head_at + 7]
        rows = [ln for ln in table if re.search(r"\([0-9a-f]{8}\)", ln)]
        assert len(rows) == 2 and all(ln.count(" ok ") >= 2 for ln in rows), "\n".join(table)
        print("\n".join(table), flush=True)
        keys = bucket_keys(s3)
        need = {
            "the supernet checkpoint": r"^exp/checkpoints/latest\.pt$",
            "Ray Train's checkpoints": r"^exp/ray/nsd/checkpoint_[^/]+/latest\.pt$",
            "the retrain sweep": r"^exp/retrain/sweep-[0-9a-f]+/.+/checkpoint_[^/]+/retrain\.pt$",
            "the best export's model.onnx": r"^exp/exports/best/model\.onnx$",
            "the retrained export's model.onnx": r"^exp/exports/retrained-1/model\.onnx$",
            "MLflow artifacts": r"^exp/mlartifacts/.+",
        }
        for what, pattern in need.items():
            found = [k for k in keys if re.match(pattern, k)]
            assert found, f"no object for {what} ({pattern}) in s3://{BUCKET}/exp:\n" + "\n".join(keys[:80])
            say(f"in the bucket: {what}: {found[0]}" + (f" (+{len(found) - 1})" if len(found) > 1 else ""))
        assert not [k for k in keys if ".nasplat-probe" in k], "a preflight probe object was left behind"
        db = hidden / "out" / "study.db"
        check_study(db, 0, args.trials)
        secret = env["AWS_SECRET_ACCESS_KEY"]
        logs = out + "".join(p.read_text(errors="replace") for p in (work / "logs").glob("*") if p.is_file())
        assert secret not in logs, "the object store's secret key reached a log"

        # --- 2. the driver killed mid-search, the same command again ------------------------------
        budget = 3 * args.trials  # a longer search, to be killed part-way
        second = write_experiment(hidden, address, budget, seed=1)
        run2 = launch("run2", [sys.executable, "-m", "nasplat", "run", str(second), "--cluster", "--new-study"])
        target = args.trials // 2
        wait_for(f"{target} completed trials of the second study",
                 lambda: run2.poll() is not None or complete(db, 1) >= target, 900, name=NAME)
        assert run2.poll() is None, "the second run ended before it could be killed:\n" + text("run2")[-4000:]
        driver = tree(run2.pid)
        snapshot += driver
        signal_same([p for p in driver if p[0] == run2.pid], signal.SIGKILL)
        run2.wait(timeout=30)
        killed_at = complete(db, 1)
        say(f"killed the driver (pid {run2.pid}) with {killed_at} of {budget} trials complete")
        wait_for("the killed driver's job to leave the cluster", lambda: not any(
            "_EvaluatorActor" in c for c in _cmdlines()), 60, name=NAME)
        out = finish("run3", launch("run3", [sys.executable, "-m", "nasplat", "run", str(second), "--cluster"]), 1500)
        check_study(db, 1, budget)
        train_log = (hidden / "out" / "train_log.jsonl").read_text().splitlines()
        epochs = [json.loads(ln)["epoch"] for ln in train_log if json.loads(ln)["event"] == "epoch"]
        assert len(epochs) == len(set(epochs)), f"an epoch was trained twice: {epochs}"
        say(f"the rerun resumed the search to {budget} trials, each arch once; training epochs {epochs}, none repeated")
        ok = True
        say(f"ok in {time.monotonic() - t_start:.0f} s")
    finally:
        stop_started(started, snapshot)  # search / drivers, worker node, head, (S3 server)
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"{NAME}: logs kept in {work}", file=sys.stderr)


def _cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


if __name__ == "__main__":
    main()
