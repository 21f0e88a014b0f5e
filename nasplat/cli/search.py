"""`nasplat search` and `nasplat status`: run or resume a search, read its store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer


def _trial_json(t: Any) -> dict[str, Any]:
    """A trial in `nasplat status --json`: `ap` is its score (whole-body AP for ZoomNAS); another
    task's trial also names its objective (`metric`)."""
    out = {"trial": t.number, "gflops": round(t.evaluation.total_gflops, 6), "ap": round(t.evaluation.score, 6)}
    if t.evaluation.score_name != "AP":
        out["metric"] = t.evaluation.score_name
    return out


def search(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="Experiment YAML."),
    report: bool = typer.Option(False, "--report", help="Only re-tag the Pareto front and re-log its figures."),
    new_study: bool = typer.Option(False, "--new-study", help="Start a new study instead of resuming the current one."),
    cluster: bool = typer.Option(False, "--cluster", help="Join cluster.address instead of starting local Ray."),
    local: bool = typer.Option(False, "--local", help="Evaluate in this process, one at a time (no Ray)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Override search.objective (the task's: analytic | wholebody for ZoomNAS, top1 for classification)."),
    study: Optional[str] = typer.Option(None, "--study", metavar="NAME", help="Resume this study of the experiment (with --new-study: create it)."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the search to MLflow."),
) -> None:
    """Run or resume the search to search.n_trials completed trials.

    \b
    Example:
      nasplat search experiments/quickstart.yaml
      nasplat search experiments/quickstart.yaml --objective analytic --local
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.progress import search_bar
    from nasplat.search.evaluation import score_name
    from nasplat.tasks import get_task
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.cli.lease import hold_lease
    from nasplat.orchestration.latency import check_budgets, latency_cost
    from nasplat.orchestration.preflight import cluster_preflight
    from nasplat.orchestration.probe import check_task, preflight
    from nasplat.orchestration.run import report as run_report
    from nasplat.orchestration.run import run_search
    from nasplat.orchestration.tracking import find_experiment, ui_hint

    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    check_task(experiment, "search")
    preflight(experiment, objective=objective, tracking=report or not no_mlflow)
    console = make_console(stderr=True)
    cluster_preflight(experiment, console)  # --cluster: one check per node, a table, before any phase
    if report:
        result = run_report(experiment, study)
    else:
        latency = latency_cost(experiment)
        check_budgets(experiment, latency)  # a budget no subnet meets: before the lease and the store
        hold_lease(experiment)  # one driver per experiment: a second one stops here, exit 2
        with search_bar(console, experiment.search.n_trials, score_name(get_task(experiment.task).objective)) as update:
            result = run_search(experiment, objective=objective, new_study=new_study, study_name=study, progress=update,
                                local=local, track=not no_mlflow, latency=latency)
    best = result.best
    console.print(
        f"study {result.study_name} at {result.storage}: {result.n_complete} completed, {result.n_failed} failed; "
        + (f"best trial {best.number} {best.evaluation.score_name} {best.evaluation.score:.4f} at {best.evaluation.total_gflops:.4f} GFLOPs; " if best else "")
        + f"{len(result.pareto)} on the Pareto front"
    )
    exp_id = find_experiment(experiment) if report or not no_mlflow else None
    if exp_id is not None:
        console.print(ui_hint(experiment, experiment_file, exp_id), soft_wrap=True, markup=False)


def _validation_json(stored: Any) -> dict[str, Any] | None:
    """The summary of the study's stored validation (`nasplat validate`), without the subnets."""
    if not isinstance(stored, dict) or "parts" not in stored:
        return None
    return {k: stored.get(k) for k in ("sweep", "k", "init", "epochs", "parts", "top3_overlap", "regret")}


def status(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="Experiment YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    study: Optional[str] = typer.Option(None, "--study", metavar="NAME", help="Report this study of the experiment instead of the current one."),
) -> None:
    """Phase, trials, best subnet and Pareto front, read from the store (nothing is written).

    When the experiment file no longer matches the stored study (space, objective, sampler, seed,
    budget), the differences are listed.

    \b
    Example:
      nasplat status experiments/quickstart.yaml --json
    """
    from rich.table import Table

    from nasplat.cli.console import console as make_console
    from nasplat.config import load_experiment
    from nasplat.orchestration.driver import identity_of, summarize
    from nasplat.orchestration.phases import Phases
    from nasplat.orchestration.probe import check_storage
    from nasplat.search import describe_budget
    from nasplat.store import identity_differences, load_current_study, redact_url
    from nasplat.store.costs import phase_costs
    from nasplat.store.costs import total as total_cost

    experiment = load_experiment(experiment_file)
    check_storage(experiment)  # a database server that accepts and never answers: one line in 5 s
    url = experiment.storage_url
    row = Phases(experiment).current()
    store = load_current_study(url, experiment.name, study, arch_type=experiment.space.arch_type)
    costs = phase_costs(url, experiment.name)
    out: dict[str, Any] = {
        "experiment": experiment.name,
        "storage": redact_url(url),
        "phase": row.phase if row else None,
        "stopped": row.stopped if row else None,  # how the last command in that phase ended early
        "checkpoint": row.checkpoint if row else None,
        "study": None,
        "trials": {},
        "n_trials": experiment.search.n_trials,
        "budget_gflops": experiment.search.budget_gflops,
        "budget_parts": experiment.search.part_budgets,
        "best": None,
        "pareto": [],
        "differences": [],
        "cost": {"phases": [c.to_dict() for c in costs], "total": total_cost(costs).to_dict()},
        "retrain": json.loads(row.retrain_best) if row and row.retrain_best else None,
        "validation": None,
        "predictor": None,
    }
    if store is not None:
        result = summarize(store, store.trials())
        attrs = store.attrs()
        out.update(
            study=store.study_name,
            trials=store.counts(),
            n_trials=attrs.get("n_trials", out["n_trials"]),
            budget_gflops=store.identity.budget_gflops,
            budget_parts=store.identity.part_budgets,
            sampler=store.identity.sampler,
            best=None if result.best is None else _trial_json(result.best) | {"arch": result.best.arch.to_flat()},
            pareto=[_trial_json(t) for t in result.pareto],
            validation=_validation_json(attrs.get("validation")),
            predictor=attrs.get("predictor") if isinstance(attrs.get("predictor"), dict) else None,
            differences=[{"field": f, "stored": old, "file": new} for f, old, new in
                         identity_differences(store.identity, identity_of(experiment.search_space, experiment.search,
                                                                                 store.identity.objective))],
        )
    if as_json:
        typer.echo(json.dumps(out))
        return
    console = make_console()
    stopped = f" ({out['stopped']}; the same command resumes)" if out["stopped"] else ""
    console.print(f"[bold]{out['experiment']}[/bold]  phase: {out['phase']}{stopped}  store: {out['storage']}",
                  markup=True, highlight=False)
    if costs:
        spent = "; ".join(f"{c.phase} {c.wall_s / 60:.1f} min ({c.core_hours:.3f} core-h, {c.gpu_hours:.3f} GPU-h)"
                          for c in costs)
        t = total_cost(costs)
        console.print(f"cost: {spent}; total {t.core_hours:.3f} core-hours, {t.gpu_hours:.3f} GPU-hours")
    if out["retrain"] and out["retrain"]["best"]:
        r = out["retrain"]["best"]
        console.print(f"retrained ({out['retrain']['sweep']}, {out['retrain']['trials']} trials): best subnet {r['rank']} "
                      f"(study trial {r['study_trial']}) lr {r['lr']:g}, {r['epochs']} epochs: whole-body AP "
                      f"{r['before']['wholebody']:.4f} -> {r['after']['wholebody']:.4f}, exported to {r['export']}")
    if store is None:
        console.print("no study yet")
        return
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(out["trials"].items())) or "none"
    console.print(f"study {out['study']} ({out.get('sampler')}): trials {counts}; target {out['n_trials']} completed; "
                  f"budget {describe_budget(out['budget_gflops'], out['budget_parts'])}")
    if out["differences"]:
        said = "; ".join(f"{d['field']} {d['stored']!r} stored, {d['file']!r} in the file" for d in out["differences"])
        console.print(f"the experiment file differs from study {out['study']}: {said} "
                      "(`nasplat search` resumes the study that matches the file, or asks for --new-study)")
    if out["best"]:
        b = out["best"]
        console.print(f"best: trial {b['trial']}  {b.get('metric', 'AP')} {b['ap']:.4f}  {b['gflops']:.4f} GFLOPs")
    if out["validation"]:
        v = out["validation"]
        wb = v["parts"]["wholebody"]
        console.print(f"validated ({v['sweep']}): {v['k']} subnets trained alone ({v['init']}, {v['epochs']} epochs): "
                      f"whole-body Kendall tau {wb['kendall_tau']:.2f}, Spearman rho {wb['spearman_rho']:.2f}, "
                      f"top-3 overlap {v['top3_overlap']:.2f}, regret {v['regret']:.4f} AP")
    if out["predictor"]:
        p = out["predictor"]
        quality = ("" if p.get("kendall_tau") is None else
                   f"; on its last {min(p['evaluated'], p['window'])} evaluated picks: Kendall tau {p['kendall_tau']:.2f}, "
                   f"RMSE {p['rmse']:.4f}{'' if out['best'] and out['best'].get('metric') else ' AP'}")
        console.print(f"predictor ({p['kind']}): picked {p['picked']} trials; {p['screened_out']} candidates screened "
                      f"out (predicted, not evaluated){quality}")
    metric = out["pareto"][0].get("metric") if out["pareto"] else None  # another task's objective
    table = Table("trial", "GFLOPs", metric or "whole-body AP", title="Pareto front")
    for p in out["pareto"]:
        table.add_row(str(p["trial"]), f"{p['gflops']:.4f}", f"{p['ap']:.4f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `search` and `status` to the nasplat app."""
    app.command("search")(search)
    app.command("status")(status)
