"""The plan of a time budget: counts of evaluations and checkpoints as the loop runs them, the
largest iteration count that fits (against trying every count), a budget too small, the speed."""

from __future__ import annotations

import pytest

from retinacli.training.time_budget import (
    BudgetTooSmall,
    Speed,
    checkpoints_in,
    evaluations_in,
    format_seconds,
    plan_iterations,
    seconds_per_iteration,
)


def test_counts_of_evaluations_and_checkpoints_follow_the_loop() -> None:
    assert evaluations_in(100, 0) == 1  # only the one at the end
    assert evaluations_in(100, 25) == 4 and evaluations_in(101, 25) == 5
    assert checkpoints_in(100, 30) == 4 and checkpoints_in(90, 30) == 3


def test_the_largest_count_that_fits_is_chosen() -> None:
    speed = Speed(per_iteration=0.5, per_evaluation=10.0, per_checkpoint=2.0, final_evaluation=5.0, spent=20.0)
    # periods scale with the count: an evaluation every 100 and a checkpoint every 250 of 1000
    periods = lambda n: (max(1, round(n / 10)), max(1, round(n / 4)))  # noqa: E731
    plan = plan_iterations(1000, speed, periods=periods)

    def total(n: int) -> float:
        eval_period, checkpoint_period = periods(n)
        return 20 + 0.5 * n + 10 * evaluations_in(n, eval_period) + 2 * checkpoints_in(n, checkpoint_period) + 5

    # 950 s of the 1000 are planned (5 % kept free); the search agrees with trying every count
    assert plan.max_iter == max(n for n in range(1, 3000) if total(n) <= 950)
    assert plan.predicted == total(plan.max_iter) <= 950 < total(plan.max_iter + 1)
    assert plan.evaluations == 10 and plan.checkpoints == 4


def test_a_budget_below_one_iteration_is_refused() -> None:
    speed = Speed(per_iteration=5.0, per_evaluation=10.0, per_checkpoint=1.0, final_evaluation=0.0, spent=3.0)
    with pytest.raises(BudgetTooSmall) as info:
        plan_iterations(10, speed, periods=lambda n: (0, 1))
    assert info.value.needed == pytest.approx((3 + 5 + 10 + 1) / 0.95)


def test_speed_is_the_median_after_warmup_and_durations_read_plainly() -> None:
    assert seconds_per_iteration([9.0, 5.0, 4.0, 1.0, 2.0, 100.0]) == 2.0  # the first 3 left out
    assert [format_seconds(s) for s in (12.5, 90, 1800, 7200, 5400)] == ["12.5s", "1m30s", "30m", "2h", "1h30m"]
