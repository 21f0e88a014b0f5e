"""`nasplat eval --gt ANN.json --pred RESULTS.json [--json]`: the official whole-body AP/AR."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def eval_command(
    gt: Path = typer.Option(..., "--gt", help="COCO-WholeBody annotation file (a regular file of at most 4 GiB)."),
    pred: Path = typer.Option(..., "--pred", help="Results file in the official format (a regular file of at most "
                              "512 MiB: parsed, it takes about 12 times its size in memory)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {part: {AP, AR}}."),
) -> None:
    """Official whole-body AP/AR (body, foot, face, hand, whole body) of results.

    \b
    Example:
      nasplat eval --gt person_keypoints_val.json --pred results.json
    """
    from rich.table import Table

    from nasplat.cli.console import console as make_console
    from nasplat.metrics import WholeBodyEvaluator

    def say(line: str) -> None:
        typer.echo(line, err=True)

    say(f"reading {gt} ...")
    report = WholeBodyEvaluator(gt).evaluate(pred, progress=say)
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"{pred} vs {gt}")
    table.add_column("part")
    table.add_column("AP", justify="right")
    table.add_column("AR", justify="right")
    for part, m in report.items():
        table.add_row(part, f"{m['AP']:.3f}", f"{m['AR']:.3f}")
    make_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
