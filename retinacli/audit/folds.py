"""K folds of a COCO dataset for cross-fitting: every image is held out by exactly one fold and
judged by the model trained on the other folds, so no image is judged by a model that saw its
labels.

Folds are split by image and class-stratified with the same greedy iterative stratification as
`retina data split` (`data.formats.split.assign_splits`): fold sizes differ by at most one
image, and every class with at least K images has images in every fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.formats.split import assign_splits

MAX_FOLDS = 20


def assign_folds(dataset: DetectionDataset, *, folds: int, seed: int) -> dict[int, int]:
    """image id -> the fold (0..folds-1) that holds it out.

    Raises:
        ValueError: fewer than 2 folds, more than MAX_FOLDS, or fewer images than folds.
    """
    if not 2 <= folds <= MAX_FOLDS:
        raise ValueError(f"folds {folds}: from 2 to {MAX_FOLDS}")
    if len(dataset.records) < folds:
        raise ValueError(f"{len(dataset.records)} images are too few for {folds} folds")
    names = [f"fold{k}" for k in range(folds)]
    base, extra = divmod(len(dataset.records), folds)
    sizes = {name: base + (1 if k < extra else 0) for k, name in enumerate(names)}
    image_classes = {r.image_id: frozenset(r.labels.tolist()) for r in dataset.records}
    assignment = assign_splits(image_classes, sizes=sizes, seed=seed)
    return {image_id: names.index(name) for image_id, name in assignment.items()}


def fold_jsons(data: Mapping[str, Any], fold_of: Mapping[int, int], fold: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the training json of `fold`: every image it does not hold out, the held-out json: the
    images it holds out), each with the source's categories and other top-level keys and the
    images and annotations in their original order, ids and file_names unchanged."""

    def subset(keep: Any) -> dict[str, Any]:
        out = {key: value for key, value in data.items() if key not in ("images", "annotations")}
        images = [img for img in data["images"] if keep(fold_of.get(img.get("id")))]
        ids = {img.get("id") for img in images}
        out["images"] = images
        out["annotations"] = [a for a in data["annotations"] if a.get("image_id") in ids]
        return out

    return subset(lambda f: f is not None and f != fold), subset(lambda f: f == fold)
