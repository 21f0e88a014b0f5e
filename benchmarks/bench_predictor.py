"""Does the accuracy predictor (`search.predictor`) save real evaluations? Issue 31's measurement.

On one trained supernet (the experiment's; trained first when it has none, as `nasplat train`
would) and its real objective (BN-recalibrated whole-body AP, the evaluator `nasplat search
--local` builds, in this process), the searchers of `--samplers` (random and evolution by
default; tpe and nsga2 answer whether a predictor helps a model-based sampler) are driven
directly (ask, evaluate, tell; no study store) under the experiment's total GFLOPs budget, each
seed twice: plain (every proposal evaluated) and with the predictor (`search.predictor` of the experiment, else the
defaults; `--kind` picks the model). After each count of real evaluations in `--evals` the
hypervolume of (total GFLOPs, whole-body AP) under (budget, 0) is recorded.

Evaluations are kept in a JSON cache keyed by `Arch.key()` (`--cache`; default
`<output_dir>/bench_predictor_cache.json`, written atomically every few new evaluations and at
the end), tied to the supernet checkpoint's digest: runs that propose the same arch evaluate it
once, and a rerun evaluates nothing it already holds. `--analytic` uses `AnalyticObjective` on the
experiment's space instead: no supernet is trained or read, a dry run whose time is the predictor's
refits (about 7 min for the defaults on quickstart, 2 busy cores). The experiment's `search.sampler`
and latency settings are not used: the samplers are `--samplers`, the budget the GFLOPs one.

Prints, per sampler: the hypervolume at each checkpoint, plain and with the predictor (median
[min, max] over seeds), their ratio, and whether any seed's predictor run falls below that seed's
plain run by more than the seed-to-seed spread (the standard deviation over seeds of the plain
hypervolume at that checkpoint); the real evaluations each seed's predictor run needs to reach its
plain run's final hypervolume; the issue's two goals. Then the predictor's own quality: fitted on
the first n archs of a seed's plain random run (uniform samples under the budget), its Kendall tau
and RMSE on every other arch those runs evaluated, per predictor kind (the goal: tau >= 0.7).
`--out` writes every number as JSON.

    python benchmarks/bench_predictor.py experiments/quickstart.yaml --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAVE_EVERY = 10  # new evaluations between two writes of the cache
MODES = ("plain", "predictor")
KINDS = ("mlp_ensemble", "gp")
TAU_GOAL = 0.7  # Once-for-All's accuracy predictor ranks subnets about this well
MIN_HELD_OUT = 50  # fewer held-out archs judge no tau


class EvaluationCache:
    """An objective's evaluations by `Arch.key()`, read from and written to one JSON file.

    `identity` names what evaluated them (objective, space, supernet digest); a file holding
    another identity's evaluations is refused (SystemExit) rather than mixed in. Writes are atomic
    (a temporary file, then `os.replace`), every `SAVE_EVERY` new evaluations and on `save()`.
    Counts how many `evaluate` calls were answered from the file or this run's earlier calls
    (`cached`) and how many ran the objective (`evaluated`, taking `evaluated_s` seconds)."""

    def __init__(self, objective: Any, path: Path, identity: dict[str, str]) -> None:
        self.objective, self.path, self.identity = objective, path, identity
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("identity") != identity:
                raise SystemExit(f"{path}: holds evaluations of {data.get('identity')}, not of {identity}; "
                                 f"give another --cache or delete it")
            self.entries = data["evaluations"]
        self.at_start = len(self.entries)
        self.evaluated = self.cached = 0
        self.evaluated_s = 0.0
        self._unsaved = 0

    def evaluate(self, arch: Any) -> Any:
        """The `Evaluation` of `arch`, from the cache when it holds one. An objective's error
        propagates (call `save` in a `finally`: what was evaluated is kept)."""
        from nasplat.search.evaluation import Evaluation

        key = arch.key()
        if key in self.entries:
            self.cached += 1
            return Evaluation.from_dict(self.entries[key])
        started = time.monotonic()
        evaluation = self.objective.evaluate(arch)
        self.evaluated_s += time.monotonic() - started
        self.evaluated += 1
        self.entries[key] = evaluation.to_dict()
        self._unsaved += 1
        if self._unsaved >= SAVE_EVERY:
            self.save()
        return evaluation

    def save(self) -> None:
        if not self._unsaved and self.path.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "evaluations": self.entries}))
        os.replace(tmp, self.path)
        self._unsaved = 0


def evals_to_reach(trajectory: list[float], target: float) -> int | None:
    """The number of real evaluations (1-based) after which `trajectory` (the hypervolume after
    each evaluation) first reaches `target`; None when it never does."""
    for n, hv in enumerate(trajectory, start=1):
        if hv >= target:
            return n
    return None


def spread(values: list[float]) -> float:
    """The standard deviation over seeds (0 for a single seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def run_search(experiment: Any, sampler: str, seed: int, predictor: Any, n: int,
               cache: EvaluationCache) -> dict[str, Any]:
    """One search of `n` real evaluations (ask, evaluate, tell): the hypervolume of (total GFLOPs,
    whole-body AP) under (budget, 0) after each, and the archs evaluated, in order."""
    from nasplat.search import build_searcher
    from nasplat.search.cost import total_gflops_fn
    from nasplat.search.pareto import hypervolume

    space, search = experiment.search_space, experiment.search
    budget = search.budget_gflops
    searcher = build_searcher(sampler, space, total_gflops_fn(space), budget, seed, evolution=search.evolution,
                              predictor=predictor, part_budgets=search.part_budgets)
    points: list[tuple[float, float]] = []
    trajectory, archs = [], []
    started = time.monotonic()
    for _ in range(n):
        arch = searcher.ask()
        evaluation = cache.evaluate(arch)
        searcher.tell(arch, evaluation)
        points.append((evaluation.total_gflops, evaluation.ap))
        trajectory.append(hypervolume(points, budget, 0.0))
        archs.append(arch)
    return {"sampler": sampler, "seed": seed, "mode": "plain" if predictor is None else "predictor",
            "trajectory": trajectory, "archs": archs, "wall_s": round(time.monotonic() - started, 2)}


def _hv(value: float) -> str:
    return f"{value:.4g}"


def _range(values: list[float]) -> str:
    return f"{_hv(statistics.median(values))} [{_hv(min(values))}, {_hv(max(values))}]"


def compare(runs: list[dict[str, Any]], sampler: str, seeds: list[int], evals: list[int]) -> dict[str, Any]:
    """Plain vs predictor for one sampler: per checkpoint the hypervolumes of every seed, the
    spread of the plain ones, and the seeds whose predictor run is below their plain run by more
    than that spread; per seed the real evaluations the predictor run needs to reach the plain
    run's final hypervolume; the two goals (goal 1 None, not judged, when every plain run's final
    hypervolume is 0)."""
    by = {(r["seed"], r["mode"]): r for r in runs if r["sampler"] == sampler}
    rows = []
    for n in evals:
        plain = [by[s, "plain"]["trajectory"][n - 1] for s in seeds]
        pred = [by[s, "predictor"]["trajectory"][n - 1] for s in seeds]
        sd = spread(plain)
        worse = [s for s, p, q in zip(seeds, plain, pred) if q < p - sd]
        rows.append({"evals": n, "plain": plain, "predictor": pred, "spread": sd, "worse_seeds": worse})
    reach = {s: evals_to_reach(by[s, "predictor"]["trajectory"], by[s, "plain"]["trajectory"][-1]) for s in seeds}
    median_reach = statistics.median(math.inf if v is None else v for v in reach.values())
    # with nothing measured above AP 0 any run "reaches" plain's final hypervolume at once
    judged = any(by[s, "plain"]["trajectory"][-1] > 0 for s in seeds)
    return {"sampler": sampler, "checkpoints": rows, "reach": reach,
            "median_reach": None if math.isinf(median_reach) else median_reach,
            "goal1": median_reach <= evals[-1] / 2 if judged else None,
            "goal2": not any(r["worse_seeds"] for r in rows)}


def comparison_table(c: dict[str, Any], evals: list[int]) -> str:
    width = 30
    lines = [f"{c['sampler']}: hypervolume of (total GFLOPs, whole-body AP) under (budget, 0), median [min, max] "
             f"over seeds",
             f"{'evals':>6s} {'plain':>{width}s} {'predictor':>{width}s} {'pred/plain':>10s} {'spread (sd)':>11s}  "
             f"predictor below plain - spread"]
    for r in c["checkpoints"]:
        plain_median = statistics.median(r["plain"])
        ratio = statistics.median(r["predictor"]) / plain_median if plain_median > 0 else math.nan
        worse = "seeds " + ", ".join(map(str, r["worse_seeds"])) if r["worse_seeds"] else "no"
        lines.append(f"{r['evals']:>6d} {_range(r['plain']):>{width}s} {_range(r['predictor']):>{width}s} "
                     f"{ratio:>10.3f} {_hv(r['spread']):>11s}  {worse}")
    per_seed = ", ".join(f"seed {s}: {'never' if v is None else v}" for s, v in c["reach"].items())
    median = "never" if c["median_reach"] is None else f"{c['median_reach']:g}"
    lines.append(f"real evaluations with the predictor to reach plain's {evals[-1]}-evaluation hypervolume: "
                 f"{per_seed}; median {median}")
    verdict = {True: "met", False: "not met", None: "not judged (every plain run's hypervolume is 0)"}[c["goal1"]]
    lines.append(f"goal 1 ({c['sampler']}): median {median} <= {evals[-1] / 2:g}: {verdict}")
    lines.append(f"goal 2 ({c['sampler']}): no seed's predictor run below its plain run by more than the spread at "
                 f"any checkpoint: {'met' if c['goal2'] else 'not met'}")
    return "\n".join(lines)


def predictor_quality(space: Any, runs: list[dict[str, Any]], sizes: list[int],
                      cache: EvaluationCache) -> list[dict[str, Any]]:
    """Per predictor kind and training size n: fitted on the first n archs of each seed's plain
    random run, the Kendall tau and RMSE of its predicted whole-body AP against the measured AP of
    every other arch the plain random runs evaluated (held out: not among the n). Sizes larger
    than a run are skipped."""
    import numpy as np

    from nasplat.config import PredictorConfig
    from nasplat.metrics.ranking import kendall_tau
    from nasplat.search.evaluation import Evaluation
    from nasplat.search.predictor import encode_many, make_predictor

    uniform = [r for r in runs if r["sampler"] == "random" and r["mode"] == "plain"]
    every = {a.key(): a for r in uniform for a in r["archs"]}
    measured = {k: Evaluation.from_dict(cache.entries[k]).ap for k in every}
    out = []
    for kind in KINDS:
        for n in sizes:
            fits = []
            for r in uniform:
                if len(r["archs"]) < n:
                    continue
                train = r["archs"][:n]
                taken = {a.key() for a in train}
                test = [a for k, a in every.items() if k not in taken]
                if len(test) < 2:
                    continue
                predictor = make_predictor(PredictorConfig(kind=kind), seed=r["seed"])
                predictor.fit(encode_many(space, train), np.array([measured[a.key()] for a in train]))
                mean, _ = predictor.predict(encode_many(space, test))
                truth = np.array([measured[a.key()] for a in test])
                fits.append({"seed": r["seed"], "held_out": len(test), "tau": kendall_tau(mean, truth),
                             "rmse": float(np.sqrt(np.mean((mean - truth) ** 2)))})
            if fits:
                out.append({"kind": kind, "n": n, "fits": fits})
    return out


def quality_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"predictor quality: fitted on the first n archs of a seed's plain random run, tested on every other "
             f"arch the plain random runs evaluated (median [min, max] over seeds)",
             f"{'kind':>12s} {'n':>5s} {'held out':>9s} {'Kendall tau':>24s} {'RMSE (AP)':>26s}  tau >= {TAU_GOAL}"]
    for r in rows:
        taus = [f["tau"] for f in r["fits"]]
        rmses = [f["rmse"] for f in r["fits"]]
        held = min(f["held_out"] for f in r["fits"])
        tau = statistics.median(taus)
        if held < MIN_HELD_OUT:
            verdict = f"too few held-out archs (< {MIN_HELD_OUT}) to judge"
        else:
            verdict = "met" if tau >= TAU_GOAL else "not met"
        lines.append(f"{r['kind']:>12s} {r['n']:>5d} {held:>9d} "
                     f"{f'{tau:.3f} [{min(taus):.3f}, {max(taus):.3f}]':>24s} "
                     f"{f'{statistics.median(rmses):.4f} [{min(rmses):.4f}, {max(rmses):.4f}]':>26s}  {verdict}")
    return "\n".join(lines)


def objective_and_identity(experiment: Any, analytic: bool) -> tuple[Any, dict[str, str]]:
    """The objective evaluated in this process and what identifies its evaluations. The real one
    is the evaluator `nasplat search --local` builds; its supernet is trained first when missing."""
    space = experiment.space.fingerprint()
    if analytic:
        from nasplat.search.objectives import AnalyticObjective

        return AnalyticObjective(experiment.space), {"objective": "analytic", "space": space}
    from nasplat.files import file_sha256
    from nasplat.orchestration.phases import Phase, Phases
    from nasplat.orchestration.run import objective_factory
    from nasplat.orchestration.training import train_supernet
    from nasplat.subnet import latest_checkpoint

    state = Phases(experiment).current()
    if state is None or state.phase not in {p.value for p in Phase if p.order >= Phase.TRAINED.order}:
        train_supernet(experiment, mlflow=False)  # none, or one whose training stopped: finish it
    checkpoint = latest_checkpoint(experiment)
    print(f"supernet of {experiment.name}: {checkpoint}", flush=True)
    identity = {"objective": "wholebody", "space": space, "supernet": file_sha256(checkpoint)[:16]}
    return objective_factory(experiment, "wholebody")(), identity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="the experiment YAML (its search: section: budget, evolution, "
                                                      "predictor)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="search seeds")
    parser.add_argument("--evals", type=int, nargs="+", default=[25, 50, 100, 200],
                        help="checkpoints: numbers of real evaluations (the largest is each search's length)")
    parser.add_argument("--samplers", nargs="+", default=["random", "evolution"], choices=["random", "evolution", "tpe", "nsga2"])
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="the searchers' predictor (default: the experiment's search.predictor.kind, "
                             "else mlp_ensemble)")
    parser.add_argument("--fit", type=int, nargs="+", default=[50, 100],
                        help="training sizes of the predictor-quality table")
    parser.add_argument("--cache", type=Path, default=None,
                        help="the evaluation cache (default: <output_dir>/bench_predictor_cache[_analytic].json)")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    parser.add_argument("--analytic", action="store_true",
                        help="the analytic objective instead of the trained supernet (no training, a dry run)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the in-process evaluator (the predictor fits on one)")
    args = parser.parse_args()
    evals, seeds = sorted(set(args.evals)), list(dict.fromkeys(args.seeds))
    if evals[0] < 1 or args.threads < 1 or min(args.fit) < 2:
        parser.error("--evals must be >= 1, --threads >= 1 and --fit >= 2")

    import torch

    from nasplat.config import PredictorConfig, load_experiment

    experiment = load_experiment(args.experiment)
    budget = experiment.search.budget_gflops
    if budget is None:
        raise SystemExit(f"{args.experiment}: search.budget_gflops: the hypervolume is measured under the total budget")
    started = time.monotonic()
    objective, identity = objective_and_identity(experiment, args.analytic)
    torch.set_num_threads(args.threads)  # after training, which sets its own
    path = args.cache or experiment.output_dir / f"bench_predictor_cache{'_analytic' if args.analytic else ''}.json"
    cache = EvaluationCache(objective, path, identity)
    base = experiment.search.predictor
    config = PredictorConfig(kind=args.kind or "mlp_ensemble") if base is None else \
        dataclasses.replace(base, kind=args.kind or base.kind)
    print(f"{identity['objective']} objective of {experiment.name}; total budget {budget} GFLOPs; samplers "
          f"{args.samplers}, seeds {seeds}, checkpoints {evals}; predictor {dataclasses.asdict(config)}; "
          f"cache {path} ({cache.at_start} evaluations)", flush=True)

    runs = []
    try:
        for sampler in args.samplers:
            for seed in seeds:
                for mode in MODES:
                    before = cache.evaluated
                    predictor = config if mode == "predictor" else None
                    run = run_search(experiment, sampler, seed, predictor, evals[-1], cache)
                    runs.append(run)
                    at = ", ".join(f"@{n} {_hv(run['trajectory'][n - 1])}" for n in evals)
                    print(f"  {sampler} seed {seed} {mode}: HV {at} ({run['wall_s']:.1f} s, "
                          f"{cache.evaluated - before} evaluated now)", flush=True)
    finally:
        cache.save()

    comparisons = [compare(runs, sampler, seeds, evals) for sampler in args.samplers]
    for c in comparisons:
        print()
        print(comparison_table(c, evals))
    quality = predictor_quality(experiment.search_space, runs, sorted(set(args.fit)), cache)
    print()
    print(quality_table(quality) if quality else "predictor quality: needs the random sampler's plain runs")
    asked = cache.evaluated + cache.cached
    wall = time.monotonic() - started
    per = f", {cache.evaluated_s / cache.evaluated:.2f} s each" if cache.evaluated else ""
    print(f"\n{asked} evaluations asked: {cache.evaluated} evaluated now{per}, {cache.cached} read from the cache "
          f"({path}, now {len(cache.entries)}); wall time {wall / 60:.1f} min")

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "experiment": str(args.experiment), "identity": identity, "budget_gflops": budget, "evals": evals,
            "seeds": seeds, "samplers": args.samplers, "predictor": dataclasses.asdict(config),
            "runs": [{"sampler": r["sampler"], "seed": r["seed"], "mode": r["mode"],
                      "hv": [r["trajectory"][n - 1] for n in evals], "trajectory": r["trajectory"],
                      "wall_s": r["wall_s"]} for r in runs],
            "comparisons": [{**c, "reach": {str(s): v for s, v in c["reach"].items()}} for c in comparisons],
            "quality": quality,
            "evaluations": {"asked": asked, "evaluated": cache.evaluated, "cached": cache.cached,
                            "in_cache": len(cache.entries)},
            "wall_s": round(wall, 1)}, indent=1))


if __name__ == "__main__":
    main()
