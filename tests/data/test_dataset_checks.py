"""One fixture per kind of bad data; each test asserts the message names the file and the ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinacli.data.checks import check_coco, prepare_coco
from retinacli.errors import DatasetError
from tests.data.datasets import load_coco


def _check(json_path: Path, *, fix: bool, decode: bool = False):
    return check_coco(
        annotations=json_path,
        images=json_path.parent / "images",
        fix_bad_boxes=fix,
        decode_images=decode,
    )


def _only(report, kind: str):
    found = [p for p in report.problems if p.kind == kind]
    assert len(found) == 1, report.problems
    return found[0]


@pytest.fixture
def missing_image_file(write_coco, entries) -> Path:
    return write_coco(
        images=[entries.image(1), entries.image(2)],
        annotations=[entries.box(1, 2, [1, 1, 5, 5])],
        skip_files=(2,),
    )


def test_missing_image_file(missing_image_file: Path) -> None:
    _, report = _check(missing_image_file, fix=True)
    problem = _only(report, "image_not_found")
    assert problem.severity == "error" and problem.image_id == 2
    assert problem.file.endswith("img2.png")
    assert "img2.png (image id 2): image file not found" in problem.message
    assert not report.ok


@pytest.fixture
def unreadable_image(write_coco, entries) -> Path:
    path = write_coco(images=[entries.image(5)], annotations=[])
    (path.parent / "images" / "img5.png").write_bytes(b"\x89PNG but not really")
    return path


def test_unreadable_image(unreadable_image: Path) -> None:
    _, report = _check(unreadable_image, fix=True)
    problem = _only(report, "unreadable_image")
    assert "img5.png (image id 5): cannot open the image" in problem.message
    assert problem.image_id == 5


@pytest.fixture
def truncated_image(write_coco, entries) -> Path:
    path = write_coco(images=[entries.image(6, width=64, height=64)], annotations=[])
    file = path.parent / "images" / "img6.png"
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(file)
    file.write_bytes(file.read_bytes()[:300])
    return path


def test_truncated_image_found_only_when_decoding(truncated_image: Path) -> None:
    _, headers_only = _check(truncated_image, fix=True)
    assert headers_only.ok  # the header is intact: header checks cannot see it
    _, decoded = _check(truncated_image, fix=True, decode=True)
    assert "img6.png (image id 6): cannot decode" in _only(decoded, "unreadable_image").message


@pytest.fixture
def box_outside_image(write_coco, entries) -> Path:
    # image 64x48 (WxH)
    return write_coco(
        images=[entries.image(3)],
        annotations=[
            entries.box(10, 3, [-4, 10, 20, 20]),  # XYXY [-4, 10, 16, 30]: left of x=0
            entries.box(11, 3, [50, 40, 30, 30]),  # XYXY [50, 40, 80, 70]: past right/bottom
            entries.box(12, 3, [70, 5, 10, 10]),  # XYXY [70, 5, 80, 15]: entirely outside
            entries.box(13, 3, [1, 1, 10, 10]),  # fine
        ],
    )


def test_box_outside_image_fixed(box_outside_image: Path) -> None:
    dataset, report = _check(box_outside_image, fix=True)
    assert report.ok
    problems = [p for p in report.problems if p.kind == "box_outside_image"]
    assert [p.annotation_id for p in problems] == [10, 11, 12]
    assert all(p.severity == "fixed" for p in problems)
    assert str(box_outside_image) in problems[0].message
    assert "annotation 10 (image 3, img3.png)" in problems[0].message
    assert "clipped" in problems[0].message and "dropped" in problems[2].message
    record = dataset.records[0]
    np.testing.assert_array_equal(record.boxes, [[0, 10, 16, 30], [50, 40, 64, 48], [1, 1, 11, 11]])
    np.testing.assert_array_equal(record.annotation_ids, [10, 11, 13])
    assert report.num_boxes == 3


def test_box_outside_image_strict(box_outside_image: Path) -> None:
    dataset, report = _check(box_outside_image, fix=False)
    assert [p.severity for p in report.problems] == ["error"] * 3
    assert "fix_bad_boxes: true" in report.problems[0].message
    assert len(dataset.records[0].boxes) == 4  # nothing changed
    with pytest.raises(DatasetError) as info:
        prepare_coco(
            annotations=box_outside_image,
            images=box_outside_image.parent / "images",
            filter_empty=False,
            fix_bad_boxes=False,
        )
    # all three found up front, in one error
    message = str(info.value)
    assert all(f"annotation {i} (image 3" in message for i in (10, 11, 12))


@pytest.fixture
def degenerate_boxes(write_coco, entries) -> Path:
    return write_coco(
        images=[entries.image(4), entries.image(8)],
        annotations=[
            entries.box(20, 4, [5, 5, 0, 10]),  # zero width
            entries.box(21, 4, [5, 5, 10, -3]),  # negative height
            entries.box(22, 8, [5, 5, 10, 10]),
        ],
    )


def test_degenerate_boxes(degenerate_boxes: Path) -> None:
    dataset, report = _check(degenerate_boxes, fix=True)
    problems = [p for p in report.problems if p.kind == "degenerate_box"]
    assert [(p.annotation_id, p.image_id, p.severity) for p in problems] == [
        (20, 4, "fixed"),
        (21, 4, "fixed"),
    ]
    assert "annotation 20 (image 4, img4.png)" in problems[0].message
    assert "zero or negative width or height" in problems[0].message
    assert len(dataset.records[0].boxes) == 0
    assert report.num_images_without_boxes == 1
    # filter_empty looks at the json's annotations, before the fixes, as detectron2's filter
    # runs before its mapper drops degenerate boxes: image 4 lost its only boxes but stays, as a
    # background image.
    kept, _ = prepare_coco(
        annotations=degenerate_boxes,
        images=degenerate_boxes.parent / "images",
        filter_empty=True,
        fix_bad_boxes=True,
    )
    assert [r.image_id for r in kept.records] == [4, 8]
    assert len(kept.records[0].boxes) == 0

    _, strict = _check(degenerate_boxes, fix=False)
    assert [p.severity for p in strict.problems] == ["error", "error"]


@pytest.fixture
def unknown_category(write_coco, entries) -> Path:
    return write_coco(
        images=[entries.image(1)],
        annotations=[entries.box(30, 1, [1, 1, 5, 5], category_id=9)],
        categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    )


def test_unknown_category(unknown_category: Path) -> None:
    _, report = _check(unknown_category, fix=True)
    problem = _only(report, "unknown_category")
    assert problem.file == str(unknown_category)
    assert (problem.image_id, problem.annotation_id) == (1, 30)
    assert problem.message.startswith(f"{unknown_category}: annotation 30 (image 1)")
    assert "category_id 9" in problem.message and "ids: 1, 2" in problem.message
    with pytest.raises(DatasetError, match="annotation 30 .* category_id 9"):
        load_coco(annotations=unknown_category, images=unknown_category.parent, filter_empty=False)


@pytest.fixture
def annotation_without_image(write_coco, entries) -> Path:
    return write_coco(
        images=[entries.image(1)],
        annotations=[entries.box(40, 1, [1, 1, 5, 5]), entries.box(41, 77, [1, 1, 5, 5])],
    )


def test_annotation_without_image(annotation_without_image: Path) -> None:
    dataset, report = _check(annotation_without_image, fix=True)
    problem = _only(report, "missing_image")
    assert (problem.image_id, problem.annotation_id) == (77, 41)
    assert problem.message.startswith(f"{annotation_without_image}: annotation 41")
    assert "image_id 77" in problem.message
    assert [r.image_id for r in dataset.records] == [1]


@pytest.fixture
def size_mismatch(write_coco, entries) -> Path:
    return write_coco(
        images=[entries.image(12, width=64, height=48)],
        annotations=[],
        file_sizes={12: (60, 48)},
    )


def test_size_mismatch(size_mismatch: Path) -> None:
    _, report = _check(size_mismatch, fix=True)
    problem = _only(report, "size_mismatch")
    assert problem.file.endswith("img12.png") and problem.image_id == 12
    assert "img12.png (image id 12): the file is 60x48" in problem.message
    assert "records 64x48" in problem.message


@pytest.fixture
def malformed_json_entries(write_coco, entries) -> Path:
    return write_coco(
        images=[entries.image(1), entries.image(1), {"id": 2, "file_name": "x.png"}],
        annotations=[
            entries.box(50, 1, [1, 1, 5]),  # 3 numbers
            entries.box(51, 1, [1, 1, 5, float("nan")]),
            entries.box(51, 1, [1, 1, 5, 5]),  # duplicate id
            {"id": 52, "image_id": 1, "bbox": [1, 1, 5, 5]},  # no category_id
        ],
        skip_files=(2,),
    )


def test_malformed_json_entries(malformed_json_entries: Path) -> None:
    _, report = _check(malformed_json_entries, fix=True)
    kinds = [(p.kind, p.image_id, p.annotation_id) for p in report.problems]
    assert ("duplicate_id", 1, None) in kinds  # image 1 listed twice
    assert ("bad_json", 2, None) in kinds  # image 2 has no height/width
    assert ("malformed_box", 1, 50) in kinds
    assert ("duplicate_id", 1, 51) in kinds
    assert ("bad_json", 1, 52) in kinds
    assert all(p.severity == "error" for p in report.problems)
    assert all(p.message.startswith(str(malformed_json_entries)) for p in report.problems)


def test_missing_image_folder_is_one_error(missing_image_file: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere: image folder not found; .* train\.json"):
        check_coco(
            annotations=missing_image_file,
            images=missing_image_file.parent / "nowhere",
            fix_bad_boxes=True,
        )


def test_unreadable_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.json: annotation file not found"):
        check_coco(annotations=tmp_path / "nope.json", images=tmp_path, fix_bad_boxes=True)
    (tmp_path / "bad.json").write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON \(line 1"):
        load_coco(annotations=tmp_path / "bad.json", images=tmp_path, filter_empty=False)
    (tmp_path / "partial.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DatasetError, match=r'partial\.json: "categories" is missing'):
        load_coco(annotations=tmp_path / "partial.json", images=tmp_path, filter_empty=False)


def test_report_counts(write_coco, entries) -> None:
    path = write_coco(
        images=[entries.image(1, width=400, height=300), entries.image(2)],
        annotations=[
            entries.box(1, 1, [0, 0, 31, 33], category_id=2),  # 1023 px^2 < 32^2: small
            entries.box(2, 1, [0, 0, 32, 32], category_id=2),  # 1024 = 32^2: medium
            entries.box(3, 1, [0, 0, 96, 96], category_id=1),  # 96^2: large
            entries.box(4, 1, [0, 0, 50, 50], category_id=1, iscrowd=1),
        ],
        categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    )
    _, report = _check(path, fix=True)
    assert report.ok and report.problems == ()
    assert report.num_images == 2 and report.num_images_without_boxes == 1
    assert report.num_boxes == 3 and report.num_crowd_boxes == 1
    assert report.boxes_per_class == {"a": 1, "b": 2}
    assert report.size_counts == {"small": 1, "medium": 1, "large": 1}


def test_raccoon_is_clean(raccoon_dir: Path) -> None:
    for split, counts in (("train", (0, 13, 157)), ("val", (0, 2, 41))):
        _, report = check_coco(
            annotations=raccoon_dir / f"{split}.json",
            images=raccoon_dir / "images",
            fix_bad_boxes=False,
        )
        # README "Counts": small/medium/large per split
        assert report.ok and report.problems == ()
        assert tuple(report.size_counts.values()) == counts
