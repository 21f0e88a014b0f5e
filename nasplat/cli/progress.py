"""Rich progress bars shared by `train`, `search` and `run` (the terminal lives only here).

A bar is drawn at its first update, not when its block is entered: an error raised while the
command opens its stores (before any progress) is then the only line on the console."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _LazyProgress:
    """A Progress that starts drawing at its first `update`."""

    def __init__(self, progress: Progress) -> None:
        self._progress, self._started = progress, False

    def add_task(self, *args: Any, **kw: Any) -> Any:
        return self._progress.add_task(*args, **kw)

    def update(self, *args: Any, **kw: Any) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(*args, **kw)

    def stop(self) -> None:
        if self._started:
            self._progress.stop()


@contextmanager
def _drawn_on_first_update(progress: Progress) -> Iterator[_LazyProgress]:
    lazy = _LazyProgress(progress)
    try:
        yield lazy
    finally:
        lazy.stop()


@contextmanager
def training_bar(console: Console, epochs: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A bar over one epoch's steps showing epoch, step, loss and samples/s; yields the callback
    that `train_supernet(progress=...)` feeds with step and epoch events."""
    with _drawn_on_first_update(Progress(
        TextColumn("[bold]train epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("step {task.fields[step]}  loss {task.fields[loss]:.4f}  {task.fields[sps]:.1f} samples/s"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )) as bar:
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
def search_bar(console: Console, total: int, score: str = "AP") -> Iterator[Callable[[Any], None]]:
    """A bar over the trial budget showing the best score (`score` names it: AP, top1) under budget
    and the Pareto size; yields the callback that `run_search(progress=...)` feeds with
    `ProgressUpdate`s."""
    with _drawn_on_first_update(Progress(
        TextColumn("[bold]search"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )) as bar:
        task = bar.add_task("search", total=total, info="")

        def update(u: Any) -> None:
            best = "-" if u.best_ap is None else f"{u.best_ap:.4f}"
            bar.update(
                task,
                completed=u.done,
                total=u.total,
                info=f"best {score} {best}  Pareto {u.pareto_size}  running {u.running}  failed {u.failed}",
            )

        yield update
