"""The best evaluation so far and early stopping: `BestTracker`.

After each evaluation, `update(iteration, value)` says whether `value` of the tracked metric is a
new best (strictly better: higher, or lower for a metric named like a loss). `should_stop` is
true once `patience` evaluations in a row brought no improvement. The state (best value and
iteration, evaluations since the best) travels in checkpoints, so a resumed run keeps counting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class BestTracker:
    """metric: the metric's name; patience: evaluations without improvement before stopping
    (None: never stop)."""

    metric: str
    patience: int | None = None
    value: float | None = None
    iteration: int | None = None
    evaluations_since_best: int = 0

    @property
    def higher_is_better(self) -> bool:
        return "loss" not in self.metric.lower()

    def update(self, iteration: int, value: float | None) -> bool:
        """Record one evaluation; True when it is a new best. A missing value (None, e.g. AP
        without ground truth) never is."""
        better = value is not None and (
            self.value is None
            or (value > self.value if self.higher_is_better else value < self.value)
        )
        if better:
            self.value, self.iteration, self.evaluations_since_best = float(value), iteration, 0
        else:
            self.evaluations_since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evaluations_since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "iteration": self.iteration,
            "evaluations_since_best": self.evaluations_since_best,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric") != self.metric:
            return  # another metric now: start afresh
        self.value = state["value"]
        self.iteration = state["iteration"]
        self.evaluations_since_best = int(state["evaluations_since_best"])
