"""Anchor-to-ground-truth matching by IoU, exactly as detectron2's Matcher, batched over images.

Shape legend: B images, G ground-truth boxes per image (padded to the batch maximum), R anchors.

Each anchor takes the GT box with which its IoU is highest (first one on exact ties) and is
labelled by where that IoU falls between the thresholds. With `allow_low_quality_matches`, for
every GT box all anchors whose IoU with it equals that box's best IoU (exact float equality, so
ties count) become FOREGROUND, keeping the GT of their own best match (RPN rule (i), Faster R-CNN
Sec. 3.1.2). detectron2 quirk kept on purpose: a GT box whose best IoU is 0 (a zero-area box)
turns every anchor with IoU 0 into FOREGROUND; the data pipeline must drop empty boxes, as
detectron2's does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Match labels (int8), detectron2's convention.
BACKGROUND = 0
IGNORE = -1
FOREGROUND = 1
_VALID_LABELS = (BACKGROUND, IGNORE, FOREGROUND)

# IoU given to padded GT rows: below any real IoU (>= 0), so it never wins a max.
_PADDED_GT_IOU = -1.0


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every box of `boxes1` (..., N, 4) with every box of `boxes2` (M, 4) -> (..., N, M).

    XYXY boxes, no ``+1``, IoU 0 where boxes do not intersect. The float32 operations are the
    ones of detectron2's pairwise_iou, so ties between anchors come out exactly the same.
    """
    boxes1 = boxes1.float()
    boxes2 = boxes2.float()
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])  # (..., N)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    b1 = boxes1[..., :, None, :]  # (..., N, 1, 4)
    width = (torch.min(b1[..., 2], boxes2[:, 2]) - torch.max(b1[..., 0], boxes2[:, 0])).clamp_(
        min=0
    )
    height = (torch.min(b1[..., 3], boxes2[:, 3]) - torch.max(b1[..., 1], boxes2[:, 1])).clamp_(
        min=0
    )
    inter = width * height  # (..., N, M)
    union = area1[..., :, None] + area2 - inter
    return torch.where(
        inter > 0, inter / union, torch.zeros((), dtype=inter.dtype, device=inter.device)
    )


class Matcher:
    """Labels each anchor FOREGROUND, IGNORE or BACKGROUND from its IoU with the GT boxes.

    Args (keyword-only):
        iou_thresholds: increasing IoU thresholds, e.g. [0.4, 0.5]; the first must be > 0.
        iou_labels: len(iou_thresholds) + 1 labels from {BACKGROUND, IGNORE, FOREGROUND}:
            iou_labels[0] for IoU < iou_thresholds[0], iou_labels[i] for
            iou_thresholds[i-1] <= IoU < iou_thresholds[i], and the last one for
            IoU >= iou_thresholds[-1]. RetinaNet: [BACKGROUND, IGNORE, FOREGROUND].
        allow_low_quality_matches: also make FOREGROUND each GT box's best anchors (ties included).
    """

    def __init__(
        self,
        *,
        iou_thresholds: Sequence[float],
        iou_labels: Sequence[int],
        allow_low_quality_matches: bool,
    ) -> None:
        thresholds = [float(t) for t in iou_thresholds]
        if not thresholds or thresholds[0] <= 0:
            raise ValueError(f"Matcher: iou_thresholds must be non-empty and > 0, got {thresholds}")
        if any(lo > hi for lo, hi in zip(thresholds[:-1], thresholds[1:], strict=True)):
            raise ValueError(f"Matcher: iou_thresholds must be increasing, got {thresholds}")
        if len(iou_labels) != len(thresholds) + 1:
            raise ValueError(
                f"Matcher: {len(thresholds)} iou_thresholds need {len(thresholds) + 1} iou_labels, "
                f"got {list(iou_labels)}"
            )
        if any(label not in _VALID_LABELS for label in iou_labels):
            raise ValueError(f"Matcher: iou_labels must be in {_VALID_LABELS}, got {list(iou_labels)}")
        self.iou_thresholds = thresholds
        self.iou_labels = [int(label) for label in iou_labels]
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, iou: Tensor, gt_valid: Tensor) -> tuple[Tensor, Tensor]:
        """Match from an IoU matrix.

        iou: (B, G, R) float IoU of every GT box with every anchor; rows of padded GT are ignored.
        gt_valid: (B, G) bool, False for padding rows.
        Returns matches (B, R) int64, the GT index each anchor is matched to (0 where the image
        has no GT), and match_labels (B, R) int8 in {BACKGROUND, IGNORE, FOREGROUND}.
        """
        if iou.dim() != 3 or gt_valid.shape != iou.shape[:2]:
            raise ValueError(
                f"Matcher: expected iou (B, G, R) and gt_valid (B, G), got {tuple(iou.shape)} "
                f"and {tuple(gt_valid.shape)}"
            )
        num_images, num_gt, num_anchors = iou.shape
        if num_gt == 0:
            matches = torch.zeros((num_images, num_anchors), dtype=torch.int64, device=iou.device)
            labels = torch.full_like(matches, self.iou_labels[0], dtype=torch.int8)
            return matches, labels
        iou = torch.where(
            gt_valid[:, :, None],
            iou,
            torch.full((), _PADDED_GT_IOU, dtype=iou.dtype, device=iou.device),
        )
        best_iou, matches = iou.max(dim=1)  # (B, R)
        # An image without any GT keeps matches 0, as detectron2's empty-matrix case.
        matches = torch.where(gt_valid.any(dim=1, keepdim=True), matches, 0)
        match_labels = torch.full_like(matches, FOREGROUND, dtype=torch.int8)
        bounds = [-math.inf, *self.iou_thresholds, math.inf]
        for label, low, high in zip(self.iou_labels, bounds[:-1], bounds[1:], strict=True):
            match_labels[(best_iou >= low) & (best_iou < high)] = label
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=2, keepdim=True).values  # (B, G, 1)
            is_best = (iou == best_per_gt) & gt_valid[:, :, None]  # (B, G, R)
            match_labels[is_best.any(dim=1)] = FOREGROUND
        return matches, match_labels

    def match_boxes(
        self,
        *,
        gt_boxes: Tensor,
        gt_valid: Tensor,
        anchors: Tensor,
        max_chunk_elements: int = 1 << 27,
    ) -> tuple[Tensor, Tensor]:
        """IoU-match padded GT boxes (B, G, 4) (validity (B, G) bool) to anchors (R, 4).

        Returns (matches (B, R) int64, match_labels (B, R) int8) as `__call__`. Images are
        processed in chunks so that one IoU matrix holds at most `max_chunk_elements` values.
        """
        num_images, num_gt = gt_valid.shape
        per_image = max(1, num_gt * anchors.shape[0])
        chunk = max(1, max_chunk_elements // per_image)
        if chunk >= num_images:
            return self(pairwise_iou(gt_boxes, anchors), gt_valid)
        parts = [
            self(pairwise_iou(boxes, anchors), valid)
            for boxes, valid in zip(gt_boxes.split(chunk), gt_valid.split(chunk), strict=True)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
