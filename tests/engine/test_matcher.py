"""Matcher and pairwise_iou: thresholds, exact-tie low-quality matches, empty GT, batching."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.ops import box_iou

from retinacli.engine.matcher import BACKGROUND, FOREGROUND, IGNORE, Matcher, pairwise_iou

RETINANET_LABELS = [BACKGROUND, IGNORE, FOREGROUND]


def retinanet_matcher(low_quality: bool = True) -> Matcher:
    return Matcher(
        iou_thresholds=[0.4, 0.5], iou_labels=RETINANET_LABELS, allow_low_quality_matches=low_quality
    )


def random_boxes(n: int, gen: torch.Generator, *, extent: float = 200.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * extent
    wh = torch.rand(n, 2, generator=gen) * extent / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_pairwise_iou_hand_computed() -> None:
    # (0,0,10,10) vs (5,0,15,10): inter 5*10 = 50, union 100 + 100 - 50 = 150 -> 1/3.
    # vs (10,0,20,10): touching edge, inter 0 -> 0. vs itself -> 1.
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert_close(pairwise_iou(a, b), torch.tensor([[1 / 3, 0.0, 1.0]]), atol=1e-7, rtol=0)


def test_pairwise_iou_bit_equal_to_torchvision_and_batched() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = random_boxes(7, gen)
    anchors = random_boxes(300, gen)
    ours = pairwise_iou(gt, anchors)
    assert torch.equal(ours, box_iou(gt, anchors))
    stacked = pairwise_iou(torch.stack([gt, gt.flip(0)]), anchors)  # (B, G, R)
    assert torch.equal(stacked[0], ours) and torch.equal(stacked[1], ours.flip(0))


def test_threshold_bands() -> None:
    # max IoU 0.3 -> BACKGROUND, 0.4 -> IGNORE (low bound inclusive), 0.45 -> IGNORE, 0.5 -> FOREGROUND.
    iou = torch.tensor([[[0.3, 0.4, 0.45, 0.5]]])
    matches, labels = retinanet_matcher(low_quality=False)(iou, torch.tensor([[True]]))
    assert labels.tolist() == [[BACKGROUND, IGNORE, IGNORE, FOREGROUND]]
    assert labels.dtype == torch.int8 and matches.dtype == torch.int64


def test_low_quality_matches_take_all_exact_ties_and_keep_their_own_gt() -> None:
    # GT0's best IoU is 0.3, reached by anchors 0 and 1 (tie): both become FOREGROUND.
    # Anchor 1's best GT is GT1 (0.6), and it keeps GT1. Anchor 2 (0.3 - 1e-7, not equal) stays
    # BACKGROUND, anchor 3 (best 0.35 with GT1) stays BACKGROUND.
    near = torch.tensor(0.3, dtype=torch.float32).item() - 1e-7
    iou = torch.tensor([[[0.3, 0.3, near, 0.1], [0.2, 0.6, 0.0, 0.35]]])
    valid = torch.tensor([[True, True]])
    matches, labels = retinanet_matcher()(iou, valid)
    assert labels.tolist() == [[FOREGROUND, FOREGROUND, BACKGROUND, BACKGROUND]]
    assert matches.tolist() == [[0, 1, 0, 1]]
    _, labels_off = retinanet_matcher(low_quality=False)(iou, valid)
    assert labels_off.tolist() == [[BACKGROUND, FOREGROUND, BACKGROUND, BACKGROUND]]


def test_zero_area_gt_quirk_is_kept() -> None:
    # detectron2 quirk: a GT whose best IoU is 0 makes every anchor with IoU 0 FOREGROUND.
    iou = torch.tensor([[[0.0, 0.0, 0.0]]])
    _, labels = retinanet_matcher()(iou, torch.tensor([[True]]))
    assert labels.tolist() == [[FOREGROUND] * 3]


def test_image_without_gt_is_all_background() -> None:
    gen = torch.Generator().manual_seed(1)
    anchors = random_boxes(50, gen)
    matcher = retinanet_matcher()
    # No GT in the whole batch (G = 0).
    matches, labels = matcher.match_boxes(
        gt_boxes=torch.zeros(2, 0, 4), gt_valid=torch.zeros(2, 0, dtype=torch.bool), anchors=anchors
    )
    assert (
        labels.shape == (2, 50)
        and bool((labels == BACKGROUND).all())
        and bool((matches == 0).all())
    )
    # One empty image beside one with GT: the padded rows must not make anything FOREGROUND.
    gt = torch.stack([random_boxes(3, gen), torch.zeros(3, 4)])
    valid = torch.tensor([[True, True, True], [False, False, False]])
    matches, labels = matcher.match_boxes(gt_boxes=gt, gt_valid=valid, anchors=anchors)
    assert bool((labels[1] == BACKGROUND).all()) and bool((matches[1] == 0).all())
    assert bool((labels[0] == FOREGROUND).any())


def test_batched_equals_one_image_at_a_time() -> None:
    gen = torch.Generator().manual_seed(2)
    anchors = random_boxes(400, gen)
    counts = [3, 0, 5, 1]
    gts = [random_boxes(g, gen) for g in counts]
    padded = torch.zeros(len(counts), max(counts), 4)
    valid = torch.zeros(len(counts), max(counts), dtype=torch.bool)
    for i, g in enumerate(gts):
        padded[i, : len(g)] = g
        valid[i, : len(g)] = True
    matcher = retinanet_matcher()
    matches, labels = matcher.match_boxes(gt_boxes=padded, gt_valid=valid, anchors=anchors)
    chunked = matcher.match_boxes(
        gt_boxes=padded, gt_valid=valid, anchors=anchors, max_chunk_elements=1
    )
    assert torch.equal(chunked[0], matches) and torch.equal(chunked[1], labels)
    for i, g in enumerate(gts):
        one_m, one_l = matcher.match_boxes(
            gt_boxes=g[None], gt_valid=torch.ones(1, len(g), dtype=torch.bool), anchors=anchors
        )
        assert torch.equal(one_l[0], labels[i])
        assert torch.equal(one_m[0], matches[i])


def test_gt_order_does_not_change_labels_or_matched_boxes() -> None:
    gen = torch.Generator().manual_seed(3)
    anchors = random_boxes(400, gen)
    gt = random_boxes(6, gen)
    perm = torch.randperm(6, generator=gen)
    matcher = retinanet_matcher()
    ones = torch.ones(1, 6, dtype=torch.bool)
    m1, l1 = matcher.match_boxes(gt_boxes=gt[None], gt_valid=ones, anchors=anchors)
    m2, l2 = matcher.match_boxes(gt_boxes=gt[perm][None], gt_valid=ones, anchors=anchors)
    assert torch.equal(l1, l2)
    # Matched boxes matter where an anchor is not background (elsewhere all IoUs may be 0).
    used = l1[0] != BACKGROUND
    assert int(used.sum()) > 0
    assert torch.equal(gt[m1[0]][used], gt[perm][m2[0]][used])


@pytest.mark.parametrize(
    ("thresholds", "labels"),
    [
        ([0.5, 0.4], RETINANET_LABELS),
        ([0.0, 0.5], RETINANET_LABELS),
        ([0.4, 0.5], [0, 1]),
        ([0.4, 0.5], [0, -2, 1]),
    ],
)
def test_bad_configuration_raises(thresholds: list[float], labels: list[int]) -> None:
    with pytest.raises(ValueError, match="Matcher"):
        Matcher(iou_thresholds=thresholds, iou_labels=labels, allow_low_quality_matches=True)
