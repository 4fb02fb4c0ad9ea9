"""Other dataset formats -> COCO: the records the readers produce, the one box rule, and the
writer of the converted folder and its problem report.

`voc.read_voc` and `yolo.read_yolo` turn a source folder into a `SourceDataset`: class names,
splits of `SourceImage`s with XYXY pixel boxes, and every problem met on the way as a
`ConvertProblem` naming the file, the line (YOLO) or object index (VOC) and the reason. Boxes go
through `check_box` (here, so both formats clip and drop by the same rule). `write_coco_dataset`
then writes, atomically (`files.atomic_directory`):

    OUT/annotations.json + OUT/images/...          a source without splits
    OUT/<split>.json     + OUT/images/<split>/...  one json and one image folder per split
    OUT/convert_report.json                        the summary and every problem

Images are hard links to the source files where the filesystem allows, copies otherwise. A json's
file_names are relative to its image folder, so a recipe reads
`{kind: coco, annotations: OUT/train.json, images: OUT/images/train}`.

Someone else's folder: every file the readers open (XML, label file, split list, class list,
image) and every name a file gives (VOC `<filename>`) is resolved, symbolic links included,
through `images.data_path`, and must stay inside the source folder; one that leaves it (`..`, an
absolute name, a link to outside) is a `path_outside_folder` problem for that record, which is
dropped and named, and nothing outside the source is opened. Writing, each image goes to a name
checked to stay inside the new folder, linked or copied only from a regular file inside the
source, and never over a file already there (two records of one output name: the second is a
`duplicate_image_name` problem).
"""

from __future__ import annotations

import math
import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retinacli.data.images import data_path, read_image_size
from retinacli.errors import DatasetError, UsageError
from retinacli.files import PathOutsideRoot, atomic_directory, write_json

SourceFormat = Literal["voc", "yolo"]

ConvertReason = Literal[
    "box_clipped",  # a box reaches outside the image: clipped to it
    "box_outside_image",  # a box lies entirely outside the image: dropped
    "degenerate_box",  # zero or negative width or height: dropped
    "unknown_class",  # a class index or name the class names do not have: dropped
    "malformed",  # a label line or an XML file/object that cannot be read: dropped
    "missing_image",  # an annotation whose image file does not exist: dropped
    "unreadable_image",  # an image file PIL cannot open: dropped with its boxes
    "label_without_image",  # a YOLO label file no image belongs to: dropped
    "missing_annotation",  # a VOC split lists an id without Annotations/<id>.xml: dropped
    "duplicate_image_name",  # a second image for the same name or label file: dropped
    "not_in_any_split",  # a file outside every split of a split dataset: left out
    "size_mismatch",  # the XML's <size> differs from the image file: the file's size is used
    "path_outside_folder",  # a file or name that leaves the source folder (.., absolute, a link out): dropped
]
REASONS: tuple[ConvertReason, ...] = (
    "box_clipped",
    "box_outside_image",
    "degenerate_box",
    "unknown_class",
    "malformed",
    "missing_image",
    "unreadable_image",
    "label_without_image",
    "missing_annotation",
    "duplicate_image_name",
    "not_in_any_split",
    "size_mismatch",
    "path_outside_folder",
)
"""Every reason, in the order the summary lists them."""

REASON_TEXT: dict[ConvertReason, str] = {
    "box_clipped": "box outside the image (clipped)",
    "box_outside_image": "box entirely outside the image (dropped)",
    "degenerate_box": "zero or negative size (dropped)",
    "unknown_class": "unknown class index or name (dropped)",
    "malformed": "malformed line, XML or object (dropped)",
    "missing_image": "missing image (dropped)",
    "unreadable_image": "unreadable image (dropped)",
    "label_without_image": "label file without image (dropped)",
    "missing_annotation": "split id without XML (dropped)",
    "duplicate_image_name": "duplicate image name (dropped)",
    "not_in_any_split": "outside every split (left out)",
    "size_mismatch": "XML size differs from the image (file's size used)",
    "path_outside_folder": "path leaving the source folder (dropped, not read)",
}
"""How the summary names each reason, with what was done."""

Action = Literal["clipped", "dropped", "left out", "used the file's size"]

REPORT_NAME = "convert_report.json"
"""The problem report in the converted folder (not a COCO json; `retina data check` skips it)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
"""File name endings (any case) that are taken as images; other files in image folders are not."""


@dataclass(frozen=True)
class ConvertProblem:
    """One record the conversion dropped or changed, or a file it left out.

    file: the source file at fault (XML, label file, image, split list). where: "line 3",
    "object 2", "" for the whole file. split: the split it belongs to (None: no splits).
    message: the full `<file>[, <where>]: <what is wrong>; <what was done / what to do>` line.
    """

    reason: ConvertReason
    action: Action
    file: str
    where: str
    split: str | None
    message: str


@dataclass(frozen=True)
class SourceBox:
    """One box of a source image, in pixels of the image as the detector reads it (after EXIF
    orientation). box_xyxy: corners, already clipped to the image. class_index: into
    `SourceDataset.class_names`. iscrowd: VOC `difficult` objects unless kept."""

    class_index: int
    box_xyxy: tuple[float, float, float, float]
    iscrowd: bool = False


@dataclass(frozen=True)
class SourceImage:
    """One image of a split. file_name: its path inside the split's output image folder (also
    the json's file_name). source: the file to link or copy. width, height: after EXIF
    orientation, read from the file."""

    file_name: str
    source: Path
    width: int
    height: int
    boxes: tuple[SourceBox, ...]


@dataclass(frozen=True)
class SourceSplit:
    """The images of one split; name None for a source without splits (-> annotations.json)."""

    name: str | None
    images: tuple[SourceImage, ...]


@dataclass(frozen=True)
class SourceDataset:
    """A source folder read into records: what `write_coco_dataset` writes."""

    source: Path
    format: SourceFormat
    class_names: tuple[str, ...]
    splits: tuple[SourceSplit, ...]
    problems: tuple[ConvertProblem, ...]


@dataclass(frozen=True)
class SplitSummary:
    """What one written json holds. boxes_per_class counts non-crowd boxes in class order (as
    `retina data check` does); crowd_boxes the iscrowd=1 ones (VOC difficult objects)."""

    name: str | None
    annotations: Path
    images: Path
    num_images: int
    num_images_without_boxes: int
    num_boxes: int
    num_crowd_boxes: int
    boxes_per_class: dict[str, int]


@dataclass(frozen=True)
class ConvertResult:
    """A written conversion: the folder, its splits, every problem and their counts by reason
    (every reason listed, zero included). linked/copied: image files hard-linked or copied."""

    output_dir: Path
    report: Path
    source: Path
    format: SourceFormat
    class_names: tuple[str, ...]
    splits: tuple[SplitSummary, ...]
    problems: tuple[ConvertProblem, ...]
    reason_counts: dict[ConvertReason, int]
    linked: int
    copied: int


# ----------------------------------------------------------------------------- reading helpers


class ProblemLog:
    """Collects the problems of one reading pass, in the order met."""

    def __init__(self) -> None:
        self.problems: list[ConvertProblem] = []

    def add(
        self,
        reason: ConvertReason,
        action: Action,
        *,
        file: Path | str,
        where: str = "",
        split: str | None,
        what: str,
        todo: str,
    ) -> None:
        head = f"{file}, {where}" if where else str(file)
        self.problems.append(
            ConvertProblem(
                reason=reason,
                action=action,
                file=str(file),
                where=where,
                split=split,
                message=f"{head}: {what}; {todo}",
            )
        )

    def in_order(self, splits: Iterable[str | None]) -> tuple[ConvertProblem, ...]:
        """The problems by split (those of no split first, then in `splits` order), then by
        file, then by line or object number."""
        rank = {name: n for n, name in enumerate(splits, start=1)}

        def key(problem: ConvertProblem) -> tuple[int, str, int]:
            number = problem.where.rsplit(" ", 1)[-1]
            return (
                0 if problem.split is None else rank.get(problem.split, len(rank) + 1),
                problem.file,
                int(number) if number.isdigit() else -1,
            )

        return tuple(sorted(self.problems, key=key))


def parse_class_list(text: str, *, flag: str = "--classes") -> tuple[str, ...]:
    """`a,b,c` -> ("a", "b", "c"); empty or repeated names are a UsageError."""
    names = tuple(name.strip() for name in text.split(","))
    if not names or any(not name for name in names):
        raise UsageError(
            f"{flag} {text!r}: empty class name; give names separated by commas: a,b,c"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f"{flag} {text!r}: {', '.join(repeated)} given twice; name each class once"
        )
    return names


def image_size(
    path: Path, *, log: ProblemLog, split: str | None, whose: str | None
) -> tuple[int, int] | None:
    """(width, height) of an image after EXIF orientation (headers only), or None with a
    missing_image / unreadable_image problem logged. `whose`: what is dropped with it, if any."""
    try:
        height, width = read_image_size(path)
    except DatasetError as exc:
        if not path.is_file():
            log.add(
                "missing_image",
                "dropped",
                file=path,
                split=split,
                what="image file not found" + (f" (for {whose})" if whose else ""),
                todo="dropped; add the image or remove its annotation",
            )
        else:
            log.add(
                "unreadable_image",
                "dropped",
                file=path,
                split=split,
                what=f"not an image PIL can open ({_reason_of(exc)})",
                todo=("dropped with " + whose if whose else "dropped")
                + "; replace the file or remove it",
            )
        return None
    return width, height


def contained_source(
    root: Path,
    name: str | os.PathLike[str],
    *,
    log: ProblemLog,
    file: Path | str,
    split: str | None,
    subject: str,
    todo: str,
    where: str = "",
) -> Path | None:
    """`root / name` when it stays inside `root` once resolved, symbolic links included (see
    `images.data_path`); else None, nothing opened, and a path_outside_folder problem:
    `<file>: <subject> '<name>' is <reason> <root>; <todo>`."""
    try:
        return data_path(root, name)
    except PathOutsideRoot as exc:
        log.add(
            "path_outside_folder",
            "dropped",
            file=file,
            where=where,
            split=split,
            what=f"{subject} {exc.name!r} is {exc.reason} {exc.root}",
            todo=todo,
        )
        return None


def source_entry(source: Path, relative: str) -> Path:
    """`source / relative`, a folder a reader lists or a file the whole dataset needs (a class
    list), refused (DatasetError) when it leaves `source` once resolved: a link to elsewhere is
    never read."""
    try:
        return data_path(source, relative)
    except PathOutsideRoot as exc:
        raise DatasetError(
            f"{source / relative}: is {exc.reason} {exc.root}; nothing was read from it; put the "
            "folder or file itself there rather than a symbolic link to another place"
        ) from None


def found_inside(
    folder: Path,
    path: Path,
    *,
    log: ProblemLog,
    split: str | None,
    todo: str = "dropped, not read; put the file itself there rather than a symbolic link",
) -> bool:
    """True when `path`, a file found by listing `folder`, stays inside it once resolved; else a
    path_outside_folder problem (a link to another place), and the file is not read."""
    inside = contained_source(
        folder, path.relative_to(folder), log=log, file=path, split=split, subject="the file", todo=todo
    )
    return inside is not None


def _reason_of(exc: DatasetError) -> str:
    text = str(exc)
    start, end = text.find("("), text.rfind(")")
    return text[start + 1 : end] if 0 <= start < end else text


def check_box(
    box_xyxy: tuple[float, float, float, float],
    *,
    width: int,
    height: int,
    log: ProblemLog,
    file: Path | str,
    where: str,
    split: str | None,
    shown: str,
) -> tuple[float, float, float, float] | None:
    """The one box rule of every format: a box of zero or negative width or height is dropped
    (degenerate_box); one reaching outside the width x height image is clipped to it
    (box_clipped), or dropped when nothing is left (box_outside_image). `shown` is the box as the
    source file writes it, for the message. Returns the clipped box, or None when dropped."""
    x0, y0, x1, y1 = box_xyxy
    if not all(math.isfinite(v) for v in box_xyxy):
        log.add(
            "malformed",
            "dropped",
            file=file,
            where=where,
            split=split,
            what=f"box {shown} is not finite",
            todo="dropped; fix or remove it",
        )
        return None
    if x1 <= x0 or y1 <= y0:
        log.add(
            "degenerate_box",
            "dropped",
            file=file,
            where=where,
            split=split,
            what=f"box {shown} has zero or negative width or height",
            todo="dropped; fix or remove it",
        )
        return None
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return box_xyxy
    clipped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height))
    clipped += (min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        log.add(
            "box_outside_image",
            "dropped",
            file=file,
            where=where,
            split=split,
            what=f"box {shown} lies entirely outside the {width}x{height} image",
            todo="dropped; fix or remove it",
        )
        return None
    log.add(
        "box_clipped",
        "clipped",
        file=file,
        where=where,
        split=split,
        what=f"box {shown} reaches outside the {width}x{height} image",
        todo=f"clipped to it: {_xyxy_text(clipped)} (XYXY pixels)",
    )
    return clipped


def _xyxy_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder` (recursively, hidden files and folders skipped), sorted by
    their path relative to it."""
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def refuse_empty(dataset: SourceDataset, *, what: str, fix: str) -> None:
    """Raise DatasetError when no split has an image: nothing would be written. The message
    names the source, `what` was found instead (with the first problems) and `fix`."""
    if any(split.images for split in dataset.splits):
        return
    lines = [f"{dataset.source}: no usable image ({what}); {fix}"]
    lines += [p.message for p in dataset.problems[:10]]
    if len(dataset.problems) > 10:
        lines.append(f"... and {len(dataset.problems) - 10} more problems")
    raise DatasetError("\n".join(lines))


# ----------------------------------------------------------------------------- writing


def coco_json(split: SourceSplit, *, class_names: Sequence[str]) -> dict[str, Any]:
    """The COCO detection json of one split: image ids 1..N in file_name order, annotation ids
    1..M, category ids 1..K in class order, bbox [x0, y0, x1 - x0, y1 - y0]."""
    images, annotations = [], []
    for image_id, image in enumerate(sorted(split.images, key=lambda i: i.file_name), start=1):
        images.append(
            {
                "id": image_id,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
            }
        )
        for box in image.boxes:
            x0, y0, x1, y1 = box.box_xyxy
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": box.class_index + 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": int(box.iscrowd),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_dataset(dataset: SourceDataset, *, output_dir: Path) -> ConvertResult:
    """Write `dataset` as COCO json + images into the new folder `output_dir` (atomically: the
    folder appears complete or not at all), with `convert_report.json`.

    Raises:
        UsageError: `output_dir` already exists (it is never replaced).
        DatasetError: two splits of one name, or one named like the report.
    """
    output_dir = Path(output_dir)
    linked = copied = 0
    summaries = []
    names = [split.name for split in dataset.splits]
    if REPORT_NAME.removesuffix(".json") in names or len(set(names)) != len(names):
        raise DatasetError(
            f"{dataset.source}: split names {names} would write one json twice or over "
            f"{REPORT_NAME}; rename the split folder"
        )
    written = ProblemLog()  # what writing drops: names leaving the folder, collisions
    source_root = Path(dataset.source).resolve()
    with atomic_directory(output_dir) as tmp:
        for split in dataset.splits:
            json_name = "annotations.json" if split.name is None else f"{split.name}.json"
            images_rel = Path("images") if split.name is None else Path("images") / split.name
            kept = []
            for image in split.images:
                how = _place_image(
                    image, folder=tmp / images_rel, source_root=source_root, log=written, split=split.name
                )
                if how is None:
                    continue
                kept.append(image)
                linked += how == "linked"
                copied += how == "copied"
            split = SourceSplit(name=split.name, images=tuple(kept))
            write_json(tmp / json_name, coco_json(split, class_names=dataset.class_names))
            summaries.append(
                _summary(
                    split,
                    class_names=dataset.class_names,
                    annotations=output_dir / json_name,
                    images=output_dir / images_rel,
                )
            )
        problems = dataset.problems + written.in_order(names)
        counts = Counter(p.reason for p in problems)
        reason_counts = {reason: counts[reason] for reason in REASONS}
        write_json(tmp / REPORT_NAME, _report_json(dataset, summaries, reason_counts, problems))
    return ConvertResult(
        output_dir=output_dir,
        report=output_dir / REPORT_NAME,
        source=dataset.source,
        format=dataset.format,
        class_names=dataset.class_names,
        splits=tuple(summaries),
        problems=problems,
        reason_counts=reason_counts,
        linked=linked,
        copied=copied,
    )


def new_hard_link(source: Path, target: Path) -> bool:
    """Give the regular file `source` (no link: it is resolved) the new name `target`. Never
    replaces: a `target` that exists raises FileExistsError. Returns False where the filesystem
    has no hard link for it (another device, FAT, a file the kernel protects): copy instead."""
    try:
        os.link(source, target, follow_symlinks=False)
    except (FileExistsError, NotADirectoryError):
        raise
    except OSError:
        return False
    return True


def _place_image(
    image: SourceImage, *, folder: Path, source_root: Path, log: ProblemLog, split: str | None
) -> Literal["linked", "copied"] | None:
    """Hard-link (else copy) `image.source` to `folder / image.file_name`; None, with a problem,
    when the name would leave `folder`, the source is not a regular file inside the source
    folder, or a file of that name is already there (nothing is ever replaced)."""
    if any(part in ("", ".", "..") for part in image.file_name.split("/")):
        log.add(
            "path_outside_folder",
            "dropped",
            file=image.source,
            split=split,
            what=f"its output name {image.file_name!r} is not a plain relative name",
            todo="dropped, not written; rename the file",
        )
        return None
    target = contained_source(
        folder,
        image.file_name,
        log=log,
        file=image.source,
        split=split,
        subject="its output name",
        todo="dropped, not written; rename the file",
    )
    if target is None:
        return None
    try:
        resolved = image.source.resolve(strict=True)
        regular = stat.S_ISREG(resolved.stat().st_mode)
    except (OSError, RuntimeError):  # gone, or a link that loops
        resolved, regular = image.source, False
    if not regular or not resolved.is_relative_to(source_root):
        log.add(
            "path_outside_folder",
            "dropped",
            file=image.source,
            split=split,
            what=f"is not a regular file inside {source_root} (a link to another place?)",
            todo="dropped, neither linked nor copied; put the image itself in the source folder",
        )
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if new_hard_link(resolved, target):
            return "linked"
        with open(resolved, "rb") as reader, open(target, "xb") as writer:  # "x": never replaces
            shutil.copyfileobj(reader, writer)
        return "copied"
    except (FileExistsError, NotADirectoryError):
        log.add(
            "duplicate_image_name",
            "dropped",
            file=image.source,
            split=split,
            what=f"would be written as {image.file_name!r}, which another image of the split "
            "already is (or a folder of its name is a file)",
            todo="dropped, nothing replaced; rename one of them",
        )
        return None


def _summary(
    split: SourceSplit, *, class_names: Sequence[str], annotations: Path, images: Path
) -> SplitSummary:
    per_class: Counter[int] = Counter()
    crowd = 0
    for image in split.images:
        for box in image.boxes:
            if box.iscrowd:
                crowd += 1
            else:
                per_class[box.class_index] += 1
    return SplitSummary(
        name=split.name,
        annotations=annotations,
        images=images,
        num_images=len(split.images),
        num_images_without_boxes=sum(
            1 for image in split.images if not any(not b.iscrowd for b in image.boxes)
        ),
        num_boxes=sum(per_class.values()),
        num_crowd_boxes=crowd,
        boxes_per_class={name: per_class[i] for i, name in enumerate(class_names)},
    )


def _report_json(
    dataset: SourceDataset,
    summaries: Iterable[SplitSummary],
    reason_counts: dict[ConvertReason, int],
    problems: Sequence[ConvertProblem],
) -> dict[str, Any]:
    return {
        "source": str(dataset.source),
        "format": dataset.format,
        "classes": list(dataset.class_names),
        "splits": [
            {
                "name": s.name,
                "annotations": s.annotations.name,
                "images": s.images.relative_to(s.annotations.parent).as_posix(),
                "num_images": s.num_images,
                "num_images_without_boxes": s.num_images_without_boxes,
                "num_boxes": s.num_boxes,
                "num_crowd_boxes": s.num_crowd_boxes,
                "boxes_per_class": s.boxes_per_class,
            }
            for s in summaries
        ],
        "reason_counts": reason_counts,
        "problems": [
            {
                "reason": p.reason,
                "action": p.action,
                "file": p.file,
                "where": p.where,
                "split": p.split,
                "message": p.message,
            }
            for p in problems
        ],
    }
