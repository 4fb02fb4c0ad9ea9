"""`retina eval` on the imported detectron2 golden model reproduces detectron2's COCO evaluation.

Expected: expected/coco_results.json (detectron2's `instances_to_coco_json`) and
expected/coco_eval.json (its `COCOEvaluator`). Same detections per image (count, order, category),
boxes within 0.01 px, scores within 1e-4, and the same AP to three decimals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from retinacli.commands.import_detectron2 import import_detectron2
from tests.cli_helpers import run_cli

BOX_ATOL = 0.01
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def golden_model_file(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("golden_import")
    result = import_detectron2(golden_dir / "config.yaml", golden_dir / "model_final.pth", out)
    return result.model_path


def test_eval_matches_detectron2(golden_dir, golden_model_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    result = run_cli(
        [
            "eval",
            str(golden_model_file),
            "--dataset",
            str(golden_dir / "annotations.json"),
            "--images",
            str(golden_dir / "images"),
            "--output-dir",
            str(out),
            "--set",
            "data.num_workers=0",
        ],
        capsys,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert "41.210" in result.stdout and "triangle" in result.stdout

    expected = json.loads((golden_dir / "expected" / "coco_results.json").read_text())
    actual = json.loads((out / "coco_results.json").read_text())
    per_image_expected, per_image_actual = defaultdict(list), defaultdict(list)
    for r in expected:
        per_image_expected[r["image_id"]].append(r)
    for r in actual:
        per_image_actual[r["image_id"]].append(r)
    assert sorted(per_image_actual) == sorted(per_image_expected)
    assert [r["image_id"] for r in actual] == [r["image_id"] for r in expected]  # image order
    max_box, max_score = 0.0, 0.0
    for image_id, wanted in per_image_expected.items():
        got = per_image_actual[image_id]
        assert len(got) == len(wanted), image_id
        for a, e in zip(got, wanted, strict=True):
            assert a["category_id"] == e["category_id"], image_id
            max_box = max(max_box, *(abs(x - y) for x, y in zip(a["bbox"], e["bbox"], strict=True)))
            max_score = max(max_score, abs(a["score"] - e["score"]))
    assert max_box <= BOX_ATOL, max_box
    assert max_score <= SCORE_ATOL, max_score

    coco_eval = json.loads((golden_dir / "expected" / "coco_eval.json").read_text())["bbox"]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert round(metrics[name], 3) == round(coco_eval[name], 3), name
    for name, value in metrics["per_category"].items():
        assert round(value, 3) == round(coco_eval[f"AP-{name}"], 3), name
    assert metrics["num_images"] == 7 and metrics["num_detections"] == len(expected)
