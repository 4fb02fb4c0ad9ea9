"""`retina data split`: one COCO json -> train.json, val.json (and test.json), by image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from retinacli.data.formats.coco import read_coco_json
from retinacli.data.formats.split import SplitCounts, split_coco, split_counts
from retinacli.errors import UsageError
from retinacli.files import prepare_output_file, write_json


@dataclass(frozen=True)
class SplitResult:
    """The written splits, train first. class_names: in category id order."""

    annotations: Path
    output_dir: Path
    seed: int
    class_names: tuple[str, ...]
    splits: tuple[SplitCounts, ...]


def split(
    annotations: Path,
    *,
    output_dir: Path,
    val: float,
    test: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
) -> SplitResult:
    """Split `annotations` by image, class-stratified (see `data.split`), into
    `output_dir/{train,val}.json` and, when `test` > 0, `test.json`. The images, annotations
    and categories keep their ids and file_names, so each json uses the original image folder.

    Raises:
        UsageError: fractions outside 0 < val, 0 <= test, val + test < 1; an existing output
            without `overwrite` (a folder of an output's name even with it, see
            `files.prepare_output_file`); an output that is the input itself; an `output_dir`
            that is a file.
        DatasetError: an unreadable or malformed json, or too few images for the splits.
    """
    _check_fractions(val=val, test=test)
    fractions = {"train": 1.0 - val - test, "val": val}
    if test > 0:
        fractions["test"] = test
    paths = {name: Path(output_dir) / f"{name}.json" for name in fractions}
    for path in paths.values():
        if path.exists() and path.resolve() == Path(annotations).resolve():
            raise UsageError(
                f"{path}: is the json being split and would be replaced; choose another --output-dir"
            )
    for path in paths.values():  # every output file by the one rule, all checked before any is written
        prepare_output_file(path, overwrite=overwrite, flag="--output-dir")
    data = read_coco_json(annotations)
    outputs, dataset, assignment = split_coco(
        data, annotations=Path(annotations), fractions=fractions, seed=seed
    )
    for name, path in paths.items():
        write_json(path, outputs[name])
    return SplitResult(
        annotations=Path(annotations),
        output_dir=Path(output_dir),
        seed=seed,
        class_names=dataset.class_names,
        splits=tuple(split_counts(dataset, assignment, paths=paths)),
    )


def _check_fractions(*, val: float, test: float) -> None:
    for flag, value in (("--val", val), ("--test", test)):
        if not math.isfinite(value) or not 0 <= value < 1:
            raise UsageError(
                f"{flag} {value:g}: a fraction of the images, from 0 to below 1; e.g. {flag} 0.2"
            )
    if val == 0:
        raise UsageError(
            "--val 0: val.json would be empty; give a fraction above 0, e.g. --val 0.2"
        )
    if val + test >= 1:
        raise UsageError(
            f"--val {val:g} --test {test:g}: together {val + test:g}, which leaves no image for "
            "train.json; make them add up to less than 1"
        )
