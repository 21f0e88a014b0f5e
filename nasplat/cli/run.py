"""`nasplat run`: the whole ZoomNAS job in one resumable command.

Train (or resume) the supernet, run (or resume) the FLOPs-constrained search, and export the best
subnet under the budget as a standalone model. Each phase picks up where a crash or Ctrl-C left it:
training from its latest checkpoint, the search from its study store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def run(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    cluster: bool = typer.Option(False, "--cluster", help="Run on the Ray cluster at cluster.address."),
    new_study: bool = typer.Option(False, "--new-study", help="Start a new search study instead of resuming."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Override search.objective (wholebody | analytic)."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log training to MLflow."),
) -> None:
    """Train the supernet, search subnets under the budget, export the best.

    \b
    Example:
      nasplat run experiments/quickstart.yaml
      nasplat run experiments/zoomnas.yaml --cluster
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.progress import search_bar, training_bar
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.orchestration.latency import check_budgets, latency_cost
    from nasplat.orchestration.run import export_best, run_search
    from nasplat.orchestration.training import train_supernet

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    console = make_console(stderr=True)
    if experiment.search.uses_latency:  # profile (or load) the table and check the budgets before training
        if not experiment.latency_lut.exists():
            console.print(f"latency table: profiling {experiment.space.name} into {experiment.latency_lut}")
        latency = latency_cost(experiment)
        console.print(f"latency table {experiment.latency_lut}: {latency.device}")  # type: ignore[union-attr]
    else:
        latency = None
    check_budgets(experiment, latency)
    console.print(f"[bold]1/3[/] supernet: space {experiment.space.name}, output {experiment.output_dir}")
    with training_bar(console, experiment.trainer.schedule.epochs) as update:
        checkpoint = train_supernet(experiment, progress=update, mlflow=not no_mlflow)
    console.print(f"supernet checkpoint: {checkpoint}")

    console.print(
        f"[bold]2/3[/] search: {experiment.search.sampler}, {experiment.search.n_trials} trials, "
        f"budget {experiment.search.budget_gflops} GFLOPs"
        + (f", {experiment.search.budget_latency_ms} ms" if experiment.search.budget_latency_ms else "")
    )
    with search_bar(console, experiment.search.n_trials) as update:
        result = run_search(experiment, objective=objective, new_study=new_study, progress=update, latency=latency)
    console.print(
        f"study {result.study_name}: {result.n_complete} completed, {result.n_failed} failed, "
        f"{len(result.pareto)} on the Pareto front"
    )
    best = result.best
    if best is None:
        console.print("no subnet was evaluated successfully; nothing to export")
        raise typer.Exit(code=1)

    console.print(f"[bold]3/3[/] export: trial {best.number}, AP {best.evaluation.ap:.4f}, "
                  f"{best.evaluation.total_gflops:.4f} GFLOPs")
    out, meta = export_best(experiment, best.arch, checkpoint=checkpoint)
    g = meta["gflops"]
    console.print(
        f"best subnet exported to {out}: {g['total']:.4f} GFLOPs (body {g['body']:.4f}, face {g['face']:.4f}, "
        f"hand {g['hand']:.4f}), {meta['params']:,} params; browse the Pareto front with `nasplat ui {experiment_file}`"
    )


def register(app: typer.Typer) -> None:
    app.command("run")(run)
