"""Assemble the `nasplat` typer app and turn user errors into one line and exit code 2.

Each command group lives in its own module exposing `register(app)`. Every command callback is
wrapped so that a `NasplatError` (bad YAML, bad data, a mismatched store, ...) prints one line on
stderr, `nasplat: error: <file>: <key>: <what was wrong>`, and exits 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable

import typer

from nasplat.errors import NasplatError

# Command-group modules, in help order.
_MODULES = (
    "nasplat.cli.run",
    "nasplat.cli.space",
    "nasplat.cli.flops",
    "nasplat.cli.data",
    "nasplat.cli.eval",
    "nasplat.cli.train",
    "nasplat.cli.search",
)

app = typer.Typer(
    name="nasplat",
    help="One-shot neural architecture search. First job: ZoomNAS whole-body pose networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """Print one error line on stderr and exit 2."""
    typer.echo(f"nasplat: error: {message}", err=True)
    raise typer.Exit(code=2)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NasplatError as e:
            fail(str(e))
        except KeyboardInterrupt:
            typer.echo("nasplat: interrupted; state up to the last checkpoint/trial is kept", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def _guard_all(t: typer.Typer) -> None:
    for info in t.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_nasplat_guarded", False):
            info.callback = _guard(info.callback)
            info.callback._nasplat_guarded = True  # type: ignore[attr-defined]
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _guard_all(group.typer_instance)


def _register_all() -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that command group is not part of this build
                continue
            raise
        module.register(app)
    _guard_all(app)


_register_all()


def main() -> None:
    """Console entry point."""
    try:
        app()
    except NasplatError as e:  # raised outside a command (e.g. while parsing options)
        typer.echo(f"nasplat: error: {e}", err=True)
        sys.exit(2)
