"""Known label errors put into a COCO json, to measure how well an audit finds them.

`inject_errors` changes a fraction of the boxes of each kind, each box at most once, and says
which: `removed` (the box deleted: the audit should call the object `missing`), `added` (a new
box on background, overlapping no box: `spurious`), `swapped` (its class changed to another:
`wrong_class`), `shifted` (moved by half its width and/or height: `poor_box`) and `duplicated`
(a copy moved by 2% of its size, as a second click draws it: `duplicate`). Images, categories and every other box are left
as they are.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INJECTED_KINDS = {
    "removed": "missing",
    "added": "spurious",
    "swapped": "wrong_class",
    "shifted": "poor_box",
    "duplicated": "duplicate",
}
"""What each injected change should be found as."""


@dataclass
class Injected:
    """The changed json and what was changed, per change: the annotation ids it concerns
    (`removed`: the deleted boxes' ids with their image ids and boxes, for matching the
    `missing` issues found; the others: the ids of the changed or new annotations)."""

    data: dict[str, Any]
    removed: list[dict[str, Any]] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    swapped: list[int] = field(default_factory=list)
    shifted: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in INJECTED_KINDS}


def inject_errors(
    data: Mapping[str, Any],
    *,
    fraction: float,
    seed: int,
    kinds: Sequence[str] = tuple(INJECTED_KINDS),
) -> Injected:
    """Change round(fraction x boxes) boxes for each kind of `kinds` (see the module docstring).

    Only non-crowd boxes are changed; a box is changed at most once; nothing is swapped in a
    dataset of one class; an added box lies inside
    its image, overlaps no box, and takes the size and class of a random existing box.
    """
    rng = random.Random(seed)
    out = copy.deepcopy(dict(data))
    annotations = out["annotations"]
    candidates = [a for a in annotations if not a.get("iscrowd", 0)]
    count = round(fraction * len(candidates))
    rng.shuffle(candidates)
    chosen = iter(candidates)
    images = {img["id"]: img for img in out["images"]}
    category_ids = sorted(c["id"] for c in out["categories"])
    next_id = max((a["id"] for a in annotations), default=0) + 1
    result = Injected(out)
    for kind in kinds:
        if kind == "swapped" and len(category_ids) < 2:
            continue  # one class: no other class to swap to
        for _ in range(count):
            ann = next(chosen, None)
            if ann is None:
                break
            if kind == "removed":
                annotations.remove(ann)
                result.removed.append({"id": ann["id"], "image_id": ann["image_id"], "bbox": list(ann["bbox"]), "category_id": ann["category_id"]})
            elif kind == "swapped":
                ann["category_id"] = rng.choice([c for c in category_ids if c != ann["category_id"]])
                result.swapped.append(ann["id"])
            elif kind == "shifted":
                ann["bbox"] = _shifted(ann["bbox"], images[ann["image_id"]], rng)
                result.shifted.append(ann["id"])
            elif kind == "duplicated":
                x, y, w, h = ann["bbox"]
                jitter = 0.02 * max(w, h)
                annotations.append({**ann, "id": next_id, "bbox": [x + jitter, y + jitter, w, h]})
                result.duplicated.append(next_id)
                next_id += 1
            elif kind == "added":
                placed = _background_box(ann, images, annotations, rng)
                if placed is None:
                    continue
                image_id, box = placed
                annotations.append(
                    {**ann, "id": next_id, "image_id": image_id, "bbox": box, "area": box[2] * box[3]}
                )
                result.added.append(next_id)
                next_id += 1
            else:
                raise ValueError(f"unknown kind {kind!r}; one of {', '.join(INJECTED_KINDS)}")
    return result


def _shifted(bbox: Sequence[float], image: Mapping[str, Any], rng: random.Random) -> list[float]:
    """The box moved by half its width, half its height, or both, in a direction that keeps
    most of it inside the image."""
    x, y, w, h = (float(v) for v in bbox)
    axes = rng.choice(["x", "y", "xy"])
    dx = w / 2 if "x" in axes else 0.0
    dy = h / 2 if "y" in axes else 0.0
    if x + w + dx > image["width"]:
        dx = -dx
    if y + h + dy > image["height"]:
        dy = -dy
    return [max(0.0, x + dx), max(0.0, y + dy), w, h]


def _background_box(
    like: Mapping[str, Any], images: Mapping[int, Mapping[str, Any]], annotations: Sequence[Mapping[str, Any]], rng: random.Random
) -> tuple[int, list[float]] | None:
    """(image id, box): a box of `like`'s size at a random place of a random image, overlapping
    no box there; None when 50 tries find none."""
    w, h = float(like["bbox"][2]), float(like["bbox"][3])
    ids = sorted(images)
    for _ in range(50):
        image = images[rng.choice(ids)]
        if w >= image["width"] or h >= image["height"]:
            continue
        x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
        others = np.array(
            [a["bbox"] for a in annotations if a["image_id"] == image["id"]], dtype=np.float64
        ).reshape(-1, 4)
        apart = (
            (others[:, 0] >= x + w)
            | (others[:, 0] + others[:, 2] <= x)
            | (others[:, 1] >= y + h)
            | (others[:, 1] + others[:, 3] <= y)
        )
        if apart.all():
            return int(image["id"]), [x, y, w, h]
    return None


def found_injected(issues: Sequence[Mapping[str, Any]], injected: Injected) -> dict[str, dict[str, float]]:
    """How well ranked issues (issues.json entries, most suspicious first) find the injected
    errors, per kind: with k the number injected, `precision_at_k` is the share of the top k
    issues of that kind that are injected errors (of all of them when fewer were reported),
    `recall_at_k` the share of the injected errors among them, `recall` the share found at all.

    An issue finds a change when it names the changed annotation (`annotation_id`), or, for a
    removed box, when it is a `missing` detection in its image overlapping it at IoU >= 0.5."""
    targets = {
        "added": set(injected.added),
        "swapped": set(injected.swapped),
        "shifted": set(injected.shifted),
        "duplicated": set(injected.duplicated),
    }
    table: dict[str, dict[str, float]] = {}
    for change, kind in INJECTED_KINDS.items():
        of_kind = [i for i in issues if i["kind"] == kind]
        count = len(getattr(injected, change))
        if change == "removed":
            hit = _removed_hits(of_kind, injected.removed)
        else:
            hit = [i.get("annotation_id") in targets[change] for i in of_kind]
        top = hit[:count]
        table[kind] = {
            "injected": count,
            "reported": len(of_kind),
            "precision_at_k": sum(top) / len(top) if top else 0.0,
            "recall_at_k": sum(top) / count if count else 0.0,
            "recall": sum(hit) / count if count else 0.0,
        }
    return table


def _removed_hits(issues: Sequence[Mapping[str, Any]], removed: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Per `missing` issue: does it cover a removed box not covered by an earlier issue?"""
    left = [dict(r) for r in removed]
    hits = []
    for issue in issues:
        match = next((r for r in left if r["image_id"] == issue["image_id"] and _iou(r["bbox"], issue["bbox"]) >= 0.5), None)
        if match is not None:
            left.remove(match)
        hits.append(match is not None)
    return hits


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
