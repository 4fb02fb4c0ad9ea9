"""`retina data check | show | make-shapes`: validate, look at and make datasets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retinacli.build import (
    build_box_augment,
    build_dataset,
    build_test_augmentation,
    build_train_augmentation,
    dataset_files,
)
from retinacli.data.checks import DatasetReport, check_coco
from retinacli.data.formats.convert import REPORT_NAME
from retinacli.data.images import data_path
from retinacli.data.shapes import make_shapes, make_shapes_voc
from retinacli.data.visualize import show_dataset
from retinacli.errors import DatasetError, RecipeError, UsageError
from retinacli.files import PathOutsideRoot, prepare_output_dir
from retinacli.recipe import Override, load_recipe
from retinacli.recipe.schema import DataConfig

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class SectionCheck:
    """One dataset checked and its report (None: the recipe section is not set).

    name: the recipe section ("train", "test"), or the json's file name. key: the recipe key
    (`data.train.dataset`), None for a json checked on its own. images: the image folder used.
    """

    name: str
    annotations: Path | None
    report: DatasetReport | None
    key: str | None = None
    images: Path | None = None


def check(
    target: Path,
    overrides: Sequence[str | Override] = (),
    *,
    splits: Sequence[Split] | None = None,
    images: Path | None = None,
    decode: bool = False,
) -> list[SectionCheck]:
    """`retina data check TARGET`: a recipe (its datasets, see `check_datasets`), a COCO json,
    or a folder of them such as `retina data convert` writes (see `check_annotations`).

    Raises:
        UsageError: `overrides` or `splits` with a json or folder, `images` with a recipe.
    """
    target = Path(target)
    if target.is_dir() or target.suffix.lower() == ".json":
        if overrides or splits is not None:
            flag = "--set" if overrides else "--split"
            raise UsageError(
                f"{flag}: only for a recipe, and {target} is a "
                f"{'folder' if target.is_dir() else 'json'}; drop {flag}"
            )
        return check_annotations(target, images=images, decode=decode)
    if images is not None:
        raise UsageError(
            f"--images: only for a COCO json or folder; {target} is a recipe, whose datasets name "
            "their images (set data.train.dataset.images instead)"
        )
    return check_datasets(target, overrides, splits=splits or ("train", "val", "test"), decode=decode)


def check_annotations(
    target: Path, *, images: Path | None = None, decode: bool = False
) -> list[SectionCheck]:
    """Check a COCO json, or every json of a folder: those `convert_report.json` lists when
    `retina data convert` wrote the folder, else every `*.json` in it.

    images: the folder the file_names are relative to, for every json; None: the one the
    conversion report names, else `images/<json name without .json>` next to the json when that
    folder exists (what `retina data convert` writes for a split), else `images/` next to it,
    else the json's own folder. Boxes are checked with the recipe default data.fix_bad_boxes.

    Raises:
        UsageError: a folder without any json.
        DatasetError: a json that cannot be read as COCO.
    """
    target = Path(target)
    if target.is_dir():
        jsons = converted_jsons(target)
        if not jsons:
            raise UsageError(
                f"{target}: no .json file in the folder; pass a COCO json, a folder of them "
                "(such as `retina data convert` writes) or a recipe"
            )
    else:
        jsons = [(target, None)]
    fix_bad_boxes = DataConfig.model_fields["fix_bad_boxes"].default
    checks = []
    for path, converted_images in jsons:
        folder = images or converted_images or default_images(path)
        _, report = check_coco(
            annotations=path, images=folder, fix_bad_boxes=fix_bad_boxes, decode_images=decode
        )
        checks.append(SectionCheck(path.name, path, report, images=folder))
    return checks


def converted_jsons(folder: Path) -> list[tuple[Path, Path | None]]:
    """(json, its image folder) of each json that the folder's convert_report.json lists; without
    a report, every *.json in the folder, the image folder left to `default_images`."""
    report = folder / REPORT_NAME
    if report.is_file():
        try:
            splits = json.loads(report.read_text(encoding="utf-8-sig"))["splits"]
            # The names come from a file: each must stay inside the folder (a link, `..` or an
            # absolute name would make `data check` read another place).
            return [(data_path(folder, s["annotations"]), data_path(folder, s["images"])) for s in splits]
        except PathOutsideRoot as exc:
            raise DatasetError(
                f"{report}: names {exc.name!r}, {exc.reason} {exc.root}; nothing was read from it; "
                "remove the report to check every json of the folder"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{report}: not a readable conversion report ({exc!r}); remove it to check every "
                "json of the folder"
            ) from None
    found = [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]
    for path in found:
        try:
            data_path(folder, path.name)
        except PathOutsideRoot as exc:
            raise DatasetError(
                f"{path}: is {exc.reason} {exc.root}; nothing was read from it; check the json it "
                "points to by its own path, or remove the link"
            ) from None
    return [(p, None) for p in found]


def default_images(annotations: Path) -> Path:
    """The image folder of a json checked on its own (see `check_annotations`)."""
    parent = annotations.parent
    for folder in (parent / "images" / annotations.stem, parent / "images"):
        if folder.is_dir():
            return folder
    return parent


def check_datasets(
    recipe: Path,
    overrides: Sequence[str | Override] = (),
    *,
    splits: Sequence[Split] = ("train", "val", "test"),
    decode: bool = False,
) -> list[SectionCheck]:
    """Check the recipe's datasets (every problem named; nothing raised for problems in the
    data). Raises RecipeError when none of `splits` has a dataset."""
    resolved = load_recipe(recipe, overrides)
    sections = {
        "train": resolved.data.train.dataset,
        "val": resolved.data.val.dataset,
        "test": resolved.data.test.dataset,
    }
    if all(sections[name] is None for name in splits):
        raise RecipeError(f"{recipe}: no dataset to check (data.{'/'.join(splits)}.dataset is not set)")
    checks = []
    for name in splits:
        config = sections[name]
        if config is None:
            checks.append(SectionCheck(name, None, None, key=f"data.{name}.dataset"))
            continue
        annotations, images = dataset_files(config)
        _, report = check_coco(
            annotations=annotations, images=images, fix_bad_boxes=resolved.data.fix_bad_boxes, decode_images=decode
        )
        checks.append(SectionCheck(name, annotations, report, key=f"data.{name}.dataset", images=images))
    return checks


def show(
    recipe: Path,
    overrides: Sequence[str | Override] = (),
    *,
    output_dir: Path,
    num_images: int = 16,
    augmented: bool = False,
    split: Split = "train",
    overwrite: bool = False,
) -> list[Path]:
    """Pictures of the first images of a split with their boxes, optionally as training
    augments them (resize, flip and every `data.train.augment` augmentation); returns the files
    written."""
    resolved = load_recipe(recipe, overrides)
    section = {"train": resolved.data.train, "val": resolved.data.val, "test": resolved.data.test}[split]
    if section.dataset is None:
        raise RecipeError(f"{recipe}: data.{split}.dataset is not set; choose another --split or set it")
    prepare_output_dir(output_dir, command="data show", overwrite=overwrite)
    dataset, _ = build_dataset(
        section.dataset, key=f"data.{split}.dataset", filter_empty=False, fix_bad_boxes=resolved.data.fix_bad_boxes
    )
    augmentation = None
    box_augment = build_box_augment(resolved.data.train) if augmented and split == "train" else None
    if augmented:
        augmentation = (
            build_train_augmentation(resolved.data.train)
            if split == "train"
            else build_test_augmentation(section)
        )
    return show_dataset(
        dataset=dataset, out_dir=output_dir, num_images=num_images, augmentation=augmentation, seed=resolved.seed,
        box_augment=box_augment,
    )


def write_shapes(
    output_dir: Path, *, num_images: int, seed: int, overwrite: bool = False, layout: Literal["coco", "voc"] = "coco"
) -> dict[str, int]:
    """The synthetic shapes dataset: `num_images` training images and a quarter as many test
    images, as COCO json + PNG files in `output_dir` (or, `layout="voc"`, as a Pascal VOC
    folder with train and test lists). Returns the number of images per split.

    `output_dir` must be new, empty, or an earlier output of make-shapes (then only with
    `overwrite`): see `files.prepare_output_dir`; a folder holding other files is refused."""
    splits = (("train", num_images), ("test", max(1, num_images // 4)))
    prepare_output_dir(output_dir, command="data make-shapes", overwrite=overwrite)
    if layout == "voc":
        return make_shapes_voc(output_dir, splits=splits, seed=seed)
    return {split: make_shapes(output_dir, num_images=count, seed=seed, split=split).num_images for split, count in splits}
