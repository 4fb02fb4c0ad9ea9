from __future__ import annotations

import numpy as np
import torch

from retinacli.data.augment.geometry import (
    CropParams,
    ExpandParams,
    ScaleJitterParams,
    Tile,
    crop,
    drop_hidden,
    expand,
    kept_fractions,
    sample_crop,
    sample_expand,
    sample_scale_jitter,
    scale_jitter,
    vertical_flip,
    window,
)


def _tile(height: int, width: int, boxes: list[list[float]], value: int = 7) -> Tile:
    image = torch.full((3, height, width), value, dtype=torch.uint8)
    return Tile.of(image, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.arange(len(boxes)))


def _close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def test_tile_of_clips_boxes_to_the_image() -> None:
    tile = _tile(20, 30, [[-5, 2, 40, 25]])
    _close(tile.boxes, [[0, 2, 30, 20]])
    _close(tile.visible, [1.0])


def test_crop_moves_clips_and_measures_what_is_left() -> None:
    tile = _tile(100, 100, [[10, 10, 50, 50], [40, 40, 60, 60]])
    out = crop(tile, CropParams(top=20, left=30, height=50, width=50))
    assert out.hw == (50, 50)
    # box 0 moves by (-30, -20) to [-20, -10, 20, 30], clipped to [0, 0, 20, 30]:
    # 20 * 30 = 600 of its 40 * 40 = 1600 px left, 0.375. Box 1 moves inside, whole.
    _close(out.boxes, [[0, 0, 20, 30], [10, 20, 30, 40]])
    _close(out.visible, [0.375, 1.0])
    # the drop rule: 0.375 < 0.5 drops box 0 (its remains are kept for pictures)
    kept = drop_hidden(out, min_visible=0.5)
    _close(kept.boxes, [[10, 20, 30, 40]])
    assert kept.labels.tolist() == [1] and kept.num_dropped == 1
    _close(kept.dropped, [[0, 0, 20, 30]])
    # a lower threshold keeps it
    assert len(drop_hidden(out, min_visible=0.3).boxes) == 2


def test_crop_keeps_the_pixels_of_the_window() -> None:
    image = torch.arange(3 * 6 * 8, dtype=torch.uint8).reshape(3, 6, 8)
    tile = Tile.of(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    out = crop(tile, CropParams(top=1, left=2, height=3, width=4))
    torch.testing.assert_close(out.image, image[:, 1:4, 2:6], rtol=0, atol=0)


def test_successive_cuts_multiply_the_visible_fraction() -> None:
    tile = _tile(100, 100, [[0, 0, 40, 40]])
    # first cut keeps x in [20, 100): [0, 0, 20, 40] of [0, 0, 40, 40] -> 0.5
    once = crop(tile, CropParams(top=0, left=20, height=100, width=80))
    # second cut keeps y in [20, 100): the 20 x 20 lower half of what is left -> 0.25 in all
    twice = crop(once, CropParams(top=20, left=0, height=80, width=80))
    _close(once.visible, [0.5])
    _close(twice.boxes, [[0, 0, 20, 20]])
    _close(twice.visible, [0.25])


def test_expand_puts_the_image_on_a_canvas_of_fill() -> None:
    image = torch.randint(0, 255, (3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tile = Tile.of(image, torch.tensor([[1.0, 2.0, 11.0, 12.0]]), torch.tensor([0]))
    out = expand(tile, ExpandParams(height=40, width=60, top=5, left=10), fill=114)
    assert out.hw == (40, 60)
    _close(out.boxes, [[11, 7, 21, 17]])  # moved by (left, top) = (10, 5)
    _close(out.visible, [1.0])  # nothing is cut
    torch.testing.assert_close(out.image[:, 5:25, 10:40], image, rtol=0, atol=0)
    assert (out.image[:, :5] == 114).all() and (out.image[:, :, :10] == 114).all()
    assert (out.image[:, 25:] == 114).all() and (out.image[:, :, 40:] == 114).all()


def test_scale_jitter_up_crops_back_and_drops_what_falls_out() -> None:
    tile = _tile(20, 40, [[0, 0, 20, 10], [20, 10, 30, 15]])
    out = scale_jitter(tile, ScaleJitterParams(scale=2.0, scaled_hw=(40, 80), top=10, left=20), fill=114)
    assert out.hw == (20, 40)  # the size the resize step gave
    # box 0 doubles to [0, 0, 40, 20], moves by (-20, -10) to [-20, -10, 20, 10] and keeps
    # [0, 0, 20, 10]: 200 of 800 px, 0.25. Box 1 doubles to [40, 20, 60, 30] -> [20, 10, 40, 20].
    _close(out.boxes, [[0, 0, 20, 10], [20, 10, 40, 20]])
    _close(out.visible, [0.25, 1.0])
    kept = drop_hidden(out, min_visible=0.5)
    assert kept.labels.tolist() == [1] and kept.num_dropped == 1


def test_scale_jitter_down_pads_with_fill() -> None:
    tile = _tile(20, 40, [[0, 0, 20, 10]], value=50)
    # scaled to 10 x 20 and placed 3 px down and 5 px right inside the 20 x 40 canvas
    out = scale_jitter(tile, ScaleJitterParams(scale=0.5, scaled_hw=(10, 20), top=-3, left=-5), fill=114)
    assert out.hw == (20, 40)
    _close(out.boxes, [[5, 3, 15, 8]])  # halved to [0, 0, 10, 5], moved by (5, 3)
    _close(out.visible, [1.0])
    assert (out.image[:, 3:13, 5:25] == 50).all()  # a resized constant image stays constant
    assert (out.image[:, :3] == 114).all() and (out.image[:, 13:] == 114).all()
    assert (out.image[:, :, :5] == 114).all() and (out.image[:, :, 25:] == 114).all()


def test_vertical_flip_mirrors_y() -> None:
    image = torch.arange(3 * 20 * 10, dtype=torch.uint8).reshape(3, 20, 10)
    tile = Tile.of(image, torch.tensor([[1.0, 2.0, 5.0, 8.0]]), torch.tensor([0]))
    out = vertical_flip(tile)
    _close(out.boxes, [[1, 12, 5, 18]])  # y -> 20 - y, then ordered
    torch.testing.assert_close(out.image, image.flip(1), rtol=0, atol=0)


def test_window_refuses_an_empty_size() -> None:
    import pytest

    with pytest.raises(ValueError, match="positive"):
        window(_tile(10, 10, []), top=0, left=0, height=0, width=5, fill=0)


def test_drop_hidden_drops_degenerate_boxes_too() -> None:
    tile = Tile(
        torch.zeros(3, 10, 10, dtype=torch.uint8),
        torch.tensor([[0, 0, 5, 5], [1, 1, 1, 6], [2, 2, 8, 8]], dtype=torch.float32),
        torch.tensor([0, 1, 2]),
        torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64),
    )
    kept = drop_hidden(tile, min_visible=0.5)
    assert kept.labels.tolist() == [0, 2]  # 0.5 is kept: the rule is visible >= min_visible
    assert kept.num_dropped == 1 and len(kept.dropped) == 0  # a zero-width box has no remains


def test_kept_fractions_hand_computed() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [3, 3, 3, 8]], dtype=torch.float32)
    # crop [0, 10) x [0, 10): box 0 whole, box 1 a 5 x 5 quarter, box 2 outside, box 3 empty
    _close(kept_fractions(boxes, CropParams(top=0, left=0, height=10, width=10)), [1.0, 0.25, 0.0, 0.0])


def test_sample_crop_follows_its_rule() -> None:
    boxes = torch.tensor([[10, 10, 60, 40], [70, 5, 95, 30]], dtype=torch.float32)
    for seed in range(200):
        params = sample_crop(
            np.random.default_rng(seed), hw=(50, 100), boxes=boxes, min_scale=0.3, min_box_overlap=0.6
        )
        assert params is not None
        assert 15 <= params.height <= 50 and 30 <= params.width <= 100  # 0.3 * side, rounded
        # the side fractions within a factor 2; rounding moves each side by at most 0.5 px (of at
        # least 15 and 30 px), which bounds the measured ratio by 2 * (1 + 0.5/15) * (1 + 0.5/30)
        ratio = (params.height / 50) / (params.width / 100)
        assert max(ratio, 1 / ratio) <= 2.0 * (1 + 0.5 / 15) * (1 + 0.5 / 30)
        assert 0 <= params.top <= 50 - params.height and 0 <= params.left <= 100 - params.width
        assert float(kept_fractions(boxes, params).max()) >= 0.6


def test_sample_crop_without_boxes_takes_the_first_window_and_gives_up_when_impossible() -> None:
    empty = torch.zeros(0, 4)
    assert sample_crop(np.random.default_rng(0), hw=(50, 50), boxes=empty, min_scale=0.5, min_box_overlap=1.0)
    # a box filling a 1000 x 1000 image keeps all of its area only in a full-size crop, which
    # needs both side fractions >= 0.9995: (0.0005 / 0.7) ** 2 per try, so 50 tries give up
    whole = torch.tensor([[0.0, 0.0, 1000.0, 1000.0]])
    assert sample_crop(np.random.default_rng(0), hw=(1000, 1000), boxes=whole, min_scale=0.3, min_box_overlap=1.0) is None


def test_sample_expand_and_scale_jitter_stay_in_their_ranges() -> None:
    for seed in range(100):
        e = sample_expand(np.random.default_rng(seed), hw=(20, 30), max_ratio=3.0)
        assert 20 <= e.height <= 60 and 30 <= e.width <= 90
        assert 0 <= e.top <= e.height - 20 and 0 <= e.left <= e.width - 30
        j = sample_scale_jitter(np.random.default_rng(seed), hw=(20, 40), min_scale=0.5, max_scale=1.5)
        assert 0.5 <= j.scale <= 1.5
        assert j.scaled_hw == (int(20 * j.scale + 0.5), int(40 * j.scale + 0.5))
        for scaled, size, offset in ((j.scaled_hw[0], 20, j.top), (j.scaled_hw[1], 40, j.left)):
            if scaled >= size:
                assert 0 <= offset <= scaled - size
            else:
                assert -(size - scaled) <= offset <= 0


def test_sampling_is_deterministic_for_a_seed() -> None:
    boxes = torch.tensor([[10, 10, 60, 40]], dtype=torch.float32)

    def draw(seed: int):
        rng = np.random.default_rng(seed)
        return (
            sample_expand(rng, hw=(50, 100), max_ratio=2.0),
            sample_crop(rng, hw=(50, 100), boxes=boxes, min_scale=0.3, min_box_overlap=0.5),
            sample_scale_jitter(rng, hw=(50, 100), min_scale=0.5, max_scale=1.5),
        )

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
