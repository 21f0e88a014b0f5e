"""`nasplat validate`: train K searched subnets alone and compare their order with the search's."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import typer


def _stat(stats: dict[str, Any], name: str) -> str:
    value, (low, high) = stats[name], stats[f"{name}_ci"]
    if value is None or not math.isfinite(value):
        return "-"
    interval = f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{value:.2f}{interval}"


def print_validation(console: Any, validation: Any) -> None:
    """The K subnets (inherited and stand-alone whole-body AP, the rank of each), the agreement
    per part with 95% bootstrap intervals, the top-3 overlap and the regret."""
    from rich.table import Table

    from nasplat.metrics.ranking import average_ranks

    subnets = validation.subnets
    by_inherited = average_ranks([-s.inherited["wholebody"] for s in subnets])
    by_standalone = average_ranks([-s.standalone["wholebody"] for s in subnets])
    table = Table("study trial", "GFLOPs", "inherited AP", "rank", "alone AP", "rank", "",
                  title=f"{len(subnets)} subnets of study {validation.study} trained alone "
                        f"({validation.init}, {validation.epochs} epochs; whole-body AP)")
    for s, ri, rs in sorted(zip(subnets, by_inherited, by_standalone), key=lambda x: x[1]):
        table.add_row(str(s.study_trial), f"{s.gflops:.4f}", f"{s.inherited['wholebody']:.4f}", f"{ri:g}",
                      f"{s.standalone['wholebody']:.4f}", f"{rs:g}", "chosen" if s.chosen else "")
    console.print(table)
    agreement = Table("part", "Kendall tau [95% CI]", "Spearman rho [95% CI]",
                      title="inherited vs stand-alone AP: rank agreement")
    for part, stats in validation.parts.items():
        agreement.add_row(part, _stat(stats, "kendall_tau"), _stat(stats, "spearman_rho"))
    console.print(agreement)
    console.print(f"top-3 overlap {validation.top3_overlap:.2f}; regret of the search's choice "
                  f"{validation.regret:.4f} whole-body AP (best alone minus the chosen one alone); sweep {validation.sweep}")


def validate(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    subnets: int = typer.Option(10, "--subnets", metavar="K", help="How many searched subnets to train alone (3 or more)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per subnet (default: the supernet's)."),
    init: str = typer.Option("scratch", "--init", help="scratch (train anew) | inherited (fine-tune the sliced weights)."),
    study: Optional[str] = typer.Option(None, "--study", metavar="NAME", help="Validate this study of the experiment."),
    cluster: bool = typer.Option(False, "--cluster", help="Run the trials on the Ray cluster at cluster.address."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the validation to MLflow."),
) -> None:
    """Does the supernet rank subnets as training them alone would? Trains K searched subnets alone
    (Ray Tune, resumable) and reports Kendall tau, Spearman rho, the top-3 overlap and the regret.

    The K subnets are the search's choice and K-1 more spread over the range of inherited AP under
    the budget. The result is stored with the study (`nasplat status` shows it) and in MLflow.

    \b
    Example:
      nasplat validate experiments/quickstart.yaml --subnets 10
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.lease import hold_lease
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.orchestration.probe import check_task, preflight
    from nasplat.orchestration.validate import plan_validation, run_validation

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    check_task(experiment, "validate")
    preflight(experiment, search=False, tracking=not no_mlflow)
    plan_validation(experiment, k=subnets, epochs=epochs, init=init, study_name=study)  # bad input: before anything is written
    hold_lease(experiment)  # one driver per experiment: a second one stops here, exit 2
    console = make_console(stderr=True)

    def show(event: dict[str, Any]) -> None:
        ap = f", whole-body AP {event['ap']:.4f} (inherited {event['inherited']:.4f})" if event["ap"] is not None else ""
        console.print(f"  subnet {event['subnet']} (study trial {event['study_trial']}): "
                      f"epoch {event['epoch']}/{event['epochs']}{ap}")

    console.print(f"validate: {subnets} subnets trained alone, init {init}, "
                  f"{experiment.trainer.schedule.epochs if epochs is None else epochs} epochs")
    result = run_validation(experiment, k=subnets, epochs=epochs, init=init, study_name=study, progress=show,
                            track=not no_mlflow)
    print_validation(make_console(), result)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
