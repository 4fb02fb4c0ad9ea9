"""`retina data convert --from voc`: the box formula, difficult objects, splits, every problem
named with its file and object, the raccoon round trip, and `retina data check` agreeing."""

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
from retinacli.data.formats.voc import read_voc
from retinacli.errors import DatasetError, UsageError
from tests.cli_helpers import run_cli

# ----------------------------------------------------------------------------- test-only writer


def write_xml(
    root: Path,
    stem: str,
    objects: list[tuple[str, tuple[float, float, float, float]] | tuple[str, tuple, int]],
    *,
    size: tuple[int, int] | None = (64, 48),
    filename: str | None = None,
) -> Path:
    """Annotations/<stem>.xml with `objects` (name, (xmin, ymin, xmax, ymax)[, difficult])."""
    parts = [f"<annotation><folder>VOC</folder><filename>{filename or stem + '.jpg'}</filename>"]
    if size is not None:
        parts.append(
            f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        )
    for obj in objects:
        name, (xmin, ymin, xmax, ymax) = obj[0], obj[1]
        difficult = obj[2] if len(obj) > 2 else 0
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin:g}</xmin><ymin>{ymin:g}</ymin>"
            f"<xmax>{xmax:g}</xmax><ymax>{ymax:g}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))
    return path


def write_image(root: Path, name: str, size: tuple[int, int] = (64, 48)) -> Path:
    path = root / "JPEGImages" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)
    return path


def write_split(root: Path, name: str, ids: list[str]) -> None:
    path = root / "ImageSets" / "Main" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def coco_to_voc(annotations: Path, images: Path, root: Path, *, split: str | None = None) -> None:
    """Write a COCO json as VOC (1-based inclusive corners: xmin = x + 1, xmax = x + w), images
    hard-linked (or copied) into JPEGImages."""
    data = json.loads(annotations.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    boxes: dict[int, list] = {}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append(
            (names[ann["category_id"]], (x + 1, y + 1, x + w, y + h))
        )
    for image in data["images"]:
        stem = Path(image["file_name"]).stem
        write_xml(root, stem, boxes.get(image["id"], []), size=(image["width"], image["height"]))
        target = root / "JPEGImages" / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(images / image["file_name"], target)
        except OSError:  # a copy, not a symbolic link: a link to outside the source is refused
            shutil.copyfile(images / image["file_name"], target)
    if split is not None:
        listed = root / "ImageSets" / "Main" / f"{split}.txt"
        listed.parent.mkdir(parents=True, exist_ok=True)
        with listed.open("a") as handle:
            handle.writelines(f"{Path(i['file_name']).stem}\n" for i in data["images"])


def by_file(annotations: Path) -> dict[str, tuple[int, int, list[tuple[str, list[float], int]]]]:
    """file_name -> (width, height, sorted [(class name, bbox, iscrowd)])."""
    data = json.loads(annotations.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    result = {}
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = sorted(
            (names[a["category_id"]], [float(v) for v in a["bbox"]], a["iscrowd"]) for a in anns
        )
        result[image["file_name"]] = (image["width"], image["height"], boxes)
    return result


def problems_of(result, reason: str) -> list[str]:
    return [p.message for p in result.problems if p.reason == reason]


# ----------------------------------------------------------------------------- clean data


@pytest.fixture
def clean_voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    write_image(root, "a.jpg")
    write_image(root, "b.jpg", (30, 20))
    write_xml(root, "a", [("dog", (1, 1, 10, 20)), ("cat", (5, 6, 64, 48), 1)])
    write_xml(root, "b", [("cat", (3, 4, 3, 4))], size=(30, 20))  # a 1-pixel box
    return root


def test_clean_voc_converts_with_the_box_formula(clean_voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = convert(clean_voc, source_format="voc", output_dir=out)
    assert result.problems == () and set(result.reason_counts.values()) == {0}
    assert list(result.reason_counts) == list(REASONS)
    assert result.class_names == ("cat", "dog")  # sorted, whatever the order in the XMLs
    data = json.loads((out / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in data["images"]] == [
        ("a.jpg", 64, 48),
        ("b.jpg", 30, 20),
    ]
    # x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax; bbox [x0, y0, x1 - x0, y1 - y0]:
    # (1, 1, 10, 20) -> [0, 0, 10, 20]; (5, 6, 64, 48) -> [4, 5, 60, 43]; (3, 4, 3, 4) -> [2, 3, 1, 1]
    assert [
        (a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in data["annotations"]
    ] == [
        (2, [0.0, 0.0, 10.0, 20.0], 200.0, 0),
        (1, [4.0, 5.0, 60.0, 43.0], 2580.0, 1),  # difficult -> iscrowd 1
        (1, [2.0, 3.0, 1.0, 1.0], 1.0, 0),
    ]
    assert os.path.samefile(out / "images" / "a.jpg", clean_voc / "JPEGImages" / "a.jpg")
    assert (result.linked, result.copied) == (2, 0)
    (summary,) = result.splits
    assert (summary.num_images, summary.num_boxes, summary.num_crowd_boxes) == (2, 2, 1)
    assert summary.boxes_per_class == {"cat": 1, "dog": 1}
    report = json.loads((out / "convert_report.json").read_text())
    assert report["problems"] == [] and report["splits"][0]["images"] == "images"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "voc"]  # no temporary folder


def test_keep_difficult_and_classes_order(clean_voc: Path, tmp_path: Path) -> None:
    result = convert(
        clean_voc,
        source_format="voc",
        output_dir=tmp_path / "out",
        classes="dog,cat",
        keep_difficult=True,
    )
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    assert [(a["category_id"], a["iscrowd"]) for a in data["annotations"]] == [
        (1, 0),
        (2, 0),
        (2, 0),
    ]
    assert result.splits[0].boxes_per_class == {"dog": 1, "cat": 2}


def test_split_lists_give_one_json_and_one_image_folder_each(
    clean_voc: Path, tmp_path: Path
) -> None:
    write_split(clean_voc, "train", ["a"])
    write_split(clean_voc, "val", ["b"])
    write_split(clean_voc, "trainval", ["a", "b"])
    out = tmp_path / "out"
    result = convert(clean_voc, source_format="voc", output_dir=out)
    assert [(s.name, s.annotations.name, s.num_images) for s in result.splits] == [
        ("train", "train.json", 1),
        ("val", "val.json", 1),
        ("trainval", "trainval.json", 2),
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "convert_report.json",
        "images",
        "train.json",
        "trainval.json",
        "val.json",
    ]
    assert sorted(p.name for p in (out / "images" / "trainval").iterdir()) == ["a.jpg", "b.jpg"]
    assert [i["file_name"] for i in json.loads((out / "val.json").read_text())["images"]] == [
        "b.jpg"
    ]


# ----------------------------------------------------------------------------- every problem


@pytest.fixture
def messy_voc(tmp_path: Path) -> Path:
    """One of each VOC problem, in a dataset with train and val lists."""
    root = tmp_path / "voc"
    for stem in ("boxes", "sized", "twin", "spare"):
        write_image(root, f"{stem}.jpg")
    write_image(root, "spare.png")  # a second image for spare.xml
    (root / "JPEGImages" / "broken.jpg").write_bytes(b"not a jpeg")
    write_xml(
        root,
        "boxes",
        [
            ("cat", (0, 1, 10, 10)),  # object 0: x0 = -1 -> clipped
            ("cat", (70, 60, 80, 70)),  # object 1: entirely outside the 64x48 image
            ("cat", (10, 10, 5, 20)),  # object 2: xmax < xmin
            ("bird", (1, 1, 5, 5)),  # object 3: not in --classes
            ("cat", (2, 2, 9, 9)),  # object 4: fine
        ],
    )
    (root / "Annotations" / "boxes.xml").write_text(
        (root / "Annotations" / "boxes.xml")
        .read_text()
        .replace(
            "</annotation>",
            "<object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",
        )
    )  # object 5: no ymin/xmax/ymax
    write_xml(root, "sized", [("dog", (1, 1, 60, 40))], size=(640, 480))
    write_xml(root, "twin", [("dog", (1, 1, 5, 5))])
    write_xml(root, "copycat", [("dog", (1, 1, 5, 5))], filename="twin.jpg")  # no copycat.jpg
    write_xml(root, "lost", [("dog", (1, 1, 5, 5))])  # no image at all
    write_xml(root, "broken", [("dog", (1, 1, 5, 5))])
    write_xml(root, "spare", [])
    write_xml(root, "unlisted", [("dog", (1, 1, 5, 5))])
    (root / "Annotations" / "garbled.xml").write_text("<annotation><object>")
    write_split(root, "train", ["boxes", "sized", "twin", "copycat", "lost", "broken", "garbled"])
    write_split(root, "val", ["spare", "ghost", "spare"])
    return root


def test_every_voc_problem_is_named_and_counted(messy_voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = convert(messy_voc, source_format="voc", output_dir=out, classes="cat,dog")
    ann = messy_voc / "Annotations"
    expected = {
        "box_clipped": [
            f"{ann}/boxes.xml, object 0: box xmin=0 ymin=1 xmax=10 ymax=10 reaches outside the 64x48 "
            "image; clipped to it: [0, 0, 10, 10] (XYXY pixels)"
        ],
        "box_outside_image": [
            f"{ann}/boxes.xml, object 1: box xmin=70 ymin=60 xmax=80 ymax=70 lies entirely outside "
            "the 64x48 image; dropped; fix or remove it"
        ],
        "degenerate_box": [
            f"{ann}/boxes.xml, object 2: box xmin=10 ymin=10 xmax=5 ymax=20 has zero or negative "
            "width or height; dropped; fix or remove it"
        ],
        "unknown_class": [
            f"{ann}/boxes.xml, object 3: class 'bird' is not in --classes (cat, dog); dropped; add "
            "it to --classes or fix the name"
        ],
        "malformed": [
            f"{ann}/boxes.xml, object 5: lacks a readable <ymin>, <xmax>, <ymax>; dropped; give the "
            "object a name and a bndbox of numbers",
            f"{ann}/garbled.xml: not readable XML (no element found: line 1, column 20); dropped "
            "with its image; fix the file",
        ],
        "missing_image": [
            f"{ann}/lost.xml: no image JPEGImages/lost.jpg (or another ending); dropped with its "
            "objects; add the image"
        ],
        "unreadable_image": [
            f"{messy_voc}/JPEGImages/broken.jpg: not an image PIL can open (cannot identify image "
            f"file '{messy_voc}/JPEGImages/broken.jpg'); dropped with the 1 objects of broken.xml; "
            "replace the file or remove it"
        ],
        "missing_annotation": [
            f"{messy_voc}/ImageSets/Main/val.txt, id ghost: Annotations/ghost.xml does not exist; "
            "dropped; add the XML or remove the id from the list"
        ],
        "duplicate_image_name": [
            f"{ann}/copycat.xml: names the image twin.jpg, which belongs to twin.xml; dropped; fix "
            "its <filename> or add JPEGImages/copycat<ending> for it",
            f"{messy_voc}/ImageSets/Main/val.txt, line 3: id spare is listed a second time; "
            "converted once; remove the repeated line",
            f"{messy_voc}/JPEGImages/spare.png: is a second image for spare.xml; left out, spare.jpg "
            "was used; remove or rename one of them",
        ],
        "not_in_any_split": [
            f"{ann}/unlisted.xml: id unlisted is in none of ImageSets/Main/{{train,val}}.txt; left "
            "out; add it to a split list to convert it"
        ],
        "size_mismatch": [
            f"{ann}/sized.xml: <size> says 640x480 but sized.jpg is 64x48 (WxH, after EXIF "
            "orientation); the file's size is used and boxes are clipped to it; check the boxes and "
            "fix <size>"
        ],
    }
    for reason in REASONS:
        assert sorted(problems_of(result, reason)) == sorted(expected.get(reason, [])), reason
        assert result.reason_counts[reason] == len(expected.get(reason, [])), reason
    assert sum(result.reason_counts.values()) == len(result.problems) == 14

    train, val = result.splits
    assert [i["file_name"] for i in json.loads((out / "train.json").read_text())["images"]] == [
        "boxes.jpg",
        "sized.jpg",
        "twin.jpg",
    ]
    assert (train.num_images, train.num_boxes, val.num_images, val.num_boxes) == (3, 4, 1, 0)
    assert train.boxes_per_class == {"cat": 2, "dog": 2}
    assert by_file(out / "train.json")["boxes.jpg"][2] == [
        ("cat", [0.0, 0.0, 10.0, 10.0], 0),
        ("cat", [1.0, 1.0, 8.0, 8.0], 0),
    ]
    report = json.loads((out / "convert_report.json").read_text())
    assert report["reason_counts"] == result.reason_counts
    assert [p["message"] for p in report["problems"]] == [p.message for p in result.problems]
    assert {p["split"] for p in report["problems"]} == {None, "train", "val"}


def test_converted_output_passes_data_check_with_the_same_numbers(
    messy_voc: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    converted = run_cli(
        [
            "data",
            "convert",
            str(messy_voc),
            "--from",
            "voc",
            "--output-dir",
            str(out),
            "--classes",
            "cat,dog",
        ],
        capsys,
        monkeypatch,
    )
    assert converted.exit_code == 0, converted.output
    assert (
        "box_clipped" in converted.stdout
        and "unknown class index or name (dropped)" in converted.stdout
    )
    assert re.search(
        r"│ duplicate_image_name │ duplicate image name \(dropped\) +│ 3 +│", converted.stdout
    )
    assert re.search(r"│ total +│ +│ 14 +│", converted.stdout)
    assert "boxes.xml, object 2: box xmin=10 ymin=10 xmax=5 ymax=20" in converted.stdout
    assert "train.json │ 3      │ 0             │ 4     │ 0           │ 2/2" in converted.stdout

    checked = run_cli(["data", "check", str(out)], capsys, monkeypatch)
    assert checked.exit_code == 0, checked.output
    assert f"{out}/train.json" in checked.stdout and f"{out}/images/train" in checked.stdout
    assert "3 (0 without boxes)" in checked.stdout and "4 (+0 crowd" in checked.stdout
    assert "1 (1 without boxes)" in checked.stdout  # val: spare.jpg, no objects
    assert "0 errors, 0 fixed" in checked.stdout and "errors, 0 fixed" in checked.stdout
    report = json.loads((out / "convert_report.json").read_text())
    assert [s["num_boxes"] for s in report["splits"]] == [4, 0]


# ----------------------------------------------------------------------------- unfixable input


def test_unconvertible_sources_exit_2_with_the_file_and_the_fix(
    tmp_path: Path, clean_voc: Path, capsys, monkeypatch
) -> None:
    def run(*args: str):
        return run_cli(["data", "convert", *args], capsys, monkeypatch)

    result = run(str(tmp_path / "nowhere"), "--from", "voc", "--output-dir", str(tmp_path / "o1"))
    assert result.exit_code == 2 and "nowhere: folder not found" in result.stderr

    (tmp_path / "empty" / "JPEGImages").mkdir(parents=True)
    result = run(str(tmp_path / "empty"), "--from", "voc", "--output-dir", str(tmp_path / "o2"))
    assert result.exit_code == 2
    assert (
        "empty/Annotations: folder not found; a Pascal VOC dataset has Annotations/"
        in result.stderr
    )

    (tmp_path / "empty" / "Annotations").mkdir()
    result = run(str(tmp_path / "empty"), "--from", "voc", "--output-dir", str(tmp_path / "o3"))
    assert result.exit_code == 2 and "Annotations: no .xml file" in result.stderr

    (tmp_path / "out").mkdir()
    result = run(str(clean_voc), "--from", "voc", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "out: already exists and is never replaced; choose another --output-dir" in result.stderr

    result = run(
        str(clean_voc),
        "--from",
        "voc",
        "--output-dir",
        str(tmp_path / "o4"),
        "--classes",
        "cat,,dog",
    )
    assert result.exit_code == 2 and "--classes 'cat,,dog': empty class name" in result.stderr
    result = run(
        str(clean_voc),
        "--from",
        "voc",
        "--output-dir",
        str(tmp_path / "o4"),
        "--classes",
        "cat,cat",
    )
    assert result.exit_code == 2 and "cat given twice" in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out", "voc"]


def test_no_usable_image_or_no_class_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    write_xml(root, "a", [("cat", (1, 1, 5, 5))])
    (root / "JPEGImages").mkdir()
    with pytest.raises(
        DatasetError, match=r"voc: no usable image .*\n.*a.xml: no image JPEGImages/a.jpg"
    ):
        read_voc(root)
    write_image(root, "a.jpg")
    write_xml(root, "a", [])
    with pytest.raises(DatasetError, match="no <object> with a <name> in any XML.*pass --classes"):
        read_voc(root)
    assert read_voc(root, class_names=("cat",)).splits[0].images[0].boxes == ()


def test_a_failed_write_leaves_no_output(clean_voc: Path, tmp_path: Path, monkeypatch) -> None:
    import retinacli.data.formats.convert as convert_module

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(convert_module, "write_json", fail)
    with pytest.raises(OSError, match="disk full"):
        convert(clean_voc, source_format="voc", output_dir=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]


def test_images_are_copied_where_hard_links_fail(
    clean_voc: Path, tmp_path: Path, monkeypatch
) -> None:
    import retinacli.data.formats.convert as convert_module

    monkeypatch.setattr(convert_module, "new_hard_link", lambda source, target: False)
    result = convert(clean_voc, source_format="voc", output_dir=tmp_path / "out")
    assert (result.linked, result.copied) == (0, 2)
    copied, original = tmp_path / "out" / "images" / "a.jpg", clean_voc / "JPEGImages" / "a.jpg"
    assert not os.path.samefile(copied, original)
    assert copied.read_bytes() == original.read_bytes()


def test_keep_difficult_is_for_voc_only(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--keep-difficult: only Pascal VOC"):
        convert(tmp_path, source_format="yolo", output_dir=tmp_path / "out", keep_difficult=True)


# ----------------------------------------------------------------------------- raccoon round trip


def test_raccoon_through_voc_gives_the_same_images_classes_and_boxes(
    raccoon_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "raccoon-voc"
    for split in ("train", "val"):
        coco_to_voc(raccoon_dir / f"{split}.json", raccoon_dir / "images", root, split=split)
    result = convert(root, source_format="voc", output_dir=tmp_path / "out")
    assert result.problems == ()
    assert result.class_names == ("raccoon",)
    for split in ("train", "val"):
        converted = by_file(tmp_path / "out" / f"{split}.json")
        assert converted == by_file(raccoon_dir / f"{split}.json")  # exact
    assert [(s.name, s.num_images, s.num_boxes) for s in result.splits] == [
        ("train", 157, 170),
        ("val", 39, 43),
    ]
