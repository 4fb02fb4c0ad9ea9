"""The label issues of a whole dataset: `scoring.score_image` over every image, as ranked
`Issue` records (most suspicious first), and the summary an audit reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retinacli.audit.scoring import KINDS, LABEL_KINDS, AuditThresholds, score_image
from retinacli.data.formats.coco import DetectionDataset, ImageRecord


@dataclass(frozen=True)
class ImagePredictions:
    """A model's detections on one image, in original-image pixels: boxes (D, 4) XYXY, scores
    (D,), classes (D,) contiguous class indices of the audited dataset."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> ImagePredictions:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class Issue:
    """One suspected mistake. bbox: COCO XYWH pixels, the label's box (the detection's for
    `missing`); category: its class name; score in [0, 1], higher is more suspicious;
    annotation_id: the label's COCO id (None for `missing`); detection: the detection behind
    the issue (bbox XYWH, category name, score) or None; duplicate_of: for `duplicate`, the
    annotation id of the earlier label it repeats."""

    image_id: int
    file_name: str
    kind: str
    bbox: tuple[float, float, float, float]
    category: str
    score: float
    annotation_id: int | None = None
    detection: Mapping[str, Any] | None = None
    duplicate_of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "kind": self.kind,
            "bbox": [round(v, 2) for v in self.bbox],
            "category": self.category,
            "score": round(self.score, 6),
            "annotation_id": self.annotation_id,
            "detection": dict(self.detection) if self.detection is not None else None,
            "duplicate_of": self.duplicate_of,
        }


def find_issues(
    dataset: DetectionDataset,
    predictions: Mapping[int, ImagePredictions],
    thresholds: AuditThresholds,
) -> list[Issue]:
    """The issues of every image of `dataset` (an image without predictions has none: every
    label of it counts as spurious), sorted by score, most suspicious first (ties: image id,
    then kind, then box)."""
    issues: list[Issue] = []
    names = dataset.class_names
    for record in dataset.records:
        pred = predictions.get(record.image_id, ImagePredictions.empty())
        scores = score_image(
            label_boxes=record.boxes,
            label_classes=record.labels,
            crowd_boxes=record.crowd_boxes,
            det_boxes=pred.boxes,
            det_scores=pred.scores,
            det_classes=pred.classes,
            thresholds=thresholds,
        )
        name = relative_name(record, dataset.images)

        for g in range(len(record.boxes)):
            common = {
                "image_id": record.image_id,
                "file_name": name,
                "bbox": _xywh(record.boxes[g]),
                "category": names[int(record.labels[g])],
                "annotation_id": int(record.annotation_ids[g]),
            }
            kind = int(scores.label_kind[g])
            if kind >= 0:
                issues.append(
                    Issue(
                        kind=LABEL_KINDS[kind],
                        score=float(scores.labels[g, kind]),
                        detection=_detection(pred, int(scores.label_detection[g]), names),
                        **common,
                    )
                )
            if scores.duplicate_of[g] >= 0:
                issues.append(
                    Issue(
                        kind="duplicate",
                        score=float(scores.labels[g, LABEL_KINDS.index("duplicate")]),
                        duplicate_of=int(record.annotation_ids[int(scores.duplicate_of[g])]),
                        **common,
                    )
                )
        for d in np.flatnonzero(scores.missing_reported):
            issues.append(
                Issue(
                    image_id=record.image_id,
                    file_name=name,
                    kind="missing",
                    bbox=_xywh(pred.boxes[d]),
                    category=names[int(pred.classes[d])],
                    score=float(scores.missing[d]),
                    detection=_detection(pred, int(d), names),
                )
            )
    issues.sort(key=lambda i: (-i.score, i.image_id, KINDS.index(i.kind), i.bbox))
    return issues


def summarize(dataset: DetectionDataset, issues: Sequence[Issue]) -> dict[str, Any]:
    """Counts per kind and per class and kind, and the share of images with an issue."""
    per_kind = Counter(i.kind for i in issues)
    per_class: dict[str, Counter[str]] = {name: Counter() for name in dataset.class_names}
    for issue in issues:
        per_class.setdefault(issue.category, Counter())[issue.kind] += 1
    images = {i.image_id for i in issues}
    num_images = len(dataset.records)
    return {
        "num_images": num_images,
        "num_labels": int(sum(len(r.boxes) for r in dataset.records)),
        "num_issues": len(issues),
        "images_with_issues": len(images),
        "share_of_images_with_issues": len(images) / num_images if num_images else 0.0,
        "per_kind": {kind: per_kind.get(kind, 0) for kind in KINDS},
        "per_class": {name: {kind: counts.get(kind, 0) for kind in KINDS} for name, counts in per_class.items()},
    }


def relative_name(record: ImageRecord, images: Path) -> str:
    """The image's file_name as the json gives it (relative to the image folder)."""
    path = Path(record.file_name)
    try:
        return path.relative_to(images).as_posix()
    except ValueError:
        return path.name


def predictions_from_results(
    results: Sequence[Mapping[str, Any]], dataset: DetectionDataset
) -> dict[int, ImagePredictions]:
    """COCO results (image_id, category_id, bbox XYWH, score) -> per image, in the dataset's
    contiguous classes; results of categories the dataset lacks are dropped."""
    to_contiguous = dataset.dataset_id_to_contiguous
    grouped: dict[int, list[tuple[list[float], float, int]]] = {}
    for r in results:
        cls = to_contiguous.get(r["category_id"])
        if cls is None:
            continue
        grouped.setdefault(int(r["image_id"]), []).append((r["bbox"], float(r["score"]), cls))
    out = {}
    for image_id, rows in grouped.items():
        xywh = np.array([b for b, _, _ in rows], dtype=np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        out[image_id] = ImagePredictions(
            boxes=boxes,
            scores=np.array([s for _, s, _ in rows], dtype=np.float32),
            classes=np.array([c for _, _, c in rows], dtype=np.int64),
        )
    return out


def _detection(pred: ImagePredictions, index: int, names: Sequence[str]) -> dict[str, Any] | None:
    """Detection `index` of `pred` as an issue names it (None for -1)."""
    if index < 0:
        return None
    return {
        "bbox": [round(v, 2) for v in _xywh(pred.boxes[index])],
        "category": names[int(pred.classes[index])],
        "score": round(float(pred.scores[index]), 6),
    }


def _xywh(box: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2 - x1, y2 - y1)
