"""`retina data convert`: a Pascal VOC or YOLO folder -> COCO json + images."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from retinacli.data.formats.convert import (
    REASON_TEXT,
    ConvertResult,
    parse_class_list,
    write_coco_dataset,
)
from retinacli.data.formats.voc import read_voc
from retinacli.data.formats.yolo import read_yolo
from retinacli.errors import DatasetError, UsageError
from retinacli.files import refuse_existing_folder

__all__ = ["REASON_TEXT", "ConvertResult", "convert"]


def convert(
    source: Path,
    *,
    source_format: Literal["voc", "yolo"],
    output_dir: Path,
    classes: str | None = None,
    keep_difficult: bool = False,
) -> ConvertResult:
    """Convert the dataset in `source` into the new folder `output_dir` (see
    `data.convert.write_coco_dataset` for the layout); every record dropped or changed is in
    the result's problems and in `output_dir/convert_report.json`.

    Args:
        classes: `a,b,c`: the class names and their order (VOC: objects of other names are
            dropped; YOLO: the names of indices 0, 1, 2, which must agree with data.yaml or
            classes.txt where those exist).
        keep_difficult: VOC only: difficult objects become ordinary boxes instead of iscrowd 1.

    Raises:
        UsageError: `output_dir` exists (a folder or a file) or lies below a file, a malformed
            `classes`, `keep_difficult` with YOLO.
        DatasetError: a source that cannot be converted (named, with what to do).
    """
    _check_output_dir(Path(output_dir))
    if keep_difficult and source_format != "voc":
        raise UsageError("--keep-difficult: only Pascal VOC has difficult objects; drop the flag")
    if not Path(source).is_dir():
        raise DatasetError(f"{source}: folder not found; pass the dataset's folder")
    class_names = parse_class_list(classes) if classes is not None else None
    if source_format == "voc":
        dataset = read_voc(source, class_names=class_names, keep_difficult=keep_difficult)
    else:
        dataset = read_yolo(source, class_names=class_names)
    return write_coco_dataset(dataset, output_dir=output_dir)


def _check_output_dir(output_dir: Path) -> None:
    """The new folder `output_dir` can be made: nothing of that name exists (it is never
    replaced, see `files.atomic_directory`) and no folder above it is a file."""
    if output_dir.is_file():
        raise UsageError(
            f"{output_dir}: is a file; --output-dir names a new folder for the converted dataset "
            "(it is never replaced): choose another"
        )
    refuse_existing_folder(output_dir)
    for parent in output_dir.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UsageError(
                    f"{output_dir}: {parent} is a file, not a folder; choose another --output-dir"
                )
            break
