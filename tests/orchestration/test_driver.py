from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nasplat.errors import BudgetError, NasplatError, StoreError
from nasplat.config import EvolutionConfig, PredictorConfig, SearchConfig
from nasplat.orchestration import driver
from nasplat.search import SEARCHERS, AnalyticFactory, AnalyticObjective, Objective
from nasplat.space import Arch, load_space
from nasplat.store import load_current_study

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "search_spaces" / "cpu_small.yaml"


def _settings(tmp_path: Path, sampler: str, n: int, name: str = "db") -> tuple[SearchConfig, str]:
    return SearchConfig(
        sampler=sampler,
        n_trials=n,
        budget_gflops=0.1,
        seed=2,
        objective="analytic",
        evolution=EvolutionConfig(population=6, top_k=2, mutations=3, crossovers=3),
    ), f"sqlite:///{tmp_path}/{name}.db"


def drive(space, settings, factory):  # noqa: ANN001, ANN201 - the driver on a (search section, store URL) pair
    search, url = settings
    return driver.drive(space, search, factory, study="exp", storage_url=url)


def replace(settings, **changes):  # noqa: ANN001, ANN201
    search, url = settings
    return dataclasses.replace(search, **changes), url


def _completed_keys(result) -> list[str]:  # noqa: ANN001
    done = [t for t in result.trials if t.state == "COMPLETE"]
    return [t.key for t in sorted(done, key=lambda t: t.tell_seq)]


@pytest.mark.parametrize("sampler", sorted(SEARCHERS))
def test_resume_continues_the_same_sequence(tmp_path: Path, sampler: str) -> None:
    space = load_space(SPACE)
    factory = AnalyticFactory(str(SPACE))
    whole = drive(space, _settings(tmp_path, sampler, 16, "whole"), factory)
    first = drive(space, _settings(tmp_path, sampler, 7, "split"), factory)
    second = drive(space, _settings(tmp_path, sampler, 16, "split"), factory)
    assert first.n_complete == 7 and second.n_complete == 16
    assert _completed_keys(second) == _completed_keys(whole)
    assert len(set(_completed_keys(second))) == 16
    budget = 0.1
    assert all(t.evaluation.total_gflops <= budget for t in second.trials if t.evaluation)


@pytest.mark.parametrize("sampler", ["random", "evolution"])
def test_a_resumed_search_refits_the_predictor_from_the_store_and_makes_the_same_choices(tmp_path: Path,
                                                                                       sampler: str) -> None:
    """Stopped after 9 trials and run again to 16, a search with a predictor evaluates the same
    archs in the same order, with the same predictions and the same screened-out candidates, as
    one run to 16: the resumed searcher's predictor was refitted from the stored trials alone."""
    space = load_space(SPACE)
    factory = AnalyticFactory(str(SPACE))
    predictor = PredictorConfig(kind="mlp_ensemble", warmup=5, screen=4)
    whole = drive(space, replace(_settings(tmp_path, sampler, 16, "whole"), predictor=predictor), factory)
    first = drive(space, replace(_settings(tmp_path, sampler, 9, "split"), predictor=predictor), factory)
    second = drive(space, replace(_settings(tmp_path, sampler, 16, "split"), predictor=predictor), factory)
    assert first.n_complete == 9 and _completed_keys(second) == _completed_keys(whole)

    def predictions(result):  # noqa: ANN001, ANN202
        return [(t.prediction.ap, t.prediction.std, t.prediction.fitted_on, [a.key() for a, _, _ in t.prediction.screened_out])
                if t.prediction else None for t in sorted(result.trials, key=lambda t: t.number)]

    assert predictions(second) == predictions(whole)
    picked = [t for t in second.trials if t.prediction is not None]
    assert len(picked) == 16 - 5 and all(len(t.prediction.screened_out) == 3 for t in picked)
    # predicted values are never results: the picks' evaluations are the objective's own
    objective = AnalyticObjective(space)
    assert all(t.evaluation.ap == objective.evaluate(t.arch).ap for t in picked)
    store = load_current_study(_settings(tmp_path, sampler, 16, "split")[1], "exp")
    summary = store.attrs()["predictor"]
    assert summary["picked"] == summary["evaluated"] == 11 and summary["screened_out"] == 33
    assert summary["kind"] == "mlp_ensemble" and -1 <= summary["kendall_tau"] <= 1 and summary["rmse"] > 0


def test_a_changed_predictor_is_another_study(tmp_path: Path) -> None:
    space = load_space(SPACE)
    factory = AnalyticFactory(str(SPACE))
    settings = replace(_settings(tmp_path, "random", 6), predictor=PredictorConfig(kind="gp", warmup=3))
    drive(space, settings, factory)
    with pytest.raises(StoreError, match="predictor settings"):
        drive(space, replace(settings, predictor=PredictorConfig(kind="gp", warmup=4)), factory)


class _Flaky(Objective):
    """Fails the first attempt of every arch whose key hashes odd, and always fails one arch."""

    def __init__(self) -> None:
        self.inner = AnalyticObjective(load_space(SPACE))
        self.attempts: dict[str, int] = {}
        self.doomed: str | None = None

    def evaluate(self, arch: Arch):  # noqa: ANN201
        key = arch.key()
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.doomed is None:
            self.doomed = key
        if key == self.doomed or (self.attempts[key] == 1 and hash(key) % 2):
            raise RuntimeError("evaluator hiccup")
        return self.inner.evaluate(arch)


def test_failed_evaluations_are_retried_then_marked_failed(tmp_path: Path) -> None:
    space = load_space(SPACE)
    flaky = _Flaky()
    settings = replace(_settings(tmp_path, "random", 8), max_retries=2)
    result = drive(space, settings, lambda: flaky)
    assert result.n_complete == 8
    assert result.n_failed == 1
    failed = [t for t in result.trials if t.outcome == "failed"]
    assert failed[0].key == flaky.doomed and flaky.attempts[flaky.doomed] == 3
    assert "evaluator hiccup" in (failed[0].error or "")
    # each retried attempt is noted on its trial: the doomed one twice, a hiccup once
    notes = {t.number: t.user_attrs.get("failed_attempts", []) for t in load_current_study(settings[1], "exp").study.get_trials()}
    assert [a["lost"] for a in notes[failed[0].number]] == [False, False]
    assert all("evaluator hiccup" in a["error"] for a in notes[failed[0].number])
    hiccups = [t for t in result.trials if t.state == "COMPLETE" and flaky.attempts[t.key] == 2]
    assert all(len(notes[t.number]) == 1 for t in hiccups)
    assert all(notes[t.number] == [] for t in result.trials if t.state == "COMPLETE" and flaky.attempts[t.key] == 1)


def test_too_many_failures_stop_the_search(tmp_path: Path) -> None:
    class Broken(Objective):
        def evaluate(self, arch: Arch):  # noqa: ANN201
            raise RuntimeError("no supernet")

    settings = replace(_settings(tmp_path, "random", 5), max_retries=0, max_failures=2)
    with pytest.raises(NasplatError, match="3 trials failed for good"):
        drive(load_space(SPACE), settings, Broken)


def test_budget_below_min_is_rejected_before_anything_is_stored(tmp_path: Path) -> None:
    settings = replace(_settings(tmp_path, "nsga2", 5), budget_gflops=1e-4)
    with pytest.raises(BudgetError):
        drive(load_space(SPACE), settings, AnalyticFactory(str(SPACE)))
    assert not (tmp_path / "db.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("executor, kills", [("local", 5), pytest.param("ray", 2, marks=pytest.mark.ray)])
def test_sigkill_at_random_moments_then_resume(tmp_path: Path, executor: str, kills: int) -> None:
    """Kill the driver (serial, or with two Ray evaluator actors) with SIGKILL several times, at
    least once during an evaluation; the re-run re-queues what the kills interrupted and finishes
    with exactly the budget of completed trials, each arch once, the completed ones unchanged, in
    the uninterrupted order (serially; two evaluators finish in a timing-dependent order)."""
    n_trials, work = 40, 300  # about 45 ms per evaluation on an idle core: a kill often lands in one
    url = f"sqlite:///{tmp_path}/kill.db"
    child = [sys.executable, str(Path(__file__).parent / "_kill_child.py"), str(SPACE), url, "evolution", str(n_trials),
             str(work), executor]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = np.random.default_rng(0)
    snapshots: list[dict[int, tuple[str, tuple[float, ...]]]] = []
    killed_runs = 0
    for _ in range(kills):
        proc = subprocess.Popen(child, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        # kill at a random moment after this run's first completed (stored) trial (start-up takes 2 s on an
        # idle machine and much longer on a loaded one, so a fixed delay may kill it before any trial)
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline(), "the child finished no trial in 120 s"
        time.sleep(float(rng.uniform(0.0, 1.0)))
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        if rc == 0:  # on an idle machine a late run may finish its few remaining trials first
            break
        assert rc == -signal.SIGKILL  # killed, not failed on its own
        killed_runs += 1
        store = load_current_study(url, "kill")
        if store is None:
            continue
        snapshots.append(
            {t.number: (t.key, tuple(t.evaluation.to_dict()["metrics"]["wholebody"].values())) for t in store.trials() if t.evaluation}
        )
    final = subprocess.run(child, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    store = load_current_study(url, "kill")
    trials = store.trials()
    done = [t for t in trials if t.state == "COMPLETE"]
    assert len(done) == n_trials
    assert len({t.key for t in done}) == n_trials
    now = {t.number: (t.key, tuple(t.evaluation.to_dict()["metrics"]["wholebody"].values())) for t in done}
    assert killed_runs > 0 and sum(len(s) for s in snapshots) > 0, "no kill came after a completed trial"
    for snap in snapshots:
        assert all(now[n] == v for n, v in snap.items())
    assert all(t.state in ("COMPLETE", "FAIL") for t in trials)
    killed = [t for t in trials if t.outcome == "killed"]
    if executor != "local":
        return  # the Ray driver: budget, each arch once and unchanged completed trials are what is asserted
    assert killed, "no kill interrupted an evaluation"
    requeued = {t.requeued_from for t in trials if t.requeued_from is not None}
    assert requeued and requeued <= {t.number for t in killed}
    assert all(any(d.key == t.key for d in done) for t in killed)  # every interrupted arch was evaluated after all
    # same order of completed archs as one uninterrupted run
    ref_url = f"sqlite:///{tmp_path}/ref.db"
    ref_child = child.copy()
    ref_child[3] = ref_url
    subprocess.run(ref_child, env=env, capture_output=True, text=True, timeout=300, check=True)
    ref = load_current_study(ref_url, "kill").trials()
    order = lambda ts: [t.key for t in sorted((t for t in ts if t.state == "COMPLETE"), key=lambda t: t.tell_seq)]  # noqa: E731
    assert order(trials) == order(ref)


def test_the_best_of_tied_subnets_is_the_cheapest_and_on_the_front() -> None:
    """With tied whole-body AP (0.0 on the tiny run), the chosen subnet is the cheaper one and on
    the Pareto front (it was trial 0 at 0.0031 GFLOPs while the front held trial 1 at 0.0017)."""
    from types import SimpleNamespace

    from nasplat.orchestration.driver import summarize
    from nasplat.orchestration.retrain import top_subnets
    from nasplat.search.evaluation import Evaluation
    from nasplat.store import StoredTrial

    space = load_space(SPACE)
    archs = [space.max_arch(), space.min_arch(), space.sample(__import__("numpy").random.default_rng(0))]

    def trial(n: int, ap: float, gflops: float) -> StoredTrial:
        ev = Evaluation(metrics={p: {"AP": ap, "AR": ap} for p in ("body", "foot", "face", "hand", "wholebody")},
                        gflops={"body": gflops, "face": 0.0, "hand": 0.0, "total": gflops}, params=1)
        return StoredTrial(n, "COMPLETE", archs[n], ev, n, n, None, None, None)

    trials = [trial(0, 0.0, 0.0031), trial(1, 0.0, 0.0017), trial(2, 0.0, 0.0017)]
    result = summarize(SimpleNamespace(study_name="s", display_url="u"), trials)
    assert result.best.number == 1 and result.best.number in {t.number for t in result.pareto}
    assert [t.number for t in top_subnets(trials, 3, None)] == [1, 2, 0]


def test_a_search_under_part_budgets_completes_within_each(tmp_path: Path) -> None:
    """Every completed trial of a search with part budgets is within each by its stored
    evaluation, and the retrain picks (`top_subnets`) hold a trial to the part budgets too."""
    from nasplat.orchestration.retrain import top_subnets
    from nasplat.search import within_budget

    space = load_space(SPACE)
    search = SearchConfig(sampler="random", n_trials=6, budget_gflops={"body": 0.02, "hand": 0.015}, seed=0,
                          objective="analytic")
    url = f"sqlite:///{tmp_path}/parts.db"
    result = driver.drive(space, search, AnalyticFactory(str(SPACE)), study="exp", storage_url=url)
    parts = load_current_study(url, "exp").identity.part_budgets
    done = [t for t in result.trials if t.evaluation is not None]
    assert parts == {"body": 0.02, "hand": 0.015} and len(done) == 6
    assert all(within_budget(t.evaluation.gflops, None, parts) for t in done)
    tight = {"hand": sorted(t.evaluation.gflops["hand"] for t in done)[2]}
    picked = top_subnets(done, 6, None, tight)
    assert [t.number for t in picked] == [t.number for t in top_subnets(done, 6, None)
                                          if t.evaluation.gflops["hand"] <= tight["hand"]]
    assert 3 <= len(picked) < 6


# --- search.fix: the search samples the pinned space, the full space's objective evaluates ------
FIX = {"body.resolution": 64, "body.stage1.groups": 8, "face.feature_stage": 2}  # groups 8: channels 8 only


def _fixed_experiment(directory: Path, tiny_experiment, fix: dict, n_trials: int = 6,  # noqa: ANN001
                      budget: str = "null") -> Path:
    path = tiny_experiment(directory)
    pins = ", ".join(f"{k}: {v}" for k, v in fix.items())
    with path.open("a") as f:
        f.write(f"search: {{sampler: evolution, n_trials: {n_trials}, budget_gflops: {budget}, objective: analytic, "
                f"evolution: {{population: 2, top_k: 2, mutations: 1, crossovers: 1}}, fix: {{{pins}}}}}\n")
    return path


def _pinned_values(trials, fix: dict) -> list[dict]:  # noqa: ANN001
    return [{k: t.arch.to_flat()[k] for k in fix} for t in trials]


def test_a_search_with_fix_stores_only_archs_with_the_pinned_values(tmp_path: Path,
                                                                   tiny_experiment) -> None:  # noqa: ANN001
    from nasplat.config import load_experiment
    from nasplat.errors import StoreError
    from nasplat.orchestration.run import run_search

    experiment = load_experiment(_fixed_experiment(tmp_path / "fix", tiny_experiment, FIX))
    result = run_search(experiment, local=True, track=False)
    assert result.n_complete == 6
    assert _pinned_values(result.trials, FIX) == [FIX] * len(result.trials)
    assert {t.arch.to_flat()["body.stage1.channels"] for t in result.trials} == {8}
    for t in result.trials:
        experiment.space.validate(t.arch)  # archs of the full space, evaluated on it
    stored = load_current_study(experiment.storage_url, experiment.name)
    assert stored.identity.space_fingerprint == experiment.search_space.fingerprint() != experiment.space.fingerprint()

    # another fix is another study: refused without --new-study, never a replay of the old one
    other = FIX | {"body.resolution": 96}
    changed = load_experiment(_fixed_experiment(tmp_path / "fix", tiny_experiment, other))
    with pytest.raises(StoreError, match="--new-study"):
        run_search(changed, local=True, track=False)
    second = run_search(changed, local=True, track=False, new_study=True)
    assert second.study_name != result.study_name and second.n_complete == 6
    assert _pinned_values(second.trials, other) == [other] * len(second.trials)


def test_search_with_a_bad_fix_or_a_budget_below_the_pinned_smallest_is_one_line_and_no_study(
        tmp_path: Path, tiny_experiment) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from nasplat.cli.main import app
    from nasplat.config import load_experiment
    from nasplat.search import total_gflops_fn

    def one_line(path: Path, *needles: str) -> None:
        res = CliRunner().invoke(app, ["search", str(path), "--local", "--no-mlflow"])
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
        assert all(n in lines[0] for n in needles), (needles, lines[0])
        assert not (path.parent / "out" / "study.db").exists()

    bad = _fixed_experiment(tmp_path / "bad", tiny_experiment, {"body.stage1.channels": 4, "body.stage1.groups": 8})
    one_line(bad, str(bad), "search.fix.body.stage1.groups", "body.stage1.channels = 4", "{2, 4}")
    unknown = _fixed_experiment(tmp_path / "unknown", tiny_experiment, {"body.stage9.depth": 1})
    one_line(unknown, str(unknown), "search.fix.body.stage9.depth", "allowed: body.resolution")

    # a budget the full space's smallest subnet meets but the pinned one does not
    big = {"body.resolution": 96, "body.branch1.channels": 8}
    experiment = load_experiment(_fixed_experiment(tmp_path / "budget", tiny_experiment, big))
    cost = total_gflops_fn(experiment.space)
    low, pinned_low = cost(experiment.space.min_arch()), cost(experiment.search_space.min_arch())
    assert low < pinned_low
    path = _fixed_experiment(tmp_path / "budget", tiny_experiment, big, budget=str(round((low + pinned_low) / 2, 6)))
    one_line(path, "search.budget_gflops", "below the smallest subnet of space 'tiny (2 pinned)'")
