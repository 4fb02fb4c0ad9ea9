"""`retina lr-plot`: a recipe's learning-rate schedule, as training applies it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retinacli.build import build_schedule
from retinacli.files import prepare_output_file
from retinacli.recipe import Override, load_recipe
from retinacli.training import lr_plot
from retinacli.training.schedules import Schedule


@dataclass(frozen=True)
class LrPlot:
    """The schedule, the rate of every iteration, its key points and the PNG written (if any)."""

    schedule: Schedule
    curve: list[float]
    points: list[lr_plot.KeyPoint]
    saved: Path | None

    @property
    def marks(self) -> list[tuple[int, str]]:
        return lr_plot.chart_marks(self.points)


def plot_learning_rate(
    recipe: Path, overrides: Sequence[str | Override] = (), *, out: Path | None = None, overwrite: bool = False
) -> LrPlot:
    """The recipe's `solver` schedule; with `out`, also a PNG of it there (an existing file only
    with `overwrite`)."""
    if out is not None:
        prepare_output_file(out, overwrite=overwrite)
    schedule = build_schedule(load_recipe(recipe, overrides).solver)
    curve = lr_plot.lr_curve(schedule)
    points = lr_plot.key_points(schedule)
    saved = None
    if out is not None:
        title = f"{recipe.name}: {schedule.scheduler}"
        saved = lr_plot.save_png(curve, out, lr_plot.chart_marks(points), title=title)
    return LrPlot(schedule=schedule, curve=curve, points=points, saved=saved)
