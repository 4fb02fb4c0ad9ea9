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
            boxes=self.boxes.to(device), scores=self.scores.to(device), labels=self.labels.to(device)
        )
