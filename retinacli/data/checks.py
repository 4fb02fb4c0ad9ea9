"""Validate a COCO dataset before training, finding every problem up front.

Checked: the json's structure (see `coco.parse_coco`: unknown category ids, annotations of
images that do not exist, malformed boxes, duplicate ids), every image file (missing, not an
image, size different from the json; headers only, so it is fast) and every box against its
image (reaching outside it, zero or negative size).

Boxes outside the image and degenerate boxes are fixable: with `fix_bad_boxes=True` they are
clipped / dropped and reported with severity "fixed"; with False they are errors. Everything
else is an error. `prepare_coco` is what training calls: it raises one DatasetError listing the
errors, or returns the fixed dataset and the report.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from retinacli.data.formats.coco import (
    DetectionDataset,
    ImageRecord,
    parse_coco,
    read_coco_json,
)
from retinacli.data.images import read_image, read_image_size, size_mismatch_message
from retinacli.data.problems import Problem, ProblemKind, summarize_errors
from retinacli.errors import DatasetError

SizeBucket = Literal["small", "medium", "large"]

# COCO's object-size buckets, by box area in original-image pixels.
SMALL_MAX_AREA = 32**2
MEDIUM_MAX_AREA = 96**2

# Header reads are I/O bound; a few threads hide the latency of network filesystems.
_FILE_CHECK_THREADS = 8


@dataclass(frozen=True)
class DatasetReport:
    """What `retina data check` shows about one dataset (after fixes, before filter_empty).

    boxes_per_class: non-crowd boxes per class name, in contiguous class order.
    annotated_image_ids: the images with at least one non-crowd annotation in the json, before
    any box was fixed or dropped (what `filter_empty` keeps, as detectron2's filter does).
    size_counts: boxes per COCO size bucket by box area: small < 32^2 <= medium < 96^2 <= large.
    problems: every problem found, errors and fixes, in the order found.
    """

    annotations: str
    images: str
    num_images: int
    num_images_without_boxes: int
    num_boxes: int
    num_crowd_boxes: int
    boxes_per_class: dict[str, int]
    size_counts: dict[SizeBucket, int]
    problems: tuple[Problem, ...]
    annotated_image_ids: frozenset[int] = frozenset()

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def fixed(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "fixed")

    @property
    def ok(self) -> bool:
        """True when training can use the dataset (no errors; fixes are fine)."""
        return not self.errors


def check_coco(
    *,
    annotations: Path | str,
    images: Path | str,
    fix_bad_boxes: bool,
    check_files: bool = True,
    decode_images: bool = False,
) -> tuple[DetectionDataset, DatasetReport]:
    """Check a COCO dataset and report every problem; never raises for problems in the data.

    Args:
        annotations: the COCO json. images: the folder its file_names are relative to.
        fix_bad_boxes: clip boxes reaching outside their image and drop zero-size ones
            (severity "fixed"), instead of reporting them as errors.
        check_files: open every image file's header (existence, format, size).
        decode_images: also decode every image fully, which finds truncated files but is slow.

    Returns:
        (dataset with the fixes applied, every image kept, report).

    Raises:
        DatasetError: only if the json itself cannot be read (missing, not JSON, not COCO), or
            `images` is not a folder (rather than one "not found" per image).
    """
    json_path = Path(annotations)
    raw = read_coco_json(json_path)
    if check_files and not Path(images).is_dir():
        raise DatasetError(
            f"{images}: image folder not found; set the dataset's `images` to the folder the "
            f"file_names in {json_path.name} are relative to"
        )
    dataset, problems = parse_coco(raw, annotations=json_path, images=Path(images))
    if check_files:
        problems.extend(_check_files(dataset.records, decode=decode_images))
    annotated = frozenset(r.image_id for r in dataset.records if len(r.boxes) > 0)
    records = []
    for record in dataset.records:
        fixed_record, box_problems = _check_boxes(
            record, json_path=str(json_path), fix_bad_boxes=fix_bad_boxes
        )
        records.append(fixed_record)
        problems.extend(box_problems)
    dataset = dataset.with_records(records)
    return dataset, _report(dataset, problems, annotated)


def prepare_coco(
    *,
    annotations: Path | str,
    images: Path | str,
    filter_empty: bool,
    fix_bad_boxes: bool,
    decode_images: bool = False,
) -> tuple[DetectionDataset, DatasetReport]:
    """`check_coco`, then refuse the dataset if it has errors, then apply `filter_empty` (images
    without any non-crowd annotation in the json go; an image whose boxes were all degenerate and
    dropped stays, with no box, as in detectron2).

    This is the loading path for training: every problem is found before the first iteration.

    Raises:
        DatasetError: listing the errors (the first ten in full, then a count).
    """
    dataset, report = check_coco(
        annotations=annotations,
        images=images,
        fix_bad_boxes=fix_bad_boxes,
        decode_images=decode_images,
    )
    if not report.ok:
        raise DatasetError(summarize_errors(report.problems))
    if filter_empty:
        # detectron2 filters on the annotations before its mapper drops degenerate boxes, so an
        # image whose only boxes were degenerate trains as background.
        dataset = dataset.with_records([r for r in dataset.records if r.image_id in report.annotated_image_ids])
    return dataset, report


def _check_files(records: tuple[ImageRecord, ...], *, decode: bool) -> list[Problem]:
    def check(record: ImageRecord) -> Problem | None:
        expected_hw = (record.height, record.width)
        try:
            actual_hw = read_image_size(record.file_name, image_id=record.image_id)
            if decode:
                read_image(record.file_name, input_format="RGB", image_id=record.image_id)
        except DatasetError as exc:
            missing = not os.path.isfile(record.file_name)
            kind: ProblemKind = "image_not_found" if missing else "unreadable_image"
            message = str(exc)
        else:
            if actual_hw == expected_hw:
                return None
            kind = "size_mismatch"
            message = size_mismatch_message(
                record.where(), actual_hw=actual_hw, expected_hw=expected_hw
            )
        return Problem(
            severity="error",
            kind=kind,
            file=record.file_name,
            image_id=record.image_id,
            annotation_id=None,
            message=message,
        )

    with ThreadPoolExecutor(max_workers=_FILE_CHECK_THREADS) as pool:
        return [p for p in pool.map(check, records) if p is not None]


def _check_boxes(
    record: ImageRecord, *, json_path: str, fix_bad_boxes: bool
) -> tuple[ImageRecord, list[Problem]]:
    """Degenerate and out-of-image boxes of one record: the fixed record and the problems."""
    boxes = record.boxes  # (G, 4) float32 XYXY
    if len(boxes) == 0:
        return record, []
    width, height = record.width, record.height
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    outside = (
        (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
    ) & ~degenerate
    if not (degenerate.any() or outside.any()):
        return record, []

    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    vanished = outside & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))

    severity = "fixed" if fix_bad_boxes else "error"
    problems = []
    for g in np.flatnonzero(degenerate | outside):
        x1, y1, x2, y2 = (float(v) for v in boxes[g])
        box_text = f"[{x1:g}, {y1:g}, {x2 - x1:g}, {y2 - y1:g}] (XYWH)"
        head = (
            f"{json_path}: annotation {int(record.annotation_ids[g])} (image {record.image_id}, "
            f"{os.path.basename(record.file_name)})"
        )
        if degenerate[g]:
            kind = "degenerate_box"
            what = f"bbox {box_text} has zero or negative width or height"
            fix = "dropped it" if fix_bad_boxes else "fix its width/height or remove it"
        elif vanished[g]:
            kind = "box_outside_image"
            what = f"bbox {box_text} lies entirely outside the {width}x{height} image"
            fix = "dropped it" if fix_bad_boxes else "fix the box or remove it"
        else:
            kind = "box_outside_image"
            what = f"bbox {box_text} reaches outside the {width}x{height} image"
            fix = "clipped it to the image" if fix_bad_boxes else "clip the box to the image"
        if fix_bad_boxes:
            fix += " (set fix_bad_boxes: false to make this an error)"
        else:
            fix += ", or set fix_bad_boxes: true to let training do it"
        problems.append(
            Problem(
                severity=severity,
                kind=kind,
                file=json_path,
                image_id=record.image_id,
                annotation_id=int(record.annotation_ids[g]),
                message=f"{head}: {what}; {fix}",
            )
        )
    if not fix_bad_boxes:
        return record, problems
    keep = ~(degenerate | vanished)
    fixed = replace(
        record,
        boxes=clipped[keep],
        labels=record.labels[keep],
        annotation_ids=record.annotation_ids[keep],
    )
    return fixed, problems


def _report(
    dataset: DetectionDataset, problems: list[Problem], annotated: frozenset[int]
) -> DatasetReport:
    per_class: Counter[int] = Counter()
    sizes: Counter[SizeBucket] = Counter()
    for record in dataset.records:
        per_class.update(record.labels.tolist())
        boxes = record.boxes.astype(np.float64)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        sizes["small"] += int((areas < SMALL_MAX_AREA).sum())
        sizes["medium"] += int(((areas >= SMALL_MAX_AREA) & (areas < MEDIUM_MAX_AREA)).sum())
        sizes["large"] += int((areas >= MEDIUM_MAX_AREA).sum())
    return DatasetReport(
        annotations=str(dataset.annotations),
        images=str(dataset.images),
        num_images=len(dataset.records),
        num_images_without_boxes=sum(1 for r in dataset.records if len(r.boxes) == 0),
        num_boxes=sum(len(r.boxes) for r in dataset.records),
        num_crowd_boxes=sum(len(r.crowd_boxes) for r in dataset.records),
        boxes_per_class={name: per_class[i] for i, name in enumerate(dataset.class_names)},
        size_counts={bucket: sizes[bucket] for bucket in ("small", "medium", "large")},
        problems=tuple(problems),
        annotated_image_ids=annotated,
    )
