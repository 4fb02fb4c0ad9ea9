from __future__ import annotations

from retinacli.training.run_log import format_scalars


def test_progress_line_shows_the_dropped_boxes_only_when_counted():
    line = format_scalars({"loss_cls": 0.5, "boxes_dropped": 1.25, "lr": 0.001})
    assert "dropped 1.2 boxes/batch" in line
    assert "dropped" not in format_scalars({"loss_cls": 0.5, "lr": 0.001})
