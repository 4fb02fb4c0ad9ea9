"""The files `retina predict --format` writes, from the per-image entries of `predict_images`.

- ``json``: `predictions.json` (see `predict.py`), everything: files, sizes, boxes XYXY, scores,
  classes, the skipped files.
- ``coco``: `predictions_coco.json`, a COCO results list as `retina eval` writes it (detectron2's
  `instances_to_coco_json`): ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per
  detection, images in input order, detections by descending score; the image ids are those of
  a given COCO annotations file, so that pycocotools can score the file against it.
- ``yolo``: `labels/<picture path>.txt` per image, one line per detection,
  ``class cx cy w h score`` with the centre and size normalised by the image's width and height
  (ultralytics' `save_txt` with `save_conf`); an image without detections gets an empty file.

Every file is written atomically, inside the output folder (`files.output_file`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from retinacli.files import output_file, write_json, write_text

PredictionFormat = Literal["json", "coco", "yolo"]
PREDICTION_FORMATS: tuple[PredictionFormat, ...] = ("json", "coco", "yolo")
PREDICTIONS_NAME = "predictions.json"
COCO_NAME = "predictions_coco.json"
YOLO_DIR = "labels"


def write_formats(
    entries: Sequence[Mapping[str, Any]],
    *,
    out: Path,
    formats: Sequence[PredictionFormat],
    header: Mapping[str, Any],
    skipped: Sequence[Mapping[str, str]],
    coco_image_ids: Mapping[Path, int] | None = None,
) -> dict[str, Path]:
    """Write each of `formats` into `out`; returns format -> the file (for yolo, the folder).

    header: model, score_thresh and classes for predictions.json. coco_image_ids: the image id
    of each entry's file (required for "coco").
    """
    written: dict[str, Path] = {}
    if "json" in formats:
        written["json"] = write_json(out / PREDICTIONS_NAME, {**header, "images": list(entries), "skipped": list(skipped)})
    if "coco" in formats:
        if coco_image_ids is None:
            raise ValueError("write_formats: the coco format needs coco_image_ids")
        written["coco"] = write_json(out / COCO_NAME, coco_results(entries, coco_image_ids))
    if "yolo" in formats:
        for entry in entries:
            write_text(yolo_path(out, entry["picture"]), yolo_lines(entry))
        written["yolo"] = out / YOLO_DIR
    return written


def coco_results(entries: Sequence[Mapping[str, Any]], image_ids: Mapping[Path, int]) -> list[dict[str, Any]]:
    """COCO results of `entries` (module docstring)."""
    results = []
    for entry in entries:
        image_id = image_ids[Path(entry["file"])]
        for det in entry["detections"]:
            x1, y1, x2, y2 = det["box"]
            results.append(
                {"image_id": image_id, "category_id": det["category_id"], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": det["score"]}
            )
    return results


def yolo_path(out: Path, picture: str) -> Path:
    """`out/labels/<picture without its suffix>.txt`, refused (UsageError) unless inside `out`
    (`files.output_file`: the picture's name comes from an input file's)."""
    return output_file(out, Path(YOLO_DIR) / Path(picture).with_suffix(".txt"))


def yolo_lines(entry: Mapping[str, Any]) -> str:
    """The YOLO txt of one image (module docstring)."""
    width, height = float(entry["width"]), float(entry["height"])
    lines = []
    for det in entry["detections"]:
        x1, y1, x2, y2 = det["box"]
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{det['class_id']} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} {det['score']:.6f}\n")
    return "".join(lines)
