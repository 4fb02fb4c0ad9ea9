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
    parse_image_size,
    parse_strides,
    spec_from_flags,
    spec_from_model,
)
from retinacli.errors import UsageError
from retinacli.recipe.schema import ModelConfig

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def _defaults() -> AnchorSpec:
    return spec_from_flags(sizes=None, scales=None, ratios=None, offset=0.0, strides=None)


def test_hand_computed_single_level() -> None:
    # size 16 (area 256), ratios 1 and 4: ratio 1 -> w = h = 16 -> (-8, -8, 8, 8);
    # ratio 4 -> w = sqrt(256 / 4) = 8, h = 4 * 8 = 32 -> (-4, -16, 4, 16).
    # Input 30x50 pads to 32x64; stride 8 -> 4x8 positions; 4 * 8 * 2 = 64 anchors.
    spec = spec_from_flags(sizes="16", scales=None, ratios="1,4", offset=0.0, strides="8")
    layout = describe_anchors(spec, (30, 50))
    assert layout.padded_size == (32, 64)
    (level,) = layout.levels
    assert (level.name, level.stride, level.feature_size, level.num_anchors) == (
        "p3",
        8,
        (4, 8),
        64,
    )
    assert level.cell_anchors == ((-8.0, -8.0, 8.0, 8.0), (-4.0, -16.0, 4.0, 16.0))
    assert layout.total_anchors == 64


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
    spec = spec_from_flags(sizes="16", scales=None, ratios="1", offset=0.5, strides="8")
    layout = describe_anchors(spec, (32, 32))
    assert layout.levels[0].cell_anchors == ((-8.0, -8.0, 8.0, 8.0),)
    (grid,) = level_anchors(spec, (32, 32))
    # First centre at (0.5 * 8, 0.5 * 8) = (4, 4).
    assert_close(grid[0], torch.tensor([-4.0, -4.0, 12.0, 12.0]), atol=0, rtol=0)


def test_recipe_spec_follows_the_model_section() -> None:
    model = ModelConfig.model_validate(
        {
            "fpn": {"in_features": ["res3", "res4", "res5"]},
            "anchors": {"sizes": "16..256", "scales": 2},
        }
    )
    spec = spec_from_model(model)
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": "32..500"}, "power of two"),
        ({"sizes": "32,abc"}, "not an anchor-size form"),
        ({"ratios": "0.5,0,2"}, "positive"),
        ({"ratios": "wide"}, "comma-separated numbers"),
        ({"offset": 1.0}, r"\[0, 1\)"),
        ({"strides": "8,12,16,32,64"}, "power of two"),
        ({"strides": "16,8,32,64,128"}, "increase"),
        ({"sizes": "32..512", "strides": "8,16,32"}, "5 levels"),
        ({"sizes": "[[32, 40], [64]]", "strides": "8,16"}, "same number of sizes"),
        ({"sizes": "[[32, 40"}, "not a valid list"),
    ],
)
def test_bad_flags_are_usage_errors(kwargs, message) -> None:
    arguments = {"sizes": None, "scales": None, "ratios": None, "offset": 0.0, "strides": None}
    arguments.update(kwargs)
    with pytest.raises(UsageError, match=message):
        spec_from_flags(**arguments)


def test_flag_forms() -> None:
    assert parse_image_size("800x1333") == (800, 1333)
    assert parse_image_size(" 600 X 1000 ") == (600, 1000)
    for bad in ("800by1333", "800x", "0x10", "-1x5"):
        with pytest.raises(UsageError, match="HEIGHTxWIDTH"):
            parse_image_size(bad)
    assert parse_strides("8,16,32") == [8, 16, 32]
    # Explicit nested sizes, one inner list for every level, and base sizes expanded by scales.
    spec = spec_from_flags(sizes="[[20, 30]]", scales=None, ratios="1", offset=0.0, strides="8,16")
    assert spec.sizes == ((20.0, 30.0), (20.0, 30.0))
    spec = spec_from_flags(sizes="32,64", scales=2, ratios=None, offset=0.0, strides=None)
    assert spec.strides == (8, 16) and spec.sizes[1] == (64.0, 64 * 2**0.5)
