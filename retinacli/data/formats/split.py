"""Split a COCO dataset by image into train/val(/test), spreading every class over the splits.

`assign_splits` is a greedy iterative stratification (after Sechidis et al., 2011): take the
class with the fewest images not yet assigned, and give each of those images, in a seeded
random order, to a split that still has room:

1. a split that has no image of that class yet, first train, then val, then test (so a class
   with 2 images is in train and val, one with 3 in all three splits);
2. otherwise the split that still wants the most images of that class (its fraction of the
   class's images minus what it has), ties to the split with more room left, then in the
   order train, val, test.

Then the next rarest class, until every image is assigned. Images without boxes take part as
one more class ("no boxes"), so they are spread like the others. Split sizes are exact:
round(fraction x images) for val and test, the rest for train. The same seed gives the same
split.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.data.formats.coco import DetectionDataset, ImageRecord, parse_coco
from retinacli.data.problems import summarize_errors
from retinacli.errors import DatasetError

_NO_BOXES = -1  # the class of images without a (non-crowd) box


@dataclass(frozen=True)
class SplitCounts:
    """What one split holds, counted as `retina data check` counts: boxes_per_class are the
    non-crowd boxes per class name, in category id order."""

    name: str
    annotations: Path
    num_images: int
    num_images_without_boxes: int
    num_boxes: int
    num_crowd_boxes: int
    boxes_per_class: dict[str, int]


def split_sizes(num_images: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Images per split: round(fraction x num_images) (halves up) for every split but the
    first, which gets the rest. `fractions` maps split names to fractions, the first one's is
    ignored."""
    names = list(fractions)
    sizes = {name: math.floor(fractions[name] * num_images + 0.5) for name in names[1:]}
    return {names[0]: num_images - sum(sizes.values()), **sizes}


def assign_splits(
    image_classes: Mapping[int, frozenset[int]],
    *,
    sizes: Mapping[str, int],
    seed: int,
) -> dict[int, str]:
    """Give every image a split (see the module docstring).

    Args:
        image_classes: image id -> the classes it has boxes of (empty: no box).
        sizes: split name -> how many images it gets, in priority order (train first); they
            must add up to the number of images.
        seed: the random order images are taken in, within each class.

    Returns:
        image id -> split name.
    """
    if sum(sizes.values()) != len(image_classes) or any(n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes {dict(sizes)} do not add up to {len(image_classes)} images")
    order = sorted(image_classes)
    random.Random(seed).shuffle(order)
    labels = {i: image_classes[i] or frozenset({_NO_BOXES}) for i in order}
    members: dict[int, list[int]] = {}
    for image_id in order:
        for label in sorted(labels[image_id]):
            members.setdefault(label, []).append(image_id)
    total = sum(sizes.values())
    fractions = {s: (n / total if total else 0.0) for s, n in sizes.items()}
    wanted = {s: {c: fractions[s] * len(ids) for c, ids in members.items()} for s in sizes}
    have: dict[str, Counter[int]] = {s: Counter() for s in sizes}
    room = dict(sizes)
    assignment: dict[int, str] = {}
    done: set[int] = set()
    left = {c: len(ids) for c, ids in members.items()}  # images of each class not yet assigned
    split_rank = {s: n for n, s in enumerate(sizes)}
    for _ in range(len(members)):
        rarest = min((c for c in members if c not in done), key=lambda c: (left[c], c))
        done.add(rarest)
        for image_id in members[rarest]:
            if image_id in assignment:
                continue
            open_splits = [s for s in sizes if room[s] > 0]
            lacking = [s for s in open_splits if have[s][rarest] == 0]
            if lacking:
                chosen = lacking[0]
            else:
                chosen = max(
                    open_splits, key=lambda s: (wanted[s][rarest], room[s], -split_rank[s])
                )
            assignment[image_id] = chosen
            room[chosen] -= 1
            for label in labels[image_id]:
                left[label] -= 1
                have[chosen][label] += 1
                wanted[chosen][label] -= 1
    return assignment


def split_coco(
    data: dict[str, Any],
    *,
    annotations: Path,
    fractions: Mapping[str, float],
    seed: int,
) -> tuple[dict[str, dict[str, Any]], DetectionDataset, dict[int, str]]:
    """Split a loaded COCO json (`coco.read_coco_json`) by image.

    Args:
        annotations: the json's path, for messages.
        fractions: split name -> fraction of the images, train first (its fraction is the
            rest); see `split_sizes`.

    Returns:
        (split name -> its json: the same categories and other top-level keys, the images in
        their original order with their file_names and ids, their annotations; the parsed
        dataset; image id -> split name).

    Raises:
        DatasetError: the json has structural problems (as `retina data check` reports them), or
            too few images to give every split at least one.
    """
    # Splitting reads no image and writes the file_names on unchanged, relative to whatever
    # image folder the json is used with: where they are read, they are checked.
    dataset, problems = parse_coco(data, annotations=annotations, images=annotations.parent, contain_paths=False)
    if problems:
        raise DatasetError(
            summarize_errors(problems)
            + "\nfix the json first (`retina data check` lists every problem)"
        )
    sizes = split_sizes(len(dataset.records), fractions)
    empty = [name for name, n in sizes.items() if n < 1]
    if empty:
        raise DatasetError(
            f"{annotations}: {len(dataset.records)} images are too few to split into "
            f"{', '.join(f'{n} {name}' for name, n in sizes.items())}: {', '.join(empty)} would "
            "get no image; use larger fractions or more images"
        )
    image_classes = {r.image_id: frozenset(r.labels.tolist()) for r in dataset.records}
    assignment = assign_splits(image_classes, sizes=sizes, seed=seed)
    outputs = {}
    for name in sizes:
        kept = {image_id for image_id, split in assignment.items() if split == name}
        out = {key: value for key, value in data.items() if key not in ("images", "annotations")}
        out["images"] = [img for img in data["images"] if img.get("id") in kept]
        out["annotations"] = [a for a in data["annotations"] if a.get("image_id") in kept]
        outputs[name] = out
    return outputs, dataset, assignment


def split_counts(
    dataset: DetectionDataset, assignment: Mapping[int, str], *, paths: Mapping[str, Path]
) -> list[SplitCounts]:
    """The counts of each split in `paths` (split name -> the json written for it)."""
    by_split: dict[str, list[ImageRecord]] = {name: [] for name in paths}
    for record in dataset.records:
        by_split[assignment[record.image_id]].append(record)
    return [
        _counts(name, paths[name], records, dataset.class_names)
        for name, records in by_split.items()
    ]


def _counts(
    name: str, path: Path, records: Sequence[ImageRecord], class_names: Sequence[str]
) -> SplitCounts:
    per_class: Counter[int] = Counter()
    for record in records:
        per_class.update(record.labels.tolist())
    return SplitCounts(
        name=name,
        annotations=path,
        num_images=len(records),
        num_images_without_boxes=sum(1 for r in records if len(r.boxes) == 0),
        num_boxes=sum(len(r.boxes) for r in records),
        num_crowd_boxes=sum(len(r.crowd_boxes) for r in records),
        boxes_per_class={class_name: per_class[i] for i, class_name in enumerate(class_names)},
    )
