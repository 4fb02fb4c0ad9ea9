"""COCO detection json -> one `ImageRecord` per image, as detectron2's `load_coco_json` does.

- Category ids are mapped to contiguous indices 0..K-1 in ascending id order
  (`DetectionDataset.contiguous_to_dataset_id[i]` is the json id of index i).
- Boxes are converted from COCO XYWH to XYXY in float32, the precision detectron2 converts in.
- Crowd annotations (iscrowd=1) are kept apart in `ImageRecord.crowd_boxes`: training ignores
  them, and evaluation reads the json itself, so they still count there.
- Records are in ascending image id order, whatever the order in the json.
- Structure is validated while parsing (ids, categories, bbox values); geometry against the image
  (boxes outside it, zero-size boxes) and the image files are checked by `checks.check_coco`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from retinacli.data.images import data_path
from retinacli.data.problems import Problem
from retinacli.errors import DatasetError
from retinacli.files import PathOutsideRoot


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image of a dataset and its ground truth, in original-image pixels.

    file_name: absolute path of the image file. height, width: as the json records them (after
    EXIF orientation, like detectron2). boxes: (G, 4) float32 XYXY of the non-crowd annotations,
    in json order. labels: (G,) int64 contiguous class indices. annotation_ids: (G,) int64 COCO
    annotation ids of those boxes. crowd_boxes: (C, 4) float32 XYXY of the iscrowd=1
    annotations, which training ignores; crowd_labels: (C,) int64 their classes (they count for
    the repeat-factor sampler's class frequencies, as in detectron2).
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    annotation_ids: np.ndarray
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def where(self) -> str:
        """How error messages name this image: `<file> (image id <id>)`."""
        return f"{self.file_name} (image id {self.image_id})"


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """The records of one COCO json plus its category mapping.

    annotations: the json file. images: the folder its file_names are relative to.
    contiguous_to_dataset_id: the json category id of each contiguous index 0..K-1 (ascending).
    class_names: the category names in the same order.
    """

    annotations: Path
    images: Path
    records: tuple[ImageRecord, ...]
    contiguous_to_dataset_id: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.contiguous_to_dataset_id)

    @property
    def dataset_id_to_contiguous(self) -> dict[int, int]:
        return {dataset_id: i for i, dataset_id in enumerate(self.contiguous_to_dataset_id)}

    def __len__(self) -> int:
        return len(self.records)

    def with_records(self, records: Sequence[ImageRecord]) -> DetectionDataset:
        """The same dataset (json, categories) with other records."""
        return replace(self, records=tuple(records))


def read_coco_json(annotations: Path | str) -> dict[str, Any]:
    """Load a COCO json and check its top level: an object with lists "images",
    "annotations" and "categories".

    A UTF-8 byte order mark at the start (as some Windows editors write) is accepted.

    Raises:
        DatasetError: the file is missing, is not valid JSON, or lacks one of those lists.
    """
    path = Path(annotations)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: annotation file not found; check the dataset's `annotations` path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the annotation file ({exc}); check it") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix the file"
        ) from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the top level is not a JSON object; expected a COCO json")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f'{path}: "{key}" is missing or not a list; a COCO detection json needs '
                '"images", "annotations" and "categories"'
            )
    return data


def drop_empty(dataset: DetectionDataset) -> DetectionDataset:
    """The dataset without the images that have no (non-crowd) box."""
    return dataset.with_records([r for r in dataset.records if len(r.boxes) > 0])


def parse_coco(
    data: dict[str, Any], *, annotations: Path, images: Path, contain_paths: bool = True
) -> tuple[DetectionDataset, list[Problem]]:
    """Parse a loaded COCO json, collecting structural problems instead of raising.

    Entries with a problem are left out of the result (an annotation with an unknown category,
    an image without a size, ...); everything else is kept. All images are kept, with or without
    boxes. `data` must have passed `read_coco_json`.

    A file_name is a path inside `images`: one that leaves it once resolved (absolute, `..`, a
    symbolic link to outside, anywhere on the way) is a "path_outside_folder" error naming the
    json, the image id and the name, and the image is left out, so nothing outside `images` is
    ever opened. `contain_paths=False` skips that check, for callers that read no image and
    pass the file_names on unchanged (`retina data split`).

    Returns:
        (dataset, problems), problems all of severity "error".
    """
    where = str(annotations)
    problems: list[Problem] = []

    def error(kind: Any, message: str, *, image_id: Any = None, annotation_id: Any = None) -> None:
        problems.append(
            Problem(
                severity="error",
                kind=kind,
                file=where,
                image_id=image_id if isinstance(image_id, int) else None,
                annotation_id=annotation_id if isinstance(annotation_id, int) else None,
                message=f"{where}: {message}",
            )
        )

    categories = _valid_categories(data["categories"], error)
    cat_ids = sorted(categories)
    image_entries = _valid_images(data["images"], error)
    refused: set[int] = set()
    if contain_paths:
        image_entries = _contained_images(image_entries, images=images, error=error, refused=refused)
    ann_entries = _valid_annotations(data["annotations"], error)

    # pycocotools indexes the cleaned entries; its progress prints are not for our users.
    api = COCO()
    api.dataset = {
        "images": image_entries,
        "annotations": ann_entries,
        "categories": [{"id": i, "name": categories[i]} for i in cat_ids],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()

    known = ", ".join(str(i) for i in cat_ids) or "none"
    for ann in ann_entries:
        if ann["image_id"] in refused:
            continue  # its image's file_name is the problem, already named
        if ann["image_id"] not in api.imgs:
            error(
                "missing_image",
                f'annotation {ann["id"]} refers to image_id {ann["image_id"]}, which "images" '
                "does not contain; fix its image_id or remove the annotation",
                image_id=ann["image_id"],
                annotation_id=ann["id"],
            )
        elif ann["category_id"] not in categories:
            error(
                "unknown_category",
                f"annotation {ann['id']} (image {ann['image_id']}) has category_id "
                f'{ann["category_id"]}, which "categories" does not define (ids: {known}); fix '
                "the category_id or add the category",
                image_id=ann["image_id"],
                annotation_id=ann["id"],
            )

    id_map = {dataset_id: i for i, dataset_id in enumerate(cat_ids)}
    root = os.path.abspath(images)
    records = []
    for image_id in sorted(api.imgs):
        entry = api.imgs[image_id]
        usable = [a for a in api.imgToAnns.get(image_id, []) if a["category_id"] in id_map]
        plain = [a for a in usable if not a.get("iscrowd", 0)]
        crowd = [a for a in usable if a.get("iscrowd", 0)]
        records.append(
            ImageRecord(
                image_id=image_id,
                file_name=os.path.join(root, entry["file_name"]),
                height=entry["height"],
                width=entry["width"],
                boxes=xywh_to_xyxy([a["bbox"] for a in plain]),
                labels=np.array([id_map[a["category_id"]] for a in plain], dtype=np.int64),
                annotation_ids=np.array([a["id"] for a in plain], dtype=np.int64),
                crowd_boxes=xywh_to_xyxy([a["bbox"] for a in crowd]),
                crowd_labels=np.array([id_map[a["category_id"]] for a in crowd], dtype=np.int64),
            )
        )
    dataset = DetectionDataset(
        annotations=Path(annotations),
        images=Path(images),
        records=tuple(records),
        contiguous_to_dataset_id=tuple(cat_ids),
        class_names=tuple(categories[i] for i in cat_ids),
    )
    return dataset, problems


def xywh_to_xyxy(boxes_xywh: Sequence[Sequence[float]]) -> np.ndarray:
    """COCO [x, y, w, h] boxes -> (N, 4) float32 XYXY.

    The sum is taken in float32, as detectron2's `BoxMode.convert` does on a list of floats, so
    the XYXY values are bit-identical to detectron2's.
    """
    xywh = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4)
    xyxy = xywh.copy()
    xyxy[:, 2:] = xywh[:, :2] + xywh[:, 2:]
    return xyxy


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_categories(entries: list[Any], error: Any) -> dict[int, str]:
    categories: dict[int, str] = {}
    for n, cat in enumerate(entries):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            error("bad_json", f'categories[{n}] has no integer "id"; give every category one')
            continue
        if cat["id"] in categories:
            error(
                "duplicate_id",
                f"category id {cat['id']} is defined twice; give each category its own id",
            )
            continue
        categories[cat["id"]] = str(cat.get("name", cat["id"]))
    return categories


def _valid_images(entries: list[Any], error: Any) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    seen: set[int] = set()
    for n, img in enumerate(entries):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            error("bad_json", f'images[{n}] has no integer "id"; give every image one')
            continue
        image_id = img["id"]
        if image_id in seen:
            error(
                "duplicate_id",
                f'image id {image_id} appears twice in "images"; give each image its own id',
                image_id=image_id,
            )
            continue
        seen.add(image_id)
        missing = [key for key in ("height", "width") if not _is_int(img.get(key)) or img[key] <= 0]
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            missing.insert(0, "file_name")
        if missing:
            error(
                "bad_json",
                f"image {image_id} lacks a valid {', '.join(missing)} (width and height are "
                'positive integers); add them to its entry in "images"',
                image_id=image_id,
            )
            continue
        kept.append(img)
    return kept


def _contained_images(
    entries: list[dict[str, Any]], *, images: Path, error: Any, refused: set[int]
) -> list[dict[str, Any]]:
    """The entries whose file_name stays inside `images`; the others are errors (their ids
    added to `refused`)."""
    kept = []
    for img in entries:
        try:
            data_path(images, img["file_name"])
        except PathOutsideRoot as exc:
            error(
                "path_outside_folder",
                f"image {img['id']} has file_name {exc.name!r}: {exc.reason} {exc.root}; the "
                "image was not read; give its path relative to the image folder, inside it (or "
                "set the dataset's `images` to the folder that holds it)",
                image_id=img["id"],
            )
            refused.add(img["id"])
            continue
        kept.append(img)
    return kept


def _valid_annotations(entries: list[Any], error: Any) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    seen: set[int] = set()
    for n, ann in enumerate(entries):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            error("bad_json", f'annotations[{n}] has no integer "id"; give every annotation one')
            continue
        ann_id = ann["id"]
        image_id = ann.get("image_id")
        if ann_id in seen:
            error(
                "duplicate_id",
                f"annotation id {ann_id} appears twice; give each annotation its own id",
                image_id=image_id,
                annotation_id=ann_id,
            )
            continue
        seen.add(ann_id)
        absent = [k for k in ("image_id", "category_id") if not _is_int(ann.get(k))]
        if absent:
            error(
                "bad_json",
                f"annotation {ann_id} lacks an integer {' and '.join(absent)}; add it",
                image_id=image_id,
                annotation_id=ann_id,
            )
            continue
        bbox = ann.get("bbox")
        if not _is_box(bbox):
            error(
                "malformed_box",
                f"annotation {ann_id} (image {image_id}) has bbox {bbox!r}, not 4 finite numbers (within float32 range) "
                "[x, y, width, height]; fix or remove the annotation",
                image_id=image_id,
                annotation_id=ann_id,
            )
            continue
        kept.append(ann)
    return kept


def _is_box(bbox: Any) -> bool:
    return (
        isinstance(bbox, list | tuple)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        and all(math.isfinite(v) and abs(v) <= _FLOAT32_MAX for v in bbox)
    )


# Boxes are kept in float32: a larger value (finite as a Python number) would become infinite.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
