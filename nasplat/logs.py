"""Where log records go when nasplat runs as the `nasplat` command.

`configure(log_file, verbose=...)` (called by the CLI before a command runs) sends every record
at INFO and above to `log_file` (rotated at 5 MB, 3 kept) and shows on the console only
nasplat's own warnings and anyone's errors; `verbose` shows everything at INFO and above. The
libraries that install their own console handlers are brought under the same rule: MLflow (told
not to configure logging, before it is imported) and Ray (`adopt("ray")`, called once Ray is
imported, since Ray sets its handler up at import). Used as a library, nasplat touches no logging
configuration: `adopt` does nothing unless `configure` ran.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

# Loggers that their libraries give a console handler of their own (at import or at start-up).
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic", "sqlalchemy.engine", "huey")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_configured = False


class _ConsoleFilter(logging.Filter):
    """Quiet mode: nasplat's warnings and everyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (record.name.startswith("nasplat") and record.levelno >= logging.WARNING)


def configure(log_file: Path | None, *, verbose: bool = False) -> None:
    """Route log records as the module doc says. `log_file` None: no file (console only)."""
    global _configured
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_nasplat", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.setLevel(logging.INFO)
    if not verbose:
        console.addFilter(_ConsoleFilter())
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file = logging.handlers.RotatingFileHandler(log_file, maxBytes=5 * 2**20, backupCount=3, encoding="utf-8")
            file.setFormatter(logging.Formatter(_FORMAT))
            file.setLevel(logging.INFO)
            handlers.append(file)
        except OSError:
            pass  # an unwritable log directory costs the log file, not the command
    for handler in handlers:
        handler._nasplat = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    _configured = True
    adopt(*LIBRARY_LOGGERS)


def adopt(*names: str) -> None:
    """Make the named libraries' loggers follow `configure`'s routing: their own handlers are
    removed and their records propagate to the root logger. Does nothing unless `configure` ran."""
    if not _configured:
        return
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def log_file() -> Path | None:
    """The file `configure` writes to, or None."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_nasplat", False) and isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


__all__ = ["LIBRARY_LOGGERS", "adopt", "configure", "log_file"]
