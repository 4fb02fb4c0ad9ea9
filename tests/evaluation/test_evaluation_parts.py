"""Inference, scoring and writing are apart: scoring a fixed list of detections gives the
metrics and the results list without reading an image or writing a file; `write_evaluation`
alone writes coco_results.json and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retinacli.data.formats.coco import parse_coco, read_coco_json
from retinacli.engine.structures import Detections
from retinacli.evaluation.coco_eval import METRIC_NAMES, evaluate_results, score_detections
from retinacli.evaluation.inference import ImageDetections
from retinacli.evaluation.outputs import METRICS_NAME, RESULTS_NAME, read_results, write_evaluation
from tests.evaluation.test_coco_eval import GT


def _dataset(tmp_path: Path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    # no image file exists: scoring must not need one
    dataset, problems = parse_coco(read_coco_json(path), annotations=path, images=tmp_path / "images", contain_paths=False)
    assert problems == []
    return dataset


def _image(image_id: int, boxes_xyxy: list[list[float]], labels: list[int]) -> ImageDetections:
    scores = [0.9 - 0.1 * i for i in range(len(boxes_xyxy))]  # descending, as the model gives them
    return ImageDetections(
        image_id=image_id, file_name=f"{image_id}.png", height=200, width=300,
        detections=Detections(
            boxes=torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor(scores, dtype=torch.float32),
            labels=torch.tensor(labels, dtype=torch.int64),
        ),
    )


# Every ground-truth box of GT found exactly, in XYXY (XYWH [10, 10, 20, 20] -> [10, 10, 30, 30]);
# contiguous classes: cat (id 3) 0, dog (id 7) 1, bird (id 9) 2.
FOUND = [
    _image(1, [[10, 10, 30, 30], [100, 50, 150, 90]], [0, 0]),
    _image(2, [[20, 30, 140, 130], [160, 40, 220, 110]], [0, 1]),
]


def test_scoring_fixed_detections_gives_the_metrics_and_writes_nothing(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    score = score_detections(FOUND, dataset)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file written
    for name in METRIC_NAMES:
        assert score.metrics[name] == pytest.approx(100.0), name
    assert score.metrics["per_category"] == {"cat": pytest.approx(100.0), "dog": pytest.approx(100.0), "bird": None}
    assert (score.metrics["num_images"], score.metrics["num_detections"]) == (2, 4)
    assert "images_per_second" not in score.metrics  # timing is inference's, added by the command
    # results in image order then model order; bbox XYWH, category the dataset's id
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in score.results] == [
        (1, 3, [10.0, 10.0, 20.0, 20.0]),
        (1, 3, [100.0, 50.0, 50.0, 40.0]),
        (2, 3, [20.0, 30.0, 120.0, 100.0]),
        (2, 7, [160.0, 40.0, 60.0, 70.0]),
    ]
    assert score.evaluator.eval["precision"].shape[2] == 3  # an evaluated COCOeval, for diagnostics


def test_a_model_class_maps_to_the_given_dataset_id(tmp_path: Path) -> None:
    # one image scored: the ground truth is restricted to it; a model whose class 0 is dog
    score = score_detections([_image(2, [[160, 40, 220, 110]], [0])], _dataset(tmp_path), class_dataset_ids=[7])
    assert [r["category_id"] for r in score.results] == [7]
    assert score.metrics["per_category"]["dog"] == pytest.approx(100.0)
    assert score.metrics["per_category"]["cat"] == pytest.approx(0.0)  # image 2's cat was missed


def test_writing_is_its_own_step_and_reads_back(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    score = score_detections(FOUND, dataset)
    metrics = {**score.metrics, "images_per_second": 2.5}
    written = write_evaluation(tmp_path / "out", results=score.results, metrics=metrics)
    assert (written.results, written.metrics) == (tmp_path / "out" / RESULTS_NAME, tmp_path / "out" / METRICS_NAME)
    assert json.loads(written.metrics.read_text()) == json.loads(json.dumps(metrics))
    assert read_results(tmp_path / "out") == json.loads(json.dumps(score.results))
    # the results read back evaluate as they did (what the diagnostics of a run folder read)
    again = evaluate_results(dataset, read_results(tmp_path / "out"))
    assert again.stats[0] == pytest.approx(score.evaluator.stats[0])
