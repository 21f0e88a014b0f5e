"""`nasplat space show`: what a search space contains."""

from __future__ import annotations

import json
from pathlib import Path

import typer

space_app = typer.Typer(help="Inspect search spaces.", no_args_is_help=True)


@space_app.command("show")
def show(
    space_file: Path = typer.Argument(..., metavar="SPACE.yaml", help="A search-space YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Dimensions and choices, the space's size, GFLOPs of its extremes.

    \b
    Example:
      nasplat space show search_spaces/zoomnas.yaml
    """
    from rich.table import Table

    from nasplat.cli.console import console as make_console
    from nasplat.flops import analytic_gflops
    from nasplat.space import load_space
    from nasplat.space.dsl import describe

    space = load_space(space_file)
    bpm = space.all_blocks_per_module()
    lo = analytic_gflops(space.min_arch(), bpm)
    hi = analytic_gflops(space.max_arch(), bpm)
    dims = [{"name": d.name, "choices": list(d.choices)} | ({"depends_on": d.depends_on} if d.depends_on else {}) for d in space.dimensions]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "name": space.name,
                    "dimensions": dims,
                    "log10_size": round(space.log10_size(), 4),
                    "min_gflops": round(lo.total, 4),
                    "max_gflops": round(hi.total, 4),
                }
            )
        )
        return
    table = Table(title=f"search space {space.name} ({space_file})")
    table.add_column("dimension")
    table.add_column("choices")
    for d in space.dimensions:
        note = f"  (valid ones divide {d.depends_on})" if d.depends_on else ""
        table.add_row(d.name, describe(d.choices) + note)
    console = make_console()
    console.print(table)
    console.print(f"architectures: 10^{space.log10_size():.2f}")
    console.print(f"GFLOPs: min {lo.total:.3f} (body {lo.body:.3f}, face {lo.face:.3f}, hand {lo.hand:.3f})")
    console.print(f"        max {hi.total:.3f} (body {hi.body:.3f}, face {hi.face:.3f}, hand {hi.hand:.3f})")


def register(app: typer.Typer) -> None:
    app.add_typer(space_app, name="space")
