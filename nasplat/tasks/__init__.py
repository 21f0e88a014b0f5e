"""Tasks: what the platform searches networks for (`base.Task`), looked up by name (`registry`).

Each task lives in a package of its own under `nasplat/tasks/` and is imported when it is first
asked for, so nothing here imports a task.
"""

from nasplat.tasks.base import Metric, Task
from nasplat.tasks.registry import DEFAULT_TASK, get_task, list_tasks

__all__ = ["DEFAULT_TASK", "Metric", "Task", "get_task", "list_tasks"]
