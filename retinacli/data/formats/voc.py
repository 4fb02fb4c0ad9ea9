"""Pascal VOC folders -> `convert.SourceDataset` (see docs/data.md, "Converting datasets").

Layout read:

    SRC/Annotations/<id>.xml
    SRC/JPEGImages/<id>.jpg            (any image ending; else the XML's <filename>)
    SRC/ImageSets/Main/{train,val,trainval,test}.txt   optional: one id per line

With split lists, each list present becomes one split (an id may be in several, as trainval is);
without any, every XML is one split. Boxes are VOC's 1-based inclusive pixel corners, converted
as torchvision, mmdetection and detectron2 do: x0 = xmin - 1, y0 = ymin - 1, x1 = xmax,
y1 = ymax. `difficult` objects become crowd boxes (iscrowd 1), which training ignores and COCO
evaluation neither rewards nor penalises, unless `keep_difficult`.

Every file read (XML, split list, image) and every `<filename>` must stay inside the folder it
belongs to once resolved, symbolic links included: one that leaves it is a path_outside_folder
problem, dropped and not read (see `convert`). `<folder>` is not used: images are looked up in
JPEGImages/ whatever it says.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retinacli.data.formats.convert import (
    IMAGE_SUFFIXES,
    ProblemLog,
    SourceBox,
    SourceDataset,
    SourceImage,
    SourceSplit,
    check_box,
    contained_source,
    found_inside,
    image_size,
    refuse_empty,
    source_entry,
)
from retinacli.errors import DatasetError

SPLIT_NAMES = ("train", "val", "trainval", "test")
"""The split lists of ImageSets/Main that are read, in the order the splits are written."""


@dataclass(frozen=True)
class _Object:
    index: int  # 0-based position among the XML's <object>s, as messages name it
    name: str
    corners: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax as written
    difficult: bool


@dataclass(frozen=True)
class _Annotation:
    xml: Path
    filename: str | None
    size: tuple[int, int] | None  # (width, height) from <size>, None when absent or unreadable
    objects: tuple[_Object, ...]


def read_voc(
    source: Path, *, class_names: Sequence[str] | None = None, keep_difficult: bool = False
) -> SourceDataset:
    """Read a VOC folder into records, every dropped or changed record named in `problems`.

    Args:
        source: the folder holding Annotations/ and JPEGImages/.
        class_names: the classes and their order; None: every object name found, sorted.
            An object of another name is dropped (unknown_class).
        keep_difficult: keep difficult objects as ordinary boxes instead of iscrowd 1.

    Raises:
        DatasetError: no Annotations/ or JPEGImages/ folder, no XML, no usable image, no class.
    """
    source = Path(source)
    annotations_dir, images_dir = source / "Annotations", source / "JPEGImages"
    for folder in (annotations_dir, images_dir):
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: folder not found; a Pascal VOC dataset has Annotations/ (one XML per "
                "image) and JPEGImages/; pass the folder that holds both"
            )
        source_entry(source, folder.name)
    xmls = sorted(p for p in annotations_dir.glob("*.xml") if not p.name.startswith("."))
    if not xmls:
        raise DatasetError(
            f"{annotations_dir}: no .xml file; put one Pascal VOC XML per image there"
        )
    log = ProblemLog()
    split_ids = _split_lists(source, log)

    by_id = {xml.stem: xml for xml in xmls}
    by_stem = _index_images(images_dir)
    if split_ids:
        listed = {i for ids in split_ids.values() for i in ids}
        for xml in xmls:
            if xml.stem not in listed:
                log.add(
                    "not_in_any_split",
                    "left out",
                    file=xml,
                    split=None,
                    what=f"id {xml.stem} is in none of ImageSets/Main/{{{','.join(split_ids)}}}.txt",
                    todo="left out; add it to a split list to convert it",
                )
        plan: list[tuple[str | None, list[tuple[str, Path | None]]]] = [
            (name, [(i, by_id.get(i)) for i in ids]) for name, ids in split_ids.items()
        ]
    else:
        plan = [(None, [(xml.stem, xml) for xml in xmls])]

    names_found: set[str] = set()
    collected: list[tuple[str | None, list[tuple[_Annotation, Path]]]] = []
    for split, members in plan:
        kept: list[tuple[_Annotation, Path]] = []
        claimed: dict[Path, Path] = {}  # image file -> the XML that took it
        for image_id, xml in members:
            if xml is None:
                log.add(
                    "missing_annotation",
                    "dropped",
                    file=source / "ImageSets" / "Main" / f"{split}.txt",
                    where=f"id {image_id}",
                    split=split,
                    what=f"Annotations/{image_id}.xml does not exist",
                    todo="dropped; add the XML or remove the id from the list",
                )
                continue
            # Read again for each split, so each split names the records it drops.
            if not found_inside(annotations_dir, xml, log=log, split=split):
                continue
            parsed_xml = _parse_xml(xml, log=log, split=split)
            if parsed_xml is None:
                continue
            image = _image_file(images_dir, by_stem, parsed_xml, log=log, split=split)
            if image is None:
                continue
            # An image named by <filename> belongs first to the XML of its own id.
            owner = by_id.get(image.stem) if image.stem != xml.stem else None
            if owner is not None or image in claimed:
                log.add(
                    "duplicate_image_name",
                    "dropped",
                    file=xml,
                    split=split,
                    what=f"names the image {image.name}, which belongs to "
                    f"{(owner or claimed[image]).name}",
                    todo=f"dropped; fix its <filename> or add JPEGImages/{xml.stem}<ending> for it",
                )
                continue
            claimed[image] = xml
            kept.append((parsed_xml, image))
            names_found.update(obj.name for obj in parsed_xml.objects)
        collected.append((split, kept))

    if class_names is None:
        class_names = tuple(sorted(names_found))
        if not class_names and any(kept for _, kept in collected):
            raise DatasetError(
                f"{annotations_dir}: no <object> with a <name> in any XML, so there is no class; "
                "pass --classes a,b,c to write a dataset of images without boxes"
            )
    class_index = {name: i for i, name in enumerate(class_names)}

    splits = []
    for split, kept in collected:
        images = []
        for parsed_xml, image in kept:
            record = _record(
                parsed_xml,
                image,
                images_dir=images_dir,
                class_index=class_index,
                keep_difficult=keep_difficult,
                log=log,
                split=split,
            )
            if record is not None:
                images.append(record)
        splits.append(SourceSplit(name=split, images=tuple(images)))
    dataset = SourceDataset(
        source=source,
        format="voc",
        class_names=tuple(class_names),
        splits=tuple(splits),
        problems=log.in_order(split_ids or [None]),
    )
    refuse_empty(
        dataset,
        what=f"{len(xmls)} XML files, none with a readable image",
        fix="check JPEGImages/ and the problems below",
    )
    return dataset


def _split_lists(source: Path, log: ProblemLog) -> dict[str, list[str]]:
    """The ids of each split list ImageSets/Main/<split>.txt present, in file order, each id
    once. A list that leaves `source` (a link to elsewhere) is a problem and is not read."""
    lists: dict[str, list[str]] = {}
    for name in SPLIT_NAMES:
        path = source / "ImageSets" / "Main" / f"{name}.txt"
        if not (path.is_file() or path.is_symlink()):
            continue
        inside = contained_source(
            source,
            path.relative_to(source),
            log=log,
            file=path,
            split=name,
            subject="the split list",
            todo="left out, not read; put the list itself there rather than a symbolic link",
        )
        if inside is None or not path.is_file():
            continue
        ids: list[str] = []
        seen: set[str] = set()
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] in seen:
                log.add(
                    "duplicate_image_name",
                    "dropped",
                    file=path,
                    where=f"line {number}",
                    split=name,
                    what=f"id {fields[0]} is listed a second time",
                    todo="converted once; remove the repeated line",
                )
                continue
            seen.add(fields[0])
            ids.append(fields[0])
        lists[name] = ids
    return lists


def _parse_xml(xml: Path, *, log: ProblemLog, split: str | None) -> _Annotation | None:
    """One XML file: None (with a malformed problem) when it cannot be read at all; objects
    without a name or a readable <bndbox> are dropped one by one."""
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        log.add(
            "malformed",
            "dropped",
            file=xml,
            split=split,
            what=f"not readable XML ({exc})",
            todo="dropped with its image; fix the file",
        )
        return None
    if root.tag != "annotation":
        log.add(
            "malformed",
            "dropped",
            file=xml,
            split=split,
            what=f"the root element is <{root.tag}>, not <annotation>",
            todo="dropped with its image; is this a Pascal VOC annotation?",
        )
        return None
    size = None
    width, height = _int_text(root, "size/width"), _int_text(root, "size/height")
    if width is not None and height is not None and width > 0 and height > 0:
        size = (width, height)
    objects = []
    for index, obj in enumerate(root.findall("object")):
        where = f"object {index}"
        name = (obj.findtext("name") or "").strip()
        corners, missing = _bndbox(obj)
        if not name:
            missing.insert(0, "<name>")
        if corners is None or missing:
            log.add(
                "malformed",
                "dropped",
                file=xml,
                where=where,
                split=split,
                what=f"lacks a readable {', '.join(missing)}",
                todo="dropped; give the object a name and a bndbox of numbers",
            )
            continue
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append(_Object(index, name, corners, difficult))
    filename = (root.findtext("filename") or "").strip() or None
    return _Annotation(xml=xml, filename=filename, size=size, objects=tuple(objects))


def _bndbox(obj: ET.Element) -> tuple[tuple[float, float, float, float] | None, list[str]]:
    """(xmin, ymin, xmax, ymax) of an <object>, or None and the tags that are missing."""
    keys = ("xmin", "ymin", "xmax", "ymax")
    values = [_float_text(obj, f"bndbox/{key}") for key in keys]
    missing = [f"<{key}>" for key, value in zip(keys, values, strict=True) if value is None]
    if missing:
        return None, missing
    xmin, ymin, xmax, ymax = (float(v) for v in values if v is not None)
    return (xmin, ymin, xmax, ymax), []


def _float_text(element: ET.Element, path: str) -> float | None:
    text = element.findtext(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _int_text(element: ET.Element, path: str) -> int | None:
    value = _float_text(element, path)
    return int(value) if value is not None and value.is_integer() else None


def _index_images(images_dir: Path) -> dict[str, list[Path]]:
    """The image files directly in JPEGImages/ by stem (one listing, not one per XML)."""
    index: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            index.setdefault(path.stem, []).append(path)
    return index


def _image_file(
    images_dir: Path,
    by_stem: dict[str, list[Path]],
    annotation: _Annotation,
    *,
    log: ProblemLog,
    split: str | None,
) -> Path | None:
    """JPEGImages/<id>.<image ending>; when no such file exists, JPEGImages/<filename>. Several
    files for one id: the one <filename> names, else the first by name; the others are named."""
    stem = annotation.xml.stem
    candidates = by_stem.get(stem, [])
    if len(candidates) > 1:
        chosen = next((p for p in candidates if p.name == annotation.filename), candidates[0])
        for other in candidates:
            if other != chosen:
                log.add(
                    "duplicate_image_name",
                    "left out",
                    file=other,
                    split=split,
                    what=f"is a second image for {annotation.xml.name}",
                    todo=f"left out, {chosen.name} was used; remove or rename one of them",
                )
        return chosen if found_inside(images_dir, chosen, log=log, split=split) else None
    if candidates:
        return candidates[0] if found_inside(images_dir, candidates[0], log=log, split=split) else None
    if annotation.filename:
        named = contained_source(
            images_dir,
            annotation.filename,
            log=log,
            file=annotation.xml,
            split=split,
            subject="<filename>",
            todo="dropped with its objects, nothing outside the folder read; give the image's "
            "name inside JPEGImages/",
        )
        if named is None:
            return None
        # The file it really is, named inside JPEGImages/ without `..` (`a/../b.png` is b.png).
        real = images_dir / os.path.relpath(named.resolve(), images_dir.resolve())
        if real.is_file():
            return real
    log.add(
        "missing_image",
        "dropped",
        file=annotation.xml,
        split=split,
        what=f"no image JPEGImages/{stem}.jpg (or another ending)"
        + (
            f" nor JPEGImages/{annotation.filename}"
            if annotation.filename and annotation.filename != f"{stem}.jpg"
            else ""
        ),
        todo="dropped with its objects; add the image",
    )
    return None


def _record(
    annotation: _Annotation,
    image: Path,
    *,
    images_dir: Path,
    class_index: dict[str, int],
    keep_difficult: bool,
    log: ProblemLog,
    split: str | None,
) -> SourceImage | None:
    xml = annotation.xml
    size = image_size(
        image, log=log, split=split, whose=f"the {len(annotation.objects)} objects of {xml.name}"
    )
    if size is None:
        return None
    width, height = size
    if annotation.size is not None and annotation.size != size:
        log.add(
            "size_mismatch",
            "used the file's size",
            file=xml,
            split=split,
            what=f"<size> says {annotation.size[0]}x{annotation.size[1]} but {image.name} is "
            f"{width}x{height} (WxH, after EXIF orientation)",
            todo="the file's size is used and boxes are clipped to it; check the boxes and fix "
            "<size>",
        )
    boxes = []
    for obj in annotation.objects:
        where = f"object {obj.index}"
        if obj.name not in class_index:
            log.add(
                "unknown_class",
                "dropped",
                file=xml,
                where=where,
                split=split,
                what=f"class {obj.name!r} is not in --classes ({', '.join(class_index)})",
                todo="dropped; add it to --classes or fix the name",
            )
            continue
        xmin, ymin, xmax, ymax = obj.corners
        shown = f"xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}"
        # VOC corners are 1-based and inclusive: pixel xmin..xmax covers [xmin - 1, xmax).
        box = check_box(
            (xmin - 1, ymin - 1, xmax, ymax),
            width=width,
            height=height,
            log=log,
            file=xml,
            where=where,
            split=split,
            shown=shown,
        )
        if box is not None:
            boxes.append(
                SourceBox(class_index[obj.name], box, iscrowd=obj.difficult and not keep_difficult)
            )
    return SourceImage(
        file_name=image.relative_to(images_dir).as_posix(),
        source=image,
        width=width,
        height=height,
        boxes=tuple(boxes),
    )


def voc_xml(
    *,
    filename: str,
    width: int,
    height: int,
    objects: Sequence[tuple[str, tuple[float, float, float, float], bool]],
) -> str:
    """A Pascal VOC annotation XML for one image, as labelImg and CVAT write it.

    objects: (class name, box XYXY in pixel edges, difficult) each. A box [x0, x1) x [y0, y1)
    is written as VOC's 1-based inclusive corners xmin = x0 + 1, ymin = y0 + 1, xmax = x1,
    ymax = y1: the inverse of what `read_voc` does, so the two round-trip exactly.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for name, (x0, y0, x1, y1), difficult in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = name
        ET.SubElement(node, "difficult").text = "1" if difficult else "0"
        box = ET.SubElement(node, "bndbox")
        for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, key).text = f"{value:g}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
