"""`nasplat flops SPACE.yaml [--arch max|min|ARCH.json] [--json] [--fvcore]`: GFLOPs of one arch."""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from nasplat.flops import GFlops


def flops(
    space_file: Path = typer.Argument(..., metavar="SPACE.yaml", help="A search-space YAML file."),
    arch: str = typer.Option("max", "--arch", help="max, min, an arch JSON file or JSON text."),
    as_json: bool = typer.Option(False, "--json", help='Print {"body", "face", "hand", "total"} (analytic).'),
    use_fvcore: bool = typer.Option(False, "--fvcore", help="Also count with fvcore on the static subnet (slow)."),
) -> None:
    """GFLOPs of one arch: body, face, one hand and the total (body + face + 2 x hand).

    GFLOPs are conv and linear multiply-adds / 2**30, the papers' convention.

    \b
    Example:
      nasplat flops search_spaces/zoomnas.yaml --arch min
    """
    from nasplat.errors import ConfigError
    from nasplat.flops import analytic_gflops, fvcore_gflops
    from nasplat.tasks.registry import load_space_file

    space = load_space_file(space_file, command="flops")
    if space.part_gflops is None:
        raise ConfigError(f"the GFLOPs of a {space.task} subnet depend on its experiment's data (the classifier's "
                          "classes): `nasplat status` and the export's meta.json give them", source=str(space_file),
                          key="task")
    chosen = space.load_arch(arch)
    bpm = space.all_blocks_per_module()
    counted = analytic_gflops(chosen, bpm)
    if as_json:
        typer.echo(json.dumps(counted.as_dict()))
        return
    from rich.table import Table

    from nasplat.cli.console import console as make_console

    columns: list[tuple[str, GFlops]] = [("analytic", counted)]
    if use_fvcore:
        columns.append(("fvcore", fvcore_gflops(chosen, bpm)))
    table = Table(title=f"GFLOPs of {arch} in {space.name} ({space_file})")
    table.add_column("module")
    for name, _ in columns:
        table.add_column(name, justify="right")
    for part, label in (("body", "BodyNet"), ("face", "FaceHead"), ("hand", "HandHead (x2)"), ("total", "total")):
        table.add_row(label, *(f"{getattr(g, part):.3f}" for _, g in columns))
    make_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("flops")(flops)
