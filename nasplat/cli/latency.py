"""`nasplat latency profile SPACE.yaml ... --out LUT.json` and `nasplat latency predict SPACE.yaml --arch ...`.

`nasplat latency SPACE.yaml --arch ...` is the same as `nasplat latency predict SPACE.yaml --arch ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import typer.core


class _PredictByDefault(typer.core.TyperGroup):
    """`nasplat latency SPACE.yaml ...` runs `predict`: a first argument that names no sub-command
    is the space file."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]  # click's signature
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["predict", *args]
        return super().parse_args(ctx, args)


latency_app = typer.Typer(
    cls=_PredictByDefault,
    help=(
        "Latency on the deployment device: profile a lookup table of every building block of a space, "
        "predict (and measure) an arch's latency.\n\n"
        "Examples: nasplat latency profile search_spaces/quickstart.yaml --out lut.json; "
        "nasplat latency search_spaces/quickstart.yaml --arch min --lut lut.json --measure"
    ),
    no_args_is_help=True,
)


def profile(
    space_file: Path = typer.Argument(..., metavar="SPACE.yaml", help="A search-space YAML file."),
    out: Path = typer.Option(..., "--out", help="Where to write the table (a JSON file; its folder is created). Checked before profiling."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnx (onnxruntime; default on cpu) or torch (eager; default on cuda)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(2, "--threads", min=1, help="Intra-op threads."),
    batch: int = typer.Option(1, "--batch", min=1, help="Persons per forward pass."),
    repeats: int = typer.Option(25, "--repeats", min=3, help="Timed runs per block (the entry is the fastest)."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed runs before timing."),
    passes: int = typer.Option(3, "--passes", min=1, help="Passes over each group of blocks, --repeats runs each."),
    calibration: int = typer.Option(6, "--calibration", min=0, help="Whole subnets measured to fit the correction."),
) -> None:
    """Time every distinct building block the space's subnets can contain; write the table.

    The table records the machine (CPU model or GPU name, torch / onnxruntime versions), backend,
    threads and batch, and is refused elsewhere. An interrupted build resumes from OUT.partial.

    \b
    Example:
      nasplat latency profile search_spaces/quickstart.yaml --threads 2 --out lut.json
    """
    from nasplat.cli.console import console as make_console
    from nasplat.errors import ConfigError
    from nasplat.files import check_writable
    from nasplat.latency.profile import profile_space
    from nasplat.latency.timing import TimingSettings
    from nasplat.tasks.registry import load_space_file

    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}; allowed: cpu, cuda", key="--device")
    backend = backend or ("onnx" if device == "cpu" else "torch")
    if backend not in ("onnx", "torch"):
        raise ConfigError(f"--backend {backend!r}; allowed: onnx, torch", key="--backend")
    space = load_space_file(space_file, command="latency", phase="latency")
    check_writable(out, key="--out")  # now, not after profiling every block
    settings = TimingSettings(backend=backend, device=device, threads=threads, batch=batch,  # type: ignore[arg-type]
                              warmup=warmup, repeats=repeats, passes=passes)
    console = make_console(stderr=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("profiling", total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"profiling {what[:40]}")

        table = profile_space(space, settings, out, calibration=calibration, progress=update)
    typer.echo(f"{out}: {len(table.entries)} blocks of {space.name}, {table.describe()}, "
               f"correction {table.scale:.3f} x sum + {table.offset_ms:.3f} ms, built in {table.build_seconds:.0f} s")


def predict(
    space_file: Path = typer.Argument(..., metavar="SPACE.yaml", help="A search-space YAML file."),
    arch: str = typer.Option("max", "--arch", help="max, min, an arch JSON file or JSON text."),
    lut: Path = typer.Option(Path("lut.json"), "--lut", help="The latency table (from `nasplat latency profile`)."),
    measure: bool = typer.Option(False, "--measure", help="Also measure the whole static subnet here."),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction (and measurement) as JSON."),
) -> None:
    """Predicted latency of one arch per part (BodyNet, FaceHead, HandHead x2, offset), and with
    --measure the measured whole-network latency beside it.

    \b
    Example:
      nasplat latency predict search_spaces/quickstart.yaml --arch min --lut lut.json --measure
    """
    from nasplat.latency import LatencyPredictor, load_table
    from nasplat.latency.timing import machine
    from nasplat.tasks.registry import load_space_file

    space = load_space_file(space_file, command="latency", phase="latency")
    chosen = space.load_arch(arch)
    table = load_table(lut)
    table.check_machine(machine(table.settings["device"], table.settings["backend"]), source=str(lut))
    predictor = LatencyPredictor(table, space, source=str(lut))
    parts = dict(predictor.parts(chosen))
    measured = None
    if measure:
        from nasplat.latency.timing import Timer, TimingSettings

        keys = ("backend", "device", "threads", "batch", "warmup", "repeats", "statistic", "passes")
        settings = TimingSettings(**{k: table.settings[k] for k in keys if k in table.settings})
        measured = Timer(settings).time_arch(chosen, space.all_blocks_per_module())
    if as_json:
        typer.echo(json.dumps({"predicted_ms": parts, "measured_ms": measured, "table": table.describe()}))
        return
    typer.echo(f"latency of {arch} in {space.name}: {table.describe()}")
    for key, label in (("body", "BodyNet (+ box decoding)"), ("face", "FaceHead (+ RoIAlign)"),
                       ("hand", "HandHead x2 (+ RoIAlign)"), ("offset", "whole-network offset")):
        typer.echo(f"  {label:<28}{parts[key]:>9.3f} ms")
    typer.echo(f"  {'predicted total':<28}{parts['total']:>9.3f} ms")
    if measured is not None:
        err = 100 * (parts["total"] - measured) / measured
        typer.echo(f"  {'measured':<28}{measured:>9.3f} ms  (prediction {err:+.1f}%)")


latency_app.command("profile")(profile)
latency_app.command("predict")(predict)


def register(app: typer.Typer) -> None:
    app.add_typer(latency_app, name="latency")
