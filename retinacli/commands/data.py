"""`retina data check | show | make-shapes`: validate, look at and make datasets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retinacli.build import (
    build_dataset,
    build_test_augmentation,
    build_train_augmentation,
    dataset_files,
)
from retinacli.data.checks import DatasetReport, check_coco
from retinacli.data.shapes import ShapesSplit, make_shapes
from retinacli.data.visualize import show_dataset
from retinacli.errors import RecipeError
from retinacli.files import refuse_existing, refuse_nonempty_dir
from retinacli.recipe import Override, load_recipe

Split = Literal["train", "test"]


@dataclass(frozen=True)
class SectionCheck:
    """One dataset section of a recipe (`data.<name>.dataset`) and its report (None: not set)."""

    name: Split
    annotations: Path | None
    report: DatasetReport | None


def check_datasets(
    recipe: Path,
    overrides: Sequence[str | Override] = (),
    *,
    splits: Sequence[Split] = ("train", "test"),
    decode: bool = False,
) -> list[SectionCheck]:
    """Check the recipe's datasets (every problem named; nothing raised for problems in the
    data). Raises RecipeError when none of `splits` has a dataset."""
    resolved = load_recipe(recipe, overrides)
    sections = {"train": resolved.data.train.dataset, "test": resolved.data.test.dataset}
    if all(sections[name] is None for name in splits):
        raise RecipeError(f"{recipe}: no dataset to check (data.{'/'.join(splits)}.dataset is not set)")
    checks = []
    for name in splits:
        config = sections[name]
        if config is None:
            checks.append(SectionCheck(name, None, None))
            continue
        annotations, images = dataset_files(config)
        _, report = check_coco(
            annotations=annotations, images=images, fix_bad_boxes=resolved.data.fix_bad_boxes, decode_images=decode
        )
        checks.append(SectionCheck(name, annotations, report))
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
    augments them; returns the files written."""
    resolved = load_recipe(recipe, overrides)
    refuse_nonempty_dir(output_dir, overwrite=overwrite)
    section = resolved.data.train if split == "train" else resolved.data.test
    dataset, _ = build_dataset(
        section.dataset, key=f"data.{split}.dataset", filter_empty=False, fix_bad_boxes=resolved.data.fix_bad_boxes
    )
    augmentation = None
    if augmented:
        augmentation = (
            build_train_augmentation(resolved.data.train)
            if split == "train"
            else build_test_augmentation(resolved.data.test)
        )
    return show_dataset(
        dataset=dataset, out_dir=output_dir, num_images=num_images, augmentation=augmentation, seed=resolved.seed
    )


def write_shapes(output_dir: Path, *, num_images: int, seed: int, overwrite: bool = False) -> list[ShapesSplit]:
    """The synthetic shapes dataset: `num_images` training images and a quarter as many test
    images, as COCO json + PNG files in `output_dir`."""
    splits = (("train", num_images), ("test", max(1, num_images // 4)))
    refuse_existing([output_dir / f"{split}.json" for split, _ in splits], overwrite=overwrite)
    return [make_shapes(output_dir, num_images=count, seed=seed, split=split) for split, count in splits]
