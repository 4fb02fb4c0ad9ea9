"""What `retina eval` evaluates on: the test dataset, its resize, and the class mapping.

The class mapping decides the COCO `category_id` of each model class. A model file names its
classes (`ClassInfo`: names and dataset ids). A dataset fits when it has the same categories:

1. same ids and names, in the same order: used as is;
2. same names, other ids (a json numbered differently): classes are matched by name;
3. the model file holds placeholder names (`class_0`, ... from an import that knew no dataset):
   matched by count, taking the dataset's ids and names in ascending id order (detectron2's
   contiguous mapping).

Anything else is an error raised before any inference runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retinacli.data.coco import DetectionDataset
from retinacli.errors import DatasetError, RecipeError
from retinacli.model_files import ClassInfo
from retinacli.recipe.schema import CocoDataset, ResizeConfig, ShapesDataset


@dataclass(frozen=True)
class ClassMatch:
    """How model classes map onto a dataset's categories.

    dataset_ids: the dataset category id of each model class index 0..K-1. names: the
    dataset's name of each. how: "exact", "by name" or "by count". note: a line for the user
    (empty for "exact").
    """

    dataset_ids: tuple[int, ...]
    names: tuple[str, ...]
    how: str
    note: str = ""


def load_test_dataset(config: CocoDataset | ShapesDataset) -> DetectionDataset:
    """The dataset a recipe's `data.test.dataset` (or `--dataset/--images`) describes.

    Every image is kept (with or without boxes). Image files are checked (headers only) before
    anything runs; boxes reaching outside their image are clipped in the records, which only
    feed the loader: the ground truth of the metrics is the json itself, as in detectron2.

    Raises:
        DatasetError: the json or an image file is missing or malformed, listing the problems.
    """
    from retinacli.build import build_dataset

    if isinstance(config, CocoDataset) and not Path(config.images).is_dir():
        raise DatasetError(
            f"{config.images}: image folder not found; pass the folder the json's file_name "
            "entries are relative to"
        )
    # the same loading as training's (shapes generated with the recipe's spec, files checked)
    dataset, _report = build_dataset(
        config, key="data.test.dataset", filter_empty=False, fix_bad_boxes=True
    )
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.annotations}: the json has no images; nothing to evaluate")
    return dataset


def eval_resize(resize: ResizeConfig) -> tuple[int, int]:
    """(short_size, max_size) of the test resize; evaluation needs exactly one short size.

    Raises:
        RecipeError: several short sizes, or sampling "range".
    """
    if len(resize.short_sizes) != 1 or resize.sampling != "choice":
        raise RecipeError(
            f"data.test.resize: evaluation needs one short size, got short_sizes "
            f"{resize.short_sizes} (sampling {resize.sampling}); set e.g. "
            f"--set data.test.resize.short_sizes=[{resize.short_sizes[0]}]"
        )
    return resize.short_sizes[0], resize.max_size


def is_placeholder(classes: ClassInfo) -> bool:
    """True for the names a model file gets when no dataset was known (`class_0`, ...)."""
    return classes == ClassInfo.default(len(classes.names))


def match_classes(classes: ClassInfo, dataset: DetectionDataset, *, model_path: Path) -> ClassMatch:
    """Map the model's classes onto `dataset`'s categories (see the module docstring).

    Raises:
        DatasetError: the dataset's categories do not fit the model's classes, naming both.
    """
    ids, names = dataset.contiguous_to_dataset_id, dataset.class_names
    k = len(classes.names)
    if is_placeholder(classes):
        if len(ids) == k:
            return ClassMatch(
                ids,
                names,
                "by count",
                f"{model_path.name} names no classes; using the dataset's {k} categories in "
                f"ascending id order: {_describe(ids, names)}",
            )
    elif tuple(classes.dataset_ids) == tuple(ids) and tuple(classes.names) == tuple(names):
        return ClassMatch(ids, names, "exact")
    elif len(ids) == k and sorted(classes.names) == sorted(names) and len(set(names)) == k:
        by_name = dict(zip(names, ids, strict=True))
        mapped = tuple(by_name[n] for n in classes.names)
        return ClassMatch(
            mapped,
            tuple(classes.names),
            "by name",
            "the dataset numbers the categories differently from the model file; matched by "
            f"name: {_describe(mapped, classes.names)}",
        )
    raise DatasetError(
        f"{dataset.annotations}: its categories ({_describe(ids, names)}) do not fit the classes "
        f"of {model_path} ({len(classes.names)}: {_describe(classes.dataset_ids, classes.names)}); "
        "evaluate on a dataset with the model's categories"
    )


def _describe(ids: tuple[int, ...] | list[int], names: tuple[str, ...] | list[str]) -> str:
    shown = [f"{i}={n}" for i, n in zip(ids, names, strict=True)]
    if len(shown) > 8:
        shown = shown[:8] + [f"... {len(shown) - 8} more"]
    return ", ".join(shown)
