"""Fuzzing the COCO json reader (`pytest -m fuzz`): generated and mutated jsons give a dataset or
a DatasetError (exit code 2) naming the file, never a traceback; file_names that leave the image
folder (`..`, absolute, links out, loops, control characters) are refused before any file is
opened."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retinacli.data.formats.coco import DetectionDataset
from tests.data.datasets import load_coco
from tests.fuzzing import FUZZ, expect_clean

pytestmark = pytest.mark.fuzz

VALID = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 32, "height": 32},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "iscrowd": 0, "area": 120},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1, "area": 25},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
paths = st.sampled_from([
    ("images",), ("annotations",), ("categories",), ("images", 0), ("images", 1, "id"), ("images", 0, "width"),
    ("images", 0, "file_name"), ("annotations", 0), ("annotations", 0, "bbox"), ("annotations", 0, "bbox", 2),
    ("annotations", 1, "image_id"), ("annotations", 0, "category_id"), ("annotations", 0, "iscrowd"),
    ("categories", 0, "id"), ("categories", 1, "name"), ("annotations", 1, "id"),
])


def _mutate(data, path, value, delete: bool):
    node = data
    for step in path[:-1]:
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return
        if not isinstance(node, dict | list):
            return
    last = path[-1]
    if (isinstance(node, dict) and (last in node or not delete)) or (
        isinstance(node, list) and isinstance(last, int) and last < len(node)
    ):
        if delete:
            del node[last]
        else:
            node[last] = value


def _load(text: bytes, test: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.json"
        path.write_bytes(text)
        result = expect_clean(lambda: load_coco(annotations=path, images=folder, filter_empty=False), test=test)
    assert result is None or isinstance(result, DetectionDataset)
    if result is not None:
        for record in result.records:
            assert record.boxes.shape == (len(record.labels), 4) and np.isfinite(record.boxes).all()
            assert ((record.labels >= 0) & (record.labels < result.num_classes)).all()
    return result


@FUZZ
@given(changes=st.lists(st.tuples(paths, json_values, st.booleans()), min_size=1, max_size=5))
def test_mutated_coco_fields(changes):
    data = json.loads(json.dumps(VALID))
    for path, value, delete in changes:
        _mutate(data, path, value, delete)
    _load(json.dumps(data).encode(), "coco: mutated fields")


@FUZZ
@given(data=json_values | st.dictionaries(st.sampled_from(["images", "annotations", "categories", "info"]), json_values))
def test_generated_json_documents(data):
    _load(json.dumps(data).encode(), "coco: generated json documents")


@FUZZ
@given(start=st.integers(0, 600), length=st.integers(0, 30), insert=st.binary(max_size=12))
def test_damaged_json_bytes(start: int, length: int, insert: bytes):
    text = json.dumps(VALID).encode()
    start = min(start, len(text))
    _load(text[:start] + insert + text[start + length :], "coco: damaged bytes")


# ----------------------------------------------------------------------------- file names from data
# The json's file_names (`..`, absolute, links to a file, a folder or in a loop, control
# characters) are checked against the image folder before anything is opened: the contract is a
# dataset whose every file lies inside that folder, or a DatasetError, and nothing outside it read.

SECRET = "SECRET"  # replaced by the absolute path of the user's file
hostile_names = st.sampled_from([
    "../secret.png", "../../secret.png", "sub/../../secret.png", SECRET, "link.png", "dirlink/secret.png",
    "loop.png", "a.png", "sub/../a.png", "a\x1b[2Jb.png", "a\x00b.png", "\u202egnp.png", ".", "..", "sub/",
    "//etc/passwd", "..\\secret.png", "C:\\secret.png",
]) | st.text(min_size=1, max_size=12)


@FUZZ
@given(names=st.lists(hostile_names, min_size=1, max_size=4), check_files=st.booleans())
def test_file_names_never_leave_the_image_folder(names, check_files):
    from PIL import Image

    from retinacli.data.checks import check_coco, prepare_coco
    from tests.fuzzing import opened_outside, watch_opens

    with tempfile.TemporaryDirectory() as folder:
        world = Path(folder)
        images, outside = world / "images", world / "outside"
        images.mkdir()
        outside.mkdir()
        (images / "sub").mkdir()
        Image.fromarray(np.full((48, 64, 3), 90, dtype=np.uint8)).save(images / "a.png")
        Image.fromarray(np.full((48, 64, 3), 200, dtype=np.uint8)).save(outside / "secret.png")
        (world / "secret.png").symlink_to(outside / "secret.png")
        (images / "link.png").symlink_to(outside / "secret.png")
        (images / "dirlink").symlink_to(outside, target_is_directory=True)
        (images / "loop.png").symlink_to(images / "loop2.png")
        (images / "loop2.png").symlink_to(images / "loop.png")
        data = json.loads(json.dumps(VALID))
        data["images"] = [
            {"id": n + 1, "file_name": name.replace(SECRET, str(outside / "secret.png")), "width": 64, "height": 48}
            for n, name in enumerate(names)
        ]
        data["annotations"] = [{**ann, "image_id": 1} for ann in data["annotations"]]
        path = world / "train.json"
        path.write_text(json.dumps(data))
        with watch_opens() as opened:
            result = expect_clean(
                lambda: check_coco(annotations=path, images=images, fix_bad_boxes=True, check_files=check_files),
                test="coco: file names",
            )
            expect_clean(
                lambda: prepare_coco(annotations=path, images=images, filter_empty=False, fix_bad_boxes=True),
                test="coco: file names",
            )
            seen = list(opened)
        assert opened_outside(seen, world, images, path) == []
        if result is not None:
            dataset, report = result
            for record in dataset.records:
                assert Path(record.file_name).resolve().is_relative_to(images.resolve())
            refused = {p.image_id for p in report.problems if p.kind == "path_outside_folder"}
            assert refused.isdisjoint(r.image_id for r in dataset.records)
