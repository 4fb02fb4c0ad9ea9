from __future__ import annotations

import numpy as np
import pytest
import torch

from retinacli.data.augment.geometry import Tile
from retinacli.data.augment.mosaic import MosaicParams, mosaic, quadrant_box, sample_mosaic


def _tiles() -> list[Tile]:
    # four 20 x 20 tiles of one grey level each (10, 20, 30, 40), each with one box covering it
    return [
        Tile.of(
            torch.full((3, 20, 20), 10 * (k + 1), dtype=torch.uint8),
            torch.tensor([[0.0, 0.0, 20.0, 20.0]]),
            torch.tensor([k]),
        )
        for k in range(4)
    ]


def test_quadrants_split_the_canvas_at_the_centre() -> None:
    hw = (20, 20)
    assert quadrant_box(0, cx=8, cy=12, hw=hw) == (0, 0, 12, 8)
    assert quadrant_box(1, cx=8, cy=12, hw=hw) == (0, 8, 12, 12)
    assert quadrant_box(2, cx=8, cy=12, hw=hw) == (12, 0, 8, 8)
    assert quadrant_box(3, cx=8, cy=12, hw=hw) == (12, 8, 8, 12)


def test_mosaic_hand_computed() -> None:
    out = mosaic(_tiles(), MosaicParams(cx=8, cy=12, quadrants=(0, 1, 2, 3)), fill=114)
    assert out.hw == (20, 20)
    # tile 0 -> top-left 12 x 8 (h x w): scaled by max(12/20, 8/20) = 0.6 to 12 x 12; its part
    # next to the centre is x in [4, 12), so its box [0, 0, 12, 12] keeps [0, 0, 8, 12]: 96/144.
    # tile 1 -> top-right 12 x 12: 0.6 -> 12 x 12, whole, box moved by (8, 0).
    # tile 2 -> bottom-left 8 x 8: 0.4 -> 8 x 8, whole, box moved by (0, 12).
    # tile 3 -> bottom-right 8 x 12: 0.6 -> 12 x 12, y in [0, 8): [0, 0, 12, 8] moved by (8, 12).
    torch.testing.assert_close(
        out.boxes, torch.tensor([[0, 0, 8, 12], [8, 0, 20, 12], [0, 12, 8, 20], [8, 12, 20, 20]], dtype=torch.float32)
    )
    torch.testing.assert_close(out.visible, torch.tensor([96 / 144, 1.0, 1.0, 96 / 144], dtype=torch.float64))
    assert out.labels.tolist() == [0, 1, 2, 3]
    for (top, left, h, w), value in (((0, 0, 12, 8), 10), ((0, 8, 12, 12), 20), ((12, 0, 8, 8), 30), ((12, 8, 8, 12), 40)):
        assert (out.image[:, top : top + h, left : left + w] == value).all()


def test_mosaic_follows_the_quadrant_permutation() -> None:
    out = mosaic(_tiles(), MosaicParams(cx=10, cy=10, quadrants=(3, 2, 1, 0)), fill=0)
    # tile 0 (grey 10) is now bottom-right, tile 3 (grey 40) top-left
    assert (out.image[:, 10:, 10:] == 10).all() and (out.image[:, :10, :10] == 40).all()
    torch.testing.assert_close(out.boxes[0], torch.tensor([10.0, 10.0, 20.0, 20.0]))


def test_mosaic_refuses_wrong_input() -> None:
    with pytest.raises(ValueError, match="4 tiles"):
        mosaic(_tiles()[:3], MosaicParams(cx=10, cy=10, quadrants=(0, 1, 2)), fill=0)


def test_sample_mosaic_ranges_and_determinism() -> None:
    for seed in range(100):
        p = sample_mosaic(np.random.default_rng(seed), hw=(40, 100))
        assert 25 <= p.cx <= 75 and 10 <= p.cy <= 30
        assert sorted(p.quadrants) == [0, 1, 2, 3]
    assert sample_mosaic(np.random.default_rng(5), hw=(40, 100)) == sample_mosaic(np.random.default_rng(5), hw=(40, 100))
