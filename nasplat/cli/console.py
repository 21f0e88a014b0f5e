"""The terminal of the CLI: one place that decides how wide output is.

Rich wraps at 80 columns when stdout is not a terminal, which breaks tables and long lines
mid-word in a pipe or a log file; there, output is as wide as its content needs (up to 200
columns, then tables fold cells, never words)."""

from __future__ import annotations

import sys
from typing import Any

PIPE_WIDTH = 200


def console(*, stderr: bool = False) -> Any:
    """A rich Console on stdout (or stderr) with the width policy above."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, width=width, soft_wrap=width is not None)


__all__ = ["PIPE_WIDTH", "console"]
