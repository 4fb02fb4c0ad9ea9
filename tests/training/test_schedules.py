"""Exact learning-rate lists of the warmup schedules: detectron2's LRMultiplier over fvcore's
parameter schedulers.

`fvcore_multiplier` below is fvcore's classes written out again, structure for structure
(ConstantParamScheduler, LinearParamScheduler, MultiStepParamScheduler, CosineParamScheduler,
StepParamScheduler, CompositeParamScheduler) and detectron2's WarmupParamScheduler on top, so the
engine's one-function version is checked against a second, independent reading of the formulas.
"""

from __future__ import annotations

import io
import math
from bisect import bisect_right

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retinacli.training.schedules import Schedule, WarmupScheduler

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
EPS = 1e-6  # fvcore's WHERE_EPSILON


def _multistep(values, milestones, num_updates):
    return lambda where: values[bisect_right(milestones, int((where + EPS) * num_updates))]


def _cosine(start, end):
    return lambda where: end + 0.5 * (start - end) * (1 + math.cos(math.pi * where))


def _step(values):
    return lambda where: values[int((where + EPS) * len(values))]


def _linear(start, end):
    return lambda where: end * where + start * (1 - where)


def _composite(schedulers, lengths, scaling):
    def call(where):
        i, running = 0, lengths[0]
        while (where + EPS) > running and i < len(schedulers) - 1:
            i += 1
            running += lengths[i]
        if scaling[i] == "rescaled":
            where = (where - (running - lengths[i])) / lengths[i]
        return schedulers[i](where)

    return call


def fvcore_multiplier(it, *, base_lr, scheduler, max_iter, steps, gamma, warmup_factor,
                      warmup_iters, warmup_method, base_lr_end=0.0, num_decays=3,
                      rescale_interval=False):  # fmt: skip
    """detectron2's build_lr_scheduler + LRMultiplier.get_lr, one multiplier per iteration."""
    if scheduler == "WarmupMultiStepLR":
        kept = [x for x in steps if x <= max_iter]
        base = _multistep([gamma**k for k in range(len(kept) + 1)], kept, max_iter)
    elif scheduler == "WarmupCosineLR":
        base = _cosine(1, base_lr_end / base_lr)
    else:
        values = [1.0]
        for _ in range(num_decays):
            values.append(values[-1] * gamma)
        base = _step(values)
    length = min(warmup_iters / max_iter, 1.0)
    end = base(0.0) if rescale_interval else base(length)
    start = warmup_factor * base(0.0)
    warmup = (lambda where: start) if warmup_method == "constant" else _linear(start, end)
    lengths = [length, 1 - length]
    if sum(lengths) != 1.0:
        lengths[-1] = 1.0 - sum(lengths[:-1])
    scaling = ["rescaled", "rescaled" if rescale_interval else "fixed"]
    return _composite([warmup, base], lengths, scaling)(it / max_iter)


def lrs(config, iterations):
    """The rates of `iterations` under the schedule of the keyword arguments `config`."""
    schedule = Schedule(**config)
    return [schedule.lr_at(i) for i in iterations]


def reference(config, iterations):
    return [config["base_lr"] * fvcore_multiplier(i, **config) for i in iterations]


def test_multistep_linear_warmup_exact_list():
    got = lrs(MULTISTEP, range(13))
    # warmup 4 of 12 iterations: from 0.1 * s(0) = 0.1 to s(1/3) = 1, linearly in i/4 -> 0.1,
    # 0.325, 0.55, 0.775; times base 0.1. Then 0.1 until the step at 6, 0.1 * 0.1 from 6,
    # 0.1 * 0.1**2 from 9 (12 = max_iter included).
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
    assert got == reference(MULTISTEP, range(13))


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
    assert got == reference(config, range(12))


def test_no_warmup_starts_at_base_lr():
    config = dict(MULTISTEP, warmup_iters=0)
    assert lrs(config, range(7)) == [0.1] * 6 + [0.010000000000000002]


def test_a_step_inside_warmup_warms_up_to_the_stepped_value():
    # Warmup ends at 4/12; with a step at 2, s(1/3) = 0.1, so warmup runs from 0.1 * s(0) = 0.1 to
    # 0.1: flat at 0.01 (detectron2's legacy formula gave 0.1 * w(i) * gamma**k: 0.01, 0.0325,
    # 0.0055, 0.00775).
    config = dict(MULTISTEP, steps=[2, 9])
    got = lrs(config, range(5))
    assert got == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.01], rel=1e-15, abs=0)
    assert got == reference(config, range(5))


def test_cosine_linear_warmup_exact_list():
    got = lrs(COSINE, range(13))
    # Warmup goes from 0.1 * s(0) = 0.1 to the cosine's value where warmup ends,
    # s(1/3) = 0.5 * (1 + cos(pi / 3)) = 0.75 (detectron2's legacy formula multiplied the cosine
    # by the warmup factor instead, 1.7% higher at i = 3 on the shapes recipe):
    # i = 1: 0.75 * 0.25 + 0.1 * 0.75 = 0.2625 -> lr 0.02625; i = 4: 0.75 -> 0.075;
    # i = 6: 0.5 * (1 + cos(pi / 2)) = 0.5 -> 0.05; i = 12: cos(pi) = -1 -> exactly 0.
    assert got == [
        0.010000000000000002,
        0.026250000000000002,
        0.0425,
        0.058750000000000004,
        0.07500000000000001,
        0.06294095225512604,
        0.05,
        0.03705904774487396,
        0.025000000000000012,
        0.014644660940672627,
        0.006698729810778065,
        0.00170370868554659,
        0.0,
    ]
    assert got == reference(COSINE, range(13))


def test_cosine_constant_warmup_and_end_value():
    config = dict(COSINE, warmup_method="constant", base_lr_end=0.01)
    got = lrs(config, (0, 3, 4, 6, 12))
    # end ratio 0.01 / 0.1 = 0.1: s = 0.1 + 0.9 * 0.5 * (1 + cos(pi i / 12)); constant warmup holds
    # 0.1 * s(0) = 0.1 for i < 4; i=4: 0.1 + 0.9 * 0.75 = 0.775; i=6: 0.1 + 0.45 = 0.55;
    # i=12: 0.1 -> base_lr_end.
    expected = [0.01, 0.01, 0.0775, 0.055, 0.01]
    assert got == pytest.approx(expected, rel=1e-14, abs=0.0)
    assert got == reference(config, (0, 3, 4, 6, 12))


def test_step_with_fixed_gamma():
    config = dict(MULTISTEP, scheduler="WarmupStepWithFixedGammaLR", steps=[], num_decays=2, warmup_iters=0)
    # 3 values over 12 iterations: 1 for i < 4, 0.1 for i < 8, 0.01 after.
    assert lrs(config, range(13)) == pytest.approx([0.1] * 4 + [0.01] * 4 + [0.001] * 5, rel=1e-15)
    assert lrs(config, range(12)) == reference(config, range(12))


def test_rescale_interval_runs_the_schedule_after_warmup():
    config = dict(COSINE, rescale_interval=True, max_iter=16)
    got = lrs(config, range(17))
    # Warmup 4 of 16 (rescaled to the cosine's start, 1); then the cosine over the last 12.
    assert got[4] == pytest.approx(0.1, rel=1e-15) and got[10] == pytest.approx(0.05, rel=1e-12)
    assert got == reference(config, range(17))


def test_steps_past_max_iter_are_ignored_and_reported():
    schedule = Schedule(**dict(MULTISTEP, steps=[6, 13, 20]))
    assert schedule.ignored_steps == (13, 20) and schedule.effective_steps == (6,)
    assert [schedule.lr_at(i) for i in (5, 6, 12)] == pytest.approx([0.1, 0.01, 0.01], rel=1e-15)


@settings(max_examples=300, deadline=None)
@given(
    scheduler=st.sampled_from(["WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR"]),
    max_iter=st.integers(2, 400),
    warmup=st.integers(0, 450),
    factor=st.sampled_from([0.0, 0.001, 0.1, 1.0]),
    method=st.sampled_from(["linear", "constant"]),
    end=st.sampled_from([0.0, 0.05]),
    rescale=st.booleans(),
    step_fractions=st.lists(st.floats(0.01, 1.4), max_size=3),
    decays=st.integers(1, 4),
)
def test_every_schedule_equals_fvcore(
    scheduler, max_iter, warmup, factor, method, end, rescale, step_fractions, decays
):
    steps = sorted({max(1, int(f * max_iter)) for f in step_fractions} - {max_iter})
    config = dict(
        base_lr=0.1, scheduler=scheduler, max_iter=max_iter, steps=steps, gamma=0.1,
        warmup_factor=factor, warmup_iters=warmup, warmup_method=method, base_lr_end=end,
        num_decays=decays, rescale_interval=rescale,
    )
    # After the last iteration (it = max_iter) fvcore itself fails in two cases (an index past
    # the end, a division by a zero-length interval): that rate is never used, so it is left out.
    fails_at_end = scheduler == "WarmupStepWithFixedGammaLR" or (rescale and warmup >= max_iter)
    last = max_iter - 1 if fails_at_end else max_iter
    if scheduler == "WarmupStepWithFixedGammaLR" and warmup >= max_iter and not rescale:
        return  # fvcore fails to build it (it evaluates the steps at where = 1); we keep the last
    assert lrs(config, range(last + 1)) == reference(config, range(last + 1))


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
        ({"steps": [6, 12]}, r"steps: a step at max_iter \(12\) would only change the rate"),
        ({"steps": [0, 6]}, "steps: every step must be >= 1"),
        ({"gamma": 0.0}, "gamma: must be a positive number"),
        ({"warmup_factor": 1.5}, r"warmup_factor: must lie in \[0, 1\]"),
        ({"warmup_iters": -1}, "warmup_iters: must be an integer >= 0"),
        ({"scheduler": "WarmupCosineLR", "base_lr_end": 0.2}, r"base_lr_end: must lie in \[0"),
        ({"scheduler": "WarmupStepWithFixedGammaLR", "num_decays": 0}, "num_decays: must be an integer >= 1"),
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
