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
    from nasplat.space.dsl import describe
    from nasplat.tasks.registry import DEFAULT_TASK, load_space_file

    space = load_space_file(space_file, command="space show")
    gflops = space.part_gflops  # None: they depend on the experiment, not on the space alone
    lo = hi = None
    if gflops is not None:
        lo, hi = gflops(space.min_arch()), gflops(space.max_arch())
    dims = [{"name": d.name, "choices": list(d.choices)} | ({"depends_on": d.depends_on} if d.depends_on else {}) for d in space.dimensions]
    if as_json:
        out = {"name": space.name, "task": space.task, "dimensions": dims, "log10_size": round(space.log10_size(), 4)}
        if lo is not None and hi is not None:
            out |= {"min_gflops": round(lo["total"], 4), "max_gflops": round(hi["total"], 4)}
        if space.task == DEFAULT_TASK:
            out.pop("task")  # ZoomNAS's object as it always was
        typer.echo(json.dumps(out))
        return
    table = Table(title=f"search space {space.name} ({space_file})")
    table.add_column("dimension")
    table.add_column("choices")
    for d in space.dimensions:
        if not d.depends_on:
            note = ""
        elif space.task == DEFAULT_TASK:
            note = f"  (valid ones divide {d.depends_on})"
        else:
            note = f"  (when {d.depends_on} runs it)"
        table.add_row(d.name, describe(d.choices) + note)
    console = make_console()
    console.print(table)
    console.print(f"architectures: 10^{space.log10_size():.2f}")
    if lo is None or hi is None:
        console.print(f"GFLOPs: they depend on the experiment (task {space.task}), not on the space alone")
        return
    for label, g in (("min", lo), ("max", hi)):
        parts = ", ".join(f"{k} {v:.3f}" for k, v in g.items() if k != "total")
        console.print(f"{'GFLOPs:' if label == 'min' else '       '} {label} {g['total']:.3f}" + (f" ({parts})" if parts else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(space_app, name="space")
