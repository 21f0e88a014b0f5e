"""`nasplat train` and `nasplat subnet eval|export`: train the supernet, evaluate and export subnets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

subnet_app = typer.Typer(help="Evaluate or export one subnet of a trained supernet.", no_args_is_help=True)


def _arch(experiment: Any, spec: str) -> Any:
    """`max`, `min`, or an arch JSON file, validated against the experiment's space (ArchError)."""
    return experiment.space.load_arch(spec)


def checked_device(device: str) -> str:
    """`device` when this machine has it (`cpu`, `cuda`, `cuda:1`, `mps`); else ConfigError naming
    --device, the value and the devices this machine has (`nasplat.subnet.inference.resolve_device`)."""
    from nasplat.subnet.inference import resolve_device

    return str(resolve_device(device))


def train(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file."),
    cluster: bool = typer.Option(False, "--cluster", help="Train on the Ray cluster at cluster.address."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log to MLflow."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the per-epoch val AP of the max/min subnets."),
) -> None:
    """Train the supernet, or resume it from its latest checkpoint.

    \b
    Example:
      nasplat train experiments/quickstart.yaml --no-mlflow
    """
    from nasplat.cli.console import console as make_console
    from nasplat.cli.progress import training_bar
    from nasplat.config import load_experiment
    from nasplat.orchestration.cluster import for_command
    from nasplat.cli.lease import hold_lease
    from nasplat.orchestration.preflight import cluster_preflight
    from nasplat.orchestration.probe import preflight
    from nasplat.orchestration.training import train_supernet

    experiment = for_command(load_experiment(experiment_file), cluster=cluster)
    preflight(experiment, search=False, tracking=not no_mlflow)
    console = make_console(stderr=True)
    cluster_preflight(experiment, console)  # --cluster: one check per node, a table, before any phase
    hold_lease(experiment)  # one driver per experiment: a second one stops here, exit 2
    with training_bar(console, experiment.trainer.schedule.epochs) as update:
        path = train_supernet(experiment, progress=update, mlflow=not no_mlflow, evaluate=not no_eval)
    console.print(f"supernet checkpoint: {path}")


@subnet_app.command("eval")
def subnet_eval(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file with a trained supernet."),
    arch: str = typer.Option("max", "--arch", help="max, min, or an arch JSON file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    no_recalibrate: bool = typer.Option(False, "--no-recalibrate", help="Use the supernet's BN statistics as they are."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps: one this machine has."),
) -> None:
    """BN-recalibrate one subnet and evaluate it on the val set (per-part AP/AR).

    \b
    Example:
      nasplat subnet eval experiments/quickstart.yaml --arch min --json
    """
    from nasplat.cli.console import console as make_console
    from nasplat.config import load_experiment
    from nasplat.orchestration.probe import check_task
    from nasplat.subnet import SubnetEvaluator

    device = checked_device(device)  # before the experiment and its data are read
    experiment = load_experiment(experiment_file)
    check_task(experiment, "subnet eval")
    chosen = _arch(experiment, arch)
    result = SubnetEvaluator(experiment, device).evaluate(chosen, recalibrate=not no_recalibrate)
    if as_json:
        typer.echo(json.dumps({"arch": chosen.to_flat(), "gflops": result["gflops"], "metrics": result["metrics"],
                               "params": result["params"]}))
        return
    console = make_console()
    g = result["gflops"]
    console.print(f"arch {arch}: {g['total']:.4f} GFLOPs (body {g['body']:.4f}, face {g['face']:.4f}, "
                  f"hand {g['hand']:.4f}), {result['params']:,} params")
    for part, v in result["metrics"].items():
        console.print(f"  {part:10s} AP {v['AP']:.3f}  AR {v['AR']:.3f}")


@subnet_app.command("export")
def subnet_export(
    experiment_file: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="An experiment YAML file with a trained supernet."),
    arch: str = typer.Option("max", "--arch", help="max, min, or an arch JSON file."),
    out: Path = typer.Option(..., "--out", help="Directory to write model.pt, model.onnx, arch.json, meta.json, MODEL_CARD.md."),
    device: str = typer.Option("cpu", "--device", help="torch device."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Do not time PyTorch and onnxruntime for the card."),
) -> None:
    """Write a static subnet (recalibrated weights, ONNX graph, arch JSON, GFLOPs, model card) to a folder.

    Each step (loading, BN recalibration, evaluation, ONNX export and its check) is one line on
    stderr as it starts; the last says how long the export took.

    \b
    Example:
      nasplat subnet export experiments/quickstart.yaml --arch max --out exports/max
    """
    from nasplat.config import load_experiment
    from nasplat.orchestration.probe import check_task
    from nasplat.subnet import export_subnet

    device = checked_device(device)  # before the experiment and its data are read
    experiment = load_experiment(experiment_file)
    check_task(experiment, "subnet export")
    kwargs = {"latency": None} if no_latency else {}
    meta = export_subnet(experiment, _arch(experiment, arch), out, device=device,
                         progress=lambda line: typer.echo(line, err=True), **kwargs)
    typer.echo(f"exported to {out} ({meta['gflops']['total']:.4f} GFLOPs, {meta['params']:,} params)")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.add_typer(subnet_app, name="subnet")
