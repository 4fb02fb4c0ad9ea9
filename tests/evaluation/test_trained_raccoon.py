"""A small model trained on raccoon, evaluated on raccoon val through `retina eval`.

Slow (a few minutes on 2 CPU cores): run with `pytest -m slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_trained_model_finds_raccoons_in_val(shared_dir, tmp_path, capsys, monkeypatch):
    raccoon = shared_dir / "data" / "raccoon"
    overrides = [
        f"data.train.dataset={{kind: coco, annotations: '{raccoon}/train.json', images: '{raccoon}/images'}}",
        f"data.test.dataset={{kind: coco, annotations: '{raccoon}/val.json', images: '{raccoon}/images'}}",
        "data.train.resize.short_sizes=[224, 256]", "data.train.resize.max_size=384",
        "data.test.resize.short_sizes=[256]", "data.test.resize.max_size=384",
        "solver.max_iter=200", "solver.warmup_iters=20", "solver.checkpoint_period=100",
        "eval_period=0", f"output_dir={tmp_path / 'run'}",
    ]
    args = ["train", str(REPO / "recipes" / "raccoon.yaml")]
    for override in overrides:
        args += ["--set", override]
    assert run_cli(args, capsys, monkeypatch).exit_code == 0

    result = run_cli(["eval", str(tmp_path / "run" / "model_final.pth"), "--output-dir", str(tmp_path / "eval")],
                     capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "raccoon" in result.stdout and "AP50" in result.stdout  # the tables a user sees
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["per_category"]) == {"raccoon"} and metrics["num_images"] == 39
    assert metrics["AP50"] > 10.0, metrics  # an untrained model scores about 0
