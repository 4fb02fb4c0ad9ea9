"""Progress on the terminal: training's Rich bar (plain log lines off a terminal), and the bar of
the commands that loop over images."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from retinacli.training.run_log import format_scalars


class ConsoleReporter:
    """Rich progress bar (ETA, iteration of total, losses, lr, it/s, data time) on a terminal;
    one plain line per logging period when the output is a file or a pipe."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task = None
        self._max_iter = 0
        self._start = 0.0
        self._first = 0

    def start(self, *, first_iteration: int, max_iter: int) -> None:
        self._max_iter, self._first, self._start = max_iter, first_iteration, time.perf_counter()
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[scalars]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=max_iter, completed=first_iteration, scalars="")
        self._progress.start()

    def update(self, iteration: int, scalars: Mapping[str, float]) -> None:
        text = format_scalars(scalars)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=iteration + 1, scalars=text)
            return
        done = iteration + 1 - self._first
        elapsed = time.perf_counter() - self._start
        eta = elapsed / max(done, 1) * (self._max_iter - iteration - 1)
        self.console.print(
            f"iter {iteration + 1}/{self._max_iter}  {text}  eta {_duration(eta)}",
            highlight=False,
            soft_wrap=True,
        )

    def message(self, text: str) -> None:
        from retinacli.cli.app import shown

        self.console.print(shown(text, keep_newlines=True), highlight=False, soft_wrap=True)

    def evaluation(self, iteration: int, split: str, metrics: Mapping[str, Any]) -> None:
        from retinacli.cli.render import metrics_table

        self.console.print(metrics_table(metrics, title=f"{split} COCO AP after iteration {iteration}"))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def progress_bar(console: Console, label: str, *, disable: bool = False) -> Iterator[Callable[[int, int | None], None]]:
    """A transient Rich bar for a loop over images; yields the `progress(done, total)` callback
    the commands take."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=disable,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
