"""The data and pictures behind `retina lr-plot`."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from retinacli.training.lr_plot import (
    KeyPoint,
    chart_marks,
    curve_json,
    key_points,
    lr_curve,
    render_terminal_chart,
    save_png,
)
from retinacli.training.schedules import Schedule
from tests.training.test_schedules import MULTISTEP

TINY = Schedule(**MULTISTEP)  # 12 iterations, 4 of linear warmup from 0.1x, steps at 6 and 9


def test_curve_is_lr_at_for_every_training_iteration():
    curve = lr_curve(TINY)
    assert curve == [TINY.lr_at(i) for i in range(12)]
    assert curve[:5] == [
        0.010000000000000002,
        0.0325,
        0.05500000000000001,
        0.07750000000000001,
        0.1,
    ]


def test_curve_of_a_full_detectron2_schedule():
    config = replace(TINY, base_lr=0.01, max_iter=90000, steps=[60000, 80000], warmup_factor=0.001,
                     warmup_iters=1000)  # fmt: skip
    curve = lr_curve(config)
    assert len(curve) == 90000
    # 0.01 * 0.001 at 0; full rate from 1000; 0.01 * 0.1 from 60000; 0.01 * 0.1**2 from 80000
    assert [curve[i] for i in (0, 999, 1000, 59999, 60000, 79999, 80000, 89999)] == [
        1e-05,
        0.009990010000000001,
        0.01,
        0.01,
        0.001,
        0.001,
        0.00010000000000000002,
        0.00010000000000000002,
    ]


def test_key_points_multistep():
    assert key_points(TINY) == [
        KeyPoint("start", "start", 0, 0.010000000000000002),
        KeyPoint("warmup_end", "warmup end", 4, 0.1),
        KeyPoint("step", "step 1", 6, 0.010000000000000002),
        KeyPoint("step", "step 2", 9, 0.0010000000000000002),
        KeyPoint("end", "end", 11, 0.0010000000000000002),
    ]


def test_key_points_cosine_and_marks():
    points = key_points(replace(TINY, scheduler="WarmupCosineLR", steps=[]))
    assert [(p.kind, p.iteration) for p in points] == [("start", 0), ("warmup_end", 4), ("end", 11)]
    assert points[1].lr == 0.07500000000000001  # 0.1 * 0.5 * (1 + cos(pi * 4 / 12)) = 0.075
    assert chart_marks(points) == [(4, "warmup end")]


def test_key_points_without_warmup_and_a_step_past_max_iter():
    points = key_points(replace(TINY, warmup_iters=0, steps=[6, 15]))
    assert [(p.label, p.iteration) for p in points] == [("start", 0), ("step 1", 6), ("end", 11)]


def test_curve_json():
    assert curve_json([0.5, 0.25]) == [{"iteration": 0, "lr": 0.5}, {"iteration": 1, "lr": 0.25}]


def test_terminal_chart_exact():
    # 8 iterations, rate 1 then 0.5 from iteration 4; 8x2 cells = 16x8 braille dots, so every
    # iteration takes 2 dot columns; 1 -> dot row 0, 0.5 -> round(0.5 * 7) = dot row 4.
    # The drop at iteration 4 is a vertical stroke over rows 0..4 in dot column 8 (cell 4).
    chart = render_terminal_chart(
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5], width=8, height=2, marks=[(4, "step 1")]
    )
    assert chart.split("\n") == [
        "1 ┤⠉⠉⠉⠉⡇⠀⠀⠀",
        "0 ┤⠀⠀⠀⠀⠉⠉⠉⠉",
        "  └    ┴   ",
        "   0      7",
        "   ┴ step 1 @ 4",
    ]


def test_terminal_chart_of_long_curve_has_requested_size():
    curve = lr_curve(replace(TINY, max_iter=5000, steps=[3000, 4000], warmup_iters=100))
    lines = render_terminal_chart(curve, width=40, height=6, marks=[(3000, "step 1")]).split("\n")
    assert len(lines) == 6 + 3
    assert all(len(line) == len("0.1 ┤") + 40 for line in lines[:6])
    assert lines[6].index("┴") == len("0.1 └") + 3000 * 80 // 5000 // 2


@pytest.mark.parametrize(("curve", "width", "height"), [([], 10, 3), ([1.0], 4, 3), ([1.0], 10, 1)])
def test_terminal_chart_rejects_empty_or_tiny(curve, width, height):
    with pytest.raises(ValueError):
        render_terminal_chart(curve, width=width, height=height)


def test_save_png_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "plots" / "lr.png"
    curve = lr_curve(TINY)
    assert save_png(curve, target, chart_marks(key_points(TINY))) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = target.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_png([0.0, 1.0], target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["lr.png"]
