"""Iteration-based learning-rate schedules with warmup, matching detectron2's legacy schedulers.

A `Schedule` holds the nine settings (checked once, when it is built); `Schedule.lr(group_lr, it)`
is the rate of one parameter group and `WarmupScheduler` applies it to every group of an optimizer.

Iterations are 0-based: `schedule.lr_at(0)` is the rate of the first training iteration. The torch
scheduler is stepped once after every iteration, so after `i` steps its `last_epoch` is `i` and the
optimizer holds the rate of iteration `i`.

What is matched, value for value (same float operations in the same order):

- `WarmupMultiStepLR`: detectron2's legacy `WarmupMultiStepLR.get_lr`,
  `lr = base_lr * warmup(it) * gamma ** bisect_right(steps, it)`.
- `WarmupCosineLR` with `base_lr_end == 0`: detectron2's legacy `WarmupCosineLR.get_lr`,
  `lr = base_lr * warmup(it) * 0.5 * (1 + cos(pi * it / max_iter))`.
- `WarmupCosineLR` with `base_lr_end > 0`: the cosine part becomes that of detectron2's newer
  `CosineParamScheduler(1, end)` with `end = base_lr_end / base_lr`,
  `lr = base_lr * warmup(it) * (end + (1 - end) * 0.5 * (1 + cos(pi * it / max_iter)))`,
  so the rate reaches `base_lr_end` at `it == max_iter`. With `end == 0` this is exactly the legacy
  value (multiplying by 1.0 and 0.5 and adding 0.0 are exact in floating point).

with `warmup(it) = 1` for `it >= warmup_iters`, otherwise `warmup_factor` (constant) or
`warmup_factor * (1 - it / warmup_iters) + it / warmup_iters` (linear).

Where detectron2's newer `LRMultiplier(WarmupParamScheduler(...))` differs: during linear warmup it
interpolates from `warmup_factor * s(0)` to `s(warmup_iters)` (the schedule's value at the end of
warmup) instead of multiplying the schedule by the warmup factor, and it evaluates schedules at the
fraction `it / max_iter`. The two agree exactly for WarmupMultiStepLR when no step falls inside the
warmup, and differ by less than `1 - s(warmup_iters)` for cosine; we keep the legacy values, the ones
the project's notes describe.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler

SchedulerName = Literal["WarmupMultiStepLR", "WarmupCosineLR"]
WarmupMethod = Literal["linear", "constant"]

SCHEDULER_NAMES: tuple[str, ...] = ("WarmupMultiStepLR", "WarmupCosineLR")
WARMUP_METHODS: tuple[str, ...] = ("linear", "constant")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A learning-rate schedule, checked when it is built (ValueError naming the argument).

    Rules: `scheduler` and `warmup_method` are known names; `base_lr > 0`; `max_iter >= 1`;
    `steps` strictly increasing with `0 < step <= max_iter` (detectron2 keeps steps equal to
    max_iter; they only change the rate after the last iteration); `gamma > 0`;
    `0 <= warmup_factor <= 1`; `warmup_iters >= 0`; for WarmupCosineLR
    `0 <= base_lr_end <= base_lr`. `steps` is stored as a tuple, so the schedule cannot change
    after it is checked.
    """

    base_lr: float
    scheduler: SchedulerName
    max_iter: int
    steps: Sequence[int]
    gamma: float
    warmup_factor: float
    warmup_iters: int
    warmup_method: WarmupMethod
    base_lr_end: float = 0.0

    def __post_init__(self) -> None:
        scheduler, warmup_method = self.scheduler, self.warmup_method
        base_lr, max_iter, gamma = self.base_lr, self.max_iter, self.gamma
        warmup_factor, warmup_iters = self.warmup_factor, self.warmup_iters
        base_lr_end = self.base_lr_end
        if scheduler not in SCHEDULER_NAMES:
            raise ValueError(
                f"scheduler: unknown name {scheduler!r}; use one of {', '.join(SCHEDULER_NAMES)}"
            )
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(
                f"warmup_method: unknown method {warmup_method!r}; use one of {', '.join(WARMUP_METHODS)}"
            )
        if not (isinstance(base_lr, int | float) and math.isfinite(base_lr) and base_lr > 0):
            raise ValueError(f"base_lr: must be a positive number, got {base_lr!r}; set e.g. 0.01")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter: must be an integer >= 1, got {max_iter!r}")
        step_list = list(self.steps)
        if any(isinstance(s, bool) or not isinstance(s, int) for s in step_list):
            raise ValueError(f"steps: must be integers, got {step_list}")
        if any(a >= b for a, b in zip(step_list, step_list[1:], strict=False)):
            raise ValueError(f"steps: must be strictly increasing, got {step_list}; sort them")
        if any(s <= 0 or s > max_iter for s in step_list):
            raise ValueError(
                f"steps: every step must lie in 1..max_iter ({max_iter}), got {step_list}; "
                "lower the steps or raise max_iter"
            )
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma: must be a positive number, got {gamma!r}; detectron2 uses 0.1")
        if not (0.0 <= warmup_factor <= 1.0):
            raise ValueError(
                f"warmup_factor: must lie in [0, 1], got {warmup_factor!r}; detectron2 uses 0.001"
            )
        if isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(f"warmup_iters: must be an integer >= 0, got {warmup_iters!r}")
        if scheduler == "WarmupCosineLR" and not (0.0 <= base_lr_end <= base_lr):
            raise ValueError(
                f"base_lr_end: must lie in [0, base_lr={base_lr}], got {base_lr_end!r}; "
                "the cosine schedule decays from base_lr down to base_lr_end"
            )
        object.__setattr__(self, "steps", tuple(step_list))

    def lr(self, group_lr: float, iteration: int) -> float:
        """The rate of 0-based `iteration` (0..max_iter) for a parameter group of base rate
        `group_lr`; see the module doc.

        `group_lr` is the base rate of one parameter group (base_lr, or base_lr * bias_lr_factor
        for biases); the schedule's shape (including the cosine end ratio base_lr_end / base_lr)
        is the same for every group, as with detectron2's multiplier. Raises ValueError for an
        iteration outside 0..max_iter.
        """
        it, max_iter = iteration, self.max_iter
        if not 0 <= it <= max_iter:
            raise ValueError(
                f"iteration: {it} is outside the schedule 0..max_iter ({max_iter}); "
                "resume with a max_iter at least as large as the checkpoint's iteration"
            )
        warmup = warmup_factor_at(
            it,
            warmup_factor=self.warmup_factor,
            warmup_iters=self.warmup_iters,
            warmup_method=self.warmup_method,
        )
        if self.scheduler == "WarmupMultiStepLR":
            return group_lr * warmup * self.gamma ** bisect_right(self.steps, it)
        end = self.base_lr_end / self.base_lr
        if end == 0.0:
            return group_lr * warmup * 0.5 * (1.0 + math.cos(math.pi * it / max_iter))
        half_cos = 0.5 * (1.0 + math.cos(math.pi * it / max_iter))
        return group_lr * warmup * (end + (1.0 - end) * half_cos)

    def lr_at(self, iteration: int) -> float:
        """The rate of 0-based `iteration` (0..max_iter): `lr(base_lr, iteration)`."""
        return self.lr(self.base_lr, iteration)


def warmup_factor_at(
    iteration: int, *, warmup_factor: float, warmup_iters: int, warmup_method: WarmupMethod
) -> float:
    """The warmup multiplier of 0-based `iteration` (1.0 once `iteration >= warmup_iters`)."""
    if iteration >= warmup_iters:
        return 1.0
    if warmup_method == "constant":
        return warmup_factor
    if warmup_method == "linear":
        alpha = iteration / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError(
        f"warmup_method: unknown method {warmup_method!r}; use one of {', '.join(WARMUP_METHODS)}"
    )


class WarmupScheduler(LRScheduler):
    """A torch LR scheduler giving every parameter group `schedule` applied to its own base rate.

    Construct it after the optimizer (whose groups hold their base rates, e.g. from
    `build_optimizer`) and call `step()` once after each training iteration. Group g's rate at
    iteration i is `schedule.lr(base_lr_g, i)`: the same float operations as detectron2's
    legacy schedulers applied to that group's base rate.

    `state_dict()` holds only the progress (`last_epoch`, the groups' base rates, torch's step
    bookkeeping), as detectron2's `LRMultiplier` does: on resume the schedule's shape comes from
    the `schedule` given now and the position from the checkpoint. Everything in it is a plain
    int/float/list, so it loads with `torch.load(weights_only=True)`.
    """

    _STATE_KEYS = ("base_lrs", "last_epoch", "_step_count", "_last_lr")

    def __init__(self, optimizer: torch.optim.Optimizer, *, schedule: Schedule) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch=-1)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.schedule.lr(group_lr, self.last_epoch) for group_lr in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {key: self.__dict__[key] for key in self._STATE_KEYS if key in self.__dict__}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unknown = sorted(set(state_dict) - set(self._STATE_KEYS))
        if unknown or "last_epoch" not in state_dict or "base_lrs" not in state_dict:
            raise ValueError(
                f"scheduler state: expected keys {list(self._STATE_KEYS)}, got {sorted(state_dict)}"
            )
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"scheduler state: {len(state_dict['base_lrs'])} parameter groups saved, the "
                f"optimizer has {len(self.optimizer.param_groups)}; the model or solver settings "
                "changed since the checkpoint was written"
            )
        self.__dict__.update(state_dict)
