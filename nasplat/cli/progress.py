"""Rich progress bars shared by `train`, `search` and `run` (the terminal lives only here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def training_bar(console: Console, epochs: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A bar over one epoch's steps showing epoch, step, loss and samples/s; yields the callback
    that `train_supernet(progress=...)` feeds with step and epoch events."""
    with Progress(
        TextColumn("[bold]train epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("step {task.fields[step]}  loss {task.fields[loss]:.4f}  {task.fields[sps]:.1f} samples/s"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=None, epoch=0, epochs=epochs, step=0, loss=0.0, sps=0.0)

        def update(event: dict[str, Any]) -> None:
            if event.get("event") == "step":
                bar.update(
                    task,
                    completed=event["batch"],
                    total=event["steps_per_epoch"],
                    epoch=event["epoch"] + 1,
                    step=event["step"],
                    loss=event["losses"]["total"],
                    sps=event["samples_per_s"],
                )
            else:
                bar.update(task, epoch=event.get("epoch", 0), step=event.get("step", 0))

        yield update


@contextmanager
def search_bar(console: Console, total: int) -> Iterator[Callable[[Any], None]]:
    """A bar over the trial budget showing the best AP under budget and the Pareto size; yields the
    callback that `run_search(progress=...)` feeds with `ProgressUpdate`s."""
    with Progress(
        TextColumn("[bold]search"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("search", total=total, info="")

        def update(u: Any) -> None:
            best = "-" if u.best_ap is None else f"{u.best_ap:.4f}"
            bar.update(
                task,
                completed=u.done,
                total=u.total,
                info=f"best AP {best}  Pareto {u.pareto_size}  running {u.running}  failed {u.failed}",
            )

        yield update
