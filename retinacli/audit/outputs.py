"""The files of an audit: issues.json and issues.csv (most suspicious first), summary.json, a
picture per top issue, and the suggested corrected COCO json of `--write-fixed`. Every file is
written atomically (`files.atomic_write`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from retinacli.audit.issues import Issue
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import read_image
from retinacli.data.visualize import label_font
from retinacli.errors import DatasetError
from retinacli.files import atomic_write, output_file, write_json, write_text

ISSUES_JSON = "issues.json"
ISSUES_CSV = "issues.csv"
SUMMARY_JSON = "summary.json"
PICTURES_DIR = "pictures"
CSV_COLUMNS = (
    "rank", "kind", "score", "image_id", "file_name", "category", "x", "y", "w", "h",
    "annotation_id", "detection_category", "detection_score", "dx", "dy", "dw", "dh", "duplicate_of",
)
LABEL_COLOUR = (255, 64, 64)  # the labelled box
DETECTION_COLOUR = (0, 220, 255)  # the model's detection
PICTURE_SIDE = 640  # longer side of a picture, in pixels (small images enlarged at most 3x)
FIXED_FLAG = "retinacli_audit"
"""The key of an annotation that `--write-fixed` added: {"kind": "missing", "score": s}."""


def write_issues(folder: Path, issues: Sequence[Issue], *, summary: Mapping[str, Any]) -> None:
    """issues.json (`{"issues": [...]}`), issues.csv and summary.json into `folder`."""
    write_json(folder / ISSUES_JSON, {"issues": [i.to_dict() for i in issues]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for rank, issue in enumerate(issues, start=1):
        det = issue.detection or {}
        writer.writerow(
            [
                rank, issue.kind, f"{issue.score:.4f}", issue.image_id, _csv_text(issue.file_name),
                _csv_text(issue.category), *(f"{v:.1f}" for v in issue.bbox),
                "" if issue.annotation_id is None else issue.annotation_id,
                _csv_text(det.get("category", "")), "" if not det else f"{det['score']:.4f}",
                *((f"{v:.1f}" for v in det["bbox"]) if det else ("", "", "", "")),
                "" if issue.duplicate_of is None else issue.duplicate_of,
            ]
        )
    write_text(folder / ISSUES_CSV, buffer.getvalue())
    write_json(folder / SUMMARY_JSON, dict(summary))


def _csv_text(value: str) -> str:
    """A value from data, safe to open in a spreadsheet: a leading =, +, -, @ (a formula) gets a
    quote in front."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def draw_issues(
    folder: Path, issues: Sequence[Issue], dataset: DetectionDataset, *, limit: int
) -> list[tuple[Issue, Path]]:
    """A JPEG per issue of the first `limit`, in `folder/pictures`: the image (its longer side
    at most PICTURE_SIDE) with the label in red and the detection in cyan, each named, and the
    kind and score on top. An unreadable image is skipped. Returns (issue, picture) pairs."""
    records = {r.image_id: r for r in dataset.records}
    out_dir = folder / PICTURES_DIR
    out_dir.mkdir(exist_ok=True)
    written = []
    for rank, issue in enumerate(issues[:limit], start=1):
        record = records.get(issue.image_id)
        if record is None:
            continue
        try:
            image = read_image(record.file_name, input_format="RGB", image_id=record.image_id)
        except DatasetError:
            continue
        canvas = _picture(image, issue)
        path = output_file(out_dir, f"{rank:04d}_{issue.kind}_{issue.image_id}.jpg")
        with atomic_write(path) as f:
            canvas.save(f, format="JPEG", quality=88)
        written.append((issue, path))
    return written


def _picture(image: np.ndarray, issue: Issue) -> Image.Image:
    canvas = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    scale = min(3.0, PICTURE_SIDE / max(canvas.size))  # small images are enlarged to be readable
    if scale != 1.0:
        canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))))
    draw = ImageDraw.Draw(canvas)
    font = label_font()
    if issue.kind != "missing":
        _box(draw, issue.bbox, scale, LABEL_COLOUR, f"label: {issue.category}", font, above=True)
    if issue.detection is not None:
        det = issue.detection
        text = f"detection: {det['category']} {det['score']:.2f}"
        _box(draw, det["bbox"], scale, DETECTION_COLOUR, text, font, above=issue.kind == "missing")
    title = f"{issue.kind} {issue.score:.2f}"
    left, top, right, bottom = draw.textbbox((2, 2), title, font=font)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
    draw.text((2, 2), title, fill=(255, 255, 255), font=font)
    return canvas


def _box(
    draw: ImageDraw.ImageDraw, xywh: Sequence[float], scale: float, colour: tuple[int, int, int], text: str, font: Any, *, above: bool
) -> None:
    """A box and its caption, above the box (label) or below it (detection), so that a label
    and a detection on the same box both stay readable."""
    x, y, w, h = (float(v) * scale for v in xywh)
    draw.rectangle((x, y, x + w, y + h), outline=colour, width=2)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_h = bottom - top + 4
    fits_above = y - text_h >= 0
    ty = y - text_h if (above and fits_above) or (not above and y + h + text_h > draw.im.size[1]) else y + h + 2
    draw.rectangle((x, ty, x + right - left + 3, ty + bottom - top + 3), fill=colour)
    draw.text((x + 1 - left, ty + 1 - top), text, fill=(0, 0, 0), font=font)


def fixed_json(
    data: Mapping[str, Any], issues: Sequence[Issue], dataset: DetectionDataset, *, add_score: float
) -> tuple[dict[str, Any], int, int]:
    """The json with the labels reported as `duplicate` removed and the `missing` detections of
    score >= `add_score` added as annotations (new ids after the largest, iscrowd 0, their area,
    and FIXED_FLAG naming the kind and score); nothing else changed. Returns (json, removed,
    added)."""
    out = {key: value for key, value in data.items()}
    duplicates = {i.annotation_id for i in issues if i.kind == "duplicate"}
    annotations = [a for a in data["annotations"] if a.get("id") not in duplicates]
    removed = len(data["annotations"]) - len(annotations)
    next_id = max((a["id"] for a in data["annotations"] if isinstance(a.get("id"), int)), default=0) + 1
    to_dataset_id = dict(zip(dataset.class_names, dataset.contiguous_to_dataset_id, strict=True))
    added = 0
    for issue in issues:
        if issue.kind != "missing" or issue.score < add_score:
            continue
        x, y, w, h = issue.bbox
        annotations.append(
            {
                "id": next_id,
                "image_id": issue.image_id,
                "category_id": to_dataset_id[issue.category],
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2),
                "iscrowd": 0,
                FIXED_FLAG: {"kind": "missing", "score": round(issue.score, 4)},
            }
        )
        next_id += 1
        added += 1
    out["annotations"] = annotations
    return out, removed, added


def read_issues(path: Path) -> list[dict[str, Any]]:
    """The issues of an issues.json (for reports and tests)."""
    return json.loads(path.read_text(encoding="utf-8"))["issues"]
