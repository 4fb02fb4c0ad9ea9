"""COCO AP of a detector on a dataset together with the seconds its inference took: what
`retina export --int8` compares between a float and an INT8 file, and what `retina benchmark
--dataset` reports per format."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import InputFormat
from retinacli.engine.structures import Detections
from retinacli.evaluation import coco_eval
from retinacli.evaluation.classes import ClassInfo, match_classes
from retinacli.evaluation.detectors import ImageDetector
from retinacli.evaluation.inference import infer_dataset


@dataclass(frozen=True)
class ApCheck:
    """COCO box AP (0-100; 0 when the detector found nothing) on `images` images, and the
    seconds spent in the detector (image reading and resizing not counted)."""

    ap: float
    images: int
    seconds: float


class _Timed:
    """An `ImageDetector` that adds up the seconds its detector's `detect` calls take."""

    def __init__(self, detector: ImageDetector) -> None:
        self.detector = detector
        self.seconds = 0.0

    @property
    def score_thresh(self) -> float:
        return self.detector.score_thresh

    def detect(self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        start = time.perf_counter()
        found = self.detector.detect(images, original_sizes)
        self.seconds += time.perf_counter() - start
        return found


def check_ap(
    detector: ImageDetector,
    dataset: DetectionDataset,
    *,
    classes: ClassInfo,
    short_size: int,
    max_size: int,
    input_format: InputFormat,
    source: Path | str,
) -> ApCheck:
    """Run `detector` over every image of `dataset` (one at a time, the test resize
    `short_size`/`max_size`, `input_format` channel order) and score it; `classes` are the
    detector's, matched onto the dataset's categories (`classes.match_classes`; `source` names
    the detector in its errors).

    Raises:
        DatasetError: the dataset's categories do not fit `classes`; an image cannot be read.
    """
    match = match_classes(classes, dataset, model_path=Path(source))
    timed = _Timed(detector)
    run = infer_dataset(timed, dataset, short_size=short_size, max_size=max_size, input_format=input_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)
        score = coco_eval.score_detections(run.images, dataset, class_dataset_ids=match.dataset_ids)
    ap = score.metrics["AP"]
    return ApCheck(ap=0.0 if ap is None else float(ap), images=len(run.images), seconds=timed.seconds)
