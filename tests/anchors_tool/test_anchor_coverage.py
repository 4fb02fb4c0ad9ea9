"""Anchor coverage: known shares on hand-made boxes, and the exact best IoU against the dense matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from retinacli.anchors_tool.coverage import (
    GroundTruth,
    best_anchor_ious,
    coverage_report,
    gather_boxes,
)
from retinacli.anchors_tool.layout import AnchorSpec, level_anchors, padded_hw
from retinacli.build import build_anchor_spec
from retinacli.data.formats.coco import DetectionDataset, ImageRecord
from retinacli.engine.matcher import pairwise_iou
from retinacli.recipe import load_recipe


def _record(image_id: int, boxes, labels, *, height: int = 256, width: int = 256) -> ImageRecord:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return ImageRecord(
        image_id=image_id,
        file_name=f"/data/img{image_id}.png",
        height=height,
        width=width,
        boxes=boxes,
        labels=np.asarray(labels, dtype=np.int64),
        annotation_ids=np.arange(len(boxes), dtype=np.int64),
    )


def _dataset(records, classes=("a", "b")) -> DetectionDataset:
    return DetectionDataset(
        annotations=Path("/data/train.json"),
        images=Path("/data"),
        records=tuple(records),
        contiguous_to_dataset_id=tuple(range(1, len(classes) + 1)),
        class_names=tuple(classes),
    )


# One level of stride 128 with a single 4x4 anchor: on a 256x256 input (2x2 positions) the
# anchors are the 4x4 squares centred on (0, 0), (128, 0), (0, 128) and (128, 128).
SPARSE = AnchorSpec(
    level_names=("p7",),
    strides=(128,),
    sizes=((4.0,),),
    aspect_ratios=((1.0,),),
    offset=0.0,
    size_divisibility=32,
)


def test_known_shares_on_hand_made_boxes() -> None:
    boxes = [
        [126, 126, 130, 130],  # the anchor at (128, 128) itself: IoU 1 -> positive
        [127, 126, 131, 130],  # overlap 3x4 = 12, union 16 + 16 - 12 = 20: IoU 0.6 -> positive
        [0, 0, 2, 2],  # with (-2, -2, 2, 2): overlap 4, union 4 + 16 - 4 = 16: 0.25 -> low quality
        [127, 127, 131, 131],  # overlap 3x3 = 9, union 32 - 9 = 23: 9/23 -> low quality
        [40, 40, 50, 50],  # overlaps no anchor: IoU 0 -> none
        [0, 0, 200, 200],  # large (40000 px): holds the whole (126, 126, 130, 130): 16 / 40000
    ]
    labels = [0, 0, 1, 1, 1, 0]
    # Test resize short 256 / max 256 keeps the 256x256 image as it is.
    gt = gather_boxes(_dataset([_record(1, boxes, labels)]), short_size=256, max_size=256)
    report = coverage_report(SPARSE, gt, threshold=0.5, num_worst=3)
    expected = torch.tensor([1.0, 0.6, 0.25, 9 / 23, 0.0, 16 / 40000])
    assert_close(torch.from_numpy(report.best_ious), expected, atol=1e-6, rtol=0)
    overall = report.overall
    assert (overall.positive, overall.low_quality, overall.none) == (2, 3, 1)
    assert overall.share("positive") == pytest.approx(2 / 6)
    assert report.coverage == pytest.approx(2 / 6)
    small, medium, large = (report.by_size[k] for k in ("small", "medium", "large"))
    assert (small.positive, small.low_quality, small.none) == (2, 2, 1)
    assert medium.total == 0
    assert (large.positive, large.low_quality, large.none) == (0, 1, 0)
    assert (report.by_class["a"].positive, report.by_class["a"].low_quality) == (2, 1)
    assert (report.by_class["b"].low_quality, report.by_class["b"].none) == (2, 1)
    # Worst first: the box no anchor touches, then the large box.
    assert [w.box for w in report.worst[:2]] == [(40, 40, 50, 50), (0, 0, 200, 200)]
    assert report.worst[0].best_iou == 0.0 and report.worst[0].class_name == "b"
    assert report.worst[1].best_anchor == (126.0, 126.0, 130.0, 130.0)
    assert report.worst[1].level == "p7"
    data = report.to_json()
    assert data["overall"]["positive_share"] == pytest.approx(2 / 6)
    assert data["by_size"]["large"]["low_quality"] == 1


def test_boxes_identical_to_anchors_are_all_positive_with_iou_1() -> None:
    # p3..p5 from res3 (strides 8, 16, 32), sizes 16, 32, 64 with 2 scales each.
    spec = build_anchor_spec(load_recipe(None, [
        "model.anchors.sizes=16..64", "model.anchors.scales=2", "model.fpn.in_features=[res3]",
    ]).model)
    # Every anchor of a 192x256 input that lies inside the image, taken as a ground-truth box.
    anchors = torch.cat(level_anchors(spec, (192, 256)))
    inside = (
        (anchors[:, 0] >= 0)
        & (anchors[:, 1] >= 0)
        & (anchors[:, 2] <= 256)
        & (anchors[:, 3] <= 192)
    )
    boxes = anchors[inside][::7]
    assert len(boxes) > 100
    record = _record(1, boxes.numpy(), np.zeros(len(boxes)), height=192, width=256)
    gt = gather_boxes(_dataset([record]), short_size=192, max_size=256)
    report = coverage_report(spec, gt, threshold=0.5)
    assert report.overall.positive == len(boxes) and report.coverage == 1.0
    assert np.all(report.best_ious == 1.0)


def test_boxes_follow_the_test_resize_and_empty_ones_are_dropped() -> None:
    # 100x200 image, short side 50 (scale 0.5): box (20, 10, 60, 50) -> (10, 5, 30, 25).
    # (200, 10, 210, 20) lies right of the image: clipped to zero width and dropped.
    record = _record(7, [[20, 10, 60, 50], [200, 10, 210, 20]], [1, 0], height=100, width=200)
    gt = gather_boxes(_dataset([record]), short_size=50, max_size=1000)
    assert gt.num_dropped == 1
    assert gt.boxes.tolist() == [[10.0, 5.0, 30.0, 25.0]]
    assert gt.original_boxes.tolist() == [[20.0, 10.0, 60.0, 50.0]]
    assert gt.labels.tolist() == [1] and gt.resized_hw.tolist() == [[50, 100]]


def _dense_best_iou(spec: AnchorSpec, gt: GroundTruth) -> torch.Tensor:
    """The brute force: every box against every anchor of its padded size, grouped by size."""
    best = torch.zeros(len(gt))
    padded = [padded_hw(tuple(hw), spec.size_divisibility) for hw in gt.resized_hw.tolist()]
    generator = spec.generator()
    for size in set(padded):
        images = [i for i, p in enumerate(padded) if p == size]
        rows = np.flatnonzero(np.isin(gt.image_index, images))
        anchors = torch.cat(level_anchors(spec, size, generator))
        iou = pairwise_iou(torch.from_numpy(gt.boxes[rows]), anchors)  # (n, R)
        best[torch.from_numpy(rows)] = iou.max(dim=1).values
    return best


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_best_iou_equals_the_dense_matrix(offset: float) -> None:
    rng = np.random.default_rng(0)
    records = []
    for image_id in range(12):
        height, width = (int(v) for v in rng.integers(60, 400, size=2))
        n = 25
        x0 = rng.uniform(-20, width, n)
        y0 = rng.uniform(-20, height, n)
        w = np.exp(rng.uniform(np.log(2), np.log(500), n))
        h = w * np.exp(rng.uniform(-1.5, 1.5, n))
        boxes = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
        boxes = np.minimum(np.maximum(boxes, 0), [width, height, width, height])
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        records.append(
            _record(image_id, boxes[keep], np.zeros(int(keep.sum())), height=height, width=width)
        )
    gt = gather_boxes(_dataset(records), short_size=320, max_size=533)
    spec = build_anchor_spec(load_recipe(None, [f"model.anchors.offset={offset}"]).model)
    fast = best_anchor_ious(spec, gt)
    dense = _dense_best_iou(spec, gt)
    # Equal, up to one float32 ulp where positions tie mathematically (module docstring).
    assert_close(fast.iou, dense, atol=0, rtol=5e-7)
    assert (fast.iou == dense).float().mean() > 0.9
    # The reported anchor has exactly the reported IoU.
    per_box = torch.stack(
        [
            pairwise_iou(torch.from_numpy(gt.boxes[i : i + 1]), fast.anchor[i : i + 1])[0, 0]
            for i in range(len(gt))
        ]
    )
    assert_close(per_box, fast.iou, atol=0, rtol=0)


def test_no_boxes() -> None:
    gt = gather_boxes(_dataset([_record(1, np.zeros((0, 4)), [])]), short_size=256, max_size=256)
    report = coverage_report(SPARSE, gt, threshold=0.5)
    assert report.overall.total == 0 and report.coverage == 0.0 and report.worst == ()
    assert report.to_json()["mean_best_iou"] is None  # JSON has no NaN
