"""Injected label errors: how many, only those changed, and how they are counted as found."""

from __future__ import annotations

import copy

from retinacli.audit.inject import Injected, found_injected, inject_errors


def _data(n_images: int = 20) -> dict:
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in range(1, n_images + 1)]
    annotations = []
    for img in images:
        for k in range(3):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": img["id"], "category_id": 1 + k, "bbox": [10.0 + 60 * k, 10.0, 40.0, 40.0], "area": 1600.0, "iscrowd": 0}
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (3, "c"))]}


def test_each_kind_changes_its_fraction_of_the_boxes_and_nothing_else() -> None:
    data = _data()
    original = copy.deepcopy(data)
    injected = inject_errors(data, fraction=0.1, seed=0)
    assert data == original  # the input is not modified
    assert injected.counts() == {"removed": 6, "added": 6, "swapped": 6, "shifted": 6, "duplicated": 6}
    before = {a["id"]: a for a in original["annotations"]}
    after = {a["id"]: a for a in injected.data["annotations"]}
    removed = {r["id"] for r in injected.removed}
    assert set(before) - set(after) == removed
    assert set(after) - set(before) == set(injected.added) | set(injected.duplicated)
    changed = {i for i in before.keys() & after.keys() if before[i] != after[i]}
    assert changed == set(injected.swapped) | set(injected.shifted)
    for i in injected.swapped:
        assert after[i]["category_id"] != before[i]["category_id"] and after[i]["bbox"] == before[i]["bbox"]
    for i in injected.shifted:
        (x0, y0, w0, h0), (x1, y1, w1, h1) = before[i]["bbox"], after[i]["bbox"]
        assert (w1, h1) == (w0, h0) and (abs(x1 - x0), abs(y1 - y0)) in {(20.0, 0.0), (0.0, 20.0), (20.0, 20.0)}
    for i in injected.added:  # on background: it overlaps no box of its image
        x, y, w, h = after[i]["bbox"]
        for other in injected.data["annotations"]:
            if other["image_id"] == after[i]["image_id"] and other["id"] != i:
                ox, oy, ow, oh = other["bbox"]
                assert ox >= x + w or ox + ow <= x or oy >= y + h or oy + oh <= y


def test_found_injected_counts_hits_in_the_top_k() -> None:
    injected = Injected({}, removed=[{"id": 1, "image_id": 5, "bbox": [0, 0, 10, 10], "category_id": 1}], swapped=[7, 8])
    issues = [
        {"kind": "wrong_class", "annotation_id": 9, "image_id": 1, "bbox": [0, 0, 1, 1]},
        {"kind": "wrong_class", "annotation_id": 7, "image_id": 1, "bbox": [0, 0, 1, 1]},
        {"kind": "wrong_class", "annotation_id": 8, "image_id": 1, "bbox": [0, 0, 1, 1]},
        {"kind": "missing", "annotation_id": None, "image_id": 5, "bbox": [1, 1, 10, 10]},
        {"kind": "missing", "annotation_id": None, "image_id": 5, "bbox": [0, 0, 10, 10]},  # the same box twice
    ]
    table = found_injected(issues, injected)
    assert table["wrong_class"] == {"injected": 2, "reported": 3, "precision_at_k": 0.5, "recall_at_k": 0.5, "recall": 1.0}
    assert table["missing"]["precision_at_k"] == 1.0 and table["missing"]["recall"] == 1.0
    assert table["spurious"] == {"injected": 0, "reported": 0, "precision_at_k": 0.0, "recall_at_k": 0.0, "recall": 0.0}


def test_a_dataset_of_one_class_gets_no_swapped_boxes() -> None:
    data = _data()
    data["categories"] = data["categories"][:1]
    for a in data["annotations"]:
        a["category_id"] = 1
    injected = inject_errors(data, fraction=0.1, seed=0)
    assert injected.counts()["swapped"] == 0 and injected.counts()["removed"] == 6
