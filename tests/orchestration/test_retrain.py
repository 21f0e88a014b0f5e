"""The retrain phase on Ray Tune: `nasplat run` trains, searches, retrains and records; a sweep
killed with SIGKILL mid-way resumes with the same command, no finished epoch (let alone a
finished trial) run again."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SEARCH = "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: analytic, num_evaluators: 1}\n"


def _nasplat(*args: str, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nasplat", *args], env=env, capture_output=True, text=True, **kw)


def _iterations(sweep: Path) -> dict[str, list[int]]:
    """Trial directory -> the training iterations its result.json holds, in order."""
    out = {}
    for d in sorted(p for p in sweep.iterdir() if p.is_dir()):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").is_file() else []
        out[d.name] = [json.loads(line)["training_iteration"] for line in lines if line.strip()]
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_run_retrains_records_and_exports(tmp_path: Path, tiny_experiment) -> None:
    path = tiny_experiment(tmp_path / "run")
    path.write_text(path.read_text() + SEARCH + "retrain: {top_k: 1, epochs: 2, concurrent_trials: 1}\n")
    res = _nasplat("run", str(path), timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3/4" in res.stderr and "AP before" in res.stderr

    status = json.loads(_nasplat("status", str(path), "--json", timeout=120).stdout.strip().splitlines()[-1])
    assert status["phase"] == "exported"
    best = status["retrain"]["best"]
    assert best["rank"] == 1 and best["epochs"] == 2 and status["retrain"]["trials"] == 1
    assert set(best["before"]) == set(best["after"]) == {"body", "foot", "face", "hand", "wholebody"}
    assert best["study_trial"] == status["best"]["trial"]  # the search's best subnet under the budget

    # the export holds the retrained weights, not the supernet's (BN statistics are recalibrated)
    from nasplat.subnet import load_exported

    out = tmp_path / "run" / "out"
    export = out / "exports" / "retrained-1"
    net = load_exported(export)
    info = json.loads((export / "retrain.json").read_text())
    assert [row["epoch"] for row in info["history"]] == [1.0, 2.0]
    sweep = Path(status["retrain"]["path"])
    (trial,) = [d for d in sweep.iterdir() if d.is_dir()]
    (ckpt,) = sorted(trial.glob("checkpoint_*"))
    retrained = torch.load(ckpt / "retrain.pt", weights_only=True)["model"]
    inherited = torch.load(out / "exports" / "best" / "model.pt", weights_only=True)
    exported = net.state_dict()
    weights = [k for k, v in retrained.items() if k.endswith(".weight") and v.dim() == 4]
    assert all(torch.equal(exported[k], retrained[k]) for k in weights)
    assert any(not torch.equal(inherited[k], retrained[k]) for k in weights)

    # MLflow: the sweep's run nested under the search run, one nested run per trial with the arch
    # choices, the learning rate and per-epoch per-part AP
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`nasplat.role` = 'retrain-trial'")
    assert len(runs) == 1
    run = runs[0]
    assert "body.resolution" in run.data.params and float(run.data.params["lr"]) == 1e-3
    history = client.get_metric_history(run.info.run_id, "wholebody_ap")
    assert sorted(m.step for m in history) == [1, 2]
    assert "face_ap" in run.data.metrics and "hand_ap_before" in run.data.metrics
    sweep_run = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert sweep_run.data.tags["nasplat.role"] == "retrain"
    assert client.get_run(sweep_run.data.tags["mlflow.parentRunId"]).data.tags["nasplat.role"] == "search"

    # a rerun of the finished run: the same exports, nothing rewritten, no new model version
    versions = {v.version for v in client.search_model_versions("name='tiny'")}
    assert len(versions) == 2  # exports/retrained-1 and exports/best
    stamps = {p: p.stat().st_mtime_ns for p in (export / "model.pt", out / "exports" / "best" / "model.pt")}
    res = _nasplat("run", str(path), timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {v.version for v in client.search_model_versions("name='tiny'")} == versions
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    # a finished phase with nothing to do changes no state: `nasplat retrain` leaves the phase at
    # "exported" and the exports as they are, and starts no Tune sweep
    state_files = {p: p.stat().st_mtime_ns for p in sweep.glob("*.json")}
    for args in (("retrain", str(path)),):  # a finished search is read, not written: tests/orchestration/test_driver.py
        res = _nasplat(*args, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        status = json.loads(_nasplat("status", str(path), "--json", timeout=120).stdout.strip().splitlines()[-1])
        assert status["phase"] == "exported", args
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*.json")} == state_files

    # the MLflow store deleted: a rerun logs the retrain sweep's runs again (the trial's too)
    (out / "mlflow.db").unlink()
    shutil.rmtree(out / "mlartifacts", ignore_errors=True)
    res = _nasplat("run", str(path), timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`nasplat.role` = 'retrain-trial'")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "wholebody_ap")) == [1, 2]
    assert "hand_ap_before" in run.data.metrics and float(run.data.params["lr"]) == 1e-3
    assert json.loads(_nasplat("status", str(path), "--json", timeout=120).stdout.strip().splitlines()[-1])["phase"] == "exported"

    # a changed retrain: section is a new sweep; the earlier sweep's export is kept, by its name
    before = (export / "model.pt").read_bytes()
    path.write_text(path.read_text().replace("epochs: 2,", "epochs: 1,"))
    res = _nasplat("retrain", str(path), "--no-mlflow", timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    new = json.loads((export / "retrain.json").read_text())
    assert new["sweep"] != info["sweep"] and [row["epoch"] for row in new["history"]] == [1.0]
    kept = out / "exports" / info["sweep"] / "retrained-1"
    assert (kept / "model.pt").read_bytes() == before
    assert json.loads((kept / "retrain.json").read_text())["sweep"] == info["sweep"]
    assert f"kept in {kept}" in res.stderr


EPOCHS = 5  # enough that the second trial cannot finish between its first epoch's record and the kill


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_retrain_resumes_after_sigkill(tmp_path: Path, tiny_experiment) -> None:
    from nasplat.config import load_experiment
    from nasplat.orchestration.run import run_search
    from nasplat.orchestration.training import train_supernet

    path = tiny_experiment(tmp_path / "kill")
    path.write_text(path.read_text() + SEARCH + f"retrain: {{top_k: 2, epochs: {EPOCHS}, concurrent_trials: 1}}\n")
    experiment = load_experiment(path)
    threads = torch.get_num_threads()
    train_supernet(experiment, mlflow=False, evaluate=False)
    torch.set_num_threads(threads)
    run_search(experiment, local=True, track=False)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "nasplat", "retrain", str(path), "--no-mlflow"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # a reader thread hands over every line as it is written (select on a buffered pipe can sit on
    # lines already read into Python's buffer, and the trial runs on meanwhile)
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 400
    # Trials run one at a time: once the second subnet reports its first epoch, the first trial has
    # finished and the second is part-way through. Kill then (after Tune's loop saved its state).
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            line = ""
        seen.append(line)
        if "retrain subnet 2" in line and "epoch 1 " in line:
            break
        assert proc.poll() is None or not lines.empty(), "".join(seen)[-3000:]
    else:
        pytest.fail("the second trial reported no epoch in time:\n" + "".join(seen)[-3000:])
    # kill once the sweep's files hold the second trial's first epoch (Tune's controller writes a
    # result after the trial reported it: a fixed second was not always enough on a fast machine)
    sweep = next((tmp_path / "kill" / "out" / "retrain").glob("sweep-*"))
    written = time.monotonic() + 60
    while time.monotonic() < written and min(map(len, _iterations(sweep).values()), default=0) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _iterations(sweep)
    first, second = sorted(before.values(), key=len, reverse=True)
    full = list(range(1, EPOCHS + 1))
    assert first == full and second == full[:len(second)] and 1 <= len(second) < EPOCHS  # killed part-way

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    after = _iterations(sweep)
    assert set(after) == set(before)  # no trial was started anew
    assert list(after.values()) == [full, full]  # no epoch repeated, trial 2 finished
    assert "retrain subnet 1" not in res.stderr  # the finished trial did not run again
    status = json.loads(_nasplat("status", str(path), "--json", timeout=120).stdout.strip().splitlines()[-1])
    assert status["phase"] == "retrained" and status["retrain"]["trials"] == 2
    assert sorted(s["rank"] for s in status["retrain"]["subnets"]) == [1, 2]
    assert all((tmp_path / "kill" / "out" / "exports" / f"retrained-{k}" / "model.pt").is_file() for k in (1, 2))


def _newest_state_checkpoint(sweep: Path, trial_dir: str) -> int | None:
    """The checkpoint that the sweep's newest state file (by name, as Tune picks it) resumes the
    trial in `trial_dir` from; None when that state is unreadable or does not hold the trial."""
    from nasplat.orchestration.sweeps import _trial_checkpoint

    states = sorted(sweep.glob("experiment_state-*.json"))
    try:
        state = json.loads(states[-1].read_text()) if states else None
    except ValueError:
        return None
    return _trial_checkpoint(state, trial_dir) if isinstance(state, dict) else None


def _kept_copy_checkpoint(sweep: Path, trial_dir: str) -> int | None:
    """The checkpoint that the whole state copy kept beside `sweep` (the one the pruner last wrote)
    resumes the trial in `trial_dir` from; None before any copy holds the trial."""
    import base64

    from nasplat.orchestration.sweeps import _state_copy_path, _trial_checkpoint

    try:
        files = json.loads(_state_copy_path(sweep).read_text())
    except OSError:
        return None
    states = sorted(n for n in files if n.startswith("experiment_state-"))
    return _trial_checkpoint(json.loads(base64.b64decode(files[states[-1]])), trial_dir) if states else None


def _cut_off(path: Path) -> None:
    """What a kill while Tune's syncer rewrites a state file in place leaves."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_sweep_killed_at_any_checkpoint_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the sweep's storage taken right after each checkpoint is registered (where Tune's
    own pruning deleted the checkpoint that the saved state still names, and where Tune's syncer
    may be rewriting the state files) restores and finishes; on the way the pruner has deleted
    every checkpoint older than the one its kept state copy names, and that one is there, and it
    leaves one checkpoint per trial at the end; a finished sweep whose state files were cut off
    mid-write restores from the copy kept beside it and runs nothing again."""
    import ray
    from ray import tune

    from nasplat.orchestration.cluster import init_ray
    from nasplat.orchestration.sweeps import (
        CheckpointPruner,
        _state_copy_path,
        _whole,
        checkpoint_config,
        prune_trial_checkpoints,
        restore_whole_state,
    )

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # as run_retrain sets it
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    steps = 4

    def trainable(config: dict) -> None:  # noqa: ARG001 - Tune's signature
        import json as _json
        import tempfile as _tempfile
        from pathlib import Path as _Path

        from ray import tune as _tune

        start = 0
        resumed = _tune.get_checkpoint()
        if resumed is not None:
            with resumed.as_directory() as d:
                start = _json.loads((_Path(d) / "state.json").read_text())["step"]
        for step in range(start + 1, steps + 1):
            with _tempfile.TemporaryDirectory() as d:
                (_Path(d) / "state.json").write_text(_json.dumps({"step": step}))
                _tune.report({"step": step}, checkpoint=_tune.Checkpoint.from_directory(d))

    store = tmp_path / "store"
    copies: list[Path] = []
    # per registration: the checkpoint indices on storage and the one the pruner's state copy names
    # (how far that copy lags depends on Tune's asynchronous syncer, so no count is fixed here)
    seen: list[tuple[list[int], int | None]] = []
    from ray.train._internal.checkpoint_manager import _CheckpointManager

    register = _CheckpointManager.register_checkpoint

    def register_then_kill(self, result) -> None:  # noqa: ANN001 - what a SIGKILL right now leaves on storage
        register(self, result)
        trial_dir = Path(result.checkpoint.path).parent
        if trial_dir.parent == store / "sweep":  # not again in a restored copy
            present = sorted(int(d.name.removeprefix("checkpoint_")) for d in trial_dir.glob("checkpoint_*"))
            kept = _kept_copy_checkpoint(trial_dir.parent, trial_dir.name)
            seen.append((present, kept))
            copy = tmp_path / f"kill{len(copies)}"
            shutil.copytree(store, copy)  # the sweep and the state copy beside it
            copies.append(copy / "sweep")

    def rows(trial: Path) -> list[int]:
        return [json.loads(ln)["step"] for ln in (trial / "result.json").read_text().splitlines() if ln.strip()]

    def restore(sweep: Path) -> tune.ResultGrid:
        ray.shutdown()  # a new process after the kill: a new Ray session (Tune stages its files per session)
        init_ray(None, num_cpus=1)
        restored = tune.Tuner.restore(str(sweep), trainable=trainable, resume_errored=True).fit()
        assert not restored.errors, restored.errors
        return restored

    monkeypatch.setattr(_CheckpointManager, "register_checkpoint", register_then_kill)
    init_ray(None, num_cpus=1)
    try:
        tuner = tune.Tuner(trainable, run_config=tune.RunConfig(
            name="sweep", storage_path=str(store), verbose=0, checkpoint_config=checkpoint_config(),
            callbacks=[CheckpointPruner()], failure_config=tune.FailureConfig(max_failures=0)))
        assert not tuner.fit().errors
        (trial_dir,) = [d for d in (store / "sweep").iterdir() if d.is_dir()]
        prune_trial_checkpoints(trial_dir)
        assert [d.name for d in trial_dir.glob("checkpoint_*")] == [f"checkpoint_{steps - 1:06d}"]
        assert len(copies) == steps
        for present, kept in seen:
            assert kept is None or (kept in present and min(present) == kept), seen
        for copy in copies:
            cut = not all(_whole(f.name, f.read_bytes()) for f in copy.iterdir() if f.suffix in (".json", ".pkl"))
            if not restore_whole_state(copy):
                # cut off before any whole copy was kept: nothing to restore, a new sweep starts
                assert cut and not _state_copy_path(copy).exists()
                continue
            resumed_from = _newest_state_checkpoint(copy, trial_dir.name)  # checkpoint_{i} holds step i + 1
            (result,) = list(restore(copy))
            copied_trial = copy / trial_dir.name  # (Tune may add folders of its own beside it)
            if _newest_state_checkpoint(copy, trial_dir.name) is None:
                # the kill came before any saved state held the trial: Tune runs it anew
                assert result.metrics["step"] == steps
                continue
            assert Path(result.path) == copied_trial  # the trial resumed in its own folder, not a new one
            got = rows(copied_trial)
            # every step after the checkpoint it resumed from ran and was logged; the rows before it
            # are what Tune's asynchronous syncer had copied to storage at the kill (it can lag
            # behind the checkpoint, as Tune's own result.json does after a real kill)
            after = set(range(1 if resumed_from is None else resumed_from + 2, steps + 1))
            assert result.metrics["step"] == steps and after <= set(got) <= set(range(1, steps + 1)), (resumed_from, got)
            # the epoch whose result was logged but not yet in the saved state runs again, no other
            # (an older one when the state was cut off and the copy kept at an earlier step came back)
            assert cut or len(got) <= steps + 1, got
        done = rows(trial_dir)
        for prefix in ("experiment_state-", "basic-variant-state-"):
            copy = tmp_path / f"cut-{prefix}"
            shutil.copytree(store, copy)
            (state,) = (copy / "sweep").glob(f"{prefix}*")
            _cut_off(state)
            assert restore_whole_state(copy / "sweep") and _whole(state.name, state.read_bytes())
            (result,) = list(restore(copy / "sweep"))
            assert Path(result.path) == copy / "sweep" / trial_dir.name and rows(Path(result.path)) == done  # nothing ran again
    finally:
        ray.shutdown()


def test_state_files_cut_off_without_a_whole_copy_drop_their_session(tmp_path: Path) -> None:
    """A sweep state cut off before any whole copy was kept is no sweep to restore: that Tune
    session's files go (an older session's stay), and with no sweep state left the phase starts
    a new sweep instead of Tune's empty one; a whole state is copied beside the sweep."""
    import pickle

    from nasplat.orchestration.sweeps import _keep_whole_state, _state_copy_path, _whole, restore_whole_state

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    old, new = "2026-12-01_10-00-00", "2026-12-02_10-00-00"
    (sweep / "tuner.pkl").write_bytes(pickle.dumps({"param_space": [1, 2]}))
    (sweep / f"experiment_state-{old}.json").write_text(json.dumps({"trial_data": []}))
    (sweep / f"basic-variant-state-{old}.json").write_bytes(pickle.dumps({"n": 1}))
    (sweep / f"experiment_state-{new}.json").write_text(json.dumps({"trial_data": [["{}", "{}"]]}))
    (sweep / f"basic-variant-state-{new}.json").write_bytes(pickle.dumps({"n": 2}))
    assert all(_whole(p.name, p.read_bytes()) for p in sweep.iterdir())
    assert restore_whole_state(sweep)  # all whole: nothing changes
    assert len(list(sweep.iterdir())) == 5

    _cut_off(sweep / f"basic-variant-state-{new}.json")
    assert not _whole(f"basic-variant-state-{new}.json", (sweep / f"basic-variant-state-{new}.json").read_bytes())
    assert _keep_whole_state(sweep) is None and not _state_copy_path(sweep).exists()  # no copy of a cut-off state
    assert restore_whole_state(sweep)
    assert sorted(p.name for p in sweep.iterdir()) == [f"basic-variant-state-{old}.json", f"experiment_state-{old}.json", "tuner.pkl"]

    assert _keep_whole_state(sweep) == {"trial_data": []} and _state_copy_path(sweep).is_file()
    _cut_off(sweep / "tuner.pkl")
    _cut_off(sweep / f"experiment_state-{old}.json")
    assert restore_whole_state(sweep)  # both put back from the copy
    assert pickle.loads((sweep / "tuner.pkl").read_bytes()) == {"param_space": [1, 2]}

    _state_copy_path(sweep).unlink()
    _cut_off(sweep / f"experiment_state-{old}.json")
    assert not restore_whole_state(sweep)  # no copy, no whole sweep state: a new sweep
    assert not list(sweep.glob("experiment_state-*"))
