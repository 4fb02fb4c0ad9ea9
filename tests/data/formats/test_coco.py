from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from retinacli.data.checks import prepare_coco
from retinacli.data.formats.coco import DetectionDataset, xywh_to_xyxy
from retinacli.errors import DatasetError


def _load(*, annotations: Path, images: Path, filter_empty: bool) -> DetectionDataset:
    """The dataset as training loads it (`build.build_dataset`'s `prepare_coco`), no box fixed."""
    return prepare_coco(annotations=annotations, images=images, filter_empty=filter_empty, fix_bad_boxes=False)[0]


def test_raccoon_train(raccoon_dir: Path) -> None:
    dataset = _load(
        annotations=raccoon_dir / "train.json", images=raccoon_dir / "images", filter_empty=True
    )
    # README: train has 157 images and 170 boxes, one category (id 1), every image has a box.
    assert len(dataset) == 157
    assert sum(len(r.boxes) for r in dataset.records) == 170
    assert dataset.class_names == ("raccoon",)
    assert dataset.contiguous_to_dataset_id == (1,)
    assert dataset.dataset_id_to_contiguous == {1: 0}
    ids = [r.image_id for r in dataset.records]
    assert ids == sorted(ids)
    first = dataset.records[0]
    assert os.path.isabs(first.file_name) and Path(first.file_name).is_file()
    # raccoon-1.jpg: bbox [81, 88, 441, 320] (XYWH) -> XYXY [81, 88, 522, 408]
    assert first.file_name.endswith("raccoon-1.jpg")
    np.testing.assert_array_equal(first.boxes, [[81, 88, 522, 408]])
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int64
    assert all((r.labels == 0).all() for r in dataset.records)


def test_raccoon_boxes_match_json(raccoon_dir: Path) -> None:
    raw = json.loads((raccoon_dir / "val.json").read_text())
    dataset = _load(
        annotations=raccoon_dir / "val.json", images=raccoon_dir / "images", filter_empty=False
    )
    by_image: dict[int, list[list[float]]] = {}
    for ann in raw["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    assert len(dataset) == 39
    for record in dataset.records:
        np.testing.assert_allclose(record.boxes, by_image[record.image_id], rtol=0, atol=1e-4)


def test_noncontiguous_ids_crowd_and_empty_images(write_coco, entries) -> None:
    cats = [
        {"id": 42, "name": "triangle"},
        {"id": 3, "name": "circle"},
        {"id": 7, "name": "square"},
    ]
    images = [entries.image(i) for i in (30, 10, 20, 40)]  # listed out of id order
    anns = [
        entries.box(1, 10, [1, 2, 3, 4], category_id=42),
        entries.box(2, 10, [5, 5, 10, 10], category_id=3),
        entries.box(3, 10, [0, 0, 20, 20], category_id=7, iscrowd=1),
        entries.box(4, 20, [2, 2, 8, 8], category_id=7, iscrowd=1),  # image 20: crowd only
        entries.box(5, 40, [4, 4, 4, 4], category_id=7),
    ]
    path = write_coco(images=images, annotations=anns, categories=cats)

    dataset = _load(annotations=path, images=path.parent / "images", filter_empty=False)
    # sorted ids 3 < 7 < 42 -> contiguous 0, 1, 2
    assert dataset.contiguous_to_dataset_id == (3, 7, 42)
    assert dataset.class_names == ("circle", "square", "triangle")
    assert dataset.dataset_id_to_contiguous == {3: 0, 7: 1, 42: 2}
    assert [r.image_id for r in dataset.records] == [10, 20, 30, 40]
    r10, r20, r30, r40 = dataset.records
    # json order kept; XYWH [1, 2, 3, 4] -> XYXY [1, 2, 4, 6]
    np.testing.assert_array_equal(r10.boxes, [[1, 2, 4, 6], [5, 5, 15, 15]])
    np.testing.assert_array_equal(r10.labels, [2, 0])
    np.testing.assert_array_equal(r10.annotation_ids, [1, 2])
    np.testing.assert_array_equal(r10.crowd_boxes, [[0, 0, 20, 20]])
    assert len(r20.boxes) == 0 and len(r20.crowd_boxes) == 1
    assert r30.boxes.shape == (0, 4) and r30.labels.shape == (0,)
    np.testing.assert_array_equal(r40.labels, [1])

    filtered = _load(annotations=path, images=path.parent / "images", filter_empty=True)
    # an image with only crowd boxes counts as empty, as in detectron2
    assert [r.image_id for r in filtered.records] == [10, 40]
    assert filtered.contiguous_to_dataset_id == (3, 7, 42)


def test_xywh_to_xyxy_in_float32() -> None:
    # 0.1 + 0.2 summed in float32 (detectron2's BoxMode.convert on a list of floats)
    xyxy = xywh_to_xyxy([[0.1, 0.1, 0.2, 0.2]])
    assert xyxy.dtype == np.float32
    assert xyxy[0, 2] == np.float32(0.1) + np.float32(0.2)
    assert xywh_to_xyxy([]).shape == (0, 4)


def test_a_box_beyond_float32_is_malformed_not_infinite(write_coco) -> None:
    # found by tests/data/formats/test_coco_fuzz.py: 1e39 is a finite Python float but inf in float32
    json_path = write_coco(
        images=[{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        annotations=[{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1e39, 2], "iscrowd": 0}],
    )
    with pytest.raises(DatasetError, match=r"annotation 7 \(image 1\) has bbox \[0, 0, 1e\+39, 2\], not 4 finite numbers"):
        _load(annotations=json_path, images=json_path.parent / "images", filter_empty=False)
