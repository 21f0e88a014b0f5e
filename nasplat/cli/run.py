"""`nasplat run`: the whole job of an experiment in one resumable command.

Train (or resume) the supernet, run (or resume) the FLOPs-constrained search, retrain the best
subnets on Ray Tune (when the experiment has a `retrain:` section) and export the best subnet under
the budget as a standalone model. Each phase picks up where a crash or Ctrl-C left it: training
from its latest checkpoint, the search from its study store, retraining from its Tune sweep. The
phases run in `nasplat.orchestration.pipeline.run_pipeline`; this command is its view on the
terminal (`ConsoleView`) and the summary at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def run(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    cluster: bool = typer.Option(False, "--cluster", help="Run on the Ray cluster at cluster.address."),
    new_study: bool = typer.Option(False, "--new-study", help="Start a new search study instead of resuming."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Override search.objective (the task's: wholebody | analytic for ZoomNAS, top1 for classification)."),
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
    from nasplat.cli.lease import hold_lease
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.orchestration.pipeline import NoSubnetError, run_pipeline
    from nasplat.orchestration.tracking import ui_hint

    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    console = make_console(stderr=True)
    try:
        done = run_pipeline(experiment, objective=objective, new_study=new_study, study_name=study,
                            track=not no_mlflow, view=ConsoleView(console), hold=hold_lease)
    except NoSubnetError as e:
        console.print(str(e))
        raise typer.Exit(code=1) from None
    if done.mlflow_experiment is not None:
        console.print(ui_hint(experiment, experiment_file, done.mlflow_experiment), soft_wrap=True, markup=False)
    summary(console, experiment_file, done.search, done.export_dir)


class ConsoleView:
    """`run_pipeline`'s view on the terminal: a bar per phase, tables of the cluster's nodes and
    of the retrained subnets (`nasplat.orchestration.pipeline.PipelineView`)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def phase(self, number: int, line: str) -> None:
        from nasplat.orchestration.pipeline import PHASES

        self.console.print(f"[bold]{number}/{PHASES}[/] {line}")

    def say(self, line: str) -> None:
        self.console.print(line)

    def preflight(self, experiment: Any) -> None:
        from nasplat.orchestration.preflight import cluster_preflight

        cluster_preflight(experiment, self.console)

    def training(self, epochs: int) -> Any:
        from nasplat.cli.progress import training_bar

        return training_bar(self.console, epochs)

    def search(self, n_trials: int, score: str) -> Any:
        from nasplat.cli.progress import search_bar

        return search_bar(self.console, n_trials, score)

    def retrain(self) -> Any:
        from nasplat.cli.retrain import progress_printer

        return progress_printer(self.console)

    def retrained(self, result: Any) -> None:
        from nasplat.cli.retrain import print_retrain

        print_retrain(self.console, result)


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
