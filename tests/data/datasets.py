"""Test datasets built straight from a COCO json: parsed and structurally checked, without the
file checks of `data.checks.prepare_coco` (the tests that use it make their images themselves or
need none)."""

from __future__ import annotations

from pathlib import Path

from retinacli.data.formats.coco import DetectionDataset, drop_empty, parse_coco, read_coco_json
from retinacli.data.problems import summarize_errors
from retinacli.errors import DatasetError


def load_coco(*, annotations: Path | str, images: Path | str, filter_empty: bool) -> DetectionDataset:
    """The records of `annotations` (file names relative to `images`); DatasetError listing every
    structural problem; `filter_empty` drops images without a non-crowd box."""
    dataset, problems = parse_coco(read_coco_json(annotations), annotations=Path(annotations), images=Path(images))
    if problems:
        raise DatasetError(summarize_errors(problems))
    return drop_empty(dataset) if filter_empty else dataset
