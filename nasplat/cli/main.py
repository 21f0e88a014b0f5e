"""Assemble the `nasplat` typer app and turn every failure into one line and an exit code.

Each command group lives in its own module exposing `register(app)`. Those modules import only
typer at their top: torch, Ray, MLflow, Optuna and the heavy parts of nasplat are imported inside
the commands that use them, so `nasplat --help` and the light commands start at once (a test runs
`python -X importtime -m nasplat --help` to keep it so).

Every command callback is wrapped by `_guard`:

- a `NasplatError` (bad YAML, bad data, a mismatched store, an unreachable service, ...) prints
  `nasplat: error: <file>: <key>: <what was wrong>` on stderr and exits 2;
- the failures a user can cause without nasplat raising (a file that is not UTF-8, an output path
  that cannot be written) are the same one line and exit 2;
- Ctrl-C says what is kept and exits 130;
- anything else is a bug: one line `nasplat: internal error: ...` naming the log file that holds
  the traceback, exit 1.

Before a command runs, log records are routed by `nasplat.logs.configure`: everything to
`<log dir>/nasplat.log`, only nasplat's warnings and errors to the console (`--verbose`: all).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import signal
import sys
import threading
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import typer
import typer.core

from nasplat import __version__, interrupt
from nasplat.cli import lease
from nasplat.errors import NasplatError

# Command-group modules, in help order.
_MODULES = (
    "nasplat.cli.run",
    "nasplat.cli.space",
    "nasplat.cli.flops",
    "nasplat.cli.latency",
    "nasplat.cli.data",
    "nasplat.cli.eval",
    "nasplat.cli.train",
    "nasplat.cli.search",
    "nasplat.cli.ui",
    "nasplat.cli.retrain",
    "nasplat.cli.validate",
    "nasplat.cli.predict",
    "nasplat.cli.cluster",
)

# Plain click help (no boxes): it reads the same in a terminal, a pipe and a log file.
app = typer.Typer(
    name="nasplat",
    help=(
        "One-shot neural architecture search. First job: ZoomNAS whole-body pose networks.\n\n"
        "Example: nasplat run experiments/quickstart.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # A pipe has no width: format help for 100 columns there instead of click's 80.
    context_settings={"max_content_width": 100, "terminal_width": shutil.get_terminal_size((100, 24)).columns},
)


def _usage_name(self: typer.core.TyperArgument) -> str:
    """Usage-line name of an argument in the usual notation: NAME when required, [NAME] when not
    (typer 0.2x writes `{name}` for a required one)."""
    name = self.metavar or self.name.upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nasplat {__version__}")
        raise typer.Exit()


_options = {"verbose": False}


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every log line (Ray's and MLflow's too) on the console."),
) -> None:
    """One-shot neural architecture search. First job: ZoomNAS whole-body pose networks."""
    _options["verbose"] = verbose


def fail(message: str) -> None:
    """Print one error line on stderr and exit 2."""
    typer.echo(f"nasplat: error: {message}", err=True)
    raise typer.Exit(code=2)


def log_dir() -> Path:
    """Where tracebacks of internal errors go: $NASPLAT_LOG_DIR, else the user's state directory."""
    if os.environ.get("NASPLAT_LOG_DIR"):
        return Path(os.environ["NASPLAT_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "nasplat" / "logs"


def _write_traceback(exc: BaseException) -> Path:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"nasplat-{stamp}-{os.getpid()}.log"
            path.write_text(f"nasplat {__version__}: {' '.join(sys.argv)}\n{text}", encoding="utf-8")
            return path
        except OSError:
            continue
    return Path("-")


def _expected_failure(e: BaseException) -> str | None:
    """The one line for a failure the user caused without nasplat raising, else None."""
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start})"
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or type(e).__name__}"
    from nasplat.faults import machine_fault  # a full disk, memory run out: the machine, not a bug

    fault = machine_fault(e)
    return f"{fault}; what was saved is kept, and the same command resumes" if fault else None


def _terminate_on_sigterm() -> None:
    """SIGTERM (how Kubernetes, Slurm and `kill` stop a job) ends a command as Ctrl-C does, in the
    main thread, as `interrupt.Terminated`: one line and exit 143 instead of Ray's stack dump."""
    if threading.current_thread() is not threading.main_thread():
        return

    def terminated(signum: int, frame: Any) -> None:
        raise interrupt.Terminated

    signal.signal(signal.SIGTERM, terminated)


_process: dict[str, bool] = {"entry": False}  # True when `main()` runs this process (not a test's runner)


def _end_stopped_process(code: int) -> None:
    """End a process whose command a signal stopped, after its one line, without the interpreter's
    teardown when no Ray runs in it: torch work cut off mid-step can leave native objects whose
    destructors call back into Python once stderr is closed, and the process then aborts (SIGABRT,
    not the exit code). Logs and the standard streams are flushed first. With Ray the normal
    teardown runs (its shutdown hook stops what it started); under a test's runner, nothing here."""
    ray = sys.modules.get("ray")
    if not _process["entry"] or (ray is not None and ray.is_initialized()):
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nasplat import logs

        logs.configure(log_dir() / "nasplat.log", verbose=_options["verbose"] or os.environ.get("NASPLAT_VERBOSE") == "1")
        _terminate_on_sigterm()
        try:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt as e:  # noted while the lease is held, then reported below
                if lease.lost_message() is None:
                    during = interrupt.activity()
                    lease.note_stopped(("terminated" if isinstance(e, interrupt.Terminated) else "interrupted")
                                       + (f" during {during}" if during else ""))
                raise
            finally:
                lease.release_all()  # the experiment's lease, however the command ended
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except NasplatError as e:
            fail(str(e))
        except KeyboardInterrupt as e:
            if lease.lost_message() is not None:  # another driver took the experiment over
                fail(lease.lost_message())
            terminated = isinstance(e, interrupt.Terminated)
            during = interrupt.activity()
            typer.echo(f"nasplat: {'terminated' if terminated else 'interrupted'}"
                       + (f" during {during}" if during else "")
                       + "; what was saved is kept, and the same command resumes", err=True)
            _end_stopped_process(143 if terminated else 130)
            raise typer.Exit(code=143 if terminated else 130) from None
        except Exception as e:  # noqa: BLE001 - the one place every other failure becomes one line
            line = _expected_failure(e)
            if line is not None:
                fail(line)
            path = _write_traceback(e)
            typer.echo(f"nasplat: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                       f"(traceback in {path})", err=True)
            raise typer.Exit(code=1) from None

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
    _process["entry"] = True
    try:
        app()
    except NasplatError as e:  # raised outside a command (e.g. while parsing options)
        typer.echo(f"nasplat: error: {e}", err=True)
        sys.exit(2)
