"""How many iterations fit in a time budget (`solver.time_budget`, `retina train --time`).

The speed is measured on the real data and model before training (`Speed`: seconds per training
iteration with data loading and augmentation, per evaluation, per checkpoint), and the plan is
the largest iteration count whose predicted total, what was already spent included, stays within
the budget less a safety margin. The schedule scales with the count (`recipe.scaling`), so the
numbers of evaluations and checkpoints are about the recipe's whatever the count: both are
counted exactly for each candidate.

Nothing here reads a clock: the caller measures (`Trainer.time_iterations` and the commands),
this module only plans, so a plan is a pure function of its measurements.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SAFETY_MARGIN = 0.05  # of the budget, kept free: speed varies while training
WARMUP_ITERATIONS = 3  # measured iterations left out (loader start, allocator, caches)
MEASURED_ITERATIONS = 12  # timed after those


@dataclass(frozen=True)
class Speed:
    """Measured costs, in seconds."""

    per_iteration: float
    per_evaluation: float  # of the periodic evaluation set; 0 without one (none is run)
    per_checkpoint: float  # a checkpoint and a model file written
    final_evaluation: float  # what runs once at the end (the test set after a val set)
    spent: float  # from the start of the command to the end of the measurement

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def seconds_per_iteration(times: Sequence[float], *, warmup: int = WARMUP_ITERATIONS) -> float:
    """The median of the iteration times after the first `warmup` (the median: one slow
    iteration, a page fault or a loader hiccup, does not move it)."""
    kept = list(times[warmup:]) or list(times)
    if not kept:
        raise ValueError("no iteration was timed")
    return float(statistics.median(kept))


def evaluations_in(max_iter: int, eval_period: int) -> int:
    """Evaluations of a run of `max_iter` iterations, as the loop runs them: one at every
    multiple of `eval_period` and one at the end (only the one at the end when it is 0)."""
    if eval_period <= 0:
        return 1
    return max_iter // eval_period + (1 if max_iter % eval_period else 0)


def checkpoints_in(max_iter: int, checkpoint_period: int) -> int:
    """Checkpoints written by a run of `max_iter` iterations (every period and at the end)."""
    return max_iter // checkpoint_period + (1 if max_iter % checkpoint_period else 0)


@dataclass(frozen=True)
class BudgetPlan:
    """The chosen iteration count and how its time divides."""

    budget: float
    max_iter: int
    evaluations: int
    checkpoints: int
    predicted: float  # seconds from the start of the command to the end of training
    speed: Speed

    def explain(self) -> str:
        s = self.speed
        parts = [f"{s.per_iteration:.3f} s per iteration (data loading and augmentation included)"]
        if self.evaluations:
            parts.append(f"{s.per_evaluation:.1f} s per evaluation x {self.evaluations}")
        parts.append(f"{s.per_checkpoint:.2f} s per checkpoint x {self.checkpoints}")
        if s.final_evaluation:
            parts.append(f"{s.final_evaluation:.1f} s for the final test evaluation")
        return (
            f"time budget {format_seconds(self.budget)}: measured {', '.join(parts)}, "
            f"{s.spent:.1f} s spent before training; {self.max_iter} iterations are predicted to end "
            f"{format_seconds(self.predicted)} after the start ({SAFETY_MARGIN:.0%} of the budget kept free)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_seconds": self.budget,
            "max_iter": self.max_iter,
            "evaluations": self.evaluations,
            "checkpoints": self.checkpoints,
            "predicted_seconds": self.predicted,
            "measured": self.speed.to_dict(),
        }


class BudgetTooSmall(ValueError):
    """Not even one iteration and its evaluations fit; `needed` is what one would take."""

    def __init__(self, budget: float, needed: float) -> None:
        super().__init__(f"{format_seconds(budget)} is less than one iteration with its evaluation and checkpoint takes here ({format_seconds(needed)})")
        self.needed = needed


def plan_iterations(
    budget: float,
    speed: Speed,
    *,
    periods: Callable[[int], tuple[int, int]],
    margin: float = SAFETY_MARGIN,
    limit: int = 10**8,
) -> BudgetPlan:
    """The largest `max_iter` (1..limit) whose predicted time fits `budget * (1 - margin)`
    (found by trying each count down from what the iterations alone allow).

    periods: `periods(max_iter)` -> (eval_period, checkpoint_period) of the schedule scaled to
        that count (eval_period 0: no periodic evaluation).
    Raises BudgetTooSmall when even one iteration does not fit.
    """
    available = budget * (1 - margin)

    def predicted(n: int) -> tuple[float, int, int]:
        eval_period, checkpoint_period = periods(n)
        evaluations = evaluations_in(n, eval_period)
        checkpoints = checkpoints_in(n, checkpoint_period)
        total = (
            speed.spent
            + n * speed.per_iteration
            + evaluations * speed.per_evaluation
            + checkpoints * speed.per_checkpoint
            + speed.final_evaluation
        )
        return total, evaluations, checkpoints

    if predicted(1)[0] > available:
        raise BudgetTooSmall(budget, predicted(1)[0] / (1 - margin))
    # The counts of evaluations and checkpoints jump with the rounding of the scaled periods, so
    # the total is not monotone in n: walk down from the count the iterations alone would allow
    # (an upper bound) to the first that fits, the largest.
    room = available - speed.spent - speed.final_evaluation
    n = limit if speed.per_iteration <= 0 else max(1, min(limit, int(room / speed.per_iteration)))
    while n > 1 and predicted(n)[0] > available:  # steps: about the overhead over the seconds per iteration
        n -= 1
    total, evaluations, checkpoints = predicted(n)
    return BudgetPlan(budget=budget, max_iter=n, evaluations=evaluations, checkpoints=checkpoints, predicted=total, speed=speed)


def format_seconds(seconds: float) -> str:
    """90 -> "1m30s", 7200 -> "2h", 12.5 -> "12.5s"."""
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{rest}s" if rest else "")
    return text or "0s"
