"""The one exception hierarchy of nasplat.

Every error a user can cause (bad YAML, a malformed annotation file, an arch outside its space,
a stored study that no longer matches) is a `NasplatError`. The CLI turns one into a single line
on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NasplatError(Exception):
    """Base class of every user-facing nasplat error.

    `str(error)` is the one line the CLI prints: it names the file (when there is one), the key
    path, the offending value and what was allowed.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.detail = message
        parts = [p for p in (source, key) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(NasplatError):
    """A YAML or JSON configuration file (space, trainer, experiment, arch) is invalid."""


class ArchError(NasplatError):
    """An architecture is not a member of its search space."""


class DataError(NasplatError):
    """A data set, annotation file or results file is missing or malformed."""


class StoreError(NasplatError):
    """The study store cannot be opened, or does not match the experiment."""


class BudgetError(NasplatError):
    """A FLOPs budget that no architecture of the space meets."""


class TrainingError(NasplatError):
    """Training cannot start or continue (bad checkpoint, mismatched experiment)."""


class StorageError(NasplatError):
    """The experiment's storage root (`storage_path`: a folder, NFS, or an object store) cannot be
    reached, read or written."""
