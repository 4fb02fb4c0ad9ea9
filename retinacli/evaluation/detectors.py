"""What evaluation and prediction run: one `ImageDetector` protocol that a model file
(`TorchDetector`) and an exported file (`retinacli.export.runtime.ExportedDetector`) both follow,
so that dataset inference, the images and the video code never ask which they hold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from retinacli.engine.detector import RetinaNet
from retinacli.engine.structures import Detections


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


class ImageDetector(Protocol):
    """A detector of resized images: a RetinaNet (`TorchDetector`) or an exported file
    (`ExportedDetector`)."""

    @property
    def score_thresh(self) -> float:
        """The score a detection must exceed to be kept."""
        ...

    def detect(self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        """Detections of resized (3, h, w) uint8 images (`resize_for_inference`,
        `to_chw_tensor`) in the pixels of their original (H, W), on the CPU."""
        ...


class TorchDetector:
    """A `RetinaNet` on its device, in eval mode, under `torch.inference_mode`, one batch at a
    time (padded together, as in evaluation)."""

    def __init__(self, model: RetinaNet) -> None:
        self.model = model.eval()
        self.device = model_device(model)

    @property
    def score_thresh(self) -> float:
        return self.model.score_thresh

    def detect(self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        with torch.inference_mode():
            found = self.model([image.to(self.device) for image in images], original_sizes=list(original_sizes))
        return [Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()) for d in found]
