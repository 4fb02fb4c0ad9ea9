"""Exact learning-rate lists of the warmup schedules (detectron2's legacy values)."""

from __future__ import annotations

import io
import math
from bisect import bisect_right

import pytest
import torch

from retinacli.train.schedules import Schedule, WarmupScheduler

# A tiny schedule: 12 iterations, 4 of linear warmup from 0.1x, steps at 6 and 9.
MULTISTEP = dict(
    base_lr=0.1,
    scheduler="WarmupMultiStepLR",
    max_iter=12,
    steps=[6, 9],
    gamma=0.1,
    warmup_factor=0.1,
    warmup_iters=4,
    warmup_method="linear",
)
COSINE = dict(MULTISTEP, scheduler="WarmupCosineLR", steps=[])


def legacy_d2(it: int, *, base_lr, scheduler, max_iter, steps, gamma, warmup_factor,
              warmup_iters, warmup_method, base_lr_end=0.0):  # fmt: skip
    """detectron2's legacy get_lr, written out from its formula (same operation order)."""
    if it >= warmup_iters:
        factor = 1.0
    elif warmup_method == "constant":
        factor = warmup_factor
    else:
        alpha = it / warmup_iters
        factor = warmup_factor * (1 - alpha) + alpha
    if scheduler == "WarmupMultiStepLR":
        return base_lr * factor * gamma ** bisect_right(steps, it)
    return base_lr * factor * 0.5 * (1.0 + math.cos(math.pi * it / max_iter))


def lrs(config, iterations):
    """The rates of `iterations` under the schedule of the keyword arguments `config`."""
    schedule = Schedule(**config)
    return [schedule.lr_at(i) for i in iterations]


def test_multistep_linear_warmup_exact_list():
    got = lrs(MULTISTEP, range(13))
    # warmup: factor = 0.1 * (1 - i/4) + i/4 -> 0.1, 0.325, 0.55, 0.775; times base 0.1.
    # then 0.1 until the step at 6, 0.1 * 0.1 from 6, 0.1 * 0.1**2 from 9 (12 = max_iter included).
    assert got == [
        0.010000000000000002,
        0.0325,
        0.05500000000000001,
        0.07750000000000001,
        0.1,
        0.1,
        0.010000000000000002,
        0.010000000000000002,
        0.010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
    ]
    assert got == [legacy_d2(i, **MULTISTEP) for i in range(13)]


def test_multistep_constant_warmup_exact_list():
    config = dict(MULTISTEP, warmup_method="constant")
    got = lrs(config, range(12))
    # constant warmup: 0.1 * 0.1 for i < 4, then as above.
    assert (
        got
        == [0.010000000000000002] * 4
        + [0.1] * 2
        + [0.010000000000000002] * 3
        + [0.0010000000000000002] * 3
    )
    assert got == [legacy_d2(i, **config) for i in range(12)]


def test_no_warmup_starts_at_base_lr():
    config = dict(MULTISTEP, warmup_iters=0)
    assert lrs(config, range(7)) == [0.1] * 6 + [0.010000000000000002]


def test_cosine_linear_warmup_exact_list():
    got = lrs(COSINE, range(13))
    # lr = 0.1 * warmup(i) * 0.5 * (1 + cos(pi * i / 12)); e.g. i=4: 0.1 * 1 * 0.5 * 1.5 = 0.075,
    # i=6: 0.1 * 0.5 * (1 + cos(pi/2)) = 0.05, i=12: cos(pi) = -1 -> exactly 0.
    assert got == [
        0.010000000000000002,
        0.03194629467719736,
        0.05131569860407208,
        0.06615038777097873,
        0.07500000000000001,
        0.06294095225512604,
        0.05,
        0.03705904774487397,
        0.025000000000000012,
        0.014644660940672627,
        0.006698729810778065,
        0.00170370868554659,
        0.0,
    ]
    assert got == [legacy_d2(i, **COSINE) for i in range(13)]
    # i=1 by hand: warmup 0.1*0.75 + 0.25 = 0.325; 0.5*(1+cos(pi/12)) = 0.98296291...
    assert got[1] == pytest.approx(0.1 * 0.325 * 0.9829629131445341, rel=1e-15)


def test_cosine_constant_warmup_and_end_value():
    config = dict(COSINE, warmup_method="constant", base_lr_end=0.01)
    got = lrs(config, (0, 3, 4, 6, 12))
    # end ratio 0.01 / 0.1 = 0.1: lr = 0.1 * w * (0.1 + 0.9 * 0.5 * (1 + cos(pi i / 12)))
    # i=0: 0.1 * 0.1 * 1 = 0.01; i=3: 0.1 * 0.1 * (0.1 + 0.9 * 0.853553...) ; i=4: 0.1 * 0.775
    # i=6: 0.1 * (0.1 + 0.45) = 0.055; i=12: 0.1 * 0.1 = base_lr_end.
    expected = [0.01, 0.1 * 0.1 * (0.1 + 0.9 * 0.8535533905932737), 0.0775, 0.055, 0.01]
    assert got == pytest.approx(expected, rel=1e-14, abs=0.0)


def test_cosine_end_zero_equals_legacy_bit_for_bit():
    config = dict(COSINE, max_iter=37, warmup_iters=5)
    assert lrs(config, range(38)) == [legacy_d2(i, **config) for i in range(38)]


def _sgd_two_groups(lrs=(0.1, 0.2)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _run(optimizer, scheduler, n):
    seen = []
    for _ in range(n):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_scheduler_gives_each_group_its_own_base_times_schedule():
    optimizer = _sgd_two_groups()
    schedule = Schedule(**MULTISTEP)
    scheduler = WarmupScheduler(optimizer, schedule=schedule)
    seen = _run(optimizer, scheduler, 12)
    assert [row[0] for row in seen] == [schedule.lr_at(i) for i in range(12)]
    assert [row[1] for row in seen] == [schedule.lr(0.2, i) for i in range(12)]
    # the bias group (lr factor 2) is twice the base group at every iteration
    assert [row[1] for row in seen] == pytest.approx([2 * row[0] for row in seen], rel=1e-15)
    assert seen[6] == [0.010000000000000002, 0.020000000000000004]


def test_scheduler_state_round_trip_resumes_exactly():
    reference = _run(*_pair(), 12)

    optimizer, scheduler = _pair()
    first = _run(optimizer, scheduler, 5)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert set(saved["scheduler"]) == {"base_lrs", "last_epoch", "_step_count", "_last_lr"}
    assert saved["scheduler"]["last_epoch"] == 5

    optimizer2, scheduler2 = _pair()
    optimizer2.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    second = _run(optimizer2, scheduler2, 7)
    assert first + second == reference


def _pair():
    optimizer = _sgd_two_groups()
    return optimizer, WarmupScheduler(optimizer, schedule=Schedule(**COSINE))


def test_scheduler_refuses_state_of_another_group_count():
    optimizer, scheduler = _pair()
    state = scheduler.state_dict()
    state["base_lrs"] = [0.1]
    with pytest.raises(ValueError, match="1 parameter groups saved, the optimizer has 2"):
        scheduler.load_state_dict(state)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scheduler": "Poly"}, "scheduler: unknown name 'Poly'"),
        ({"warmup_method": "exp"}, "warmup_method: unknown method 'exp'"),
        ({"base_lr": 0.0}, "base_lr: must be a positive number"),
        ({"max_iter": 0}, "max_iter: must be an integer >= 1"),
        ({"steps": [9, 6]}, r"steps: must be strictly increasing, got \[9, 6\]"),
        ({"steps": [6, 6]}, "steps: must be strictly increasing"),
        ({"steps": [6, 13]}, r"steps: every step must lie in 1..max_iter \(12\)"),
        ({"steps": [0, 6]}, "steps: every step must lie in 1..max_iter"),
        ({"gamma": 0.0}, "gamma: must be a positive number"),
        ({"warmup_factor": 1.5}, r"warmup_factor: must lie in \[0, 1\]"),
        ({"warmup_iters": -1}, "warmup_iters: must be an integer >= 0"),
        ({"scheduler": "WarmupCosineLR", "base_lr_end": 0.2}, r"base_lr_end: must lie in \[0"),
    ],
)
def test_invalid_schedules_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**dict(MULTISTEP, **change))


def test_iteration_outside_schedule_is_refused():
    with pytest.raises(ValueError, match=r"iteration: 13 is outside the schedule 0..max_iter"):
        Schedule(**MULTISTEP).lr_at(13)
    with pytest.raises(ValueError, match="iteration: -1"):
        Schedule(**MULTISTEP).lr_at(-1)


def test_step_at_max_iter_is_allowed_and_only_changes_the_final_value():
    config = dict(MULTISTEP, steps=[12])
    assert Schedule(**config).lr_at(11) == 0.1
    assert Schedule(**config).lr_at(12) == 0.010000000000000002
