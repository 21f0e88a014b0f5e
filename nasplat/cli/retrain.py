"""`nasplat retrain`: retrain the searched subnets on Ray Tune (resumable) and export them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer


def print_retrain(console: Any, result: Any) -> None:
    """Per retrained subnet: per-part AP before and after retraining, and where it was exported."""
    from rich.table import Table

    for sub in result.subnets:
        table = Table("part", "AP before", "AP after", title=(
            f"subnet {sub.rank} (study trial {sub.study_trial}): lr {sub.lr:g}, {sub.epochs} epochs -> {sub.export}"))
        for part in sub.after:
            table.add_row(part, f"{sub.before[part]:.4f}", f"{sub.after[part]:.4f}")
        console.print(table)


def progress_printer(console: Any) -> Any:
    def show(event: dict[str, Any]) -> None:
        console.print(f"  retrain subnet {event['subnet']} lr {event['lr']:g}: epoch {event['epoch']} "
                      f"whole-body AP {event['ap']:.4f} (before {event['before']:.4f})")
    return show


def retrain(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    cluster: bool = typer.Option(False, "--cluster", help="Run the trials on the Ray cluster at cluster.address."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the trials to MLflow."),
) -> None:
    """Retrain the best searched subnets (the retrain: section) on Ray Tune and export them.

    An interrupted sweep resumes where it stopped when the same command runs again.

    \b
    Example:
      nasplat retrain experiments/quickstart.yaml
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.lease import hold_lease
    from nasplat.config import load_experiment
    from nasplat.errors import ConfigError
    from nasplat.orchestration.cluster import for_command
    from nasplat.orchestration.probe import check_retrain, check_task
    from nasplat.orchestration.retrain import run_retrain

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    check_task(experiment, "retrain")
    if experiment.retrain is None:
        raise ConfigError("the experiment has no retrain: section", source=str(experiment.path), key="retrain")
    check_retrain(experiment)
    hold_lease(experiment)  # one driver per experiment: a second one stops here, exit 2
    console = make_console(stderr=True)
    rc = experiment.retrain
    console.print(f"retrain: top {rc.top_k} subnets, {rc.epochs} epochs, init {rc.init}, lr {list(rc.lr) if rc.lr else 'recipe'}")
    result = run_retrain(experiment, progress=progress_printer(console), track=not no_mlflow)
    print_retrain(console, result)


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain)
