"""BoxCoder: hand-computed deltas, round trip, clamping after the weights, broadcasting."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from retinacli.engine.box_coder import DEFAULT_SCALE_CLAMP, BoxCoder


def test_encode_hand_computed() -> None:
    # anchor (0, 0, 10, 20): w 10, h 20, centre (5, 10). gt (5, 5, 15, 25): w 10, h 20, centre (10, 15).
    # dx = (10 - 5) / 10 = 0.5, dy = (15 - 10) / 20 = 0.25, dw = log(10 / 10) = 0, dh = 0.
    # With weights (10, 10, 5, 5): (5, 2.5, 0, 0). gt (0, 0, 20, 10): centre (10, 5), so
    # dx = 10 * 5 / 10 = 5, dy = 10 * (5 - 10) / 20 = -2.5, dw = 5 log(20 / 10), dh = 5 log(10 / 20).
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 5.0, 15.0, 25.0], [0.0, 0.0, 20.0, 10.0]])
    deltas = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode(anchors=anchors, gt_boxes=gt)
    expected = torch.tensor(
        [[5.0, 2.5, 0.0, 0.0], [5.0, -2.5, 5 * math.log(2.0), 5 * math.log(0.5)]]
    )
    assert_close(deltas, expected, atol=1e-6, rtol=0)


def test_decode_of_encode_is_identity() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=gen) * 400
    # Size ratios stay below 1000/16, so the decode clamp never applies.
    wh = torch.rand(500, 2, generator=gen) * 190 + 10
    anchors = torch.cat([xy, xy + wh], dim=1)
    xy2 = torch.rand(500, 2, generator=gen) * 400
    wh2 = torch.rand(500, 2, generator=gen) * 295 + 5
    boxes = torch.cat([xy2, xy2 + wh2], dim=1)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        coder = BoxCoder(weights=weights)
        decoded = coder.decode(
            anchors=anchors, deltas=coder.encode(anchors=anchors, gt_boxes=boxes)
        )
        assert_close(decoded, boxes, atol=1e-3, rtol=0)


def test_clamp_applies_after_dividing_by_the_weights() -> None:
    # dw = 5 * (clamp + 1): divided by ww = 5 it is clamp + 1, clamped to clamp -> width 1000/16 * 10.
    # Clamping before the division would give exp(clamp / 5) * 10 instead.
    coder = BoxCoder(weights=(1.0, 1.0, 5.0, 5.0))
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    big = 5 * (DEFAULT_SCALE_CLAMP + 1)
    box = coder.decode(anchors=anchor, deltas=torch.tensor([[0.0, 0.0, big, big]]))
    width = box[0, 2] - box[0, 0]
    assert_close(width, torch.tensor(1000.0 / 16 * 10), rtol=1e-6, atol=0)
    assert torch.isfinite(coder.decode(anchors=anchor, deltas=torch.full((1, 4), 1e4))).all()


def test_broadcast_over_leading_dims_equals_row_by_row() -> None:
    gen = torch.Generator().manual_seed(1)
    anchors = torch.tensor([[0.0, 0.0, 8.0, 16.0], [4.0, 4.0, 36.0, 20.0], [10.0, 0.0, 20.0, 40.0]])
    deltas = torch.randn(2, 3, 4, generator=gen)  # (B, R, 4) against (R, 4)
    coder = BoxCoder()
    batched = coder.decode(anchors=anchors, deltas=deltas)
    for b in range(2):
        assert_close(batched[b], coder.decode(anchors=anchors, deltas=deltas[b]), atol=0, rtol=0)
    assert batched.dtype == torch.float32
    assert coder.decode(anchors=anchors, deltas=deltas.half()).dtype == torch.float32


def test_bad_weights_raise() -> None:
    with pytest.raises(ValueError, match="BoxCoder"):
        BoxCoder(weights=(1.0, 1.0, 0.0, 1.0))
