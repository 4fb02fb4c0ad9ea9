"""`Result`: the detections of one image, as `Detector.predict` returns them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from retinacli.data.images import read_image
from retinacli.engine.structures import Detections
from retinacli.errors import UsageError
from retinacli.predict.images import detection_dicts, draw_detections

if TYPE_CHECKING:
    import supervision


@dataclass(frozen=True)
class Result:
    """The detections of one image, best first, in the pixels of the original image (after its
    EXIF orientation).

    Attributes:
        boxes: (N, 4) float32 XYXY pixels.
        scores: (N,) float32 in (0, 1], descending.
        labels: (N,) int64 class indices into `class_names`.
        class_names: every class of the model, in its order.
        category_ids: the dataset category id of each class (what COCO results use).
        image_size: (height, width) of the image in pixels.
        path: the image file, or None for an image given as pixels.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    image_size: tuple[int, int]
    path: Path | None = None
    _rgb: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        detections: Detections,
        *,
        class_names: tuple[str, ...],
        category_ids: tuple[int, ...],
        image_size: tuple[int, int],
        path: Path | None = None,
        rgb: np.ndarray | None = None,
    ) -> Result:
        """The result of an engine `Detections` (tensors on the CPU)."""
        return cls(
            boxes=detections.boxes.to(torch.float32).numpy().reshape(-1, 4),
            scores=detections.scores.to(torch.float32).numpy(),
            labels=detections.labels.to(torch.int64).numpy(),
            class_names=class_names,
            category_ids=category_ids,
            image_size=image_size,
            path=path,
            _rgb=rgb,
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[i] for i in self.labels.tolist()]

    def _detections(self) -> Detections:
        return Detections(torch.from_numpy(self.boxes), torch.from_numpy(self.scores), torch.from_numpy(self.labels))

    def to_dict(self) -> dict[str, Any]:
        """`retina predict`'s predictions.json entry of this image, without its picture:
        {"file", "width", "height", "detections": [{"box", "score", "class_id", "category_id",
        "class_name"}, ...]} ("file" is None for pixels)."""
        height, width = self.image_size
        return {
            "file": str(self.path) if self.path is not None else None,
            "width": width,
            "height": height,
            "detections": detection_dicts(
                self._detections(), class_names=self.class_names, class_dataset_ids=self.category_ids
            ),
        }

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO results of this image: [{"image_id", "category_id", "bbox" (x, y, w, h), "score"}]."""
        xywh = np.concatenate([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]], axis=1)  # (N, 4)
        return [
            {"image_id": image_id, "category_id": self.category_ids[label], "bbox": box, "score": score}
            for box, score, label in zip(xywh.tolist(), self.scores.tolist(), self.labels.tolist(), strict=True)
        ]

    def plot(self) -> Image.Image:
        """The image (RGB) with each box, class name and score drawn, as `retina predict` draws them."""
        if self._rgb is not None:
            rgb = self._rgb
        elif self.path is not None:
            rgb = read_image(self.path, input_format="RGB")
        else:
            raise UsageError("Result.plot: this result keeps no pixels and no file to read them from")
        return draw_detections(np.asarray(rgb), self.to_dict()["detections"])

    def to_supervision(self) -> supervision.Detections:
        """These detections as a `supervision.Detections` (xyxy, confidence, class_id, and
        data["class_name"]); needs the `supervision` package (`pip install 'retinacli[supervision]'`)."""
        try:
            import supervision
        except ImportError:
            raise UsageError(
                "Result.to_supervision needs the supervision package: pip install 'retinacli[supervision]'"
            ) from None
        return supervision.Detections(
            xyxy=self.boxes.astype(np.float32),
            confidence=self.scores.astype(np.float32),
            class_id=self.labels.astype(int),
            data={"class_name": np.array(self.names, dtype=str)},
        )
