"""YOLO (darknet / ultralytics) folders -> `convert.SourceDataset` (see docs/data.md,
"Converting datasets").

Layouts read, in this order:

    SRC/images/<split>/**/<name>.<ext>   SRC/labels/<split>/**/<name>.txt   one split per folder
    SRC/images/<name>.<ext>              SRC/labels/<name>.txt              no splits
    SRC/<split>/images/...               SRC/<split>/labels/...             (Roboflow's export)

Class names come from `SRC/data.yaml` (`names:` a list, or a mapping 0..K-1 -> name; read with
`yaml.safe_load`), else `SRC/classes.txt` or `SRC/labels/classes.txt` (one name a line), or
are given by the caller. A label line is `class cx cy w h`, the box centre and size as
fractions of the image as the detector reads it: after EXIF orientation, from the image file.
Pixel corners are rounded to 1/64 px, so that x + w is exact in float32 (what training sums in).

Every folder listed and every file read (image, label file, class list) must stay inside the
source folder once resolved, symbolic links included: a folder that leaves it is refused, a file
is a path_outside_folder problem, dropped and not read (see `convert`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from retinacli.data.formats.convert import (
    IMAGE_SUFFIXES,
    ProblemLog,
    SourceBox,
    SourceDataset,
    SourceImage,
    SourceSplit,
    check_box,
    found_inside,
    image_files,
    image_size,
    refuse_empty,
    source_entry,
)
from retinacli.errors import DatasetError, UsageError
from retinacli.yaml_files import FileTooLarge, NotARegularFile, load_bounded, read_regular_file

CLASS_FILES = ("data.yaml", "classes.txt", "labels/classes.txt")
MAX_DATA_YAML_BYTES = 1 << 20
"""The largest class list (data.yaml, classes.txt) read: 10000 class names take well under 1 MiB."""
"""Where class names are looked for, relative to the source folder, first found wins."""

_LINK_TODO = "dropped with its image or labels, not read; put the file itself there rather than a symbolic link"
_GRID = 64  # corners are rounded to 1/64 px: exact in float32 for images up to 2**17 px


def read_yolo(source: Path, *, class_names: Sequence[str] | None = None) -> SourceDataset:
    """Read a YOLO folder into records, every dropped or changed record named in `problems`.

    Args:
        source: the folder holding images/ and labels/ (or <split>/images, <split>/labels).
        class_names: the names of class indices 0..K-1; None: from data.yaml or classes.txt.
            Given names must agree with those files where they exist.

    Raises:
        DatasetError: no images folder, no image, no usable class names (none found, a mapping
            that is not 0..K-1, `nc` disagreeing with `names`, repeated or empty names).
        UsageError: `class_names` disagree with data.yaml / classes.txt.
    """
    source = Path(source)
    layout = _layout(source)
    names = _class_names(source, given=class_names)
    log = ProblemLog()
    splits = []
    for split, images_dir, labels_dir in layout:
        images = _read_split(
            images_dir, labels_dir, split=split, num_classes=len(names), names=names, log=log
        )
        splits.append(SourceSplit(name=split, images=tuple(images)))
    if layout[0][0] is not None and layout[0][1] == source / "images" / layout[0][0]:
        _outside_splits(source, {name for name, _, _ in layout}, log=log)
    dataset = SourceDataset(
        source=source,
        format="yolo",
        class_names=names,
        splits=tuple(splits),
        problems=log.in_order([name for name, _, _ in layout]),
    )
    refuse_empty(dataset, what="no readable image file", fix="check images/ and the problems below")
    return dataset


def _layout(source: Path) -> list[tuple[str | None, Path, Path]]:
    """(split name or None, images folder, labels folder) of each split, in name order."""
    if not source.is_dir():
        raise DatasetError(
            f"{source}: folder not found; pass the folder holding images/ and labels/"
        )
    images = source / "images"
    if images.is_dir():
        source_entry(source, "images")
        subfolders = sorted(
            p
            for p in images.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and _checked_folder(source, p)
            and image_files(p)
        )
        if subfolders:
            return [
                (p.name, p, _checked_folder(source, source / "labels" / p.name)) for p in subfolders
            ]
        if not image_files(images):
            raise DatasetError(
                f"{images}: no image file ({', '.join(sorted(IMAGE_SUFFIXES))}); put the images "
                "there, or in images/<split>/ folders"
            )
        return [(None, images, _checked_folder(source, source / "labels"))]
    roboflow = sorted(
        p
        for p in source.iterdir()
        if p.is_dir()
        and (p / "images").is_dir()
        and _checked_folder(source, p / "images")
        and image_files(p / "images")
    )
    if roboflow:
        return [(p.name, p / "images", _checked_folder(source, p / "labels")) for p in roboflow]
    raise DatasetError(
        f"{source}: no images/ folder; a YOLO dataset has images/ and labels/ (flat, or with "
        "split folders such as images/train and labels/train)"
    )


def _checked_folder(source: Path, folder: Path) -> Path:
    """`folder` (inside `source`), refused with a DatasetError when it exists and leaves `source`
    once resolved (a link to another place): nothing in it is listed or read."""
    if folder.exists() or folder.is_symlink():
        source_entry(source, folder.relative_to(source).as_posix())
    return folder


def _outside_splits(source: Path, split_names: set[str], *, log: ProblemLog) -> None:
    """In a split layout: image and label files next to the split folders are left out
    (not_in_any_split); label folders without an image folder hold labels without images."""
    for image in sorted(p for p in (source / "images").iterdir() if p.is_file()):
        if image.suffix.lower() in IMAGE_SUFFIXES and not image.name.startswith("."):
            log.add(
                "not_in_any_split",
                "left out",
                file=image,
                split=None,
                what=f"lies next to the split folders images/{{{','.join(sorted(split_names))}}}",
                todo="left out; move it into a split folder to convert it",
            )
    labels = source / "labels"
    if not labels.is_dir():
        return
    for label in sorted(labels.rglob("*.txt")):
        relative = label.relative_to(labels)
        if relative.parts[0] in split_names or relative.as_posix() == "classes.txt":
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        if len(relative.parts) == 1:
            log.add(
                "not_in_any_split",
                "left out",
                file=label,
                split=None,
                what=f"lies next to the split folders labels/{{{','.join(sorted(split_names))}}}",
                todo="left out; move it into a split folder to convert it",
            )
        else:
            log.add(
                "label_without_image",
                "dropped",
                file=label,
                split=relative.parts[0],
                what=f"no image folder images/{relative.parts[0]} for it",
                todo="dropped; add the images or remove the label file",
            )


def _read_split(
    images_dir: Path,
    labels_dir: Path,
    *,
    split: str | None,
    num_classes: int,
    names: Sequence[str],
    log: ProblemLog,
) -> list[SourceImage]:
    records = []
    consumed: set[Path] = set()
    by_label: dict[Path, Path] = {}  # label file -> the image that took it
    for image in image_files(images_dir):
        relative = image.relative_to(images_dir)
        label = (labels_dir / relative).with_suffix(".txt")
        consumed.add(label)
        if label in by_label:
            log.add(
                "duplicate_image_name",
                "dropped",
                file=image,
                split=split,
                what=f"has the same name as {by_label[label].name}, so {_short(label)} would "
                "label both",
                todo=f"dropped, {by_label[label].name} was used; rename or remove one of them",
            )
            continue
        by_label[label] = image
        if not found_inside(images_dir, image, log=log, split=split, todo=_LINK_TODO):
            continue
        if (label.is_file() or label.is_symlink()) and not found_inside(labels_dir, label, log=log, split=split, todo=_LINK_TODO):
            continue
        whose = f"its labels {_short(label)}" if label.is_file() else None
        size = image_size(image, log=log, split=split, whose=whose)
        if size is None:
            continue
        width, height = size
        boxes = (
            _read_label(
                label,
                width=width,
                height=height,
                num_classes=num_classes,
                names=names,
                log=log,
                split=split,
            )
            if label.is_file()
            else []
        )
        records.append(
            SourceImage(
                file_name=relative.as_posix(),
                source=image,
                width=width,
                height=height,
                boxes=tuple(boxes),
            )
        )
    if labels_dir.is_dir():
        for label in sorted(labels_dir.rglob("*.txt")):
            relative = label.relative_to(labels_dir)
            if label in consumed or any(part.startswith(".") for part in relative.parts):
                continue
            if relative.as_posix() == "classes.txt":
                continue
            log.add(
                "label_without_image",
                "dropped",
                file=label,
                split=split,
                what=f"no image {_short(images_dir / relative.with_suffix(''))}.<ending> for it",
                todo="dropped; add the image or remove the label file",
            )
    return records


def _short(path: Path) -> str:
    """images/train/a.jpg rather than the whole path, for messages that already name a file."""
    parts = path.parts
    for anchor in ("images", "labels"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return path.name


def _read_label(
    label: Path,
    *,
    width: int,
    height: int,
    num_classes: int,
    names: Sequence[str],
    log: ProblemLog,
    split: str | None,
) -> list[SourceBox]:
    try:
        lines = label.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        log.add(
            "malformed",
            "dropped",
            file=label,
            split=split,
            what=f"cannot read the label file ({exc})",
            todo="its boxes are dropped (the image is kept without boxes); fix the file",
        )
        return []
    boxes = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        parsed = _parse_line(fields)
        if parsed is None:
            log.add(
                "malformed",
                "dropped",
                file=label,
                where=where,
                split=split,
                what=f"{line.strip()!r} is not `class cx cy w h` (an integer and 4 finite numbers)",
                todo="dropped; fix the line",
            )
            continue
        class_index, cx, cy, w, h = parsed
        if not 0 <= class_index < num_classes:
            log.add(
                "unknown_class",
                "dropped",
                file=label,
                where=where,
                split=split,
                what=f"class index {class_index} has no name (the {num_classes} names are "
                f"0..{num_classes - 1}: {', '.join(names)})",
                todo="dropped; fix the index or add the name",
            )
            continue
        corners = (
            _on_grid((cx - w / 2) * width),
            _on_grid((cy - h / 2) * height),
            _on_grid((cx + w / 2) * width),
            _on_grid((cy + h / 2) * height),
        )
        box = check_box(
            corners,
            width=width,
            height=height,
            log=log,
            file=label,
            where=where,
            split=split,
            shown=f"cx={cx:g} cy={cy:g} w={w:g} h={h:g}",
        )
        if box is not None:
            boxes.append(SourceBox(class_index, box))
    return boxes


def _parse_line(fields: list[str]) -> tuple[int, float, float, float, float] | None:
    if len(fields) != 5:
        return None
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in values) or not values[0].is_integer():
        return None
    return int(values[0]), values[1], values[2], values[3], values[4]


def _on_grid(value: float) -> float:
    return round(value * _GRID) / _GRID


# ----------------------------------------------------------------------------- class names


def _class_names(source: Path, *, given: Sequence[str] | None) -> tuple[str, ...]:
    found = None
    for relative in CLASS_FILES:
        path = source / relative
        if path.exists() or path.is_symlink():
            source_entry(source, relative)  # a class list that is a link to elsewhere: refused
            found = (
                path,
                _names_from_yaml(path) if path.suffix == ".yaml" else _names_from_txt(path),
            )
            break
    if given is not None:
        if found is not None and tuple(given) != found[1]:
            raise UsageError(
                f"--classes {','.join(given)}: disagrees with {found[0]} "
                f"({','.join(found[1])}); the class index of a label line means the same in "
                "both, so drop --classes or fix the file"
            )
        return tuple(given)
    if found is None:
        raise DatasetError(
            f"{source}: no class names: YOLO labels hold class indices only; add data.yaml "
            "(names: [a, b, c]) or classes.txt (one name a line), or pass --classes a,b,c"
        )
    return found[1]


def _names_from_yaml(path: Path) -> tuple[str, ...]:
    try:
        data = load_bounded(_class_file_text(path))
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: cannot read the YAML ({exc}); fix the file") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{path}: no `names:` key; add names: [a, b, c] (index 0, 1, 2)")
    raw: Any = data["names"]
    if isinstance(raw, dict):
        keys = list(raw)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(
            keys
        ) != list(range(len(keys))):
            raise DatasetError(
                f"{path}: names: maps {sorted(map(str, keys))} to names, but label lines use "
                f"class indices 0..{len(keys) - 1}, each with a name; number the names 0, 1, 2, ... "
                "without gaps, or write them as a list"
            )
        names = [raw[i] for i in range(len(keys))]
    elif isinstance(raw, list):
        names = raw
    else:
        raise DatasetError(
            f"{path}: names: is {type(raw).__name__}; write a list [a, b, c] or a mapping 0: a"
        )
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DatasetError(
            f"{path}: nc: {nc} but names: has {len(names)} entries; make them agree (or remove nc)"
        )
    return _valid_names(path, names)


def _class_file_text(path: Path) -> str:
    """The text of a class list (data.yaml or classes.txt), read only from a regular file of at
    most MAX_DATA_YAML_BYTES (a FIFO or device would block or never end)."""
    try:
        return read_regular_file(path, max_bytes=MAX_DATA_YAML_BYTES).decode("utf-8-sig")
    except (NotARegularFile, FileTooLarge) as exc:
        raise DatasetError(
            f"{exc}, so it was not read; a class list is a small text file of class names "
            f"(at most {MAX_DATA_YAML_BYTES // (1 << 20)} MiB)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc}); fix it") from None


def _names_from_txt(path: Path) -> tuple[str, ...]:
    lines = [line.strip() for line in _class_file_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return _valid_names(path, lines)


def _valid_names(path: Path, names: list[Any]) -> tuple[str, ...]:
    if not names:
        raise DatasetError(f"{path}: no class name; name each class index 0, 1, 2, ...")
    for index, name in enumerate(names):
        if (
            not isinstance(name, str | int | float)
            or isinstance(name, bool)
            or not str(name).strip()
        ):
            raise DatasetError(
                f"{path}: class index {index} has no usable name ({name!r}); give every index a name"
            )
    texts = [str(name).strip() for name in names]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise DatasetError(f"{path}: {', '.join(repeated)} named twice; name each class once")
    return tuple(texts)
