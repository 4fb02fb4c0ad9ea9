"""Anchor layout of `retina anchors`: hand-computed cases, feature sizes, and detectron2's anchors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from retinacli.anchors_tool.layout import (
    AnchorSpec,
    describe_anchors,
    feature_hw,
    level_anchors,
    padded_hw,
)
from retinacli.build import build_anchor_spec
from retinacli.recipe import Recipe, load_recipe

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def _defaults() -> AnchorSpec:
    return build_anchor_spec(Recipe().model)


def _spec(*overrides: str) -> AnchorSpec:
    return build_anchor_spec(load_recipe(None, list(overrides)).model)


def test_hand_computed_first_level() -> None:
    # size 16 (area 256), ratios 1 and 4: ratio 1 -> w = h = 16 -> (-8, -8, 8, 8);
    # ratio 4 -> w = sqrt(256 / 4) = 8, h = 4 * 8 = 32 -> (-4, -16, 4, 16).
    # Input 30x50 pads to 32x64; stride 8 -> 4x8 positions; 4 * 8 * 2 = 64 anchors.
    # The smallest pyramid the FPN builds: res5 -> p5 (stride 32), p6, p7 (ceil-halved 1x2, 1x1).
    spec = _spec("model.anchors.sizes=16", "model.anchors.aspect_ratios=[1, 4]")
    layout = describe_anchors(spec, (30, 50))
    assert layout.padded_size == (32, 64)
    level = layout.levels[0]
    assert (level.name, level.stride, level.feature_size, level.num_anchors) == ("p3", 8, (4, 8), 64)
    assert level.cell_anchors == ((-8.0, -8.0, 8.0, 8.0), (-4.0, -16.0, 4.0, 16.0))
    # p4 2x4, p5 1x2, p6 1x1, p7 1x1 positions, 2 anchors each: 64 + 16 + 4 + 2 + 2 = 88.
    assert layout.total_anchors == 88


def test_detectron2_defaults_for_800x1333() -> None:
    # Sizes: 32 * 2**(i/3) = 32, 40.3175, 50.7968 on p3, doubling per level.
    # 800x1333 pads to 800x1344 (multiples of 32); ceil-halving 3..7 times:
    # 800 -> 100, 50, 25, 13, 7 and 1344 -> 168, 84, 42, 21, 11.
    # Anchors: 9 * (100*168 + 50*84 + 25*42 + 13*21 + 7*11) = 9 * 22400 = 201600.
    layout = describe_anchors(_defaults(), (800, 1333))
    assert layout.padded_size == (800, 1344)
    assert [lv.name for lv in layout.levels] == list(LEVELS)
    assert [lv.stride for lv in layout.levels] == [8, 16, 32, 64, 128]
    assert [lv.feature_size for lv in layout.levels] == [
        (100, 168),
        (50, 84),
        (25, 42),
        (13, 21),
        (7, 11),
    ]
    assert layout.total_anchors == 201600
    p3 = layout.levels[0]
    assert p3.sizes == pytest.approx((32.0, 40.31747359663594, 50.79683366298238), abs=1e-12)
    assert p3.aspect_ratios == (0.5, 1.0, 2.0)
    # First cell anchor: size 32, ratio 0.5 -> w = sqrt(2048) = 45.2548, h = 22.6274.
    half = math.sqrt(2048) / 2
    assert p3.cell_anchors[0] == pytest.approx((-half, -half / 2, half, half / 2), abs=1e-5)
    assert layout.levels[-1].sizes[0] == 512.0


def test_feature_sizes_ceil_halve_the_padded_input() -> None:
    assert padded_hw((213, 533), 32) == (224, 544)
    assert feature_hw((224, 544), 8) == (28, 68)
    # 224 / 32 = 7 -> 4 -> 2 ; 544 / 32 = 17 -> 9 -> 5
    assert feature_hw((224, 544), 64) == (4, 9)
    assert feature_hw((224, 544), 128) == (2, 5)


def test_offset_moves_grid_anchors_but_not_cell_anchors() -> None:
    spec = _spec("model.anchors.sizes=16", "model.anchors.aspect_ratios=[1]", "model.anchors.offset=0.5")
    layout = describe_anchors(spec, (32, 32))
    assert layout.levels[0].cell_anchors == ((-8.0, -8.0, 8.0, 8.0),)
    grid = level_anchors(spec, (32, 32))[0]
    # First centre at (0.5 * 8, 0.5 * 8) = (4, 4).
    assert_close(grid[0], torch.tensor([-4.0, -4.0, 12.0, 12.0]), atol=0, rtol=0)


def test_recipe_spec_follows_the_model_section() -> None:
    spec = _spec("model.anchors.sizes=16..256", "model.anchors.scales=2")
    assert spec.level_names == LEVELS
    assert spec.size_divisibility == 32
    assert spec.sizes[0] == (16.0, 16 * 2**0.5)
    assert spec.num_anchors_per_location == [6] * 5


@pytest.fixture(scope="module")
def golden_tensors(golden_dir):
    return torch.load(golden_dir / "expected" / "tensors.pt", weights_only=True)


def test_equals_detectron2_anchors_of_the_golden_eval_image(golden_tensors) -> None:
    # Golden image 0: resized 320x427, padded 320x448 -> p3 40x56 ... p6 5x7, p7 3x4.
    spec = _defaults()
    layout = describe_anchors(spec, (320, 427))
    assert layout.padded_size == (320, 448)
    grids = level_anchors(spec, (320, 427))
    for level, grid in zip(layout.levels, grids, strict=True):
        expected = golden_tensors[f"eval/img0/anchors/{level.name}"]
        shape = golden_tensors[f"eval/img0/fpn/{level.name}_shape"].tolist()
        assert list(level.feature_size) == shape[2:]
        assert level.num_anchors == expected.shape[0]
        # Offset 0: location (0, 0) holds the cell anchors themselves.
        cells = torch.tensor(level.cell_anchors)
        assert_close(cells, expected[: level.anchors_per_location], atol=1e-4, rtol=0)
        assert_close(grid, expected, atol=1e-4, rtol=0)
    assert [lv.feature_size for lv in layout.levels][-2:] == [(5, 7), (3, 4)]


def test_equals_detectron2_anchors_of_the_golden_training_batch(golden_tensors) -> None:
    # The loss batch is padded to 512x544 as a whole.
    spec = _defaults()
    layout = describe_anchors(spec, (512, 544))
    for level, grid in zip(layout.levels, level_anchors(spec, (512, 544)), strict=True):
        assert list(level.feature_size) == golden_tensors[f"train/feature_hw/{level.name}"].tolist()
        assert_close(grid, golden_tensors[f"train/anchors/{level.name}"], atol=1e-4, rtol=0)
    assert layout.total_anchors == 52236  # the README's anchors per image
