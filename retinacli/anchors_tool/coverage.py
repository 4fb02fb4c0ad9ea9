"""Anchor coverage: for every training box, the best IoU with any anchor of its image.

Shape legend: N boxes, L levels, A anchors per location.

Each box is taken as the model sees it at test size: its image resized with the recipe's test
resize (detectron2's ResizeShortestEdge rule), the box mapped, clipped and, if it became empty,
dropped (as the data pipeline does). The anchors are those of that image's padded input size.
A box is
- "positive" when its best IoU reaches the matcher's foreground threshold (iou_thresholds[-1]):
  at least one anchor is trained on it through the ordinary rule;
- "low_quality" when its best IoU is above 0 but below that threshold: only the low-quality
  rule (allow_low_quality_matches) gives it its best anchors, if the recipe enables it;
- "none" when no anchor overlaps it at all (IoU 0).

Why no dense box x anchor IoU matrix: with the anchor shape fixed, IoU never grows as the anchor
centre moves away from the box centre along x or along y (the overlap on each axis is
non-increasing in the centre distance, and IoU = inter / (a + b - inter) grows with inter). So on
a level's regular grid, the best position for a box is one of the two grid centres around its
centre on each axis, clamped to the feature map. Evaluating those 2 x 2 positions for every cell
anchor of every level gives the best IoU over all R anchors of the image, with the same float32
operations as `engine.matcher.pairwise_iou`, in O(N * L * A) instead of O(N * R). Where several
positions tie mathematically (a box inside an anchor along one axis), the float32 areas of the
shifted anchors can round differently, so the dense maximum may be one unit in the last place
higher (about 1e-7); the tests check the two against each other to that precision.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from retinacli.anchors_tool.layout import AnchorSpec, feature_hw, padded_hw
from retinacli.data.augment.resize_flip import clip_and_filter_boxes, resized_hw, transform_boxes
from retinacli.data.checks import MEDIUM_MAX_AREA, SMALL_MAX_AREA, SizeBucket
from retinacli.data.formats.coco import DetectionDataset

Verdict = Literal["positive", "low_quality", "none"]
VERDICTS: tuple[Verdict, ...] = ("positive", "low_quality", "none")
SIZE_BUCKETS: tuple[SizeBucket, ...] = ("small", "medium", "large")

# Boxes per chunk of the candidate IoUs: each box has L * 4 * A candidate anchors (180 for
# detectron2's 5 levels x 9 anchors), so a chunk's largest tensor holds about 1.5M floats.
_BOXES_PER_CHUNK = 2048


@dataclass(frozen=True)
class GroundTruth:
    """The training boxes after the test resize, N of them, and the images they belong to (M).

    boxes: (N, 4) float32 XYXY in resized-image pixels. original_boxes: (N, 4) float32 XYXY in
    original pixels. labels: (N,) int64 contiguous class indices. image_index: (N,) int64 into
    the per-image arrays. image_ids: (M,) int64. file_names: M paths. resized_hw: (M, 2) int64.
    class_names: K names. num_dropped: boxes that became empty after the resize (left out).
    """

    boxes: np.ndarray
    original_boxes: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    image_ids: np.ndarray
    file_names: tuple[str, ...]
    resized_hw: np.ndarray
    class_names: tuple[str, ...]
    num_dropped: int = 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def original_areas(self) -> np.ndarray:
        """(N,) box areas in original pixels (what COCO's small/medium/large use)."""
        b = self.original_boxes.astype(np.float64)
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    @property
    def size_buckets(self) -> np.ndarray:
        """(N,) 0 small (< 32^2), 1 medium (< 96^2), 2 large, by original area."""
        areas = self.original_areas
        return (areas >= SMALL_MAX_AREA).astype(np.int64) + (areas >= MEDIUM_MAX_AREA)


def gather_boxes(dataset: DetectionDataset, *, short_size: int, max_size: int) -> GroundTruth:
    """Every non-crowd box of `dataset` after ResizeShortestEdge(short_size, max_size)."""
    boxes, originals, labels, index = [], [], [], []
    image_ids, file_names, sizes = [], [], []
    dropped = 0
    for record in dataset.records:
        to_hw = resized_hw(
            height=record.height, width=record.width, short_size=short_size, max_size=max_size
        )
        mapped = transform_boxes(
            record.boxes,
            from_hw=(record.height, record.width),
            to_hw=to_hw,
            hflip=False,
            vflip=False,
        )
        # The positions go through the filter as "labels", so we learn which boxes it kept.
        kept_boxes, kept = clip_and_filter_boxes(
            mapped, np.arange(len(record.boxes)), height=to_hw[0], width=to_hw[1]
        )
        dropped += len(record.boxes) - len(kept)
        boxes.append(kept_boxes)
        originals.append(np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4)[kept])
        labels.append(np.asarray(record.labels, dtype=np.int64)[kept])
        index.append(np.full(len(kept), len(image_ids), dtype=np.int64))
        image_ids.append(record.image_id)
        file_names.append(record.file_name)
        sizes.append(to_hw)
    return GroundTruth(
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        original_boxes=np.concatenate(originals) if originals else np.zeros((0, 4), np.float32),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        image_index=np.concatenate(index) if index else np.zeros(0, np.int64),
        image_ids=np.asarray(image_ids, dtype=np.int64),
        file_names=tuple(file_names),
        resized_hw=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        class_names=tuple(dataset.class_names),
        num_dropped=dropped,
    )


@dataclass(frozen=True)
class BestAnchors:
    """Per box (N): the best IoU with any anchor of its image, that anchor and its level index."""

    iou: Tensor  # (N,) float32
    anchor: Tensor  # (N, 4) float32 XYXY, resized-image pixels
    level: Tensor  # (N,) int64 index into the spec's levels


def best_anchor_ious(spec: AnchorSpec, gt: GroundTruth) -> BestAnchors:
    """The best IoU of every box with the anchors of its image's padded size (module docstring)."""
    with _one_thread():
        return _best_anchor_ious(spec, gt)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # Every tensor here is small (a chunk holds ~1.5M floats): with intra-op threads, their
    # start-up and synchronisation cost more than the arithmetic (measured 3 ms on one thread vs
    # 230 ms on two for 300 boxes on a busy 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _best_anchor_ious(spec: AnchorSpec, gt: GroundTruth) -> BestAnchors:
    boxes = torch.from_numpy(np.ascontiguousarray(gt.boxes, dtype=np.float32)).reshape(-1, 4)
    feat_h, feat_w = _feature_sizes(gt, spec)  # (N, L) each
    generator = spec.generator()
    ious, anchors, levels = [], [], []
    for start in range(0, len(gt), _BOXES_PER_CHUNK):
        stop = start + _BOXES_PER_CHUNK
        iou, anchor, level = _best_in_chunk(
            boxes[start:stop],
            feat_h[start:stop],
            feat_w[start:stop],
            cells=generator.cell_anchors,
            strides=spec.strides,
            offset=spec.offset,
        )
        ious.append(iou)
        anchors.append(anchor)
        levels.append(level)
    if not ious:
        return BestAnchors(torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    return BestAnchors(torch.cat(ious), torch.cat(anchors), torch.cat(levels))


def _feature_sizes(gt: GroundTruth, spec: AnchorSpec) -> tuple[Tensor, Tensor]:
    """Feature-map height and width of every level for every box's image: (N, L) each.

    Computed once per distinct padded input size, as the model would build its anchors.
    """
    levels = len(spec.strides)
    if len(gt) == 0:
        empty = torch.zeros((0, levels), dtype=torch.int64)
        return empty, empty
    padded_sizes = {padded_hw((int(h), int(w)), spec.size_divisibility) for h, w in gt.resized_hw}
    order = sorted(padded_sizes)
    row = {size: i for i, size in enumerate(order)}
    table = np.array(
        [[feature_hw(size, stride) for stride in spec.strides] for size in order], dtype=np.int64
    )  # (P, L, 2) for P distinct padded sizes
    per_image = np.array(
        [row[padded_hw((int(h), int(w)), spec.size_divisibility)] for h, w in gt.resized_hw]
    )  # (M,)
    hw = table[per_image[gt.image_index]]  # (N, L, 2)
    return torch.from_numpy(hw[:, :, 0].copy()), torch.from_numpy(hw[:, :, 1].copy())


def _best_in_chunk(
    boxes: Tensor,
    feat_h: Tensor,
    feat_w: Tensor,
    *,
    cells: list[Tensor],
    strides: tuple[int, ...],
    offset: float,
) -> tuple[Tensor, Tensor, Tensor]:
    num = boxes.shape[0]
    candidates, candidate_level = [], []
    for level, (cell, stride) in enumerate(zip(cells, strides, strict=True)):
        xs = _nearest_centres((boxes[:, 0] + boxes[:, 2]) / 2, feat_w[:, level], stride, offset)
        ys = _nearest_centres((boxes[:, 1] + boxes[:, 3]) / 2, feat_h[:, level], stride, offset)
        # The 2 x 2 candidate positions: (N, 4) x and y each, then shifts (N, 4, 4) as x, y, x, y.
        sx = xs[:, None, :].expand(-1, 2, -1).reshape(num, 4)
        sy = ys[:, :, None].expand(-1, -1, 2).reshape(num, 4)
        shifts = torch.stack((sx, sy, sx, sy), dim=2)
        # The generator's float32 sum, shift + cell anchor: (N, 4 * A_l, 4).
        candidates.append((shifts[:, :, None, :] + cell[None, None, :, :]).reshape(num, -1, 4))
        candidate_level.append(torch.full((4 * cell.shape[0],), level, dtype=torch.int64))
    anchors = torch.cat(candidates, dim=1)  # (N, C = sum over levels of 4 * A_l, 4)
    best, where = _iou_per_box(boxes, anchors).max(dim=1)  # (N,)
    return best, anchors[torch.arange(num), where], torch.cat(candidate_level)[where]


def _nearest_centres(centre: Tensor, size: Tensor, stride: int, offset: float) -> Tensor:
    """(N, 2) float32 anchor-centre coordinates of the grid cells on either side of `centre`."""
    below = torch.floor(centre.double() / stride - offset).to(torch.int64)
    index = torch.stack((below, below + 1), dim=1).clamp(min=0)
    index = torch.minimum(index, (size - 1)[:, None])
    # Exactly the generator's shifts: arange(offset * stride, ..., step=stride) in float32.
    return (index.double() * stride + offset * stride).float()


def _iou_per_box(boxes: Tensor, anchors: Tensor) -> Tensor:
    """IoU of box n (N, 4) with each of its anchors (N, C, 4) -> (N, C), pairwise_iou's ops."""
    area1 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    area2 = (anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1])  # (N, C)
    b1 = boxes[:, None, :]
    width = (
        torch.min(b1[..., 2], anchors[..., 2]) - torch.max(b1[..., 0], anchors[..., 0])
    ).clamp_(min=0)
    height = (
        torch.min(b1[..., 3], anchors[..., 3]) - torch.max(b1[..., 1], anchors[..., 1])
    ).clamp_(min=0)
    inter = width * height
    union = area1[:, None] + area2 - inter
    return torch.where(inter > 0, inter / union, torch.zeros((), dtype=inter.dtype))


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Counts:
    """How many boxes fall in each verdict."""

    positive: int = 0
    low_quality: int = 0
    none: int = 0

    @property
    def total(self) -> int:
        return self.positive + self.low_quality + self.none

    def share(self, verdict: Verdict) -> float:
        """Fraction of the boxes with this verdict (0.0 when there are no boxes)."""
        return getattr(self, verdict) / self.total if self.total else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "boxes": self.total,
            **{v: getattr(self, v) for v in VERDICTS},
            **{f"{v}_share": self.share(v) for v in VERDICTS},
        }


@dataclass(frozen=True)
class WorstBox:
    """A box with one of the lowest best IoUs."""

    image_id: int
    file_name: str
    class_name: str
    box: tuple[float, float, float, float]  # original pixels
    resized_box: tuple[float, float, float, float]  # test-size pixels
    best_iou: float
    best_anchor: tuple[float, float, float, float]  # test-size pixels
    level: str


@dataclass(frozen=True)
class CoverageReport:
    """`retina anchors RECIPE --coverage`: verdicts overall, by COCO size and by class."""

    threshold: float
    allow_low_quality_matches: bool
    num_images: int
    num_dropped: int
    overall: Counts
    by_size: dict[str, Counts]
    by_class: dict[str, Counts]
    worst: tuple[WorstBox, ...]
    best_ious: np.ndarray  # (N,) float32
    mean_best_iou: float

    @property
    def coverage(self) -> float:
        """Share of boxes with a positive anchor: the number `--suggest` raises."""
        return self.overall.share("positive")

    def to_json(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "allow_low_quality_matches": self.allow_low_quality_matches,
            "images": self.num_images,
            "dropped_boxes": self.num_dropped,
            "mean_best_iou": None if math.isnan(self.mean_best_iou) else self.mean_best_iou,
            "overall": self.overall.to_json(),
            "by_size": {k: v.to_json() for k, v in self.by_size.items()},
            "by_class": {k: v.to_json() for k, v in self.by_class.items()},
            "worst": [
                {
                    "image_id": w.image_id,
                    "file_name": w.file_name,
                    "class": w.class_name,
                    "box": list(w.box),
                    "resized_box": list(w.resized_box),
                    "best_iou": w.best_iou,
                    "best_anchor": list(w.best_anchor),
                    "level": w.level,
                }
                for w in self.worst
            ],
        }


def verdicts(best_iou: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) 0 positive (IoU >= threshold), 1 low_quality (0 < IoU < threshold), 2 none (IoU 0)."""
    best_iou = np.asarray(best_iou)
    return np.where(best_iou >= threshold, 0, np.where(best_iou > 0, 1, 2))


def _counts(codes: np.ndarray) -> Counts:
    tally = np.bincount(codes, minlength=3)
    return Counts(positive=int(tally[0]), low_quality=int(tally[1]), none=int(tally[2]))


def coverage_report(
    spec: AnchorSpec,
    gt: GroundTruth,
    *,
    threshold: float,
    allow_low_quality_matches: bool = True,
    num_worst: int = 10,
) -> CoverageReport:
    """Best IoU of every box, summarised (see the module docstring for the verdicts)."""
    best = best_anchor_ious(spec, gt)
    ious = best.iou.numpy()
    codes = verdicts(ious, threshold)
    buckets = gt.size_buckets
    by_size = {name: _counts(codes[buckets == i]) for i, name in enumerate(SIZE_BUCKETS)}
    by_class = {name: _counts(codes[gt.labels == k]) for k, name in enumerate(gt.class_names)}
    order = np.argsort(ious, kind="stable")[: max(num_worst, 0)]
    worst = tuple(
        WorstBox(
            image_id=int(gt.image_ids[gt.image_index[i]]),
            file_name=gt.file_names[gt.image_index[i]],
            class_name=_class_name(gt, int(gt.labels[i])),
            box=tuple(float(v) for v in gt.original_boxes[i]),
            resized_box=tuple(float(v) for v in gt.boxes[i]),
            best_iou=float(ious[i]),
            best_anchor=tuple(float(v) for v in best.anchor[i].tolist()),
            level=spec.level_names[int(best.level[i])],
        )
        for i in order.tolist()
    )
    return CoverageReport(
        threshold=float(threshold),
        allow_low_quality_matches=bool(allow_low_quality_matches),
        num_images=len(gt.file_names),
        num_dropped=gt.num_dropped,
        overall=_counts(codes),
        by_size=by_size,
        by_class=by_class,
        worst=worst,
        best_ious=ious,
        mean_best_iou=float(ious.mean()) if len(ious) else math.nan,
    )


def _class_name(gt: GroundTruth, label: int) -> str:
    return gt.class_names[label] if 0 <= label < len(gt.class_names) else str(label)
