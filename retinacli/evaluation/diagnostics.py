"""What a detector gets wrong, read from pycocotools' own evaluation (never a second AP).

Everything starts from the `COCOeval` that produced the AP (evaluated and accumulated, area "all",
100 detections per image):

- **PR curves**: per class, `eval["precision"]` at IoU 0.5 and its mean over IoU 0.5:0.95, at
  pycocotools' 101 recall points. The mean of a curve over the recall points is the class's AP50
  and AP exactly as reported.
- **Thresholds**: per class, the score that maximises F1 = 2PR / (P + R) along the IoU-0.5 curve
  (`eval["scores"]` holds the score of each recall point), or one given threshold for all classes.
- **Matching at IoU 0.5**: pycocotools' own greedy, score-ordered, same-class matches
  (`evalImgs[...]["dtMatches"][0]`); detections matched to crowd or out-of-range ground truth are
  ignored, as in the AP. Above a threshold these are exactly the matches of the detections above
  it, since the matching runs in descending score order.
- **Confusion matrix** (detections above their class's threshold): a matched detection counts on
  the diagonal; an unmatched one that overlaps an unmatched ground-truth box of another class at
  IoU >= 0.5 counts as (that class, predicted class); any other unmatched detection is a false
  positive (background row); ground truth left unmatched is missed (background column). Every
  ground-truth box and every false positive is counted once: the matrix sums to #GT + #FP.
- **Errors** (the TIDE idea, Bolya et al. 2020), for every unmatched, non-ignored detection, the
  first that applies, by its IoU with the image's ground truth:
  `duplicate` (IoU >= 0.5 with a ground-truth box of its class that another detection matched),
  `class` (IoU >= 0.5 with another class's box), `localisation` (0.1 <= IoU < 0.5 with its class),
  `both` (0.1 <= IoU < 0.5 with another class), `background` (IoU < 0.1 with every box). Missed
  objects are ground truth that no detection of its class matched, by COCO size, and "touched"
  when a detection of any class overlaps it at IoU >= 0.1. Counts are over the detections above
  the thresholds (what the pictures show). The AP each error type costs is measured with
  pycocotools over all detections, at IoU 0.5 like the error types themselves (TIDE's
  choice too): each type is fixed alone (class errors relabelled to the class they overlap,
  localisation errors given that box, duplicate, both and background detections removed,
  missed objects removed from the ground truth) and AP50 recomputed; `ap50_gain` is the
  difference in percent points. (At stricter IoUs a "duplicate" can be the better-placed box,
  so over 0.5:0.95 removing it could lower the AP; at 0.5 it never can.)
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ErrorType = Literal["class", "localisation", "both", "duplicate", "background"]
ERROR_TYPES: tuple[ErrorType, ...] = ("class", "localisation", "both", "duplicate", "background")
SIZE_NAMES = ("small", "medium", "large")
FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1
_SMALL, _MEDIUM = 32**2, 96**2


@dataclass(frozen=True)
class DiagnosticsOptions:
    """What to compute and draw.

    threshold: the diagnostics' score threshold, one for every class (confusion matrix,
        precision/recall/F1, error counts, pictures; `retina eval --diagnostics-thresh`); None:
        each class's F1-optimal threshold. Not the model's `model.test.score_thresh`, which
        decides what is detected at all.
    worst_images: how many of the images with the most errors to draw (0: none).
    ap_gain: also measure the AP50 each error type costs (one more COCOeval at IoU 0.5 per type).
    """

    threshold: float | None = None
    worst_images: int = 12
    ap_gain: bool = True

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"DiagnosticsOptions: threshold must be in [0, 1], got {self.threshold}")
        if self.worst_images < 0:
            raise ValueError(f"worst_images must be >= 0, got {self.worst_images}")


@dataclass
class DetectionOutcome:
    """One evaluated detection: its COCO result id, image, class index, score, box (XYWH) and
    what it is: "tp", an error type, or "ignored"; `gt_class` / `gt_box` name the ground truth it
    overlaps for class and localisation errors (used by the AP oracles)."""

    result_id: int
    image_id: int
    class_index: int
    score: float
    box: list[float]
    outcome: str
    gt_class: int | None = None
    gt_box: list[float] | None = None


@dataclass
class Diagnostics:
    """Everything `diagnose` finds, as plain data (`to_json`)."""

    class_names: list[str]
    recall: list[float]
    pr_curves: dict[str, dict[str, Any]]
    thresholds: dict[str, float | None]
    per_class: dict[str, dict[str, Any]]
    confusion: list[list[int]]
    errors: dict[str, Any]
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """Each row divided by its sum (a ground-truth class's boxes, or the false positives)."""
        counts = np.asarray(self.confusion, dtype=np.float64)
        sums = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0).tolist()

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": self.class_names,
            "thresholds": self.thresholds,
            "per_class": self.per_class,
            "pr_curves": {"recall": self.recall, "classes": self.pr_curves},
            "confusion_matrix": {
                "labels": [*self.class_names, "background"],
                "rows": "ground truth (last: false positives)",
                "columns": "prediction (last: missed)",
                "counts": self.confusion,
                "normalized": self.confusion_normalized,
            },
            "errors": self.errors,
        }


def diagnose(
    evaluator: Any,
    *,
    class_names: Sequence[str],
    threshold: float | None = None,
    measure_ap_gain: bool = True,
) -> Diagnostics:
    """Read the diagnostics from an evaluated and accumulated pycocotools `COCOeval`.

    class_names: the name of each category of `evaluator.params.catIds`, in that order.
    threshold: one score threshold for every class; None picks each class's F1-optimal one.
    measure_ap_gain: also recompute AP50 with each error type fixed (one COCOeval per type).
    """
    params = evaluator.params
    cat_ids = list(params.catIds)
    recall = [float(r) for r in params.recThrs]
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    scores = evaluator.eval["scores"]
    pr_curves, thresholds = {}, {}
    for k, name in enumerate(class_names):
        at50 = precision[0, :, k, 0, -1]
        all_t = precision[:, :, k, 0, -1]
        valid = all_t > -1
        mean_t = np.where(valid.any(0), np.where(valid, all_t, 0).sum(0) / np.maximum(valid.sum(0), 1), -1)
        pr_curves[name] = {
            "iou50": at50.tolist(),
            "iou50_95": mean_t.tolist(),
            "AP50": float(at50[at50 > -1].mean() * 100) if (at50 > -1).any() else None,
            "AP": float(all_t[valid].mean() * 100) if valid.any() else None,
        }
        thresholds[name] = threshold if threshold is not None else _f1_threshold(
            at50, np.asarray(recall), scores[0, :, k, 0, -1]
        )
    images, gt_status = _classify(evaluator, cat_ids)
    kept = {image.image_id: _kept_rows(image, thresholds, class_names) for image in images}
    confusion, per_image = _confusion(images, kept, len(cat_ids))
    per_class = _per_class(images, kept, class_names, thresholds)
    errors = _error_table(images, kept)
    if measure_ap_gain:
        outcomes = [det for image in images for det in image.dets]
        errors["ap50_gain"] = _ap_gain(evaluator, outcomes, gt_status)
    return Diagnostics(
        class_names=list(class_names),
        recall=recall,
        pr_curves=pr_curves,
        thresholds=thresholds,
        per_class=per_class,
        confusion=confusion,
        errors=errors,
        images=per_image,
    )


# ----------------------------------------------------------------------------- thresholds


def _f1_threshold(precision: np.ndarray, recall: np.ndarray, scores: np.ndarray) -> float | None:
    """The score of the recall point with the best F1 (None: no detection helps: F1 is 0)."""
    p = np.where(precision > -1, precision, 0.0)
    f1 = np.divide(2 * p * recall, p + recall, out=np.zeros_like(p), where=(p + recall) > 0)
    best = int(np.argmax(f1))
    return float(scores[best]) if f1[best] > 0 else None


def _above(outcome: DetectionOutcome, thresholds: Mapping[str, float | None], names: Sequence[str]) -> bool:
    threshold = thresholds[names[outcome.class_index]]
    return threshold is not None and outcome.score >= threshold


# ----------------------------------------------------------------------------- matching


@dataclass
class _GroundTruth:
    """One non-ignored ground-truth box: its class index, box (XYWH), area, image and the
    detection of its class that matched it at IoU 0.5 (its result id; None: missed)."""

    ann_id: int
    image_id: int
    class_index: int
    box: list[float]
    area: float
    matched_by: int | None


@dataclass
class _Image:
    """One image's non-ignored ground truth, its evaluated detections (descending score) and
    their IoUs `ious` (D, G)."""

    image_id: int
    gts: list[_GroundTruth]
    dets: list[DetectionOutcome]
    ious: np.ndarray


def _classify(evaluator: Any, cat_ids: Sequence[int]) -> tuple[list[_Image], dict[int, _GroundTruth]]:
    """Every image with its detections' outcomes, and every non-ignored ground-truth box."""
    from pycocotools import mask as mask_utils

    params = evaluator.params
    num_images = len(params.imgIds)
    num_areas = len(params.areaRng)
    class_of = {cat: k for k, cat in enumerate(cat_ids)}
    gt_status: dict[int, _GroundTruth] = {}
    matched: set[int] = set()  # detections matched at IoU 0.5 (same class, not ignored)
    detections: dict[int, list[tuple[int, bool]]] = {}  # image -> [(result id, ignored)]
    for k in range(len(cat_ids)):
        for i in range(num_images):
            entry = evaluator.evalImgs[k * num_areas * num_images + i]  # area "all" is index 0
            if entry is None:
                continue
            image_id = int(entry["image_id"])  # pycocotools keeps numpy integers
            dt_matches, dt_ignore = entry["dtMatches"][0], entry["dtIgnore"][0]
            for d, det_id in enumerate(entry["dtIds"]):
                detections.setdefault(image_id, []).append((int(det_id), bool(dt_ignore[d])))
                if dt_matches[d] > 0 and not dt_ignore[d]:
                    matched.add(int(det_id))
            for g, gt_id in enumerate(entry["gtIds"]):
                if entry["gtIgnore"][g]:
                    continue
                ann = evaluator.cocoGt.anns[gt_id]
                match = int(entry["gtMatches"][0][g])
                gt_status[gt_id] = _GroundTruth(
                    ann_id=int(gt_id),
                    image_id=image_id,
                    class_index=class_of[ann["category_id"]],
                    box=[float(v) for v in ann["bbox"]],
                    area=float(ann.get("area", ann["bbox"][2] * ann["bbox"][3])),
                    matched_by=match if match > 0 else None,
                )
    gts_by_image: dict[int, list[_GroundTruth]] = {}
    for gt in gt_status.values():
        gts_by_image.setdefault(gt.image_id, []).append(gt)
    images = []
    for image_id in sorted(set(gts_by_image) | set(detections)):
        gts = gts_by_image.get(image_id, [])
        dets = []
        for det_id, ignored in detections.get(image_id, []):
            det = evaluator.cocoDt.anns[det_id]
            dets.append(
                DetectionOutcome(
                    result_id=det_id,
                    image_id=image_id,
                    class_index=class_of[det["category_id"]],
                    score=float(det["score"]),
                    box=[float(v) for v in det["bbox"]],
                    outcome="ignored" if ignored else "tp" if det_id in matched else "",
                )
            )
        dets.sort(key=lambda o: -o.score)
        if dets and gts:
            ious = np.asarray(
                mask_utils.iou([d.box for d in dets], [g.box for g in gts], [0] * len(gts)), dtype=np.float64
            ).reshape(len(dets), len(gts))
        else:
            ious = np.zeros((len(dets), len(gts)))
        image = _Image(image_id, gts, dets, ious)
        _name_errors(image)
        images.append(image)
    return images, gt_status


def _name_errors(image: _Image) -> None:
    """Give every unmatched, non-ignored detection the first error type that applies (module
    docstring), with the ground truth the AP oracles need."""
    rows = [d for d, det in enumerate(image.dets) if det.outcome == ""]
    if not rows:
        return
    gt_classes = np.array([g.class_index for g in image.gts], dtype=np.int64)  # (G,)
    gt_matched = np.array([g.matched_by is not None for g in image.gts], dtype=bool)  # (G,)
    det_classes = np.array([image.dets[d].class_index for d in rows], dtype=np.int64)  # (D',)
    ious = image.ious[rows]  # (D', G)
    same = det_classes[:, None] == gt_classes[None, :]  # (D', G)

    def best(mask: np.ndarray, low: float, high: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        candidates = mask & (ious >= low) & (ious < high)
        scored = np.where(candidates, ious, -1.0)
        return candidates.any(axis=1), scored.argmax(axis=1) if scored.size else np.zeros(len(rows), int)

    duplicate, _ = best(same & gt_matched[None, :], FOREGROUND_IOU)
    wrong_class, class_gt = best(~same, FOREGROUND_IOU)
    localisation, loc_gt = best(same, BACKGROUND_IOU, FOREGROUND_IOU)
    both, _ = best(~same, BACKGROUND_IOU, FOREGROUND_IOU)
    for n, d in enumerate(rows):
        det = image.dets[d]
        if duplicate[n]:
            det.outcome = "duplicate"
        elif wrong_class[n]:
            det.outcome, det.gt_class = "class", image.gts[class_gt[n]].class_index
        elif localisation[n]:
            det.outcome, det.gt_box = "localisation", image.gts[loc_gt[n]].box
        elif both[n]:
            det.outcome = "both"
        else:
            det.outcome = "background"


# ----------------------------------------------------------------------------- at the threshold


def _kept_rows(image: _Image, thresholds: Mapping[str, float | None], names: Sequence[str]) -> list[int]:
    """The detections above their class's threshold, not ignored (row indices, by score)."""
    return [
        d
        for d, det in enumerate(image.dets)
        if det.outcome != "ignored" and _above(det, thresholds, names)
    ]


def _confusion(
    images: Sequence[_Image], kept: Mapping[int, list[int]], num_classes: int
) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """The (K + 1) x (K + 1) counts (module docstring) and, per image, what its pictures show."""
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    entries = []
    for image in images:
        rows = kept[image.image_id]
        kept_ids = {image.dets[d].result_id for d in rows}
        matched = {g for g, gt in enumerate(image.gts) if gt.matched_by in kept_ids}
        used = set(matched)
        drawn = []
        for d in rows:
            det = image.dets[d]
            if det.outcome == "tp":
                counts[det.class_index, det.class_index] += 1
                drawn.append({**_det_json(det), "error": None})
                continue
            free = [
                g
                for g, gt in enumerate(image.gts)
                if g not in used and gt.class_index != det.class_index and image.ious[d, g] >= FOREGROUND_IOU
            ]
            if free:
                hit = max(free, key=lambda g: image.ious[d, g])
                used.add(hit)
                counts[image.gts[hit].class_index, det.class_index] += 1
            else:
                counts[background, det.class_index] += 1
            drawn.append({**_det_json(det), "error": det.outcome})
        missed = []
        for g, gt in enumerate(image.gts):
            if g not in used:
                counts[gt.class_index, background] += 1
            if g not in matched:
                missed.append({"box": gt.box, "class_index": gt.class_index, "size": _size(gt.area)})
        entries.append(
            {
                "image_id": image.image_id,
                "detections": drawn,
                "ground_truth": [{"box": g.box, "class_index": g.class_index} for g in image.gts],
                "missed": missed,
                "num_errors": sum(1 for d in drawn if d["error"]) + len(missed),
            }
        )
    entries.sort(key=lambda item: (-item["num_errors"], item["image_id"]))
    return counts.tolist(), entries


def _det_json(det: DetectionOutcome) -> dict[str, Any]:
    return {"box": det.box, "class_index": det.class_index, "score": det.score}


def _size(area: float) -> str:
    return "small" if area < _SMALL else "medium" if area < _MEDIUM else "large"


def _per_class(
    images: Sequence[_Image],
    kept: Mapping[int, list[int]],
    names: Sequence[str],
    thresholds: Mapping[str, float | None],
) -> dict[str, dict[str, Any]]:
    """Precision, recall and F1 at each class's threshold, with the counts behind them."""
    tp = np.zeros(len(names), dtype=np.int64)
    fp = np.zeros(len(names), dtype=np.int64)
    num_gt = np.zeros(len(names), dtype=np.int64)
    for image in images:
        for d in kept[image.image_id]:
            det = image.dets[d]
            (tp if det.outcome == "tp" else fp)[det.class_index] += 1
        for gt in image.gts:
            num_gt[gt.class_index] += 1
    out = {}
    for k, name in enumerate(names):
        precision = int(tp[k]) / int(tp[k] + fp[k]) if tp[k] + fp[k] else None
        recall = int(tp[k]) / int(num_gt[k]) if num_gt[k] else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        out[name] = {
            "threshold": thresholds[name],
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "true_positives": int(tp[k]),
            "false_positives": int(fp[k]),
            "ground_truth": int(num_gt[k]),
        }
    return out


def _error_table(images: Sequence[_Image], kept: Mapping[int, list[int]]) -> dict[str, Any]:
    """Counts of each false-positive type, and the missed objects by size and whether touched."""
    false_positives = dict.fromkeys(ERROR_TYPES, 0)
    missed = {size: {"touched": 0, "untouched": 0} for size in SIZE_NAMES}
    for image in images:
        rows = kept[image.image_id]
        for d in rows:
            if image.dets[d].outcome in false_positives:
                false_positives[image.dets[d].outcome] += 1
        kept_ids = {image.dets[d].result_id for d in rows}
        touch = image.ious[rows].max(axis=0) if rows else np.zeros(len(image.gts))  # (G,)
        for g, gt in enumerate(image.gts):
            if gt.matched_by in kept_ids:
                continue
            missed[_size(gt.area)]["touched" if touch[g] >= BACKGROUND_IOU else "untouched"] += 1
    return {"false_positives": false_positives, "missed": missed}


# ----------------------------------------------------------------------------- AP oracles


def _ap_gain(
    evaluator: Any, outcomes: Sequence[DetectionOutcome], gt_status: Mapping[int, _GroundTruth]
) -> dict[str, float | None]:
    """AP50 (percent points) gained by fixing each error type alone (module docstring)."""
    gt = evaluator.cocoGt
    base_results = [_result(evaluator, o) for o in outcomes]
    base = _ap50(gt, base_results)
    cat_ids = list(evaluator.params.catIds)
    gains: dict[str, float | None] = {}
    for kind in ERROR_TYPES:
        fixed = []
        for outcome, result in zip(outcomes, base_results, strict=True):
            if outcome.outcome != kind:
                fixed.append(result)
            elif kind == "class":
                fixed.append({**result, "category_id": cat_ids[outcome.gt_class]})
            elif kind == "localisation":
                fixed.append({**result, "bbox": list(outcome.gt_box)})
            # duplicate, both, background: removed
        gains[kind] = _difference(_ap50(gt, fixed), base)
    unmatched = {g.ann_id for g in gt_status.values() if g.matched_by is None}
    gains["missed"] = _difference(_ap50(_without(gt, unmatched), base_results), base)
    return gains


def _ap50(gt: Any, results: Sequence[Mapping[str, Any]]) -> float | None:
    """COCO AP at IoU 0.5 (percent; area all, 100 detections) of `results`: the AP50 of
    `coco_box_metrics`, from a COCOeval restricted to that one IoU threshold. 0 for no results."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0 if gt.getAnnIds(iscrowd=False) else None
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(list(results)))
        run = COCOeval(gt, dt, "bbox")
        run.params.imgIds = sorted(gt.getImgIds())
        run.params.iouThrs = np.array([FOREGROUND_IOU])
        run.evaluate()
        run.accumulate()
    precision = run.eval["precision"][0, :, :, 0, -1]  # (R, K)
    valid = precision > -1
    return float(precision[valid].mean() * 100) if valid.any() else None


def _result(evaluator: Any, outcome: DetectionOutcome) -> dict[str, Any]:
    det = evaluator.cocoDt.anns[outcome.result_id]
    return {"image_id": det["image_id"], "category_id": det["category_id"], "bbox": list(det["bbox"]), "score": det["score"]}


def _difference(fixed: float | None, base: float | None) -> float | None:
    return None if fixed is None or base is None else fixed - base


def _without(gt: Any, ann_ids: set[int]) -> Any:
    """A copy of the COCO ground truth without the annotations `ann_ids`."""
    from pycocotools.coco import COCO

    trimmed = COCO()
    data = copy.deepcopy(gt.dataset)
    data["annotations"] = [a for a in data["annotations"] if a["id"] not in ann_ids]
    trimmed.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        trimmed.createIndex()
    return trimmed
