"""Tasks by name: the import list of nasplat's own tasks and the `nasplat.tasks` entry points.

`get_task(name)` imports the task's module the first time it is asked for and returns its one
instance. The import is by name, when asked, so the experiment loader (core) names no task and a
task's package may use the training and subnet layers. A task outside nasplat registers in its
distribution's metadata:

    [project.entry-points."nasplat.tasks"]
    my_task = "my_package.task:MyTask"
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from nasplat.errors import ConfigError
from nasplat.tasks.base import Task

__all__ = ["DEFAULT_TASK", "get_task", "list_tasks"]

DEFAULT_TASK = "zoomnas"  # an experiment without `task:`

# nasplat's own tasks: name -> "module:class". Adding a task to nasplat adds one line here.
_BUILTIN = {
    "zoomnas": "nasplat.tasks.zoomnas.task:ZoomNASTask",
    "classification": "nasplat.tasks.classification.task:ClassificationTask",
}
ENTRY_POINT_GROUP = "nasplat.tasks"


def _targets() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_BUILTIN}  # a plug-in cannot shadow a built-in task


def list_tasks() -> list[str]:
    """Names of every task: nasplat's own and the installed plug-ins', sorted."""
    return sorted(_targets())


@lru_cache(maxsize=None)
def get_task(name: str) -> Task:
    """The task called `name` (its class instantiated once). Raises ConfigError (key `task`) for
    an unknown name or a registered one that does not import or is not a `Task`."""
    target = _targets().get(name)
    if target is None:
        raise ConfigError(f"unknown task {name!r}; allowed: {', '.join(list_tasks())}", key="task")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"task {name!r} ({target}) does not import: {e}", key="task") from e
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task {name!r} ({target}) is not a nasplat.tasks.Task", key="task")
    task = cls()
    if task.name != name:
        raise ConfigError(f"task {target} calls itself {task.name!r}, registered as {name!r}", key="task")
    return task
