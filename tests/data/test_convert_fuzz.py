"""Fuzzing the dataset converters' readers, Pascal VOC and YOLO (`pytest -m fuzz`): generated
and mutated XML, label files and class lists give a SourceDataset (every dropped record named)
or a DatasetError/UsageError (exit code 2), never a traceback; XML entities are never expanded
into a hang."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from retinacli.data.convert import SourceDataset
from retinacli.data.voc import read_voc
from retinacli.data.yolo import read_yolo
from tests.fuzzing import FUZZ, expect_clean

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
