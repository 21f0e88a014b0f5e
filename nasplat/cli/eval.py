"""`nasplat eval --gt ANN.json --pred RESULTS.json [--json]`: the official whole-body AP/AR."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from nasplat.metrics import WholeBodyEvaluator


def eval_command(
    gt: Path = typer.Option(..., "--gt", help="COCO-WholeBody annotation file."),
    pred: Path = typer.Option(..., "--pred", help="Results file in the official format."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {part: {AP, AR}}."),
) -> None:
    """Evaluate results with the official protocol (AP/AR of body, foot, face, hand, whole body)."""
    report = WholeBodyEvaluator(gt).evaluate(pred)
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"{pred} vs {gt}")
    table.add_column("part")
    table.add_column("AP", justify="right")
    table.add_column("AR", justify="right")
    for part, m in report.items():
        table.add_row(part, f"{m['AP']:.3f}", f"{m['AR']:.3f}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
