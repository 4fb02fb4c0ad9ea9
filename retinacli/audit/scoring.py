"""Label issues of one image, from its labelled boxes and a model's detections on it.

Shape legend: G labelled (non-crowd) boxes, C crowd boxes, D detections; boxes are XYXY in
original-image pixels, labels contiguous class indices of the dataset.

Every labelled box gets a score for each label kind and every detection one for `missing`,
all in [0, 1], higher meaning more suspicious. With `s(d)` a detection's score, IoU its overlap
with the label, "well" meaning IoU >= `match_iou` and "at all" IoU >= `overlap_iou`:

- `s_same`: the best score of a same-class detection overlapping the label well (0 if none),
  `s_other`: the same for detections of any other class.
- `wrong_class` = s_other x (1 - s_same). Reported when s_other >= `score_thresh` and
  s_same < `score_thresh`: a confident detection of another class covers the box and its own
  class does not.
- `poor_box` = max over same-class detections with `score_thresh` <= s(d) that overlap the label
  at all but not well, cover no label well and overlap no label more, of s(d) x (1 - IoU),
  times (1 - s_same). Reported when such a detection exists
  and s_same < `score_thresh`: the model is sure of an object of that class there, but the
  label (or the detection) is drawn off it.
- `spurious` = 1 - the best score of a detection of any class overlapping the label at all.
  Reported when that best score is below `score_thresh`: the model sees nothing there.
- `duplicate` = the label's IoU with an earlier label (json order) of the same class. Reported
  when >= `duplicate_iou`.
- `missing` (per detection) = s(d) when the detection overlaps no labelled or crowd box of any
  class at all, else 0. Reported when >= `score_thresh`, one per object: of missing detections
  of any class overlapping each other well, the best one.

A label is reported under at most one of wrong_class, poor_box, spurious (in that order of
precedence; the three conditions mostly exclude each other anyway), and also as a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

LABEL_KINDS = ("wrong_class", "poor_box", "spurious", "duplicate")
KINDS = ("missing", *LABEL_KINDS)


@dataclass(frozen=True)
class AuditThresholds:
    """What counts as confident and as overlapping (see the module docstring).

    score_thresh: a detection at or above this score is confident. match_iou: IoU at which a
    detection covers a label well. overlap_iou: IoU at which boxes overlap at all.
    duplicate_iou: IoU at which two labels of one class are the same box twice.
    """

    score_thresh: float = 0.5
    match_iou: float = 0.5
    overlap_iou: float = 0.1
    duplicate_iou: float = 0.9

    def __post_init__(self) -> None:
        for name in ("score_thresh", "match_iou", "overlap_iou", "duplicate_iou"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} {value!r}: must be above 0 and at most 1")
        if self.overlap_iou >= self.match_iou:
            raise ValueError(
                f"overlap_iou {self.overlap_iou} must be below match_iou {self.match_iou}"
            )


@dataclass(frozen=True)
class ImageScores:
    """The scores of one image (see the module docstring).

    labels: (G, 4) wrong_class, poor_box, spurious, duplicate per labelled box (LABEL_KINDS
    order). label_kind: (G,) index into LABEL_KINDS of the kind reported for the box among
    wrong_class, poor_box, spurious, or -1 for none; duplicate_of: (G,) index of the earlier
    label a box duplicates (reported when `labels[:, 3] >= duplicate_iou`), -1 for none.
    label_detection: (G,) index of the detection behind the box's reported kind, -1 for none.
    missing: (D,) the missing score of each detection; missing_reported: (D,) bool, the
    detections reported as missing.
    """

    labels: np.ndarray
    label_kind: np.ndarray
    label_detection: np.ndarray
    duplicate_of: np.ndarray
    missing: np.ndarray
    missing_reported: np.ndarray


def score_image(
    *,
    label_boxes: np.ndarray,
    label_classes: np.ndarray,
    crowd_boxes: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_classes: np.ndarray,
    thresholds: AuditThresholds,
) -> ImageScores:
    """Score one image's labels (G) and detections (D); see the module docstring.

    Args:
        label_boxes: (G, 4) XYXY. label_classes: (G,) class indices. crowd_boxes: (C, 4)
            XYXY, which only stop detections on them from counting as missing.
        det_boxes: (D, 4) XYXY. det_scores: (D,) in [0, 1]. det_classes: (D,) class indices.
    """
    t = thresholds
    labels = torch.as_tensor(np.asarray(label_boxes, dtype=np.float32).reshape(-1, 4))
    crowd = torch.as_tensor(np.asarray(crowd_boxes, dtype=np.float32).reshape(-1, 4))
    dets = torch.as_tensor(np.asarray(det_boxes, dtype=np.float32).reshape(-1, 4))
    scores = torch.as_tensor(np.asarray(det_scores, dtype=np.float32).reshape(-1))
    label_cls = torch.as_tensor(np.asarray(label_classes, dtype=np.int64).reshape(-1))
    det_cls = torch.as_tensor(np.asarray(det_classes, dtype=np.int64).reshape(-1))
    g, d = labels.shape[0], dets.shape[0]

    iou = box_iou(labels, dets)  # (G, D)
    same = label_cls[:, None] == det_cls[None, :]  # (G, D)
    well = iou >= t.match_iou
    at_all = iou >= t.overlap_iou
    s = scores[None, :].expand(g, d)
    zero = torch.zeros_like(iou)

    s_same, _ = _row_max(torch.where(well & same, s, zero))
    s_other, other_at = _row_max(torch.where(well & ~same, s, zero))
    # a detection behind a poor box covers no label well and overlaps this label most
    free = ~well.any(dim=0, keepdim=True) & (iou >= _column_max(iou))  # (G, D)
    partial = at_all & ~well & same & free & (s >= t.score_thresh)
    poor_raw, poor_at = _row_max(torch.where(partial, s * (1.0 - iou), zero))
    best_any, any_at = _row_max(torch.where(at_all, s, zero))

    wrong_class = s_other * (1.0 - s_same)
    poor_box = poor_raw * (1.0 - s_same)
    spurious = 1.0 - best_any
    duplicate, duplicate_of = _duplicates(labels, label_cls)

    is_wrong = (s_other >= t.score_thresh) & (s_same < t.score_thresh)
    is_poor = ~is_wrong & partial.any(dim=1) & (s_same < t.score_thresh)
    is_spurious = ~is_wrong & ~is_poor & (best_any < t.score_thresh)
    kind = torch.full((g,), -1, dtype=torch.int64)
    kind[is_spurious] = LABEL_KINDS.index("spurious")
    kind[is_poor] = LABEL_KINDS.index("poor_box")
    kind[is_wrong] = LABEL_KINDS.index("wrong_class")
    detection = torch.full((g,), -1, dtype=torch.int64)
    detection[is_wrong] = other_at[is_wrong]
    detection[is_poor] = poor_at[is_poor]
    with_any = is_spurious & (best_any > 0)  # the best (unconfident) detection there, if any
    detection[with_any] = any_at[with_any]

    everything = torch.cat([labels, crowd], dim=0)
    touches = (box_iou(dets, everything) >= t.overlap_iou).any(dim=1) if everything.numel() else torch.zeros(d, dtype=torch.bool)
    missing = torch.where(touches, torch.zeros_like(scores), scores)
    candidates = torch.nonzero(missing >= t.score_thresh).flatten()
    reported = torch.zeros(d, dtype=torch.bool)
    if candidates.numel():
        # one per object: missing detections of any class that overlap well are one object
        keep = batched_nms(
            dets[candidates], scores[candidates], torch.zeros_like(candidates), t.match_iou
        )
        reported[candidates[keep]] = True

    return ImageScores(
        labels=torch.stack([wrong_class, poor_box, spurious, duplicate], dim=1).numpy(),
        label_kind=kind.numpy(),
        label_detection=detection.numpy(),
        duplicate_of=torch.where(duplicate >= t.duplicate_iou, duplicate_of, -1).numpy(),
        missing=missing.numpy(),
        missing_reported=reported.numpy(),
    )


def _row_max(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of (G, D): the max and its column; 0 and -1 for rows of a G x 0 matrix."""
    if values.shape[1] == 0:
        return values.new_zeros(values.shape[0]), torch.full((values.shape[0],), -1, dtype=torch.int64)
    return values.max(dim=1)


def _column_max(values: torch.Tensor) -> torch.Tensor:
    """(1, D) the max of each column of (G, D); zeros for G = 0."""
    if values.shape[0] == 0:
        return values.new_zeros(1, values.shape[1])
    return values.max(dim=0, keepdim=True).values


def _duplicates(labels: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G,) each label's highest IoU with an earlier label of its class, and that label's index
    (0 and -1 when there is none)."""
    g = labels.shape[0]
    iou = box_iou(labels, labels)  # (G, G)
    earlier = torch.ones(g, g, dtype=torch.bool).tril(diagonal=-1)
    same = classes[:, None] == classes[None, :]
    return _row_max(torch.where(earlier & same, iou, torch.zeros_like(iou)))
