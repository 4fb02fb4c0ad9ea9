"""Fuzzing the dataset converters' readers, Pascal VOC and YOLO (`pytest -m fuzz`): generated
and mutated XML, label files and class lists give a SourceDataset (every dropped record named)
or a DatasetError/UsageError (exit code 2), never a traceback; XML entities are never expanded
into a hang. File names from data (`..`, absolute names, links to a file, a folder or in a
loop, control characters) never make a conversion change a file outside its output, open a file
outside its source, or hard-link one of the user's files into the output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from retinacli.data.formats.convert import SourceDataset
from retinacli.data.formats.voc import read_voc
from retinacli.data.formats.yolo import read_yolo
from tests.fuzzing import FUZZ, expect_clean, opened_outside, shared_inodes, watch_opens
from tests.snapshots import changed_outside, snapshot

pytestmark = pytest.mark.fuzz

VOC_XML = """<annotation>
  <filename>img1.png</filename>
  <size><width>32</width><height>24</height><depth>3</depth></size>
  <object><name>cat</name><difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>18</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object>
</annotation>
"""
ENTITY_BOMB = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    + ']><annotation><filename>&i;</filename></annotation>'
)
EXTERNAL_ENTITY = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation><filename>&x;</filename></annotation>'
YOLO_LABELS = "0 0.5 0.5 0.25 0.25\n1 0.1 0.2 0.05 0.1\n"
_PIXELS = np.full((24, 32, 3), 90, dtype=np.uint8)


def _mutated(text: str, cuts) -> str:
    for start, length, insert in cuts:
        start = min(start, len(text))
        text = text[:start] + insert + text[start + length :]
    return text


cuts = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 20), st.text(max_size=10)), max_size=4)
numbers = st.sampled_from(["0", "-1", "1e309", "nan", "inf", "32", "24.5", "", "x", "99999999999999999999", "0x10"])


def _voc(xml: str, split_list: str | None, classes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "Annotations").mkdir()
        (root / "JPEGImages").mkdir()
        Image.fromarray(_PIXELS).save(root / "JPEGImages" / "img1.png")
        (root / "Annotations" / "img1.xml").write_bytes(xml.encode("utf-8", "surrogatepass"))
        if split_list is not None:
            (root / "ImageSets" / "Main").mkdir(parents=True)
            (root / "ImageSets" / "Main" / "train.txt").write_bytes(split_list.encode("utf-8", "surrogatepass"))
        result = expect_clean(lambda: read_voc(root, class_names=classes), test="convert: Pascal VOC")
        assert result is None or isinstance(result, SourceDataset)


@FUZZ
@given(cuts=cuts, split_list=st.none() | st.text(max_size=20) | st.just("img1\n"), classes=st.none() | st.lists(st.text(max_size=5), max_size=3))
def test_mutated_voc_xml(cuts, split_list, classes):
    _voc(_mutated(VOC_XML, cuts), split_list, classes)


@FUZZ
@given(
    values=st.fixed_dictionaries({k: numbers for k in ("width", "height", "xmin", "ymin", "xmax", "ymax", "difficult")}),
    name=st.text(max_size=8),
    special=st.sampled_from([None, ENTITY_BOMB, EXTERNAL_ENTITY]),
)
def test_generated_voc_values_and_entities(values, name, special):
    xml = special or (
        f"<annotation><filename>img1.png</filename><size><width>{values['width']}</width><height>{values['height']}"
        f"</height></size><object><name>{name}</name><difficult>{values['difficult']}</difficult><bndbox><xmin>"
        f"{values['xmin']}</xmin><ymin>{values['ymin']}</ymin><xmax>{values['xmax']}</xmax><ymax>{values['ymax']}"
        "</ymax></bndbox></object></annotation>"
    )
    _voc(xml, None, None)


@FUZZ
@given(
    labels=st.one_of(
        st.builds(_mutated, st.just(YOLO_LABELS), cuts),
        st.lists(st.lists(numbers | st.integers(-3, 5).map(str), max_size=6).map(" ".join), max_size=4).map("\n".join),
    ),
    names=st.sampled_from(["names: [cat, dog]\n", "names: {0: cat, 1: dog}\n", "names: {0: cat, 2: dog}\n", "names: 3\n",
                           "names: [cat, cat]\n", "nc: 2\n", "!!python/object/apply:os.system ['true']\n", "[\n", ""])
    | st.text(max_size=30),
    classes_file=st.sampled_from(["data.yaml", "classes.txt"]),
)
def test_mutated_yolo_labels_and_names(labels: str, names: str, classes_file: str):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        (root / "labels").mkdir()
        Image.fromarray(_PIXELS).save(root / "images" / "img1.png")
        (root / "labels" / "img1.txt").write_bytes(labels.encode("utf-8", "surrogatepass"))
        (root / classes_file).write_bytes(names.encode("utf-8", "surrogatepass"))
        result = expect_clean(lambda: read_yolo(root), test="convert: YOLO")
        assert result is None or isinstance(result, SourceDataset)


# ----------------------------------------------------------------------------- file names from data
# A source folder beside the user's files (`world/outside`): names that climb out (`..`), absolute
# names, links to a file, to a folder and in a loop, control characters. The contract: a result
# or an exit-2 error, no file outside the output changed, nothing outside the source opened, and
# no output file a hard link to a file of the user's.

SECRET = "SECRET"  # replaced by the absolute path of the user's file
hostile_names = st.sampled_from([
    "../secret.png", "../../outside/secret.png", "sub/../../outside/secret.png", "./../outside/secret.png",
    SECRET, "link.png", "dirlink/secret.png", "loop.png", "good.png", "sub/../good.png", "a\x1b[2Jb.png",
    "a\nb.png", "\u202egnp.png", ".", "..", "", "sub/", "//etc/passwd", "..\\secret.png", "C:\\secret.png",
]) | st.text(max_size=12)


def _world(folder: str) -> tuple[Path, Path, Path]:
    """(world, source, outside): the user's files in world/outside, a source with a good image,
    links to the user's file and folder, and a link loop."""
    world = Path(folder)
    outside, source = world / "outside", world / "source"
    outside.mkdir()
    Image.fromarray(np.full((24, 32, 3), 200, dtype=np.uint8)).save(outside / "secret.png")
    (outside / ".bashrc").write_text("echo the user's start-up file\n")
    return world, source, outside


def _file_name(name: str) -> str | None:
    """`name` as a file name that can be created in a folder (None: it cannot)."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


def _links(folder: Path, outside: Path) -> None:
    (folder / "link.png").symlink_to(outside / "secret.png")
    (folder / "dirlink").symlink_to(outside, target_is_directory=True)
    (folder / "loop.png").symlink_to(folder / "loop2.png")
    (folder / "loop2.png").symlink_to(folder / "loop.png")


def _converted_cleanly(world: Path, source: Path, source_format: str) -> None:
    from retinacli.commands.convert import convert

    before = snapshot(world)
    with watch_opens() as opened:
        expect_clean(
            lambda: convert(source, source_format=source_format, output_dir=world / "out"),
            test=f"convert: {source_format} file names",
        )
        seen = list(opened)
    assert changed_outside(before, world, "out") == []
    assert opened_outside(seen, world, source, world / "out") == []
    assert shared_inodes(world / "out", world, source) == []


@FUZZ
@given(
    xmls=st.lists(st.tuples(hostile_names, hostile_names), min_size=1, max_size=3),
    image_names=st.lists(hostile_names, max_size=2),
    split_ids=st.none() | st.lists(hostile_names, max_size=3),
    linked_xml=st.booleans(),
)
def test_voc_file_names_never_leave_the_source(xmls, image_names, split_ids, linked_xml):
    from xml.sax.saxutils import escape

    with tempfile.TemporaryDirectory() as folder:
        world, source, outside = _world(folder)
        images = source / "JPEGImages"
        (source / "Annotations").mkdir(parents=True)
        images.mkdir()
        Image.fromarray(_PIXELS).save(images / "good.png")
        _links(images, outside)
        for name in image_names:
            made = _file_name(name)
            if made is not None and not (images / made).exists() and not (images / made).is_symlink():
                Image.fromarray(_PIXELS).save(images / made, format="PNG")
        for stem, filename in xmls:
            made = _file_name(stem)
            if made is None:
                continue
            filename = filename.replace(SECRET, str(outside / "secret.png"))
            text = (
                f"<annotation><folder>../outside</folder><filename>{escape(filename)}</filename><object><name>cat</name>"
                "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
            )
            (source / "Annotations" / f"{made}.xml").write_bytes(text.encode("utf-8", "surrogatepass"))
        if linked_xml:
            (source / "Annotations" / "stolen.xml").symlink_to(outside / ".bashrc")
        if split_ids is not None:
            (source / "ImageSets" / "Main").mkdir(parents=True)
            listed = "".join(f"{i.replace(SECRET, str(outside))}\n" for i in split_ids)
            (source / "ImageSets" / "Main" / "train.txt").write_bytes(listed.encode("utf-8", "surrogatepass"))
            (source / "ImageSets" / "Main" / "val.txt").symlink_to(outside / ".bashrc")
        _converted_cleanly(world, source, "voc")


@FUZZ
@given(
    image_names=st.lists(hostile_names, max_size=3),
    linked_label=st.booleans(),
    linked_classes=st.booleans(),
    split=st.sampled_from([None, "train", "../outside"]),
)
def test_yolo_file_names_never_leave_the_source(image_names, linked_label, linked_classes, split):
    with tempfile.TemporaryDirectory() as folder:
        world, source, outside = _world(folder)
        images = source / "images" / (split or "")
        labels = source / "labels" / (split or "")
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_PIXELS).save(images / "good.png")
        (labels / "good.txt").write_text(YOLO_LABELS)
        _links(images, outside)
        for name in image_names:
            made = _file_name(name)
            if made is None or (images / made).exists() or (images / made).is_symlink():
                continue
            Image.fromarray(_PIXELS).save(images / made, format="PNG")
            stem = Path(made).stem
            if stem and (labels / f"{stem}.txt").parent == labels and not (labels / f"{stem}.txt").exists():
                (labels / f"{stem}.txt").write_text(YOLO_LABELS)
        if linked_label:
            (labels / "link.txt").symlink_to(outside / ".bashrc")
        if linked_classes:
            (source / "classes.txt").symlink_to(outside / ".bashrc")
        else:
            (source / "classes.txt").write_text("cat\ndog\n")
        _converted_cleanly(world, source, "yolo")
