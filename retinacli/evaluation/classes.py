"""Model classes and dataset categories: the class names a model file carries, and how they map
onto the categories of the dataset it is evaluated on.

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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.data.formats.coco import DetectionDataset
from retinacli.errors import DatasetError


@dataclass(frozen=True)
class ClassInfo:
    """Class names and the dataset category id of each contiguous class index (0..K-1)."""

    names: tuple[str, ...]
    dataset_ids: tuple[int, ...]

    @classmethod
    def default(cls, num_classes: int) -> ClassInfo:
        """Names `class_0`.. and ids 1..K: what a model with no known dataset gets."""
        return cls(tuple(f"class_{i}" for i in range(num_classes)), tuple(range(1, num_classes + 1)))

    @classmethod
    def of_dataset(cls, dataset: DetectionDataset) -> ClassInfo:
        """The classes of a model trained on `dataset`: its categories in ascending id order."""
        return cls(tuple(dataset.class_names), tuple(dataset.contiguous_to_dataset_id))

    def to_dict(self) -> dict[str, list[Any]]:
        return {"names": list(self.names), "dataset_ids": list(self.dataset_ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassInfo:
        return cls(tuple(str(n) for n in data["names"]), tuple(int(i) for i in data["dataset_ids"]))


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
