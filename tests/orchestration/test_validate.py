"""`nasplat validate`: K searched subnets trained alone on Ray Tune, their order compared with the
search's. The statistics come from the trained subnets: fine-tuned for 0 epochs from the inherited
weights a subnet is evaluated exactly as the search evaluated it, so the search's order is
recovered by construction; trained from scratch, the stand-alone AP is the one each trial
reported last."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasplat.metrics.ranking import kendall_tau
from nasplat.orchestration.validate import ValidatedSubnet, summarize_validation
from nasplat.space import Arch

ROOT = Path(__file__).resolve().parents[2]
SEARCH = "search: {sampler: random, n_trials: 5, objective: wholebody, num_evaluators: 1, seed: 3}\n"


def _nasplat(*args: str, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nasplat", *args], env=env, capture_output=True, text=True, **kw)


def _status(path: Path) -> dict:
    res = _nasplat("status", str(path), "--json", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _subnet(trial: int, inherited: float, standalone: float, chosen: bool = False) -> ValidatedSubnet:
    parts = ("body", "foot", "face", "hand", "wholebody")
    return ValidatedSubnet(study_trial=trial, arch=None, gflops=0.1,  # type: ignore[arg-type]
                           inherited={p: inherited for p in parts}, standalone={p: standalone for p in parts},
                           chosen=chosen)


def test_the_statistics_follow_the_standalone_order() -> None:
    same = [_subnet(i, 0.1 * i, 0.2 * i, chosen=i == 4) for i in range(5)]
    v = summarize_validation("s", "st", "scratch", 1, same)
    assert v.parts["wholebody"]["kendall_tau"] == pytest.approx(1.0) and v.regret == 0 and v.top3_overlap == 1
    reversed_ = [_subnet(i, 0.1 * i, 0.5 - 0.1 * i, chosen=i == 4) for i in range(5)]
    v = summarize_validation("s", "st", "scratch", 1, reversed_)
    assert v.parts["wholebody"]["kendall_tau"] == pytest.approx(-1.0)
    assert v.parts["hand"]["spearman_rho"] == pytest.approx(-1.0)
    assert v.regret == pytest.approx(0.4) and v.top3_overlap == pytest.approx(1 / 3)
    low, high = v.parts["wholebody"]["kendall_tau_ci"]
    assert low <= -0.99 and high <= -0.99  # every resample of a reversed order is reversed


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A tiny experiment with a trained supernet and a finished 5-trial search (in process)."""
    import torch

    from nasplat.config import load_experiment
    from nasplat.orchestration.run import run_search
    from nasplat.orchestration.training import train_supernet
    from tests.conftest import write_tiny_experiment

    threads = torch.get_num_threads()
    path = write_tiny_experiment(tmp_path_factory.mktemp("validate"), tiny_data)
    path.write_text(path.read_text() + SEARCH)
    experiment = load_experiment(path)
    train_supernet(experiment, mlflow=False, evaluate=False)
    run_search(experiment, local=True, track=False)
    torch.set_num_threads(threads)
    return path


def test_bad_input_is_one_line_and_writes_nothing(searched: Path) -> None:
    from nasplat.config import load_experiment
    from nasplat.errors import ConfigError
    from nasplat.orchestration.validate import plan_validation

    out = searched.parent / "out"
    before = _status(searched)
    res = _nasplat("validate", str(searched), "--subnets", "6", "--no-mlflow", timeout=120)  # 5 trials searched
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert str(searched) in line and "--subnets" in line, line
    experiment = load_experiment(searched)
    for kw, key in (({"k": 2}, "--subnets"), ({"init": "random"}, "--init"), ({"epochs": 0}, "--epochs"),
                    ({"epochs": -1, "init": "inherited"}, "--epochs")):
        with pytest.raises(ConfigError) as e:
            plan_validation(experiment, **{"k": 3, **kw})
        assert e.value.key == key
    assert not (out / "validate").exists() and not (out / "mlflow.db").exists()
    assert _status(searched) == before


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_validate_recovers_the_order_and_reports_the_trained_subnets(searched: Path) -> None:
    out = searched.parent / "out"
    # 0 epochs from the inherited weights: each subnet evaluated as the search evaluated it
    res = _nasplat("validate", str(searched), "--subnets", "3", "--init", "inherited", "--epochs", "0", "--no-mlflow",
                   timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Kendall tau" in res.stdout and "chosen" in res.stdout
    status = _status(searched)
    v = status["validation"]
    assert v["k"] == 3 and v["init"] == "inherited" and v["epochs"] == 0 and v["regret"] == 0
    from nasplat.config import load_experiment
    from nasplat.orchestration.validate import stored_validation
    from nasplat.store import load_current_study

    experiment = load_experiment(searched)
    store = load_current_study(experiment.storage_url, experiment.name)
    stored = stored_validation(store)
    assert stored is not None and stored.subnets[0].chosen and stored.subnets[0].study_trial == status["best"]["trial"]
    trials = {t.number: t for t in store.trials()}
    for s in stored.subnets:  # the search's own numbers, recovered by the stand-alone evaluation
        assert s.inherited["wholebody"] == trials[s.study_trial].evaluation.ap
        assert s.standalone == pytest.approx(s.inherited, abs=1e-6), s
    expected = kendall_tau([s.inherited["wholebody"] for s in stored.subnets],
                           [s.inherited["wholebody"] for s in stored.subnets])
    tau = v["parts"]["wholebody"]["kendall_tau"]
    if math.isnan(expected):  # the tiny supernet's subnets may all score alike
        assert math.isnan(tau)
    else:
        assert tau == pytest.approx(1.0)

    # from scratch, 1 epoch, logged to MLflow: the stand-alone AP is what each trial reported last
    res = _nasplat("validate", str(searched), "--subnets", "3", "--epochs", "1", timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    stored = stored_validation(load_current_study(experiment.storage_url, experiment.name))
    assert stored is not None and stored.init == "scratch" and stored.epochs == 1
    (sweep,) = [d for d in (out / "validate").iterdir() if d.is_dir() and d.name == stored.sweep]
    reported = {}
    for trial in (d for d in sweep.iterdir() if d.is_dir()):
        last = json.loads((trial / "result.json").read_text().splitlines()[-1])
        assert last["done"] == 1 and last["epoch"] == 1
        reported[last["config"]["subnet"]["study_trial"]] = last
    assert sorted(reported) == sorted(s.study_trial for s in stored.subnets)
    for s in stored.subnets:
        assert s.standalone == {p: reported[s.study_trial][f"{p}_ap"] for p in s.standalone}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`nasplat.role` = 'validate'")
    assert run.data.params["k"] == "3" and run.data.tags["nasplat.sweep"] == stored.sweep
    assert {"validation.json", "validation.png", "validation.html"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.metrics["regret"] == pytest.approx(stored.regret)

    # the same command again reads the finished sweep: no trial runs, no second MLflow run
    state = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file()}
    res = _nasplat("validate", str(searched), "--subnets", "3", "--epochs", "1", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file()} == state
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.`nasplat.role` = 'validate'")) == 1
    assert "regret" in _nasplat("status", str(searched), timeout=120).stdout
