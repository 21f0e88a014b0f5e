"""`nasplat run`: the whole ZoomNAS job in one resumable command.

Train (or resume) the supernet, run (or resume) the FLOPs-constrained search, retrain the best
subnets on Ray Tune (when the experiment has a `retrain:` section) and export the best subnet under
the budget as a standalone model. Each phase picks up where a crash or Ctrl-C left it: training
from its latest checkpoint, the search from its study store, retraining from its Tune sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def run(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    cluster: bool = typer.Option(False, "--cluster", help="Run on the Ray cluster at cluster.address."),
    new_study: bool = typer.Option(False, "--new-study", help="Start a new search study instead of resuming."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Override search.objective (wholebody | analytic)."),
    study: Optional[str] = typer.Option(None, "--study", metavar="NAME", help="Resume this search study (with --new-study: create it)."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log training, search and retraining to MLflow."),
) -> None:
    """Train the supernet, search subnets under the budget, retrain the best, export them.

    \b
    Example:
      nasplat run experiments/quickstart.yaml
      nasplat run experiments/zoomnas.yaml --cluster
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.progress import search_bar, training_bar
    from nasplat.cli.retrain import print_retrain, progress_printer
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.cli.lease import hold_lease
    from nasplat.orchestration.preflight import cluster_preflight
    from nasplat.orchestration.probe import check_task, preflight
    from nasplat.interrupt import set_activity
    from nasplat.orchestration.retrain import run_retrain
    from nasplat.orchestration.latency import check_budgets, latency_cost
    from nasplat.orchestration.run import export_best, run_search
    from nasplat.orchestration.tracking import open_experiment, ui_hint
    from nasplat.orchestration.training import train_supernet
    from nasplat.search import describe_budget
    from nasplat.search.evaluation import score_name
    from nasplat.tasks import get_task

    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    check_task(experiment, "run")
    preflight(experiment, objective=objective, tracking=not no_mlflow)
    console = make_console(stderr=True)
    cluster_preflight(experiment, console)  # --cluster: one check per node, a table, before any phase
    if experiment.search.uses_latency:  # profile (or load) the table and check the budgets before training
        if not experiment.latency_lut.exists():
            console.print(f"latency table: profiling {experiment.space.name} into {experiment.latency_lut}")
        latency = latency_cost(experiment)
        console.print(f"latency table {experiment.latency_lut}: {latency.device}")  # type: ignore[union-attr]
    else:
        latency = None
    check_budgets(experiment, latency)
    hold_lease(experiment)  # one driver per experiment: a second one stops here, exit 2
    # on this driver, before any phase: the Ray workers of training log into it
    mlflow_experiment = None if no_mlflow else open_experiment(experiment)
    set_activity("training")  # each phase named as soon as it is announced (a signal names it)
    console.print(f"[bold]1/4[/] supernet: space {experiment.space.name}, output {experiment.output_dir}")
    with training_bar(console, experiment.trainer.schedule.epochs) as update:
        checkpoint = train_supernet(experiment, progress=update, mlflow=not no_mlflow)
    console.print(f"supernet checkpoint: {checkpoint}")

    set_activity("search")
    console.print(
        f"[bold]2/4[/] search: {experiment.search.sampler}, {experiment.search.n_trials} trials"
        + (f", budget {describe_budget(experiment.search.budget_gflops, experiment.search.part_budgets)}"
           if experiment.search.budget_gflops is not None or experiment.search.part_budgets else ", no GFLOPs budget")
        + (f", {experiment.search.budget_latency_ms} ms" if experiment.search.budget_latency_ms else "")
    )
    with search_bar(console, experiment.search.n_trials, score_name(get_task(experiment.task).objective)) as update:
        result = run_search(experiment, objective=objective, new_study=new_study, study_name=study, progress=update,
                            track=not no_mlflow, latency=latency)
    console.print(
        f"study {result.study_name}: {result.n_complete} completed, {result.n_failed} failed, "
        f"{len(result.pareto)} on the Pareto front"
    )
    best = result.best
    if best is None:
        console.print("no subnet was evaluated successfully; nothing to export")
        raise typer.Exit(code=1)

    rc = experiment.retrain
    if rc is None:
        console.print("[bold]3/4[/] retrain: skipped (the experiment has no retrain: section)")
    else:
        set_activity("retrain")
        console.print(f"[bold]3/4[/] retrain: top {rc.top_k} subnets, {rc.epochs} epochs, init {rc.init}, "
                      f"lr {list(rc.lr) if rc.lr else 'recipe'}")
        print_retrain(console, run_retrain(experiment, progress=progress_printer(console), track=not no_mlflow))

    set_activity("export")
    console.print(f"[bold]4/4[/] export: trial {best.number}, {best.evaluation.score_name} {best.evaluation.score:.4f}, "
                  f"{best.evaluation.total_gflops:.4f} GFLOPs")
    out, meta, version = export_best(experiment, best.arch, checkpoint=checkpoint,
                                     origin={"study": result.study_name, "trial": best.number},
                                     trial=None if no_mlflow else (result.study_name, best.number),
                                     register=not no_mlflow)
    g = meta["gflops"]
    parts = ", ".join(f"{k} {v:.4f}" for k, v in g.items() if k != "total")
    console.print(f"best subnet exported to {out}: {g['total']:.4f} GFLOPs" + (f" ({parts})" if parts else "")
                  + f", {meta['params']:,} params")
    if version is not None:
        console.print(f"registered as {version.uri}")
    if mlflow_experiment is not None:
        console.print(ui_hint(experiment, experiment_file, mlflow_experiment), soft_wrap=True, markup=False)
    summary(console, experiment_file, result, out)


def summary(console: Any, experiment_file: Path, result: Any, export_dir: Path) -> None:
    """The end of `nasplat run`: the Pareto front with the chosen subnet marked, where its export
    is, and the commands to look at it."""
    import importlib.util

    from rich.table import Table

    from nasplat import logs

    best = result.best
    name = "whole-body AP" if best is None or best.evaluation.score_name == "AP" else best.evaluation.score_name
    table = Table("trial", "GFLOPs", name, "", title=f"Pareto front of study {result.study_name}")
    for t in sorted(result.pareto, key=lambda t: t.evaluation.total_gflops):
        table.add_row(str(t.number), f"{t.evaluation.total_gflops:.4f}", f"{t.evaluation.score:.4f}",
                      "chosen" if best is not None and t.number == best.number else "")
    console.print(table)
    console.print(f"export: {export_dir}")
    from nasplat.files import shell_command

    console.print(f"browse:  {shell_command('nasplat', 'ui', experiment_file)}")
    if importlib.util.find_spec("nasplat.cli.predict") is not None:
        console.print(f"predict: {shell_command('nasplat', 'predict', export_dir)} IMAGE... --out predictions")
    log = logs.log_file()
    if log is not None:
        console.print(f"log:     {log}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
