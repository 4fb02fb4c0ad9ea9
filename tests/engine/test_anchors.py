"""AnchorGenerator: hand-computed cell anchors, grid layout, offset, broadcasting and caching."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from retinacli.engine.anchors import AnchorGenerator, cell_anchors_for_level


def test_cell_anchors_hand_computed() -> None:
    # size 32: area 1024. ratio 0.5: w = sqrt(1024 / 0.5) = sqrt(2048) = 45.2548, h = 0.5 * w = 22.6274
    # ratio 1: w = h = 32. ratio 2: w = sqrt(512) = 22.6274, h = 45.2548. Boxes are (-w/2, -h/2, w/2, h/2).
    half = math.sqrt(2048) / 2  # 22.6274
    expected = torch.tensor(
        [
            [-half, -half / 2, half, half / 2],
            [-16.0, -16.0, 16.0, 16.0],
            [-half / 2, -half, half / 2, half],
        ]
    )
    cells = cell_anchors_for_level([32], [0.5, 1.0, 2.0])
    assert cells.dtype == torch.float32
    assert_close(cells, expected, atol=0, rtol=0)


def test_cell_anchors_are_size_major_and_unrounded() -> None:
    # sizes (10, 20) x ratios (1, 4): order (10,1), (10,4), (20,1), (20,4).
    # (10, 4): w = sqrt(100 / 4) = 5, h = 20 -> (-2.5, -10, 2.5, 10): a half pixel, not rounded.
    cells = cell_anchors_for_level([10, 20], [1.0, 4.0])
    expected = torch.tensor(
        [
            [-5.0, -5.0, 5.0, 5.0],
            [-2.5, -10.0, 2.5, 10.0],
            [-10.0, -10.0, 10.0, 10.0],
            [-5.0, -20.0, 5.0, 20.0],
        ]
    )
    assert_close(cells, expected, atol=0, rtol=0)


def test_grid_layout_y_outer_x_inner_anchor_innermost() -> None:
    gen = AnchorGenerator(sizes=[[8.0, 16.0]], aspect_ratios=[[1.0]], strides=[8], offset=0.0)
    (anchors,) = gen.grid_anchors([(2, 3)])
    assert anchors.shape == (2 * 3 * 2, 4)
    cells = gen.cell_anchors[0]
    # Location (y=1, x=2), cell anchor a=1: index (1 * 3 + 2) * 2 + 1 = 11, shift (x=16, y=8).
    assert_close(anchors[11], cells[1] + torch.tensor([16.0, 8.0, 16.0, 8.0]), atol=0, rtol=0)
    # Location (y=0, x=1), a=0: index 2, shift (8, 0).
    assert_close(anchors[2], cells[0] + torch.tensor([8.0, 0.0, 8.0, 0.0]), atol=0, rtol=0)


def test_offset_moves_the_first_centre() -> None:
    # offset 0.5 at stride 16: first centre at (8, 8); the 8x8 cell anchor is (4, 4, 12, 12).
    gen = AnchorGenerator(sizes=[[8.0]], aspect_ratios=[[1.0]], strides=[16], offset=0.5)
    (anchors,) = gen.grid_anchors([(2, 2)])
    assert_close(anchors[0], torch.tensor([4.0, 4.0, 12.0, 12.0]), atol=0, rtol=0)
    assert_close(anchors[3], torch.tensor([20.0, 20.0, 28.0, 28.0]), atol=0, rtol=0)


def test_single_inner_list_applies_to_every_level() -> None:
    gen = AnchorGenerator(sizes=[[32.0], [64.0]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16])
    assert gen.num_anchors_per_location == [3, 3]
    assert_close(
        gen.cell_anchors[1], cell_anchors_for_level([64.0], [0.5, 1.0, 2.0]), atol=0, rtol=0
    )
    with pytest.raises(ValueError, match="one inner list per level"):
        AnchorGenerator(sizes=[[32.0], [64.0]], aspect_ratios=[[1.0]], strides=[8, 16, 32])


def test_grid_anchors_are_cached_and_checked() -> None:
    gen = AnchorGenerator(sizes=[[32.0], [64.0]], aspect_ratios=[[1.0]], strides=[8, 16])
    first = gen.grid_anchors([(4, 5), (2, 3)])
    assert gen.grid_anchors([(4, 5), (2, 3)])[0] is first[0]
    assert [a.shape[0] for a in first] == [20, 6]
    with pytest.raises(ValueError, match="2 levels"):
        gen.grid_anchors([(4, 5)])


def test_no_anchor_state_in_the_state_dict() -> None:
    gen = AnchorGenerator(sizes=[[32.0]], aspect_ratios=[[1.0]], strides=[8])
    assert gen.state_dict() == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sizes": [[32.0]], "aspect_ratios": [[1.0]], "strides": []},
        {"sizes": [[-1.0]], "aspect_ratios": [[1.0]], "strides": [8]},
        {"sizes": [[32.0]], "aspect_ratios": [[]], "strides": [8]},
        {"sizes": [[32.0]], "aspect_ratios": [[1.0]], "strides": [8], "offset": 1.0},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="AnchorGenerator"):
        AnchorGenerator(**kwargs)
