"""cleanlab's object-detection label-quality scores of the same labels and detections, beside
ours (`pip install 'retinacli[audit]'`).

cleanlab (`cleanlab.object_detection.rank`) scores every box in [0, 1], lower meaning more
likely a mistake, by three subtypes whose semantics match three of our kinds: *overlooked*
(per confident detection: an object nobody labelled, our `missing`), *swap* (per label: another
class fits better, our `wrong_class`) and *badloc* (per label: the box is badly located, our
`poor_box`; a label no detection overlaps, our `spurious`, scores low there too), and pools them
into a per-image label quality. It has no duplicate subtype (its `overlapping_label_check`
only penalises boxes labelled with two classes).

`cleanlab_scores` returns them as issue dicts in our issues.json shape, `score` being
1 - cleanlab's score so that higher is more suspicious, so the two rankings can be compared on
the same injected errors (`inject.found_injected`); `--cleanlab` writes them to cleanlab.json.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from retinacli.audit.issues import ImagePredictions, _xywh, relative_name
from retinacli.data.formats.coco import DetectionDataset
from retinacli.errors import UsageError

SUBTYPES = {"overlooked": "missing", "swap": "wrong_class", "badloc": "poor_box"}
"""cleanlab's subtype -> the kind of ours it stands for."""


def import_cleanlab() -> Any:
    """`cleanlab.object_detection.rank`, or a UsageError saying how to install it."""
    try:
        from cleanlab.object_detection import rank
    except ImportError:
        raise UsageError(
            "--cleanlab needs the cleanlab package: pip install 'retinacli[audit]' (or pip install cleanlab)"
        ) from None
    return rank


def cleanlab_inputs(
    dataset: DetectionDataset, predictions: Mapping[int, ImagePredictions]
) -> tuple[list[dict[str, np.ndarray]], list[list[np.ndarray]], list[np.ndarray]]:
    """(labels, predictions) in cleanlab's format, image by image in dataset order, and per
    image the index into our predictions of each box in cleanlab's order (class by class)."""
    labels, preds, orders = [], [], []
    k = dataset.num_classes
    for record in dataset.records:
        labels.append({"bboxes": np.asarray(record.boxes, np.float32).reshape(-1, 4), "labels": np.asarray(record.labels, np.int64)})
        pred = predictions.get(record.image_id, ImagePredictions.empty())
        per_class, order = [], []
        for cls in range(k):
            index = np.flatnonzero(pred.classes == cls)
            per_class.append(np.concatenate([pred.boxes[index], pred.scores[index, None]], axis=1).astype(np.float32).reshape(-1, 5))
            order.extend(index.tolist())
        preds.append(per_class)
        orders.append(np.array(order, dtype=np.int64))
    return labels, preds, orders


def cleanlab_scores(
    dataset: DetectionDataset, predictions: Mapping[int, ImagePredictions], *, confident: float | None = None
) -> dict[str, Any]:
    """cleanlab's per-image label quality (ascending: worst first) and its per-box subtype
    scores as issue dicts (see the module docstring), each kind sorted most suspicious first.

    confident: the score from which cleanlab counts a detection as confident in its overlooked
    and swap scores (its `high_probability_threshold`); None keeps cleanlab's default (0.95,
    chosen for softmax detectors: a RetinaNet's sigmoid scores seldom reach it, so the audit
    passes its own --score-thresh). The per-image quality always uses cleanlab's defaults."""
    rank = import_cleanlab()
    labels, preds, orders = cleanlab_inputs(dataset, predictions)
    names = dataset.class_names
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quality = rank.get_label_quality_scores(labels, preds, verbose=False)
        overlooked = rank.compute_overlooked_box_scores(labels=labels, predictions=preds, high_probability_threshold=confident)
        swap = rank.compute_swap_box_scores(labels=labels, predictions=preds, high_probability_threshold=confident)
        badloc = rank.compute_badloc_box_scores(labels=labels, predictions=preds)
    issues: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SUBTYPES.values()}
    for n, record in enumerate(dataset.records):
        name = relative_name(record, dataset.images)
        pred = predictions.get(record.image_id, ImagePredictions.empty())
        for subtype, per_label in (("swap", swap[n]), ("badloc", badloc[n])):
            for g, value in enumerate(np.asarray(per_label, dtype=np.float64).tolist()):
                if np.isfinite(value):
                    issues[SUBTYPES[subtype]].append({
                        "image_id": record.image_id, "file_name": name, "kind": SUBTYPES[subtype],
                        "bbox": [round(v, 2) for v in _xywh(record.boxes[g])], "category": names[int(record.labels[g])],
                        "score": round(1.0 - value, 6), "annotation_id": int(record.annotation_ids[g]), "detection": None,
                    })
        for j, value in enumerate(np.asarray(overlooked[n], dtype=np.float64).tolist()):
            if np.isfinite(value):
                d = int(orders[n][j])
                issues["missing"].append({
                    "image_id": record.image_id, "file_name": name, "kind": "missing",
                    "bbox": [round(v, 2) for v in _xywh(pred.boxes[d])], "category": names[int(pred.classes[d])],
                    "score": round(1.0 - value, 6), "annotation_id": None, "detection": None,
                })
    for found in issues.values():
        found.sort(key=lambda i: -i["score"])
    images = sorted(
        ({"image_id": r.image_id, "file_name": relative_name(r, dataset.images), "quality": round(float(q), 6)}
         for r, q in zip(dataset.records, quality, strict=True)),
        key=lambda i: i["quality"],
    )
    return {"image_quality": images, "boxes": issues}
