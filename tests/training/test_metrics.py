"""metrics.jsonl lines and TensorBoard scalars under the same names."""

from __future__ import annotations

import json

import pytest
import torch

from retinacli.training.metrics import MetricsWriter


def test_jsonl_and_tensorboard_hold_the_same_scalars(tmp_path):
    with MetricsWriter(tmp_path, enabled=True) as writer:
        writer.write(19, {"loss_cls": 1.25, "lr": torch.tensor(0.005)})
        writer.write(39, {"loss_cls": 0.75, "lr": 0.01})
        # flushed at once: readable before close
        assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"iteration": 19, "loss_cls": 1.25, "lr": 0.004999999888241291},  # float32 0.005
        {"iteration": 39, "loss_cls": 0.75, "lr": 0.01},
    ]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss_cls", "lr"]
    assert [(e.step, e.value) for e in events.Scalars("loss_cls")] == [(19, 1.25), (39, 0.75)]


def test_resumed_run_appends_and_nonfinite_becomes_null(tmp_path):
    with MetricsWriter(tmp_path, enabled=True, tensorboard=False) as writer:
        writer.write(0, {"loss": 2.0})
    with MetricsWriter(tmp_path, enabled=True, tensorboard=False) as writer:
        writer.write(1, {"loss": float("nan"), "grad_norm": float("inf")})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == [
        '{"iteration": 0, "loss": 2.0}',
        '{"iteration": 1, "loss": null, "grad_norm": null}',
    ]
    assert list(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_disabled_writer_creates_nothing(tmp_path):
    out = tmp_path / "rank1"
    writer = MetricsWriter(out, enabled=False)
    writer.write(0, {"loss": 1.0})
    writer.close()
    assert not out.exists()


def test_close_twice_and_bad_names(tmp_path):
    writer = MetricsWriter(tmp_path, enabled=True, tensorboard=False)
    with pytest.raises(ValueError, match="metrics: invalid scalar name 'iteration'"):
        writer.write(0, {"iteration": 3.0})
    writer.close()
    writer.close()
    writer.write(1, {"loss": 1.0})  # after close: ignored, no error
    assert (tmp_path / "metrics.jsonl").read_text() == ""
