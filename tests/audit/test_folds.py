"""K folds: every image held out by exactly one fold, sizes within one image, classes spread."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from retinacli.audit.folds import assign_folds, fold_jsons
from retinacli.data.formats.coco import DetectionDataset, ImageRecord


def _dataset(labels_per_image: list[list[int]]) -> DetectionDataset:
    records = tuple(
        ImageRecord(
            image_id=i + 1, file_name=f"/x/{i}.png", height=10, width=10,
            boxes=np.zeros((len(ls), 4), np.float32), labels=np.array(ls, np.int64),
            annotation_ids=np.arange(len(ls), dtype=np.int64),
        )
        for i, ls in enumerate(labels_per_image)
    )
    return DetectionDataset(Path("a.json"), Path("/x"), records, (1, 2, 3), ("a", "b", "c"))


def test_every_image_is_held_out_by_one_fold_and_folds_are_balanced() -> None:
    rng = np.random.default_rng(0)
    labels = [list(rng.integers(0, 3, size=rng.integers(0, 4))) for _ in range(50)]
    labels[7] = [2]  # class 2 appears in few images: it must still reach every fold
    dataset = _dataset([[c for c in ls if c != 2] for ls in labels[:40]] + labels[40:])
    fold_of = assign_folds(dataset, folds=4, seed=3)
    assert sorted(fold_of) == [r.image_id for r in dataset.records]
    sizes = Counter(fold_of.values())
    assert sorted(sizes) == [0, 1, 2, 3] and max(sizes.values()) - min(sizes.values()) <= 1
    for cls in range(3):
        with_cls = [r.image_id for r in dataset.records if cls in r.labels.tolist()]
        if len(with_cls) >= 4:
            assert {fold_of[i] for i in with_cls} == {0, 1, 2, 3}, cls
    assert assign_folds(dataset, folds=4, seed=3) == fold_of  # the same seed, the same folds


@pytest.mark.parametrize(("folds", "images"), [(1, 10), (21, 30), (4, 3)])
def test_impossible_folds_are_refused(folds: int, images: int) -> None:
    with pytest.raises(ValueError):
        assign_folds(_dataset([[0]] * images), folds=folds, seed=0)


def test_fold_jsons_split_images_and_their_annotations() -> None:
    data = {
        "info": {"x": 1},
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": i, "file_name": f"{i}.png"} for i in (1, 2, 3)],
        "annotations": [{"id": 10 + i, "image_id": i} for i in (1, 2, 3, 3)],
    }
    train, held = fold_jsons(data, {1: 0, 2: 1, 3: 0}, 0)
    assert [img["id"] for img in train["images"]] == [2]
    assert [a["id"] for a in train["annotations"]] == [12]
    assert [img["id"] for img in held["images"]] == [1, 3]
    assert [a["id"] for a in held["annotations"]] == [11, 13, 13]
    assert train["info"] == held["info"] == {"x": 1} and train["categories"] == data["categories"]
