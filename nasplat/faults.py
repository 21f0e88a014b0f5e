"""Faults of the machine told apart from bugs: a full disk, memory run out, a read-only file.

Ray wraps what failed on a worker in its own exceptions (`RayTaskError` with `cause`, Ray Train's
`worker_failures` and `controller_failure`), sometimes only as text. `causes(error)` walks all of
it; `machine_fault(error)` returns the one line a person needs ("<path>: no space left on the
device") or None when the failure is not one of the machine's. The phases turn such a line into
their one error line ("...; the same command resumes"), instead of an internal error whose cause
is only in a worker's log.

A leaf module: it imports only the standard library.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}
# the same faults when only their text survived (a worker's exception turned into a string)
_DISK_TEXTS = (
    ("No space left on device", "no space left on the device"),
    ("database or disk is full", "no space left on the device"),
    ("Disk quota exceeded", "the disk quota is exceeded"),
    ("Read-only file system", "the file system is read-only"),
)
_MEMORY_TEXTS = ("running low on memory", "low on memory", "Out of memory", "OutOfMemoryError", "Killed by the OOM")
_QUOTED_PATH = re.compile(r"""['"](/[^'"]+)['"]""")


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and every exception inside it: chains, Ray's task-error causes, Ray Train's
    worker and controller failures (rank 0 first); each once."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures[k] for k in sorted(failures))
        todo.extend([getattr(e, "controller_failure", None), getattr(e, "cause", None), e.__cause__, e.__context__])


def machine_fault(error: BaseException) -> str | None:
    """One line naming a fault of the machine found anywhere in `error` (the full disk and its
    path, memory run out), or None."""
    found = list(causes(error))
    for e in found:  # a real OSError says the most: its errno and its file
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            what = _DISK_ERRNOS[e.errno]
            return f"{e.filename}: {what}" if e.filename else what
    for e in found:
        text = f"{type(e).__name__}: {e}"
        for needle, what in _DISK_TEXTS:
            if needle in text:
                path = _QUOTED_PATH.search(text)
                return f"{path.group(1)}: {what}" if path else what
        if any(needle in text for needle in _MEMORY_TEXTS):
            return "a worker was killed because its node ran low on memory (lower the batch size or the workers per node)"
    return None


__all__ = ["causes", "machine_fault"]
