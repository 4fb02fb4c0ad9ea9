"""Iteration-based learning-rate schedules with warmup, as detectron2 builds them today.

detectron2's `build_lr_scheduler` (at the golden case's commit) makes
`LRMultiplier(optimizer, WarmupParamScheduler(base, warmup_factor, warmup_length, warmup_method,
rescale_interval), max_iter)` from fvcore's parameter schedulers. `Schedule` computes the same
multiplier, with the same float operations in the same order, and `WarmupScheduler` applies it to
each parameter group's base rate: ``lr = group_lr * multiplier(iteration / max_iter)``.

The base schedule `s(where)`, `where` in [0, 1]:

- `WarmupMultiStepLR`: fvcore's `MultiStepParamScheduler(values=[gamma**k for k in 0..n],
  milestones=steps, num_updates=max_iter)`: ``values[bisect_right(steps, int((where + 1e-6) *
  max_iter))]``. Steps past `max_iter` are ignored (`Schedule.ignored_steps`; detectron2 logs a
  warning); a step equal to `max_iter` is refused, as fvcore refuses it.
- `WarmupCosineLR`: `CosineParamScheduler(1, end)` with ``end = base_lr_end / base_lr``:
  ``end + 0.5 * (1 - end) * (1 + cos(pi * where))``.
- `WarmupStepWithFixedGammaLR`: `num_decays` equal steps of `gamma` over the run:
  ``[1, gamma, gamma**2, ...][int((where + 1e-6) * (num_decays + 1))]``.

Warmup (`WarmupParamScheduler`) takes the first ``warmup_length = min(warmup_iters / max_iter,
1)`` of the run and goes from ``warmup_factor * s(0)`` to the value the schedule has when warmup
ends, ``s(warmup_length)`` (``s(0)`` with `rescale_interval`): linearly, or held constant. The two
parts are joined as fvcore's `CompositeParamScheduler` joins them (the warmup rescaled to its own
[0, 1], the schedule on the run's `where` unless `rescale_interval`), including its 1e-6 epsilon
at the boundary.

Iterations are 0-based: `schedule.lr_at(0)` is the rate of the first training iteration. The torch
scheduler is stepped once after every iteration, so after `i` steps its `last_epoch` is `i` and the
optimizer holds the rate of iteration `i`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler

SchedulerName = Literal["WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR"]
WarmupMethod = Literal["linear", "constant"]

SCHEDULER_NAMES: tuple[str, ...] = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")
WARMUP_METHODS: tuple[str, ...] = ("linear", "constant")

# fvcore's ParamScheduler.WHERE_EPSILON.
WHERE_EPSILON = 1e-6


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A learning-rate schedule, checked when it is built (ValueError naming the argument).

    Rules: `scheduler` and `warmup_method` are known names; `base_lr > 0`; `max_iter >= 1`;
    `steps` strictly increasing, each >= 1 and not equal to `max_iter` (those past it are kept in
    `ignored_steps` and have no effect); `gamma > 0`; `0 <= warmup_factor <= 1`;
    `warmup_iters >= 0`; for WarmupCosineLR `0 <= base_lr_end <= base_lr`; for
    WarmupStepWithFixedGammaLR `num_decays >= 1`.
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
    num_decays: int = 3
    rescale_interval: bool = False
    _milestones: tuple[int, ...] = field(init=False, repr=False)
    _values: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check()
        steps = tuple(self.steps)
        milestones = tuple(s for s in steps if s <= self.max_iter)
        if self.scheduler == "WarmupMultiStepLR":
            values = tuple(self.gamma**k for k in range(len(milestones) + 1))
        elif self.scheduler == "WarmupStepWithFixedGammaLR":
            decays = [1.0]
            for _ in range(self.num_decays):
                decays.append(decays[-1] * self.gamma)
            values = tuple(decays)
        else:
            values = ()
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "_milestones", milestones)
        object.__setattr__(self, "_values", values)

    def _check(self) -> None:
        if self.scheduler not in SCHEDULER_NAMES:
            raise ValueError(
                f"scheduler: unknown name {self.scheduler!r}; use one of {', '.join(SCHEDULER_NAMES)}"
            )
        if self.warmup_method not in WARMUP_METHODS:
            raise ValueError(
                f"warmup_method: unknown method {self.warmup_method!r}; use one of {', '.join(WARMUP_METHODS)}"
            )
        base_lr, max_iter = self.base_lr, self.max_iter
        if not (isinstance(base_lr, int | float) and math.isfinite(base_lr) and base_lr > 0):
            raise ValueError(f"base_lr: must be a positive number, got {base_lr!r}; set e.g. 0.01")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter: must be an integer >= 1, got {max_iter!r}")
        steps = list(self.steps)
        if any(isinstance(s, bool) or not isinstance(s, int) for s in steps):
            raise ValueError(f"steps: must be integers, got {steps}")
        if any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps: must be strictly increasing, got {steps}; sort them")
        if self.scheduler == "WarmupMultiStepLR":
            if any(s < 1 for s in steps):
                raise ValueError(f"steps: every step must be >= 1, got {steps}")
            if max_iter in steps:
                raise ValueError(
                    f"steps: a step at max_iter ({max_iter}) would only change the rate after "
                    "the last iteration, and detectron2 refuses it (fvcore: milestones must be "
                    "smaller than the number of updates); remove it or raise max_iter"
                )
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma: must be a positive number, got {self.gamma!r}; detectron2 uses 0.1")
        if not (0.0 <= self.warmup_factor <= 1.0):
            raise ValueError(
                f"warmup_factor: must lie in [0, 1], got {self.warmup_factor!r}; detectron2 uses 0.001"
            )
        warmup_iters = self.warmup_iters
        if isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(f"warmup_iters: must be an integer >= 0, got {warmup_iters!r}")
        if self.scheduler == "WarmupCosineLR" and not (0.0 <= self.base_lr_end <= base_lr):
            raise ValueError(
                f"base_lr_end: must lie in [0, base_lr={base_lr}], got {self.base_lr_end!r}; "
                "the cosine schedule decays from base_lr down to base_lr_end"
            )
        if self.scheduler == "WarmupStepWithFixedGammaLR" and (
            isinstance(self.num_decays, bool) or not isinstance(self.num_decays, int) or self.num_decays < 1
        ):
            raise ValueError(f"num_decays: must be an integer >= 1, got {self.num_decays!r}")

    @property
    def ignored_steps(self) -> tuple[int, ...]:
        """Steps past `max_iter`: they never take effect (detectron2 drops them with a warning)."""
        return tuple(s for s in self.steps if s > self.max_iter) if self.scheduler == "WarmupMultiStepLR" else ()

    @property
    def effective_steps(self) -> tuple[int, ...]:
        """The WarmupMultiStepLR steps that take effect (all of them below `max_iter`)."""
        return self._milestones if self.scheduler == "WarmupMultiStepLR" else ()

    # ------------------------------------------------------------------ the multiplier

    def _base(self, where: float) -> float:
        """The schedule without warmup at `where` in [0, 1] (module docstring)."""
        if self.scheduler == "WarmupMultiStepLR":
            epoch = int((where + WHERE_EPSILON) * self.max_iter)
            return self._values[bisect_right(self._milestones, epoch)]
        if self.scheduler == "WarmupStepWithFixedGammaLR":
            index = int((where + WHERE_EPSILON) * len(self._values))
            # At where = 1 (after the last iteration) fvcore's index runs past the end; that rate
            # is never used, and the last value is the natural one.
            return self._values[min(index, len(self._values) - 1)]
        end = self.base_lr_end / self.base_lr
        return end + 0.5 * (1 - end) * (1 + math.cos(math.pi * where))

    def multiplier(self, iteration: int) -> float:
        """The factor of every group's base rate at 0-based `iteration` (0..max_iter)."""
        if not 0 <= iteration <= self.max_iter:
            raise ValueError(
                f"iteration: {iteration} is outside the schedule 0..max_iter ({self.max_iter}); "
                "resume with a max_iter at least as large as the checkpoint's iteration"
            )
        where = iteration / self.max_iter
        warmup_length = min(self.warmup_iters / self.max_iter, 1.0)
        lengths = (warmup_length, 1.0 - warmup_length)
        if not (where + WHERE_EPSILON) > lengths[0]:  # the warmup part, rescaled to [0, 1)
            start = self.warmup_factor * self._base(0.0)
            if self.warmup_method == "constant":
                return start
            end = self._base(0.0) if self.rescale_interval else self._base(warmup_length)
            progress = where / lengths[0]  # fvcore: (where - 0.0) / length
            return end * progress + start * (1 - progress)
        if not self.rescale_interval:
            return self._base(where)
        if lengths[1] == 0.0:  # warmup covers the whole run; only reached at where = 1
            return self._base(1.0)
        running_total = lengths[0] + lengths[1]
        return self._base((where - (running_total - lengths[1])) / lengths[1])

    def lr(self, group_lr: float, iteration: int) -> float:
        """The rate of 0-based `iteration` (0..max_iter) for a parameter group of base rate
        `group_lr` (base_lr, or base_lr * bias_lr_factor for biases): ``group_lr *
        multiplier(iteration)``, as detectron2's `LRMultiplier`. Raises ValueError for an
        iteration outside 0..max_iter."""
        return group_lr * self.multiplier(iteration)

    def lr_at(self, iteration: int) -> float:
        """The rate of 0-based `iteration` (0..max_iter): `lr(base_lr, iteration)`."""
        return self.lr(self.base_lr, iteration)


def ignored_steps_note(schedule: Schedule) -> str:
    """The line that tells a person which steps have no effect ('' when none)."""
    if not schedule.ignored_steps:
        return ""
    return (
        f"note: solver.steps {list(schedule.ignored_steps)} lie past solver.max_iter "
        f"{schedule.max_iter} and are ignored, as detectron2 ignores them"
    )


class WarmupScheduler(LRScheduler):
    """A torch LR scheduler giving every parameter group `schedule` applied to its own base rate.

    Construct it after the optimizer (whose groups hold their base rates, e.g. from
    `build_optimizer`) and call `step()` once after each training iteration. Group g's rate at
    iteration i is `schedule.lr(base_lr_g, i)`, as detectron2's `LRMultiplier`.

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
