"""COCO results and AP: hand-made ground truth, fed back, partly missed, empty, unevaluable."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from retinacli.engine.structures import Detections
from retinacli.evaluation.coco_eval import (
    METRIC_NAMES,
    EmptyResultsWarning,
    coco_box_metrics,
    coco_ground_truth,
    detections_to_coco_results,
)
from retinacli.evaluation.inference import ImageDetections, merge_shards

# Two images; "cat" (id 3) has a small (20x20=400 < 32^2), a medium (50x40=2000) and a large
# (120x100=12000 > 96^2) box, "dog" (id 7) one medium box, "bird" (id 9) no box at all.
GT: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 300, "height": 200},
        {"id": 2, "file_name": "b.png", "width": 300, "height": 200},
    ],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "bbox": [10, 10, 20, 20],
            "area": 400,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "bbox": [100, 50, 50, 40],
            "area": 2000,
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 2,
            "category_id": 3,
            "bbox": [20, 30, 120, 100],
            "area": 12000,
            "iscrowd": 0,
        },
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [160, 40, 60, 70], "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "bird"}],
}


def fed_back(gt: dict[str, Any], *, skip_category: int | None = None) -> list[dict[str, Any]]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": 0.9,
        }
        for a in gt["annotations"]
        if a["category_id"] != skip_category
    ]


def test_ground_truth_fed_back_gives_100_and_a_category_without_gt_is_null():
    metrics = coco_box_metrics(coco_ground_truth(GT), fed_back(GT))
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(100.0), name
    assert metrics["per_category"] == {
        "cat": pytest.approx(100.0),
        "dog": pytest.approx(100.0),
        "bird": None,
    }
    assert list(metrics["per_category"]) == ["cat", "dog", "bird"]  # ascending category id
    assert any("bird" in note and "null" in note for note in metrics["notes"])


def test_a_category_without_gt_is_not_averaged_in():
    # cat found perfectly (100), dog never detected (0), bird has no GT: AP = (100 + 0) / 2.
    metrics = coco_box_metrics(coco_ground_truth(GT), fed_back(GT, skip_category=7))
    assert metrics["per_category"] == {
        "cat": pytest.approx(100.0),
        "dog": pytest.approx(0.0),
        "bird": None,
    }
    assert metrics["AP"] == pytest.approx(50.0)
    json.dumps(metrics, allow_nan=False)  # null, never NaN


def test_empty_results_give_zero_and_a_warning():
    with pytest.warns(EmptyResultsWarning, match="no detection"):
        metrics = coco_box_metrics(coco_ground_truth(GT), [])
    assert all(metrics[name] == 0.0 for name in METRIC_NAMES)
    assert metrics["per_category"] == {"cat": 0.0, "dog": 0.0, "bird": None}
    assert any("no detection" in note for note in metrics["notes"])


def test_size_range_without_gt_is_null_with_a_note():
    only_small = {**GT, "annotations": GT["annotations"][:1]}
    metrics = coco_box_metrics(coco_ground_truth(only_small), fed_back(only_small))
    assert metrics["APs"] == pytest.approx(100.0)
    assert metrics["APm"] is None and metrics["APl"] is None
    assert any(note.startswith("APm is null") for note in metrics["notes"])


def test_ground_truth_can_be_restricted_to_evaluated_images():
    gt = coco_ground_truth(GT, image_ids=[1])
    assert sorted(gt.getImgIds()) == [1]
    assert sorted(gt.getAnnIds()) == [1, 2]
    metrics = coco_box_metrics(gt, [r for r in fed_back(GT) if r["image_id"] == 1])
    assert metrics["AP"] == pytest.approx(100.0)
    assert metrics["per_category"]["dog"] is None  # its only box is in image 2


def test_missing_area_is_the_box_area():
    gt = coco_ground_truth(GT)
    assert gt.anns[4]["area"] == 60 * 70


def test_results_are_detectron2_coco_json():
    # class index 0 -> dataset id 3, 1 -> 7; XYWH = (x1, y1, x2 - x1, y2 - y1) in float32.
    boxes = torch.tensor([[10.5, 20.25, 30.5, 60.0], [0.1, 0.2, 0.3, 0.7]])
    dets = Detections(boxes=boxes, scores=torch.tensor([0.9, 0.4]), labels=torch.tensor([1, 0]))
    empty = Detections(
        boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.int64)
    )
    images = [
        ImageDetections(image_id=5, file_name="x.png", height=100, width=100, detections=dets),
        ImageDetections(image_id=6, file_name="y.png", height=100, width=100, detections=empty),
    ]
    results = detections_to_coco_results(images, class_dataset_ids=[3, 7])
    assert results[0] == {
        "image_id": 5,
        "category_id": 7,
        "bbox": [10.5, 20.25, 20.0, 39.75],
        "score": pytest.approx(0.9),
    }
    assert results[1]["category_id"] == 3
    x1, y1, x2, y2 = boxes[1]
    assert results[1]["bbox"] == [x1.item(), y1.item(), (x2 - x1).item(), (y2 - y1).item()]
    assert len(results) == 2
    with pytest.raises(ValueError, match="class indices"):
        detections_to_coco_results(images, class_dataset_ids=[3])


def test_merge_shards_keeps_rank_order_and_each_image_once():
    def item(image_id: int) -> ImageDetections:
        empty = Detections(
            boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.int64)
        )
        return ImageDetections(image_id=image_id, file_name="", height=1, width=1, detections=empty)

    merged = merge_shards([[item(1), item(2)], [item(3), item(1)], [item(4)]])
    assert [m.image_id for m in merged] == [1, 2, 3, 4]
