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
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from nasplat.errors import ConfigError
from nasplat.tasks.base import Task

__all__ = ["DEFAULT_TASK", "get_task", "list_tasks", "load_space_file"]

DEFAULT_TASK = "zoomnas"  # an experiment without `task:`

# nasplat's own tasks: name -> ("module:class", "module:function" loading a space file without the
# task's heavy stack, for the light space-file commands). Adding a task to nasplat adds one line.
_BUILTIN = {
    "zoomnas": ("nasplat.tasks.zoomnas.task:ZoomNASTask", "nasplat.space:load_space"),
    "classification": ("nasplat.tasks.classification.task:ClassificationTask",
                       "nasplat.tasks.classification.space:load_classification_space"),
}
ENTRY_POINT_GROUP = "nasplat.tasks"


def _targets() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **{name: target for name, (target, _) in _BUILTIN.items()}}  # a plug-in cannot shadow a built-in task


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


def load_space_file(path: str | Path, *, command: str, phase: str | None = None) -> Any:
    """The space of a space file, loaded by the task its `task:` key names (ZoomNAS's when it
    names none), for `nasplat <command>`. `phase`: the command needs the task to have this phase
    (`Task.phases`, e.g. "latency"). Raises ConfigError naming the file and the key."""
    from nasplat.files import read_yaml, resolve_path

    file = resolve_path(path)
    text = read_yaml(file)
    name = str(text.get("task", DEFAULT_TASK)) if isinstance(text, Mapping) else DEFAULT_TASK
    light = _BUILTIN[name][1] if name in _BUILTIN else None
    if phase is None and light is not None:  # no task class, no torch: `nasplat space show` stays quick
        module_name, _, attr = light.partition(":")
        return getattr(importlib.import_module(module_name), attr)(file)
    try:
        task = get_task(name)
    except ConfigError as e:
        raise ConfigError(e.detail, source=str(file), key="task") from e
    if phase is not None and phase not in task.phases:
        raise ConfigError(f"`nasplat {command}` is not available for task {task.name!r} yet: it has no {phase} phase",
                          source=str(file), key="task")
    return task.load_space(file)
