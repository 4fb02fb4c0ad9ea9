"""What `retina lr-plot` shows: the learning rate of every iteration, its key points, a text chart
and a PNG.

The curve uses exactly the values `Schedule.lr_at` gives (the same method the training scheduler
calls, on a schedule checked when it was built), so what is plotted is what training uses. Its
cost is bounded: a schedule of up to `MAX_CURVE_POINTS` iterations is computed at every
iteration, a longer one (a recipe may ask for 10**8) at an even sample of that many iterations
plus each key point and the iteration before it, so steps still draw as drops.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retinacli.files import atomic_write
from retinacli.training.schedules import Schedule

KeyPointKind = Literal["start", "warmup_end", "step", "end"]

# Braille cells are 2 dots wide and 4 dots high; bit of the dot at (column, row) in a cell.
_BRAILLE_BASE = 0x2800
_BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

MAX_CURVE_POINTS = 300_000
"""The most iterations whose rate a curve holds (detectron2's 3x schedule has 270000): a list of
this many floats takes a few MB."""


@dataclass(frozen=True)
class KeyPoint:
    """A labelled point of the curve: `iteration` (0-based) and the `lr` used in it."""

    kind: KeyPointKind
    label: str
    iteration: int
    lr: float


class LrCurve(list[float]):
    """Learning rates: `self[k]` is the rate of iteration `iterations[k]` (increasing) of a
    schedule of `max_iter` iterations. With every iteration present (`complete`), `self[i]` is
    iteration i's rate and the curve equals `[lr_at(i) for i in range(max_iter)]`."""

    def __init__(self, values: Sequence[float], *, iterations: Sequence[int], max_iter: int) -> None:
        super().__init__(values)
        if len(iterations) != len(self):
            raise ValueError(f"iterations: {len(iterations)} for {len(self)} values")
        self.iterations = iterations
        self.max_iter = max_iter

    @property
    def complete(self) -> bool:
        return len(self) == self.max_iter


def lr_curve(schedule: Schedule) -> LrCurve:
    """The learning rate of each iteration 0 <= i < max_iter (about 50 ms for 90k iterations);
    for more than `MAX_CURVE_POINTS` iterations, of an even sample of that many iterations plus
    each key point and the iteration before it (see the module docstring)."""
    n = schedule.max_iter
    iterations: Sequence[int]
    if n <= MAX_CURVE_POINTS:
        iterations = range(n)
    else:
        picked = {k * (n - 1) // (MAX_CURVE_POINTS - 1) for k in range(MAX_CURVE_POINTS)}
        for point in key_points(schedule):
            picked.update((point.iteration, max(0, point.iteration - 1)))
        iterations = sorted(picked)
    return LrCurve([schedule.lr_at(i) for i in iterations], iterations=iterations, max_iter=n)


def _iterations_of(curve: Sequence[float]) -> tuple[Sequence[int], int]:
    """The iteration of each value of `curve` and the schedule's length: an `LrCurve` says; a
    plain sequence holds every iteration."""
    if isinstance(curve, LrCurve):
        return curve.iterations, curve.max_iter
    return range(len(curve)), len(curve)


def key_points(schedule: Schedule) -> list[KeyPoint]:
    """Start (iteration 0), end of warmup (first iteration of the schedule proper, when
    0 < warmup_iters < max_iter), each WarmupMultiStepLR step that takes effect, and the last
    iteration (max_iter - 1), in iteration order. Steps past max_iter are left out (they are
    ignored, `Schedule.ignored_steps`)."""
    max_iter, warmup_iters = schedule.max_iter, schedule.warmup_iters
    points = [KeyPoint("start", "start", 0, schedule.lr_at(0))]
    if 0 < warmup_iters < max_iter:
        points.append(KeyPoint("warmup_end", "warmup end", warmup_iters, schedule.lr_at(warmup_iters)))
    if schedule.scheduler == "WarmupMultiStepLR":
        for index, step in enumerate(schedule.effective_steps, start=1):
            points.append(KeyPoint("step", f"step {index}", step, schedule.lr_at(step)))
    points.append(KeyPoint("end", "end", max_iter - 1, schedule.lr_at(max_iter - 1)))
    points.sort(key=lambda p: p.iteration)  # stable: start stays first
    return points


def chart_marks(points: Sequence[KeyPoint]) -> list[tuple[int, str]]:
    """The `(iteration, label)` marks for the charts: warmup end and steps."""
    return [(p.iteration, p.label) for p in points if p.kind in ("warmup_end", "step")]


def curve_json(curve: Sequence[float]) -> list[dict[str, float | int]]:
    """`[{"iteration": i, "lr": x}, ...]`, the `--json` output: every iteration of the curve (of
    a sampled `LrCurve`, its sampled iterations)."""
    iterations, _ = _iterations_of(curve)
    return [{"iteration": i, "lr": lr} for i, lr in zip(iterations, curve, strict=True)]


def _fmt_lr(value: float) -> str:
    return f"{value:.3g}"


def render_terminal_chart(
    curve: Sequence[float],
    *,
    width: int,
    height: int,
    marks: Sequence[tuple[int, str]] = (),
) -> str:
    """A braille line chart of `curve` (lr per iteration, or an `LrCurve`), `width` x `height`
    character cells for the plot area, with a y-axis labelled with the max and min rate, an x-axis
    from 0 to the last iteration, and a row of `┴` under the columns holding each mark's iteration, followed
    by a legend line. Each column shows the span of rates in its iterations (vertical strokes at
    steps). Needs width >= 8 and height >= 2.
    """
    if width < 8 or height < 2:
        raise ValueError(f"chart size: needs width >= 8 and height >= 2, got {width}x{height}")
    if not curve:
        raise ValueError("curve: is empty; nothing to draw")
    iterations, n = _iterations_of(curve)
    dots_x, dots_y = width * 2, height * 4
    top, bottom = max(curve), min(0.0, min(curve))
    span = top - bottom if top > bottom else 1.0

    def dot_row(value: float) -> int:  # 0 = top row
        frac = (value - bottom) / span
        return min(dots_y - 1, max(0, round((1.0 - frac) * (dots_y - 1))))

    def dot_col(iteration: int) -> int:
        return min(dots_x - 1, iteration * dots_x // n)

    cells = [[0] * width for _ in range(height)]
    previous_last = -1  # index in `curve` of the last value drawn by the previous dot column
    for col in range(dots_x):
        first = col * n // dots_x
        last = max(first, (col + 1) * n // dots_x - 1)
        start, stop = bisect.bisect_left(iterations, first), bisect.bisect_right(iterations, last)
        if start == stop:
            continue  # a sampled curve without a value in this column's iterations
        chunk = curve[start:stop]
        low, high = min(chunk), max(chunk)
        if previous_last >= 0 and iterations[previous_last] < first:
            # Join the previous column's last value, so that drops (steps) draw as vertical lines.
            low, high = min(low, curve[previous_last]), max(high, curve[previous_last])
        previous_last = stop - 1
        for row in range(dot_row(high), dot_row(low) + 1):
            cells[row // 4][col // 2] |= _BRAILLE_BITS[col % 2][row % 4]

    top_label, bottom_label = _fmt_lr(top), _fmt_lr(bottom)
    pad = max(len(top_label), len(bottom_label))
    lines = []
    for r in range(height):
        label = top_label if r == 0 else bottom_label if r == height - 1 else ""
        body = "".join(chr(_BRAILLE_BASE + bits) for bits in cells[r])
        lines.append(f"{label:>{pad}} ┤{body}")
    axis = [" "] * width
    for iteration, _ in marks:
        if 0 <= iteration < n:
            axis[dot_col(iteration) // 2] = "┴"
    lines.append(" " * pad + " └" + "".join(axis))
    start, end = "0", str(n - 1)
    lines.append(" " * (pad + 2) + start + end.rjust(width - len(start)))
    if marks:
        legend = ", ".join(f"{label} @ {iteration}" for iteration, label in marks)
        lines.append(" " * (pad + 2) + "┴ " + legend)
    return "\n".join(lines)


def save_png(
    curve: Sequence[float],
    path: str | os.PathLike[str],
    marks: Sequence[tuple[int, str]] = (),
    *,
    title: str = "learning rate",
) -> Path:
    """Plot `curve` to a PNG at `path` (matplotlib Agg), a dashed vertical line and label per mark.

    Written atomically (`files.atomic_write`: a temporary file in the same directory, then
    `os.replace`). Returns the path.
    """
    # An explicit Agg canvas: no display needed, and pyplot's global backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    iterations, n = _iterations_of(curve)
    ax.plot(list(iterations), list(curve), color="tab:blue", linewidth=1.5)
    top = max(curve) if curve else 1.0
    for iteration, label in marks:
        ax.axvline(iteration, color="tab:gray", linestyle="--", linewidth=0.8)
        ax.annotate(
            label,
            xy=(iteration, top),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="tab:gray",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.set_xlim(0, max(n - 1, 1))
    ax.set_ylim(bottom=0.0, top=top * 1.05 if top > 0 and math.isfinite(top) else 1.0)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_write(target) as handle:
        fig.savefig(handle, format="png")
    return target
