"""`retina data convert --from yolo`: normalised boxes with the image's oriented size, class
names from data.yaml / classes.txt, layouts, every problem named with its file and line, the
raccoon round trip, and `retina data check` agreeing."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from retinacli.commands.convert import convert
from retinacli.data.formats.convert import REASONS
from retinacli.data.formats.yolo import read_yolo
from retinacli.errors import DatasetError, UsageError
from tests.cli_helpers import run_cli

# ----------------------------------------------------------------------------- test-only writer


def write_image(path: Path, size: tuple[int, int] = (100, 50), *, orientation: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation != 1:
        exif[274] = orientation
    Image.new("RGB", size, (90, 120, 150)).save(path, exif=exif.tobytes())
    return path


def write_label(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def coco_to_yolo(annotations: Path, images: Path, root: Path, *, split: str) -> None:
    """Write a COCO json as YOLO: images/<split>/ (hard links or copies), labels/<split>/*.txt
    with `class cx cy w h` normalised to 6 decimals, data.yaml names in category id order."""
    data = json.loads(annotations.read_text())
    index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(
        f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n"
    )
    lines: dict[int, list[str]] = {image["id"]: [] for image in data["images"]}
    sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        lines[ann["image_id"]].append(
            f"{index[ann['category_id']]} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
            f"{w / width:.6f} {h / height:.6f}"
        )
    for image in data["images"]:
        target = root / "images" / split / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(images / image["file_name"], target)
        except OSError:  # a copy, not a symbolic link: a link to outside the source is refused
            shutil.copyfile(images / image["file_name"], target)
        label = (root / "labels" / split / image["file_name"]).with_suffix(".txt")
        write_label(label, "".join(f"{line}\n" for line in lines[image["id"]]))


def by_file(annotations: Path) -> dict[str, tuple[int, int, list[tuple[str, list[float]]]]]:
    """file_name -> (width, height, sorted [(class name, bbox)])."""
    data = json.loads(annotations.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    result = {}
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = sorted((names[a["category_id"]], [float(v) for v in a["bbox"]]) for a in anns)
        result[image["file_name"]] = (image["width"], image["height"], boxes)
    return result


def problems_of(result, reason: str) -> list[str]:
    return [p.message for p in result.problems if p.reason == reason]


# ----------------------------------------------------------------------------- clean data


@pytest.fixture
def clean_yolo(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    (root / "data.yaml").parent.mkdir(parents=True)
    (root / "data.yaml").write_text("names: [cat, dog]\n")
    write_image(root / "images" / "a.jpg", (100, 50))
    # Stored 100x50 with EXIF orientation 6 (rotate 90): the detector reads it as 50x100.
    write_image(root / "images" / "rotated.jpg", (100, 50), orientation=6)
    write_image(root / "images" / "empty.png", (20, 20))
    write_label(root / "labels" / "a.txt", "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.5 0.5\n\n")
    write_label(root / "labels" / "rotated.txt", "1 0.5 0.5 0.5 0.5\n")
    return root


def test_clean_yolo_converts_with_the_oriented_image_size(clean_yolo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = convert(clean_yolo, source_format="yolo", output_dir=out)
    assert result.problems == () and result.class_names == ("cat", "dog")
    data = json.loads((out / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in data["images"]] == [
        ("a.jpg", 100, 50),
        ("empty.png", 20, 20),
        ("rotated.jpg", 50, 100),  # after EXIF orientation, as read_image_size gives it
    ]
    # a.jpg 100x50: cx 0.5 cy 0.5 w 0.2 h 0.4 -> x0 = (0.5 - 0.1) * 100 = 40, y0 = (0.5 - 0.2) * 50 = 15,
    # w = 20, h = 20; cx 0.25 cy 0.75 w 0.5 h 0.5 -> [0, 25, 50, 25].
    # rotated.jpg read as 50x100: cx 0.5 cy 0.5 w 0.5 h 0.5 -> [12.5, 25, 25, 50].
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in data["annotations"]] == [
        (1, 1, [40.0, 15.0, 20.0, 20.0]),
        (1, 2, [0.0, 25.0, 50.0, 25.0]),
        (3, 2, [12.5, 25.0, 25.0, 50.0]),
    ]
    (summary,) = result.splits
    assert (summary.num_images, summary.num_images_without_boxes, summary.num_boxes) == (3, 1, 3)
    assert os.path.samefile(out / "images" / "rotated.jpg", clean_yolo / "images" / "rotated.jpg")


def test_pixel_corners_are_on_a_float32_exact_grid(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    write_label(root / "classes.txt", "thing\n")
    write_image(root / "images" / "a.jpg", (333, 217))
    write_label(root / "labels" / "a.txt", "0 0.123457 0.654321 0.3 0.2\n0 0.9 0.9 0.2 0.2\n")
    result = read_yolo(root)
    import numpy as np

    for box in result.splits[0].images[0].boxes:
        corners = np.array(box.box_xyxy)
        assert np.array_equal(corners * 64, np.round(corners * 64))
        x0, y0, x1, y1 = box.box_xyxy
        # what training computes: x + w in float32 never passes the clipped edge
        assert (
            np.float32(x0) + np.float32(x1 - x0) <= 333
            and np.float32(y0) + np.float32(y1 - y0) <= 217
        )


@pytest.mark.parametrize(
    ("files", "names"),
    [
        ({"data.yaml": "nc: 2\nnames:\n  0: cat\n  1: dog\n"}, ("cat", "dog")),
        ({"classes.txt": "cat\ndog\n\n"}, ("cat", "dog")),
        ({"labels/classes.txt": "cat\ndog\n"}, ("cat", "dog")),  # labelImg writes it there
        (
            {"data.yaml": "names: [7, dog]\n", "classes.txt": "ignored\n"},
            ("7", "dog"),
        ),  # data.yaml first
    ],
)
def test_class_names_come_from_data_yaml_or_classes_txt(tmp_path: Path, files, names) -> None:
    root = tmp_path / "yolo"
    for relative, text in files.items():
        write_label(root / relative, text)
    write_image(root / "images" / "a.jpg")
    write_label(root / "labels" / "a.txt", "1 0.5 0.5 0.5 0.5\n")
    dataset = read_yolo(root)
    assert dataset.class_names == names and dataset.problems == ()
    assert read_yolo(root, class_names=names).class_names == names


def test_split_folders_and_roboflow_layout(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    write_label(root / "data.yaml", "names: [cat]\n")
    write_image(root / "images" / "train" / "a.jpg")
    write_image(root / "images" / "train" / "nested" / "b.jpg")
    write_label(root / "labels" / "train" / "nested" / "b.txt", "0 0.5 0.5 0.5 0.5\n")
    write_image(root / "images" / "val" / "c.jpg")
    out = tmp_path / "out"
    result = convert(root, source_format="yolo", output_dir=out)
    assert result.problems == ()
    assert [(s.name, s.num_images, s.num_boxes) for s in result.splits] == [
        ("train", 2, 1),
        ("val", 1, 0),
    ]
    assert [i["file_name"] for i in json.loads((out / "train.json").read_text())["images"]] == [
        "a.jpg",
        "nested/b.jpg",
    ]
    assert (out / "images" / "train" / "nested" / "b.jpg").is_file()

    robo = tmp_path / "robo"
    write_label(robo / "data.yaml", "names: [cat]\n")
    for split in ("train", "valid"):
        write_image(robo / split / "images" / f"{split}.jpg")
        write_label(robo / split / "labels" / f"{split}.txt", "0 0.5 0.5 0.5 0.5\n")
    dataset = read_yolo(robo)
    assert [(s.name, len(s.images)) for s in dataset.splits] == [("train", 1), ("valid", 1)]


# ----------------------------------------------------------------------------- every problem


@pytest.fixture
def messy_yolo(tmp_path: Path) -> Path:
    """One of each YOLO problem, in a dataset with train and val folders."""
    root = tmp_path / "yolo"
    write_label(root / "data.yaml", "names: [cat, dog]\n")
    train_images, train_labels = root / "images" / "train", root / "labels" / "train"
    write_image(train_images / "a.jpg", (100, 50))
    write_label(
        train_labels / "a.txt",
        "0 0.5 0.5 0.2 0.2\n"  # line 1: fine
        "1 0.9 0.5 0.4 0.2\n"  # line 2: x1 = 110 > 100 -> clipped
        "0 1.5 1.5 0.1 0.1\n"  # line 3: entirely outside
        "0 0.5 0.5 0 0.1\n"  # line 4: zero width
        "5 0.5 0.5 0.1 0.1\n"  # line 5: no name for index 5
        "0 0.5 0.5 0.1\n"  # line 6: 4 values
        "cat 0.5 0.5 0.1 0.1\n"  # line 7: not a number
        "0.5 0.5 0.5 0.1 0.1\n"  # line 8: class not an integer
        "\n"  # line 9: blank, skipped
        "1.0 0.5 0.5 nan 0.1\n",  # line 10: not finite
    )
    write_image(train_images / "a.png", (100, 50))  # second image for labels/train/a.txt
    (train_images / "broken.jpg").write_bytes(b"not a jpeg")
    write_label(train_labels / "broken.txt", "0 0.5 0.5 0.5 0.5\n")
    write_label(train_labels / "ghost.txt", "0 0.5 0.5 0.5 0.5\n")
    write_image(root / "images" / "val" / "v.jpg", (10, 10))
    write_label(root / "labels" / "val" / "v.txt", "1 0.5 0.5 0.5 0.5\n")
    write_image(root / "images" / "stray.jpg", (10, 10))
    write_label(root / "labels" / "test" / "t.txt", "0 0.5 0.5 0.5 0.5\n")
    return root


def test_every_yolo_problem_is_named_and_counted(messy_yolo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = convert(messy_yolo, source_format="yolo", output_dir=out)
    labels, images = messy_yolo / "labels", messy_yolo / "images"
    not_a_line = "is not `class cx cy w h` (an integer and 4 finite numbers); dropped; fix the line"
    expected = {
        "box_clipped": [
            f"{labels}/train/a.txt, line 2: box cx=0.9 cy=0.5 w=0.4 h=0.2 reaches outside the 100x50 "
            "image; clipped to it: [70, 20, 100, 30] (XYXY pixels)"
        ],
        "box_outside_image": [
            f"{labels}/train/a.txt, line 3: box cx=1.5 cy=1.5 w=0.1 h=0.1 lies entirely outside the "
            "100x50 image; dropped; fix or remove it"
        ],
        "degenerate_box": [
            f"{labels}/train/a.txt, line 4: box cx=0.5 cy=0.5 w=0 h=0.1 has zero or negative width "
            "or height; dropped; fix or remove it"
        ],
        "unknown_class": [
            f"{labels}/train/a.txt, line 5: class index 5 has no name (the 2 names are 0..1: cat, "
            "dog); dropped; fix the index or add the name"
        ],
        "malformed": [
            f"{labels}/train/a.txt, line 6: '0 0.5 0.5 0.1' {not_a_line}",
            f"{labels}/train/a.txt, line 7: 'cat 0.5 0.5 0.1 0.1' {not_a_line}",
            f"{labels}/train/a.txt, line 8: '0.5 0.5 0.5 0.1 0.1' {not_a_line}",
            f"{labels}/train/a.txt, line 10: '1.0 0.5 0.5 nan 0.1' {not_a_line}",
        ],
        "unreadable_image": [
            f"{images}/train/broken.jpg: not an image PIL can open (cannot identify image file "
            f"'{images}/train/broken.jpg'); dropped with its labels labels/train/broken.txt; replace "
            "the file or remove it"
        ],
        "label_without_image": [
            f"{labels}/train/ghost.txt: no image images/train/ghost.<ending> for it; dropped; add the "
            "image or remove the label file",
            f"{labels}/test/t.txt: no image folder images/test for it; dropped; add the images or "
            "remove the label file",
        ],
        "duplicate_image_name": [
            f"{images}/train/a.png: has the same name as a.jpg, so labels/train/a.txt would label "
            "both; dropped, a.jpg was used; rename or remove one of them"
        ],
        "not_in_any_split": [
            f"{images}/stray.jpg: lies next to the split folders images/{{train,val}}; left out; move "
            "it into a split folder to convert it"
        ],
    }
    for reason in REASONS:
        assert sorted(problems_of(result, reason)) == sorted(expected.get(reason, [])), reason
        assert result.reason_counts[reason] == len(expected.get(reason, [])), reason
    assert len(result.problems) == 13
    # by split (none first), then file, then line
    assert [p.where for p in result.problems if p.file.endswith("a.txt")] == [
        f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 10)
    ]
    assert result.problems[0].split is None

    assert by_file(out / "train.json") == {
        "a.jpg": (100, 50, [("cat", [40.0, 20.0, 20.0, 10.0]), ("dog", [70.0, 20.0, 30.0, 10.0])])
    }
    assert by_file(out / "val.json") == {"v.jpg": (10, 10, [("dog", [2.5, 2.5, 5.0, 5.0])])}


def test_converted_output_passes_data_check_with_the_same_numbers(
    messy_yolo: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    converted = run_cli(
        ["data", "convert", str(messy_yolo), "--from", "yolo", "--output-dir", str(out)],
        capsys,
        monkeypatch,
    )
    assert converted.exit_code == 0, converted.output
    assert re.search(
        r"│ malformed +│ malformed line, XML or object \(dropped\) +│ 4 +│", converted.stdout
    )
    assert re.search(r"│ total +│ +│ 13 +│", converted.stdout)
    assert re.search(r"│ train\.json │ 1 +│ 0 +│ 2 +│ 0 +│ 2/2 +│", converted.stdout)
    assert re.search(r"│ val\.json +│ 1 +│ 0 +│ 1 +│ 0 +│ 1/2 +│", converted.stdout)

    for target in (out, out / "val.json"):
        checked = run_cli(["data", "check", str(target)], capsys, monkeypatch)
        assert checked.exit_code == 0, checked.output
        assert "0 errors, 0 fixed" in checked.stdout
    checked = run_cli(["data", "check", str(out)], capsys, monkeypatch)
    tables = checked.stdout.split(f"{out}/val.json")
    assert "2 (+0 crowd" in tables[0] and "class cat │ 1" in tables[0].replace("  ", " ")
    assert "1 (0 without boxes)" in tables[1] and "1 (+0 crowd" in tables[1]


# ----------------------------------------------------------------------------- unfixable input


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, r"yolo: no class names: YOLO labels hold class indices only; add data.yaml"),
        (
            {"data.yaml": "names:\n  0: cat\n  2: dog\n"},
            r"names: maps \['0', '2'\] .* without gaps",
        ),
        ({"data.yaml": "nc: 3\nnames: [cat, dog]\n"}, r"nc: 3 but names: has 2 entries"),
        ({"data.yaml": "names: [cat, cat]\n"}, r"cat named twice"),
        ({"data.yaml": "names: [cat, null]\n"}, r"class index 1 has no usable name \(None\)"),
        ({"data.yaml": "train: images\n"}, r"data.yaml: no `names:` key"),
        ({"data.yaml": "names: [cat\n"}, r"data.yaml: cannot read the YAML"),
        (
            {"data.yaml": "names: !!python/object:os.system ls\n"},
            r"data.yaml: cannot read the YAML",
        ),
        ({"classes.txt": "cat\n\ndog\n"}, r"classes.txt: class index 1 has no usable name"),
    ],
)
def test_unusable_class_names_exit_2(tmp_path: Path, files, message, capsys, monkeypatch) -> None:
    root = tmp_path / "yolo"
    for relative, text in files.items():
        write_label(root / relative, text)
    write_image(root / "images" / "a.jpg")
    result = run_cli(
        ["data", "convert", str(root), "--from", "yolo", "--output-dir", str(tmp_path / "out")],
        capsys,
        monkeypatch,
    )
    assert result.exit_code == 2 and re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_unconvertible_layouts(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    root.mkdir()
    with pytest.raises(
        DatasetError, match="yolo: no images/ folder; a YOLO dataset has images/ and labels/"
    ):
        read_yolo(root, class_names=("cat",))
    (root / "images").mkdir()
    (root / "images" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"images: no image file \(.bmp, .jpeg, .jpg"):
        read_yolo(root, class_names=("cat",))
    (root / "images" / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(
        DatasetError, match=r"yolo: no usable image .*\n.*bad.jpg: not an image PIL can open"
    ):
        read_yolo(root, class_names=("cat",))


def test_a_split_named_like_the_report_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    write_image(root / "images" / "convert_report" / "a.jpg")
    with pytest.raises(DatasetError, match=r"split names \['convert_report'\] would write"):
        convert(root, source_format="yolo", output_dir=tmp_path / "out", classes="cat")
    assert not (tmp_path / "out").exists()


def test_classes_flag_must_agree_with_the_names_file(clean_yolo: Path) -> None:
    with pytest.raises(
        UsageError, match=r"--classes dog,cat: disagrees with .*data.yaml \(cat,dog\)"
    ):
        read_yolo(clean_yolo, class_names=("dog", "cat"))


# ----------------------------------------------------------------------------- raccoon round trip


def test_raccoon_through_yolo_gives_the_same_images_classes_and_boxes(
    raccoon_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "raccoon-yolo"
    for split in ("train", "val"):
        coco_to_yolo(raccoon_dir / f"{split}.json", raccoon_dir / "images", root, split=split)
    result = convert(root, source_format="yolo", output_dir=tmp_path / "out")
    assert result.problems == () and result.class_names == ("raccoon",)
    worst = 0.0
    for split in ("train", "val"):
        converted = by_file(tmp_path / "out" / f"{split}.json")
        original = by_file(raccoon_dir / f"{split}.json")
        assert converted.keys() == original.keys()
        for name, (width, height, boxes) in original.items():
            assert converted[name][:2] == (width, height)
            assert [c for c, _ in converted[name][2]] == [c for c, _ in boxes]
            for (_, ours), (_, theirs) in zip(converted[name][2], boxes, strict=True):
                # compare corners: bbox x, y and x + w, y + h
                ours_xyxy = [ours[0], ours[1], ours[0] + ours[2], ours[1] + ours[3]]
                theirs_xyxy = [theirs[0], theirs[1], theirs[0] + theirs[2], theirs[1] + theirs[3]]
                worst = max(
                    worst, *(abs(a - b) for a, b in zip(ours_xyxy, theirs_xyxy, strict=True))
                )
    assert worst <= 1.0, worst
    assert [(s.num_images, s.num_boxes) for s in result.splits] == [(157, 170), (39, 43)]
