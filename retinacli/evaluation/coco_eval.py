"""COCO-format results and COCO box AP, as detectron2's `COCOEvaluator` computes them.

- Results: one dict per detection, images in dataset order and detections in the model's order
  (descending score): `image_id`, `category_id` (the dataset's own id of the contiguous class),
  `bbox` [x1, y1, x2 - x1, y2 - y1] (the subtraction in float32, as `instances_to_coco_json`),
  `score`.
- Ground truth: the dataset's COCO json itself, loaded into an in-memory pycocotools `COCO`
  (crowd boxes count as crowd; an annotation without "area" gets its box area), restricted to
  the evaluated images.
- Metrics: pycocotools `COCOeval` (bbox), reported in percent: AP, AP50, AP75, APs, APm, APl and
  the AP of each category. pycocotools marks a value it cannot compute with -1 (no ground truth
  in that size range or category); detectron2 reports NaN, we report null and say why in
  `notes`. Such a category is already left out of pycocotools' average, exactly as in detectron2.
- An empty result set gives AP 0 (null where there is no ground truth) and a warning, where
  pycocotools itself would crash.

pycocotools prints progress to stdout; it is captured, never shown. Nothing here reads an image
or writes a file: `inference` makes the detections, `outputs` writes the files,
`diagnostics_output` the diagnostics, and the commands compose them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinacli.data.formats.coco import DetectionDataset, read_coco_json
from retinacli.evaluation.inference import ImageDetections
from retinacli.evaluation.outputs import METRICS_NAME, RESULTS_NAME

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")

# COCOeval.stats indices of METRIC_NAMES (bbox): AP@[.5:.95], AP@.5, AP@.75, small, medium, large.
_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}
_SIZE_WORDS = {"APs": "small", "APm": "medium", "APl": "large"}


class EmptyResultsWarning(UserWarning):
    """The model produced no detection at all; every AP is 0."""


# ----------------------------------------------------------------------------- results


def detections_to_coco_results(
    images: Sequence[ImageDetections], *, class_dataset_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO results for `images`, as detectron2's `instances_to_coco_json`.

    class_dataset_ids: the dataset category id of each contiguous class index 0..K-1.
    """
    id_of = torch.tensor(list(class_dataset_ids), dtype=torch.int64)
    results: list[dict[str, Any]] = []
    for image in images:
        dets = image.detections
        if dets.boxes.numel() == 0:
            continue
        labels = dets.labels.to(torch.int64)
        if int(labels.min()) < 0 or int(labels.max()) >= len(id_of):
            raise ValueError(
                f"detections_to_coco_results: image {image.image_id} has class indices up to "
                f"{int(labels.max())} but only {len(id_of)} classes are mapped"
            )
        boxes = dets.boxes.to(torch.float32)  # (D, 4) XYXY
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (D, 4)
        for box, score, category in zip(
            xywh.tolist(), dets.scores.tolist(), id_of[labels].tolist(), strict=True
        ):
            results.append(
                {"image_id": image.image_id, "category_id": category, "bbox": box, "score": score}
            )
    return results


# ----------------------------------------------------------------------------- ground truth


def coco_ground_truth(
    annotations: Path | str | Mapping[str, Any], *, image_ids: Sequence[int] | None = None
) -> Any:
    """An in-memory pycocotools `COCO` of a COCO json (a path or the loaded dict).

    image_ids: keep only these images and their annotations (None keeps all).
    """
    from pycocotools.coco import COCO

    data = read_coco_json(annotations) if isinstance(annotations, str | Path) else annotations
    keep = None if image_ids is None else set(int(i) for i in image_ids)
    images = [dict(img) for img in data["images"] if keep is None or img["id"] in keep]
    anns = []
    for ann in data["annotations"]:
        if keep is not None and ann.get("image_id") not in keep:
            continue
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        anns.append(ann)
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [dict(c) for c in data["categories"]],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


# ----------------------------------------------------------------------------- metrics


def coco_box_metrics(gt: Any, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """COCO box AP of `results` against the `COCO` object `gt`, over all of `gt`'s images.

    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl": percent or None, "per_category":
    {name: percent or None} in ascending category id order, "notes": [str, ...]}. None marks a
    value pycocotools cannot compute (no ground truth there); `notes` says which and why.
    Warns (EmptyResultsWarning) and reports 0 when `results` is empty.
    """
    return evaluate_boxes(gt, results)[0]


def evaluate_boxes(gt: Any, results: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], Any]:
    """`coco_box_metrics` and the pycocotools `COCOeval` it ran (evaluated and accumulated; for
    no result, one run over an empty detection set), whose matches and arrays the diagnostics
    read."""
    from pycocotools.cocoeval import COCOeval

    evaluator = None

    categories = sorted(gt.loadCats(gt.getCatIds()), key=lambda c: c["id"])
    gt_per_category = {
        c["id"]: len(gt.getAnnIds(catIds=[c["id"]], iscrowd=False)) for c in categories
    }
    notes: list[str] = []
    if not results:
        message = "the model made no detection on any image; every AP is 0"
        warnings.warn(message, EmptyResultsWarning, stacklevel=2)
        notes.append(message)
        has_gt = len(gt.getAnnIds(iscrowd=False)) > 0
        overall: dict[str, float | None] = {name: 0.0 if has_gt else None for name in METRIC_NAMES}
        per_category: dict[str, float | None] = {
            c["name"]: (0.0 if gt_per_category[c["id"]] > 0 else None) for c in categories
        }
        evaluator = _evaluate_nothing(gt)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds keys (area, id, segmentation) to the dicts it is given.
            dt = gt.loadRes(copy.deepcopy(list(results)))
            evaluator = COCOeval(gt, dt, "bbox")
            evaluator.params.imgIds = sorted(gt.getImgIds())
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        overall = {
            name: _percent(float(evaluator.stats[_STATS_INDEX[name]])) for name in METRIC_NAMES
        }
        # precision: (T iou thresholds, R recall points, K categories, A areas, M max dets);
        # area "all" and 100 detections, averaged over the entries pycocotools filled in.
        precision = evaluator.eval["precision"]
        per_category = {}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            name = next(c["name"] for c in categories if c["id"] == category_id)
            per_category[name] = float(np.mean(values) * 100) if values.size else None
    for name in METRIC_NAMES:
        if overall[name] is None and results:
            where = f"{_SIZE_WORDS[name]} objects" if name in _SIZE_WORDS else "any image"
            notes.append(f"{name} is null: no ground-truth box of {where} to evaluate against")
    missing = [c["name"] for c in categories if gt_per_category[c["id"]] == 0]
    if missing:
        notes.append(f"no ground truth for {', '.join(missing)}: AP null, left out of the averages")
    return {**overall, "per_category": per_category, "notes": notes}, evaluator


def _evaluate_nothing(gt: Any) -> Any:
    """An evaluated, accumulated COCOeval of no detection (`loadRes` cannot load none): every
    ground-truth box unmatched, every precision 0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _percent(value: float) -> float | None:
    # pycocotools uses -1 for "nothing to evaluate"; detectron2 turns that into NaN.
    return value * 100 if value >= 0 and math.isfinite(value) else None


# ----------------------------------------------------------------------------- scoring


@dataclass
class CocoScore:
    """What `score_detections` finds: the COCO results list (coco_results.json), the metrics
    (metrics.json without the timing), and the evaluated pycocotools `COCOeval` whose matches
    the diagnostics read."""

    results: list[dict[str, Any]]
    metrics: dict[str, Any]
    evaluator: Any


def score_detections(
    images: Sequence[ImageDetections],
    dataset: DetectionDataset,
    *,
    class_dataset_ids: Sequence[int] | None = None,
) -> CocoScore:
    """COCO box AP of the detections of `images` against `dataset`'s json, restricted to those
    images; nothing is read but the json, nothing written.

    Args:
        images: per-image detections, in the order the results should list them (the dataset's,
            as `inference.infer_dataset` gives them).
        dataset: the evaluated dataset (its json is the ground truth).
        class_dataset_ids: the dataset category id of each model class index; default the
            dataset's own mapping (a model trained on it).

    Returns:
        results; metrics: AP, AP50, AP75, APs, APm, APl (percent, or None), per_category
        {name: percent or None}, notes, num_images, num_detections; the evaluator.
    """
    ids = dataset.contiguous_to_dataset_id if class_dataset_ids is None else class_dataset_ids
    results = detections_to_coco_results(images, class_dataset_ids=ids)
    gt = coco_ground_truth(dataset.annotations, image_ids=[item.image_id for item in images])
    metrics, evaluator = evaluate_boxes(gt, results)
    metrics["num_images"] = len(images)
    metrics["num_detections"] = len(results)
    return CocoScore(results=results, metrics=metrics, evaluator=evaluator)


def evaluate_results(dataset: DetectionDataset, results: Sequence[Mapping[str, Any]]) -> Any:
    """The evaluated `COCOeval` of a results list read back (an evaluation written earlier)
    against all of `dataset`'s images, for its diagnostics; no result at all is no warning."""
    gt = coco_ground_truth(dataset.annotations, image_ids=[record.image_id for record in dataset.records])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyResultsWarning)
        _, evaluator = evaluate_boxes(gt, results)
    return evaluator


def category_names(evaluator: Any) -> tuple[str, ...]:
    """The name of each category a `COCOeval` evaluated, in its order (`params.catIds`): the
    class names `diagnose` takes."""
    names_of = {c["id"]: c["name"] for c in evaluator.cocoGt.loadCats(evaluator.params.catIds)}
    return tuple(names_of[c] for c in evaluator.params.catIds)


__all__ = [
    "METRIC_NAMES",
    "METRICS_NAME",
    "RESULTS_NAME",
    "CocoScore",
    "EmptyResultsWarning",
    "category_names",
    "coco_box_metrics",
    "coco_ground_truth",
    "detections_to_coco_results",
    "evaluate_boxes",
    "evaluate_results",
    "score_detections",
]
