"""`log.txt`: everything a training run shows, as plain text, in its output folder.

`TextLog` is a `Reporter` that appends one line per message, logging period and evaluation to a
file (flushed at once, so `tail -f` works and a crash loses nothing); `TeeReporter` sends every
report to several reporters (the terminal's and the file's). `format_scalars` is the one wording
of a progress line, shared with the terminal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from retinacli.training.loop import Reporter

METRIC_ORDER = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def format_scalars(scalars: Mapping[str, float]) -> str:
    """`epoch 1.25  loss_cls 0.8123  loss_box_reg 0.3011  lr 0.0004  2.1 it/s  data 0.012s`."""
    parts = [f"epoch {scalars['epoch']:.2f}"] if "epoch" in scalars else []
    parts += [f"{k} {scalars[k]:.4f}" for k in ("loss_cls", "loss_box_reg") if k in scalars]
    if "num_pos_anchors" in scalars:
        parts.append(f"pos/img {scalars['num_pos_anchors']:.1f}")
    if "boxes_dropped" in scalars:
        parts.append(f"dropped {scalars['boxes_dropped']:.1f} boxes/batch")
    if "lr" in scalars:
        parts.append(f"lr {scalars['lr']:.3g}")
    if scalars.get("time"):
        parts.append(f"{1.0 / scalars['time']:.2f} it/s")
    if "data_time" in scalars:
        parts.append(f"data {scalars['data_time']:.3f}s")
    return "  ".join(parts)


def format_evaluation(iteration: int, split: str, metrics: Mapping[str, Any]) -> str:
    """Two lines: the COCO APs of `split` after `iteration`, then the AP of each category."""

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    overall = "  ".join(f"{name} {number(metrics.get(name))}" for name in METRIC_ORDER)
    per_category = ", ".join(f"{k} {number(v)}" for k, v in (metrics.get("per_category") or {}).items())
    return f"{split} COCO AP after iteration {iteration}: {overall}\n  per category: {per_category}"


class TextLog:
    """A Reporter writing plain lines to `path` (appended: a resumed run continues the file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._max_iter = 0

    def _write(self, text: str) -> None:
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for line in text.splitlines() or [""]:
                self._file.write(f"[{stamp}] {line}\n")
            self._file.flush()

    def start(self, *, first_iteration: int, max_iter: int) -> None:
        self._max_iter = max_iter
        self._write(f"training iterations {first_iteration + 1}..{max_iter}")

    def update(self, iteration: int, scalars: Mapping[str, float]) -> None:
        self._write(f"iter {iteration + 1}/{self._max_iter}  {format_scalars(scalars)}")

    def message(self, text: str) -> None:
        self._write(text)

    def evaluation(self, iteration: int, split: str, metrics: Mapping[str, Any]) -> None:
        self._write(format_evaluation(iteration, split, metrics))

    def stop(self) -> None:
        pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TeeReporter:
    """Sends every report to each of `reporters`, in order."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def start(self, *, first_iteration: int, max_iter: int) -> None:
        for reporter in self.reporters:
            reporter.start(first_iteration=first_iteration, max_iter=max_iter)

    def update(self, iteration: int, scalars: Mapping[str, float]) -> None:
        for reporter in self.reporters:
            reporter.update(iteration, scalars)

    def message(self, text: str) -> None:
        for reporter in self.reporters:
            reporter.message(text)

    def evaluation(self, iteration: int, split: str, metrics: Mapping[str, Any]) -> None:
        for reporter in self.reporters:
            reporter.evaluation(iteration, split, metrics)

    def stop(self) -> None:
        for reporter in self.reporters:
            reporter.stop()
