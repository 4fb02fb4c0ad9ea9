"""A whole small dataset audited with hand-made predictions: the ranked issues, the files
written (issues.json, issues.csv, summary.json, pictures) and the suggested fixed json."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinacli.audit.issues import (
    ImagePredictions,
    find_issues,
    predictions_from_results,
    summarize,
)
from retinacli.audit.outputs import FIXED_FLAG, draw_issues, fixed_json, write_issues
from retinacli.audit.scoring import AuditThresholds
from retinacli.build import DatasetFiles, build_given_dataset
from tests.audit.handmade import COCO, RESULTS


def test_issues_are_found_ranked_and_named(dataset) -> None:
    predictions = predictions_from_results(RESULTS, dataset)
    assert len(predictions[2].scores) == 2  # the result of an unknown category is dropped
    issues = find_issues(dataset, predictions, AuditThresholds())
    found = [(i.kind, i.image_id, i.annotation_id) for i in issues]
    assert found == [
        ("spurious", 2, 5),
        ("duplicate", 1, 3),
        ("missing", 2, None),
        ("wrong_class", 1, 2),
    ]
    assert [i.score for i in issues] == sorted((i.score for i in issues), reverse=True)
    by_kind = {i.kind: i.to_dict() for i in issues}
    assert by_kind["wrong_class"]["bbox"] == [100, 20, 50, 50]  # the label's box
    assert by_kind["wrong_class"]["category"] == "triangle"
    assert by_kind["wrong_class"]["detection"] == {"bbox": [101, 20, 50, 50], "category": "square", "score": 0.8}
    assert by_kind["missing"]["bbox"] == [100, 30, 40, 40]  # the detection's box
    assert by_kind["missing"]["category"] == "circle"
    assert by_kind["duplicate"]["duplicate_of"] == 1 and by_kind["duplicate"]["detection"] is None
    assert by_kind["spurious"]["file_name"] == "two.png"
    assert {i["file_name"] for i in by_kind.values()} == {"sub/one.png", "two.png"}
    summary = summarize(dataset, issues)
    assert summary["per_kind"] == {"missing": 1, "wrong_class": 1, "poor_box": 0, "spurious": 1, "duplicate": 1}
    assert summary["per_class"]["triangle"] == {"missing": 0, "wrong_class": 1, "poor_box": 0, "spurious": 1, "duplicate": 0}
    assert summary["images_with_issues"] == 2 and summary["share_of_images_with_issues"] == pytest.approx(2 / 3)
    assert summary["num_labels"] == 5


def test_an_image_without_predictions_has_every_label_spurious(dataset) -> None:
    issues = find_issues(dataset, {}, AuditThresholds())
    assert sorted(i.annotation_id for i in issues if i.kind == "spurious") == [1, 2, 3, 4, 5]
    assert all(i.score == 1.0 for i in issues if i.kind == "spurious")


def test_files_written(dataset, tmp_path: Path) -> None:
    issues = find_issues(dataset, predictions_from_results(RESULTS, dataset), AuditThresholds())
    out = tmp_path / "out"
    out.mkdir()
    write_issues(out, issues, summary=summarize(dataset, issues))
    assert json.loads((out / "issues.json").read_text()) == {"issues": [i.to_dict() for i in issues]}
    rows = list(csv.DictReader((out / "issues.csv").open()))
    assert [(r["rank"], r["kind"], r["annotation_id"]) for r in rows] == [
        (str(n), i.kind, "" if i.annotation_id is None else str(i.annotation_id)) for n, i in enumerate(issues, 1)
    ]
    assert rows[3]["detection_category"] == "square" and rows[3]["dx"] == "101.0"
    assert json.loads((out / "summary.json").read_text())["num_issues"] == 4
    pictures = draw_issues(out, issues, dataset, limit=3)
    assert [p.name for _, p in pictures] == ["0001_spurious_2.jpg", "0002_duplicate_1.jpg", "0003_missing_2.jpg"]
    with Image.open(pictures[2][1]) as picture:
        assert picture.format == "JPEG" and picture.size == (600, 480)  # 200 x 160 enlarged 3x (the cap)
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3).astype(int)
        # the detection is drawn in cyan over the flat blue-grey image
        assert ((np.abs(pixels - [0, 220, 255]).sum(axis=1)) < 60).sum() > 100


def test_csv_values_from_data_cannot_be_formulas(tmp_path: Path) -> None:
    data = copy.deepcopy(COCO)
    data["categories"][2]["name"] = "=HYPERLINK(\"http://x\")"
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for img in data["images"]:
        Image.new("RGB", (200, 160)).save(images / img["file_name"])
    (tmp_path / "d.json").write_text(json.dumps(data))
    dataset = build_given_dataset(DatasetFiles(tmp_path / "d.json", images))
    issues = find_issues(dataset, {}, AuditThresholds())
    write_issues(tmp_path, issues, summary={})
    cells = [c for row in csv.reader((tmp_path / "issues.csv").open()) for c in row]
    assert "'=HYPERLINK(\"http://x\")" in cells
    assert not any(c.startswith("=") for c in cells)


def test_fixed_json_removes_duplicates_adds_confident_missing_and_changes_nothing_else(dataset) -> None:
    issues = find_issues(dataset, predictions_from_results(RESULTS, dataset), AuditThresholds())
    original = copy.deepcopy(COCO)
    fixed, removed, added = fixed_json(COCO, issues, dataset, add_score=0.8)
    assert original == COCO
    assert (removed, added) == (1, 1)
    assert [a["id"] for a in fixed["annotations"]] == [1, 2, 4, 5, 6]
    assert fixed["annotations"][:4] == [a for a in COCO["annotations"] if a["id"] != 3]
    new = fixed["annotations"][4]
    assert new == {
        "id": 6, "image_id": 2, "category_id": 7, "bbox": [100, 30, 40, 40], "area": 1600,
        "iscrowd": 0, FIXED_FLAG: {"kind": "missing", "score": 0.85},
    }
    assert {k: v for k, v in fixed.items() if k != "annotations"} == {k: v for k, v in COCO.items() if k != "annotations"}
    _, _, none_added = fixed_json(COCO, issues, dataset, add_score=0.9)
    assert none_added == 0


def test_image_predictions_empty() -> None:
    empty = ImagePredictions.empty()
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,) and empty.classes.shape == (0,)
