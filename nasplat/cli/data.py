"""`nasplat data check DIR` and `nasplat data synth --out DIR --train N --val M [--seed S]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nasplat.errors import DataError

data_app = typer.Typer(help="Check or generate COCO-WholeBody data.", no_args_is_help=True)


@data_app.command("check")
def check(
    root: Path = typer.Argument(..., metavar="DATA_DIR", help="Dataset root: annotations/coco_wholebody_{train,val}_v1.0.json, train2017/, val2017/."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Validate every split (fields, lengths, ids, image files); print counts.

    \b
    Example:
      nasplat data check data/coco_wholebody
    """
    from rich.table import Table

    from nasplat.cli.console import console as make_console
    from nasplat.data.coco import check_dataset

    counts = check_dataset(root)
    if as_json:
        typer.echo(json.dumps({split: vars(c) for split, c in counts.items()}))
        return
    table = Table(title=f"COCO-WholeBody data at {root}")
    for col in ("split", "images", "persons", "crowd", "valid faces", "valid hands", "train instances"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, c in counts.items():
        table.add_row(split, str(c.images), str(c.persons), str(c.crowd), str(c.valid_faces),
                      str(c.valid_hands), str(c.train_instances))
    make_console().print(table)


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Where to write the dataset (release layout)."),
    train: int = typer.Option(..., "--train", help="Training images (at least 1)."),
    val: int = typer.Option(..., "--val", help="Validation images (at least 1: the search scores subnets on them)."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes the same files."),
    hand_length: float = typer.Option(0.12, "--hand-length", help="Hand length, of the person height."),
    face_width: float = typer.Option(0.13, "--face-width", help="Face width, of the person height."),
) -> None:
    """Write a synthetic COCO-WholeBody set in the release layout.

    \b
    Example:
      nasplat data synth --out data/synth --train 200 --val 50
    """
    # an experiment's data.synthetic asks for at least 1 of each: training and the search need both
    for name, value in (("--train", train), ("--val", val)):
        if value < 1:
            raise DataError(f"{name} {value}: a split needs at least 1 image", key=name)
    for name, frac in (("--hand-length", hand_length), ("--face-width", face_width)):
        if not 0.02 < frac <= 0.4:
            raise DataError(f"{name} {frac} is outside the allowed (0.02, 0.4] of the person height", key=name)
    from nasplat.data.synth import SynthConfig, generate_dataset

    config = SynthConfig(hand_length=hand_length, face_width=face_width)
    train_file, val_file = generate_dataset(out, train, val, seed, config)
    typer.echo(f"wrote {train} train images ({train_file}) and {val} val images ({val_file})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
