"""Someone else's dataset, made to harm (issue 20): file names from data that leave their folder
(`..`, absolute names, symbolic links to files and folders elsewhere) are named problems and are
never read or written; an output folder holding the user's files is refused; a COCO json with a
byte order mark is read; an image of any shape resizes to at least one pixel per side; names
with control characters reach the terminal escaped.

Every test builds the hostile input itself under tmp_path, takes a snapshot, and checks that
nothing outside the named output changed (`tests/snapshots.py`); `opened` records every file the
process opens (`tests.fuzzing.watch_opens`, an audit hook), so "nothing outside the source was
read" is checked, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinacli.commands.convert import convert
from retinacli.data.augment.resize_flip import Augmentation, AugmentParams, resized_hw
from retinacli.data.checks import check_coco
from retinacli.data.formats.convert import (
    SourceBox,
    SourceDataset,
    SourceImage,
    SourceSplit,
    write_coco_dataset,
)
from retinacli.data.formats.voc import read_voc
from retinacli.data.formats.yolo import read_yolo
from retinacli.errors import DatasetError
from tests.cli_helpers import run_cli
from tests.data.datasets import load_coco
from tests.fuzzing import opened_outside, shared_inodes, watch_opens
from tests.snapshots import changed_outside, snapshot

REPO = Path(__file__).resolve().parents[2]

@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The paths the process opens while the test runs (see `tests.fuzzing.watch_opens`);
    tests clear it once their input is built."""
    with watch_opens() as paths:
        yield paths


def png(path: Path, size: tuple[int, int] = (32, 24), value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, format="PNG")
    return path


def voc_xml(root: Path, stem: str, filename: str, *, name: str = "cat") -> None:
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>../../..</folder><filename>{filename}</filename>"
        "<size><width>32</width><height>24</height><depth>3</depth></size>"
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>2</ymin>"
        "<xmax>20</xmax><ymax>18</ymax></bndbox></object></annotation>"
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake home folder beside the dataset: a shell start-up file and a picture of the user's."""
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / ".bashrc").write_text("echo 'the user\\'s own start-up file'\n")
    png(folder / "private.png", value=200)
    return folder


# ----------------------------------------------------------------------------- Pascal VOC


def test_voc_filename_leaving_the_folder_is_dropped_and_named(tmp_path, home, opened, capsys, monkeypatch):
    source = tmp_path / "voc"
    png(source / "JPEGImages" / "good.png")
    voc_xml(source, "good", "good.png")
    voc_xml(source, "evil", "../../home/private.png")  # no JPEGImages/evil.*: <filename> is used
    voc_xml(source, "absolute", str(home / "private.png"))
    before = snapshot(tmp_path)
    opened.clear()  # from here on: what the command opens

    result = run_cli(["data", "convert", str(source), "--from", "voc", "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    seen = list(opened)

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    report = json.loads((tmp_path / "out" / "convert_report.json").read_text())
    outside = {Path(p["file"]).name: p["message"] for p in report["problems"] if p["reason"] == "path_outside_folder"}
    assert set(outside) == {"evil.xml", "absolute.xml"}
    assert "<filename> '../../home/private.png' is a name that leaves the folder" in outside["evil.xml"]
    assert "is an absolute path, not a name inside" in outside["absolute.xml"]
    assert report["reason_counts"]["path_outside_folder"] == 2
    assert "path_outside_folder" in result.stdout and "1 images hard-linked" in result.stdout
    assert [i["file_name"] for i in json.loads((tmp_path / "out" / "annotations.json").read_text())["images"]] == ["good.png"]
    assert changed_outside(before, tmp_path, "out") == []
    assert shared_inodes(tmp_path / "out", tmp_path, source) == []
    assert opened_outside(seen, tmp_path, source, tmp_path / "out") == []


def test_voc_symlinks_to_outside_are_dropped_never_linked(tmp_path, home, opened):
    """A symbolic link in JPEGImages/ to the user's start-up file, one to a folder elsewhere, an
    XML that is a link to a file elsewhere: each dropped and named, none read, none linked."""
    source = tmp_path / "voc"
    png(source / "JPEGImages" / "good.png")
    voc_xml(source, "good", "good.png")
    (source / "JPEGImages" / "bashrc.png").symlink_to(home / ".bashrc")
    voc_xml(source, "bashrc", "bashrc.png")
    (source / "JPEGImages" / "elsewhere").symlink_to(home, target_is_directory=True)
    voc_xml(source, "via_folder", "elsewhere/private.png")
    (source / "Annotations" / "stolen.xml").symlink_to(home / ".bashrc")
    before = snapshot(tmp_path)
    opened.clear()  # from here on: what the command opens

    result = convert(source, source_format="voc", output_dir=tmp_path / "out")
    seen = list(opened)

    named = {Path(p.file).name: p.message for p in result.problems if p.reason == "path_outside_folder"}
    assert set(named) == {"bashrc.png", "via_folder.xml", "stolen.xml"}
    assert "'bashrc.png' is a link to outside the folder" in named["bashrc.png"]
    assert "'elsewhere/private.png' is a link to outside the folder" in named["via_folder.xml"]
    assert "dropped, not read" in named["stolen.xml"]
    assert [s.num_images for s in result.splits] == [1]
    assert changed_outside(before, tmp_path, "out") == []
    assert shared_inodes(tmp_path / "out", tmp_path, source) == []
    assert opened_outside(seen, tmp_path, source, tmp_path / "out") == []
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["good.png"]


def test_voc_image_folder_that_is_a_link_elsewhere_is_refused(tmp_path, home, capsys, monkeypatch):
    source = tmp_path / "voc"
    voc_xml(source, "private", "private.png")
    (source / "JPEGImages").symlink_to(home, target_is_directory=True)
    before = snapshot(tmp_path)
    result = run_cli(["data", "convert", str(source), "--from", "voc", "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "JPEGImages: is a link to outside the folder" in result.stderr
    assert changed_outside(before, tmp_path) == []


def test_voc_split_list_that_is_a_link_elsewhere_is_not_read(tmp_path, home, opened):
    source = tmp_path / "voc"
    png(source / "JPEGImages" / "good.png")
    voc_xml(source, "good", "good.png")
    (source / "ImageSets" / "Main").mkdir(parents=True)
    (source / "ImageSets" / "Main" / "val.txt").write_text("good\n")
    (source / "ImageSets" / "Main" / "train.txt").symlink_to(home / ".bashrc")
    opened.clear()
    dataset = read_voc(source)
    assert [s.name for s in dataset.splits] == ["val"]
    assert any(p.reason == "path_outside_folder" and p.file.endswith("train.txt") for p in dataset.problems)
    assert opened_outside(opened, tmp_path, source) == []


# ----------------------------------------------------------------------------- YOLO


def test_yolo_links_to_outside_are_dropped_and_named(tmp_path, home, opened, capsys, monkeypatch):
    source = tmp_path / "yolo"
    png(source / "images" / "good.png")
    (source / "labels").mkdir()
    (source / "labels" / "good.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (source / "images" / "bashrc.png").symlink_to(home / ".bashrc")
    png(source / "images" / "labelled.png")
    (source / "labels" / "labelled.txt").symlink_to(home / ".bashrc")  # its label file: elsewhere
    (source / "classes.txt").write_text("cat\n")
    before = snapshot(tmp_path)
    opened.clear()  # from here on: what the command opens

    result = run_cli(["data", "convert", str(source), "--from", "yolo", "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    seen = list(opened)

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "convert_report.json").read_text())
    outside = {Path(p["file"]).name: p["message"] for p in report["problems"] if p["reason"] == "path_outside_folder"}
    assert set(outside) == {"bashrc.png", "labelled.txt"}
    assert "'bashrc.png' is a link to outside the folder" in outside["bashrc.png"]
    assert "not read" in outside["labelled.txt"]
    written = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [i["file_name"] for i in written["images"]] == ["good.png"]
    assert changed_outside(before, tmp_path, "out") == []
    assert shared_inodes(tmp_path / "out", tmp_path, source) == []
    assert opened_outside(seen, tmp_path, source, tmp_path / "out") == []


@pytest.mark.parametrize("link", ["images", "classes.txt", "labels"])
def test_yolo_folder_or_class_list_that_is_a_link_elsewhere_is_refused(tmp_path, home, opened, link):
    source = tmp_path / "yolo"
    (source / "labels").mkdir(parents=True)
    (source / "classes.txt").write_text("cat\n")
    png(source / "images" / "good.png")
    target = source / link
    if target.is_dir():
        for child in sorted(target.iterdir()):
            child.unlink()
        target.rmdir()
    else:
        target.unlink()
    target.symlink_to(home / (".bashrc" if link == "classes.txt" else ""), target_is_directory=link != "classes.txt")
    opened.clear()
    with pytest.raises(DatasetError, match=f"{link}: is a link to outside the folder"):
        read_yolo(source)
    assert opened_outside(opened, tmp_path, source) == []


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["names: *i"]
)


@pytest.mark.parametrize("kind", ["alias_bomb", "fifo", "deep"])
def test_a_hostile_data_yaml_is_refused_at_once(tmp_path, capsys, monkeypatch, kind):
    """data.yaml is read with the recipes' bounds: nine lines of aliases (9**9 values), a FIFO
    (would block) and deep nesting are each a named error, in well under the test's limit."""
    import os
    import signal

    source = tmp_path / "yolo"
    png(source / "images" / "good.png")
    (source / "labels").mkdir()
    (source / "labels" / "good.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    data_yaml = source / "data.yaml"
    if kind == "alias_bomb":
        data_yaml.write_text(BILLION_LAUGHS + "\n")
    elif kind == "fifo":
        os.mkfifo(data_yaml)
    else:
        data_yaml.write_text("names: " + "[" * 5000 + "]" * 5000 + "\n")
    before = snapshot(tmp_path)

    def too_slow(*_):
        raise TimeoutError("reading data.yaml did not end within 20 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(20)
    try:
        result = run_cli(["data", "convert", str(source), "--from", "yolo", "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    expected = {
        "alias_bomb": "expands to more than 100000 values",
        "fifo": "is a named pipe (FIFO), not a regular file, so it was not read",
        "deep": "nested more than 64 levels deep",
    }[kind]
    assert expected in " ".join(result.stderr.split())
    assert changed_outside(before, tmp_path) == []


# ----------------------------------------------------------------------------- writing the output


def test_two_images_of_one_output_name_never_replace_each_other(tmp_path):
    """The writer's own guard: a name that leaves the output folder or that another image
    already took is dropped and named, never written over."""
    source = tmp_path / "src"
    first, second = png(source / "a.png", value=10), png(source / "b.png", value=250)
    box = (SourceBox(0, (1.0, 1.0, 9.0, 9.0)),)
    images = (
        SourceImage("x.png", first, 32, 24, box),
        SourceImage("x.png", second, 32, 24, box),
        SourceImage("../../escape.png", second, 32, 24, box),
        SourceImage("sub/../y.png", second, 32, 24, box),
    )
    dataset = SourceDataset(source, "voc", ("cat",), (SourceSplit(None, images),), ())
    before = snapshot(tmp_path)
    result = write_coco_dataset(dataset, output_dir=tmp_path / "out")
    assert [(p.reason, Path(p.file).name) for p in result.problems] == [
        ("duplicate_image_name", "b.png"),
        ("path_outside_folder", "b.png"),
        ("path_outside_folder", "b.png"),
    ]
    assert (tmp_path / "out" / "images" / "x.png").read_bytes() == first.read_bytes()
    assert result.splits[0].num_images == 1 and result.reason_counts["duplicate_image_name"] == 1
    assert changed_outside(before, tmp_path, "out") == []


def test_an_image_outside_the_source_is_never_linked_by_the_writer(tmp_path, home):
    source = tmp_path / "src"
    source.mkdir()
    (source / "link.png").symlink_to(home / "private.png")
    images = (SourceImage("link.png", source / "link.png", 32, 24, ()),)
    dataset = SourceDataset(source, "voc", ("cat",), (SourceSplit(None, images),), ())
    result = write_coco_dataset(dataset, output_dir=tmp_path / "out")
    assert [p.reason for p in result.problems] == ["path_outside_folder"]
    assert not (tmp_path / "out" / "images" / "link.png").exists()
    assert shared_inodes(tmp_path / "out", tmp_path, source) == []


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_convert_output_dir_that_is_a_file_is_a_clean_error(tmp_path, where, capsys, monkeypatch):
    source = tmp_path / "voc"
    png(source / "JPEGImages" / "good.png")
    voc_xml(source, "good", "good.png")
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "notes.txt" if where == "file" else tmp_path / "notes.txt" / "out"
    before = snapshot(tmp_path)
    result = run_cli(["data", "convert", str(source), "--from", "voc", "--output-dir", str(out)], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "notes.txt is a file" in result.stderr or "notes.txt: is a file" in result.stderr
    assert changed_outside(before, tmp_path) == []


# ----------------------------------------------------------------------------- COCO


@pytest.mark.parametrize("name", ["../secret.png", "ABSOLUTE", "link.png", "sub/../../secret.png"])
def test_coco_file_name_leaving_the_image_folder_is_a_named_error(tmp_path, opened, name, capsys, monkeypatch):
    images = tmp_path / "images"
    png(images / "good.png")
    png(tmp_path / "secret.png", value=7)
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    (images / "sub").mkdir()
    file_name = str(tmp_path / "secret.png") if name == "ABSOLUTE" else name
    data = {
        "images": [{"id": 1, "file_name": "good.png", "width": 32, "height": 24},
                   {"id": 7, "file_name": file_name, "width": 32, "height": 24}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps(data))
    before = snapshot(tmp_path)
    opened.clear()  # from here on: what the command opens

    with pytest.raises(DatasetError) as caught:
        load_coco(annotations=annotations, images=images, filter_empty=False)
    seen = list(opened)
    message = str(caught.value)
    assert str(annotations) in message and "image 7 has file_name" in message and repr(file_name) in message
    _, report = check_coco(annotations=annotations, images=images, fix_bad_boxes=True)
    assert [(p.kind, p.image_id) for p in report.errors] == [("path_outside_folder", 7)]
    result = run_cli(["data", "check", str(annotations), "--images", str(images)], capsys, monkeypatch)
    assert result.exit_code == 2 and "path" not in result.stderr.split("error:")[0]
    assert "image 7 has file_name" in result.stdout and "Traceback" not in result.output
    seen += opened
    assert tmp_path / "secret.png" not in {Path(p) for p in seen}
    assert opened_outside(seen, tmp_path, images, annotations) == []
    assert changed_outside(before, tmp_path) == []


def test_coco_json_with_a_byte_order_mark_is_read(tmp_path):
    png(tmp_path / "images" / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode("utf-8"))
    dataset = load_coco(annotations=path, images=tmp_path / "images", filter_empty=False)
    assert [r.image_id for r in dataset.records] == [1] and dataset.class_names == ("thing",)
    _, report = check_coco(annotations=path, images=tmp_path / "images", fix_bad_boxes=False)
    assert report.ok


# ----------------------------------------------------------------------------- output folders


def test_make_shapes_refuses_a_folder_holding_the_users_files(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    png(folder / "train" / "000000.png", value=33)  # a name make-shapes would write
    (folder / "train.json").write_text('{"mine": true}\n')
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        result = run_cli(["data", "make-shapes", "--output-dir", str(folder), "--num-images", "2", *extra], capsys, monkeypatch)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "holds files retinacli did not write" in result.stderr
        assert changed_outside(before, tmp_path) == []


def test_make_shapes_twice_needs_overwrite(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "shapes"
    assert run_cli(["data", "make-shapes", "--output-dir", str(folder), "--num-images", "2"], capsys, monkeypatch).exit_code == 0
    before = snapshot(tmp_path)
    again = run_cli(["data", "make-shapes", "--output-dir", str(folder), "--num-images", "2"], capsys, monkeypatch)
    assert again.exit_code == 2 and "pass --overwrite to replace it" in again.stderr
    assert changed_outside(before, tmp_path) == []
    forced = run_cli(["data", "make-shapes", "--output-dir", str(folder), "--num-images", "2", "--overwrite"], capsys, monkeypatch)
    assert forced.exit_code == 0, forced.output
    assert changed_outside(before, tmp_path) == []  # the same seed writes the same bytes


def test_show_refuses_a_folder_holding_the_users_files(shared_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "pictures"
    png(folder / "000_image1.png", value=12)
    before = snapshot(tmp_path)
    raccoon = shared_dir / "data" / "raccoon"
    dataset = f"data.train.dataset={{kind: coco, annotations: '{raccoon}/train.json', images: '{raccoon}/images'}}"
    result = run_cli(["data", "show", str(REPO / "recipes" / "raccoon.yaml"), "--set", dataset,
                      "--output-dir", str(folder), "--num-images", "1", "--overwrite"], capsys, monkeypatch)
    assert result.exit_code == 2 and "holds files retinacli did not write" in result.stderr
    assert changed_outside(before, tmp_path) == []


def test_split_output_dir_that_is_a_file_is_a_clean_error(tmp_path, capsys, monkeypatch):
    png(tmp_path / "images" / "a.png")
    data = {"images": [{"id": i, "file_name": "a.png", "width": 32, "height": 24} for i in (1, 2, 3)],
            "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "all.json").write_text(json.dumps(data))
    (tmp_path / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    result = run_cli(["data", "split", str(tmp_path / "all.json"), "--val", "0.4", "--output-dir", str(tmp_path / "notes.txt")],
                     capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output and "is a file" in result.stderr
    assert changed_outside(before, tmp_path) == []


# ----------------------------------------------------------------------------- images of any shape


@pytest.mark.parametrize(("height", "width"), [(20, 20000), (2, 20000), (20000, 1), (1, 1)])
def test_extreme_aspect_ratios_resize_to_at_least_one_pixel(tmp_path, height, width):
    # 20x20000 at short 800, max 1333: 800x800000 capped by 1333/800000 -> 1.33 x 1333 -> 1 x 1333;
    # 2x20000: 0.13 x 1333 would round to 0; it is 1.
    assert min(resized_hw(height=height, width=width, short_size=800, max_size=1333)) >= 1
    test_resize = Augmentation(short_sizes=(800,), max_size=1333)  # the recipe's default test resize
    image = np.full((height, width, 3), 77, dtype=np.uint8)
    boxes = np.array([[0, 0, width, height]], dtype=np.float32)
    out, out_boxes, _ = test_resize.apply(image, boxes=boxes, labels=np.zeros(1, np.int64),
                                          params=AugmentParams(short_size=800, hflip=False, vflip=False))
    assert out.ndim == 3 and min(out.shape[:2]) >= 1 and max(out.shape[:2]) <= 1333
    assert len(out_boxes) == 1 and (out_boxes[:, 2:] <= out.shape[1::-1]).all()


def test_extreme_aspect_ratio_through_the_test_loader(tmp_path):
    from retinacli.data.loader import build_test_loader, checked_batch

    png(tmp_path / "images" / "wide.png", size=(20000, 20))
    data = {"images": [{"id": 1, "file_name": "wide.png", "width": 20000, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 2, 500, 10], "area": 5000, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "wide.json").write_text(json.dumps(data))
    dataset = load_coco(annotations=tmp_path / "wide.json", images=tmp_path / "images", filter_empty=False)
    loader = build_test_loader(dataset=dataset, augmentation=Augmentation(short_sizes=(800,), max_size=1333),
                               input_format="BGR", num_workers=0)
    batch = checked_batch(next(iter(loader)))
    assert tuple(batch.images[0].shape) == (3, 1, 1333) and batch.original_sizes == [(20, 20000)]


# ----------------------------------------------------------------------------- the terminal


def test_class_and_file_names_reach_the_terminal_escaped(tmp_path, capsys, monkeypatch):
    source = tmp_path / "yolo"
    png(source / "images" / "a\x1b[2Jb.png")
    (source / "labels").mkdir()
    (source / "labels" / "a\x1b[2Jb.txt").write_text("0 0.5 0.5 0.25 0.25\n3 0.5 0.5 0.1 0.1\n")
    (source / "classes.txt").write_text("cat\x1b]0;owned\x07\n")
    result = run_cli(["data", "convert", str(source), "--from", "yolo", "--output-dir", str(tmp_path / "out")], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "cat\\x1b]0;owned\\x07" in result.stdout  # the class table
    assert "a\\x1b[2Jb.txt" in result.stdout  # the problem naming the label file
    checked = run_cli(["data", "check", str(tmp_path / "out")], capsys, monkeypatch)
    assert checked.exit_code == 0, checked.output
    assert "\x1b" not in checked.output and "class cat\\x1b]0;owned\\x07" in checked.stdout


def test_check_of_a_converted_folder_reads_nothing_outside_it(tmp_path, home, opened, capsys, monkeypatch):
    """A tampered convert_report.json naming a json elsewhere, and a json that is a link out."""
    folder = tmp_path / "converted"
    folder.mkdir()
    (home / "other.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    report = {"splits": [{"annotations": "../home/other.json", "images": "images"}]}
    (folder / "convert_report.json").write_text(json.dumps(report))
    before = snapshot(tmp_path)
    opened.clear()
    result = run_cli(["data", "check", str(folder)], capsys, monkeypatch)
    seen = list(opened)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'../home/other.json', a name that leaves the folder" in result.stderr
    (folder / "convert_report.json").unlink()
    (folder / "train.json").symlink_to(home / "other.json")
    before = snapshot(tmp_path)
    opened.clear()
    result = run_cli(["data", "check", str(folder)], capsys, monkeypatch)
    seen += opened
    assert result.exit_code == 2 and "train.json: is a link to outside the folder" in result.stderr
    assert opened_outside(seen, tmp_path, folder) == []
    assert changed_outside(before, tmp_path) == []
