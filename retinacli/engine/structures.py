"""Plain containers passed between the data pipeline, the detector and evaluation.

Boxes are XYXY in absolute pixels. Shape legend (see STYLE.md): G ground-truth boxes,
D detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Targets:
    """Ground truth of one image, in the pixels of the (resized) model input.

    boxes: (G, 4) float32 XYXY. labels: (G,) int64 contiguous class indices in [0, K).
    G may be 0: such an image is valid and all its anchors are background.
    """

    boxes: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> Targets:
        return Targets(boxes=self.boxes.to(device), labels=self.labels.to(device))


@dataclass
class Detections:
    """Detections of one image, in the pixels of the original image.

    boxes: (D, 4) float32 XYXY. scores: (D,) float32 in (0, 1), descending.
    labels: (D,) int64 contiguous class indices.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> Detections:
        return Detections(
            boxes=self.boxes.to(device),
            scores=self.scores.to(device),
            labels=self.labels.to(device),
        )


@dataclass
class PaddedTargets:
    """Ground truth of a batch, padded to the largest G so it can be matched in one go.

    boxes: (B, G_max, 4) float32 XYXY, zeros in padding rows. labels: (B, G_max) int64, 0 in
    padding rows. valid: (B, G_max) bool, False in padding rows.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor


def pad_targets(
    targets: list[Targets], *, device: torch.device | str | None = None
) -> PaddedTargets:
    """Stack per-image `Targets` into `PaddedTargets` (G_max = 0 when no image has a box)."""
    num_images = len(targets)
    num_gt = max((int(t.boxes.shape[0]) for t in targets), default=0)
    if device is None:
        device = targets[0].boxes.device if targets else "cpu"
    for i, t in enumerate(targets):
        g = int(t.boxes.shape[0])
        if t.boxes.shape != (g, 4) or t.labels.shape != (g,):
            raise ValueError(
                f"pad_targets: image {i} has boxes {tuple(t.boxes.shape)} and labels "
                f"{tuple(t.labels.shape)}; expected (G, 4) and (G,)"
            )
    boxes = torch.zeros((num_images, num_gt, 4), dtype=torch.float32, device=device)
    labels = torch.zeros((num_images, num_gt), dtype=torch.int64, device=device)
    valid = torch.zeros((num_images, num_gt), dtype=torch.bool, device=device)
    counts = torch.tensor([int(t.boxes.shape[0]) for t in targets], dtype=torch.int64)
    total = int(counts.sum())
    if total > 0:
        # One scatter for the whole batch instead of a copy per image.
        image_idx = torch.repeat_interleave(torch.arange(num_images), counts)  # (sum G,)
        first = torch.cumsum(counts, 0) - counts  # (B,)
        slot_idx = torch.arange(total) - first[image_idx]  # (sum G,)
        image_idx, slot_idx = image_idx.to(device), slot_idx.to(device)
        boxes[image_idx, slot_idx] = torch.cat([t.boxes for t in targets]).to(device, torch.float32)
        labels[image_idx, slot_idx] = torch.cat([t.labels for t in targets]).to(device, torch.int64)
        valid[image_idx, slot_idx] = True
    return PaddedTargets(boxes=boxes, labels=labels, valid=valid)
