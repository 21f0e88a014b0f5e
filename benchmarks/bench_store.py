"""The driver's overhead per trial with the study store as it was (no params) and as it is (params,
metric names, constraint and per-part attrs for optuna-dashboard), on SQLite.

The overhead is the time the driver spends outside waiting for evaluators (ask, store writes,
tell), per trial; the objective is the analytic one in the driver's process, so its evaluation is
not counted. Three stores, each run `--repeats` times in turn (the median is shown):
- before: the trial's arch and key as user attrs, then the result attr and state (2 + 2 calls);
- template: the params in `create_new_trial`'s template trial, each attr its own Optuna call
  (what the store does on an Optuna schema it does not know);
- now: the params and the attrs inserted with the result, one transaction (the store's default);
  as many commits per trial as before, which on a disk SQLite file cost most of the time.
`--dir` puts the databases elsewhere (e.g. /dev/shm, where a commit costs no fsync).
Run: python benchmarks/bench_store.py [--trials 60] [--repeats 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from optuna.trial import TrialState, create_trial

from nasplat.config import SearchConfig
from nasplat.orchestration.driver import SearchLoop, identity_of
from nasplat.orchestration.pool import LocalEvaluatorPool
from nasplat.search import AnalyticFactory, build_searcher, total_gflops_fn
from nasplat.search.evaluation import Evaluation
from nasplat.space import Arch, load_space
from nasplat.store import StudyStore, open_study

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cpu_small.yaml"
EVALUATION_S = 0.5  # one evaluation in benchmarks/bench_eval_throughput.py, for the percentage


class BeforeStore(StudyStore):
    """The store's trial writes before params (as of commit 517c6c6)."""

    def start_trial(self, arch: Arch, *, ask_seq: int | None, requeued_from: int | None = None) -> int:
        attrs: dict[str, Any] = {"arch": arch.to_json(), "key": arch.key()}
        if ask_seq is not None:
            attrs["ask_seq"] = ask_seq
        if requeued_from is not None:
            attrs["requeued_from"] = requeued_from
        template = create_trial(state=TrialState.RUNNING, user_attrs=attrs)
        trial_id = self._storage.create_new_trial(self.study._study_id, template_trial=template)
        number = self._storage.get_trial_number_from_id(trial_id)
        self._ids[number] = trial_id
        return number

    def complete_trial(self, number: int, evaluation: Evaluation, tell_seq: int) -> None:
        trial_id = self._ids[number]
        self._storage.set_trial_user_attr(trial_id, "result", {"tell_seq": tell_seq, "evaluation": evaluation.to_dict()})
        self._storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [evaluation.ap, evaluation.total_gflops])


def overhead(kind: str, trials: int, url: str) -> float:
    """Driver seconds per evaluated trial of one search with store `kind`."""
    space = load_space(SPACE)
    search = SearchConfig(sampler="random", n_trials=trials, budget_gflops=0.1, seed=0, objective="analytic")
    searcher = build_searcher("random", space, total_gflops_fn(space), search.budget_gflops, search.seed)
    store = open_study(url, "bench", identity_of(space, search), space=space)
    if kind == "before":
        store = BeforeStore(store.url, store.experiment, store.study, store.identity)
    elif kind == "template":
        store._tables = None
    result = SearchLoop(space, search, searcher, store).run(LocalEvaluatorPool(AnalyticFactory(str(SPACE))))
    assert result.n_complete == trials
    if kind != "before":
        assert len(result.trials) == trials and len(store.study.trials[-1].params) == len(space.dimensions)
    return result.driver_seconds / max(1, result.evaluated)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: a temporary folder)")
    args = parser.parse_args()
    kinds = ("before", "template", "now")
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        overhead("now", 3, f"sqlite:///{d}/warm.db")  # imports, table creation
        for r in range(args.repeats):
            for k in kinds:
                seconds[k].append(overhead(k, args.trials, f"sqlite:///{d}/{k}{r}.db"))
    ms = {k: 1e3 * statistics.median(v) for k, v in seconds.items()}
    dims = len(load_space(SPACE).dimensions)
    print(f"SQLite store in {args.dir or tempfile.gettempdir()}, {args.trials} trials of {dims} params, random sampler, median of {args.repeats} runs")
    print("driver overhead per trial: " + ", ".join(
        f"{k} {ms[k]:.1f} ms ({100 * ms[k] / 1e3 / EVALUATION_S:.1f}% of a {EVALUATION_S} s evaluation)" for k in kinds))
    def paired(k: str) -> float:  # median over the runs of (k - before), each pair run back to back
        return 1e3 * statistics.median(x - y for x, y in zip(seconds[k], seconds["before"]))

    print(f"paired median: now - before = {paired('now'):+.1f} ms/trial, template - before = {paired('template'):+.1f} ms/trial")


if __name__ == "__main__":
    main()
