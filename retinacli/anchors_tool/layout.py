"""The anchors of every pyramid level for one input image size, as the model builds them.

Shape legend: L levels, A anchors per location, H_l x W_l the feature map of level l.

Feature sizes follow the model: the image (H x W, after the test resize) is padded on the bottom
and right to a multiple of `size_divisibility` (32 for detectron2's RetinaNet FPN: the stride of
res5, not 128), then every stride-2 step of the network gives ceil(n / 2), so level l of stride
2**k has the padded size ceil-halved k times. Example (detectron2's golden case): 320x427 pads
to 320x448, giving p3 40x56, p4 20x28, p5 10x14, p6 5x7, p7 3x4.

The anchors themselves come from `engine.anchors.AnchorGenerator` (detectron2's layout: cell
anchors size-major, float32, never rounded); nothing here recomputes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from retinacli.engine.anchors import AnchorGenerator
from retinacli.errors import UsageError
from retinacli.recipe.anchor_sizes import AnchorSizeError, parse_anchor_sizes
from retinacli.recipe.schema import ModelConfig, ResizeConfig, stage_stride

# detectron2's defaults, used by the flag form (`retina anchors --sizes ...`) without a recipe.
DEFAULT_SIZES = "32..512"
DEFAULT_SCALES = 3
DEFAULT_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_FIRST_STRIDE = 8
DEFAULT_IMAGE_HW = (800, 1333)
# The FPN pads inputs to the stride of its last input feature: res5, 32.
DEFAULT_SIZE_DIVISIBILITY = 32

_IMAGE_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class AnchorSpec:
    """Everything that decides a model's anchors, one entry per pyramid level.

    level_names: e.g. ("p3", ..., "p7"). strides: input pixels per feature cell, powers of two.
    sizes / aspect_ratios: per level (sqrt of area in input pixels; height / width).
    offset: first anchor centre at offset * stride. size_divisibility: inputs are padded to it.
    """

    level_names: tuple[str, ...]
    strides: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    offset: float
    size_divisibility: int

    def __post_init__(self) -> None:
        levels = len(self.strides)
        if not (len(self.level_names) == len(self.sizes) == len(self.aspect_ratios) == levels):
            raise ValueError(
                f"AnchorSpec: {len(self.level_names)} names, {levels} strides, "
                f"{len(self.sizes)} size lists and {len(self.aspect_ratios)} ratio lists; "
                "give one of each per level"
            )

    @property
    def num_anchors_per_location(self) -> list[int]:
        """Per level, A = sizes x aspect ratios."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def generator(self) -> AnchorGenerator:
        """The engine's anchor generator for these anchors."""
        return AnchorGenerator(
            sizes=[list(s) for s in self.sizes],
            aspect_ratios=[list(r) for r in self.aspect_ratios],
            strides=list(self.strides),
            offset=self.offset,
        )

    def with_anchors(
        self, *, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]
    ) -> AnchorSpec:
        """The same pyramid with other sizes and ratios (one list per level each)."""
        return replace(
            self,
            sizes=tuple(tuple(float(v) for v in level) for level in sizes),
            aspect_ratios=tuple(tuple(float(v) for v in level) for level in aspect_ratios),
        )


def spec_from_model(model: ModelConfig) -> AnchorSpec:
    """The anchors of a recipe's `model` section (sizes and ratios already one list per level)."""
    return AnchorSpec(
        level_names=tuple(model.fpn.level_names),
        strides=tuple(model.fpn.level_strides),
        sizes=tuple(tuple(level) for level in model.anchors.sizes),
        aspect_ratios=tuple(tuple(level) for level in model.anchors.aspect_ratios),
        offset=model.anchors.offset,
        size_divisibility=stage_stride(model.fpn.in_features[-1]),
    )


def spec_from_flags(
    *,
    sizes: str | None,
    scales: int | None,
    ratios: str | None,
    offset: float,
    strides: str | None,
) -> AnchorSpec:
    """The anchors the command-line flags describe (detectron2's defaults for those not given).

    `sizes` is any anchor-size form of the recipe (`parse_anchor_sizes`), plus explicit nested
    lists written as YAML ("[[32, 40], [64, 80]]"). Without `sizes`, "32..512" is used and
    `scales` defaults to 3 (detectron2); with `sizes`, `scales` defaults to 1, as in a recipe.
    Strides default to 8, 16, 32, ... one per size level. Inputs are padded to a multiple of 32.

    Raises:
        UsageError: a flag is malformed, or the flags disagree on the number of levels.
    """
    if sizes is None:
        size_value: Any = DEFAULT_SIZES
        scales = DEFAULT_SCALES if scales is None else scales
    else:
        size_value = _yaml_list(sizes, "--sizes") if sizes.strip().startswith("[") else sizes
    try:
        level_sizes = parse_anchor_sizes(size_value, scales=scales)
    except AnchorSizeError as exc:
        raise UsageError(f"--sizes {sizes or DEFAULT_SIZES}: {exc}") from None
    ratio_values = DEFAULT_RATIOS if ratios is None else _positive_numbers(ratios, "--ratios")
    if not 0.0 <= offset < 1.0:
        raise UsageError(
            f"--offset {offset:g}: must be in [0, 1) (a fraction of the stride); "
            "0.0 is detectron2's default, 0.5 centres anchors in their cell"
        )
    if strides is None:
        stride_values = [DEFAULT_FIRST_STRIDE * 2**i for i in range(len(level_sizes))]
    else:
        stride_values = parse_strides(strides)
    if len(level_sizes) == 1:
        level_sizes = level_sizes * len(stride_values)
    if len(level_sizes) != len(stride_values):
        raise UsageError(
            f"--sizes gives {len(level_sizes)} levels but --strides {strides} gives "
            f"{len(stride_values)}; give one stride per level (or one size list for all levels)"
        )
    counts = {len(level) * len(ratio_values) for level in level_sizes}
    if len(counts) != 1:
        raise UsageError(
            f"--sizes {sizes}: every level needs the same number of sizes, since the head is "
            "shared across levels"
        )
    return AnchorSpec(
        level_names=tuple(f"p{int(math.log2(s))}" for s in stride_values),
        strides=tuple(stride_values),
        sizes=tuple(tuple(level) for level in level_sizes),
        aspect_ratios=tuple(tuple(ratio_values) for _ in stride_values),
        offset=float(offset),
        size_divisibility=DEFAULT_SIZE_DIVISIBILITY,
    )


def parse_strides(text: str) -> list[int]:
    """'8,16,32,64,128' -> [8, 16, 32, 64, 128]: increasing powers of two (the FPN halves)."""
    values = _numbers(text, "--strides")
    if any(not float(v).is_integer() or v < 1 or int(v) & (int(v) - 1) for v in values):
        raise UsageError(
            f"--strides {text}: every stride must be a power of two (each FPN level halves the "
            "feature map), e.g. 8,16,32,64,128"
        )
    strides = [int(v) for v in values]
    if any(a >= b for a, b in zip(strides[:-1], strides[1:], strict=True)):
        raise UsageError(f"--strides {text}: strides must increase from level to level")
    return strides


def parse_image_size(text: str, *, option: str = "--image-size") -> tuple[int, int]:
    """'800x1333' -> (800, 1333): height x width of the model input, in pixels."""
    match = _IMAGE_SIZE.match(text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UsageError(f"{option} {text}: expected HEIGHTxWIDTH in pixels, e.g. 800x1333")
    return int(match[1]), int(match[2])


def recipe_image_hw(resize: ResizeConfig) -> tuple[int, int]:
    """The largest input the recipe's test resize makes: its short side x its max size.

    With several short sizes (or a range) the largest is used.
    """
    short = max(resize.short_sizes)
    return short, max(resize.max_size, short)


def padded_hw(image_hw: tuple[int, int], size_divisibility: int) -> tuple[int, int]:
    """The model input size: each side rounded up to a multiple of `size_divisibility`."""
    d = max(int(size_divisibility), 1)
    return tuple(-(-int(side) // d) * d for side in image_hw)  # type: ignore[return-value]


def feature_hw(padded: tuple[int, int], stride: int) -> tuple[int, int]:
    """Feature map size of a level of `stride` (a power of two): ceil-halve log2(stride) times."""
    height, width = padded
    for _ in range(int(math.log2(stride))):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


def level_anchors(
    spec: AnchorSpec, image_hw: tuple[int, int], generator: AnchorGenerator | None = None
) -> list[Tensor]:
    """Per level, the (H_l * W_l * A, 4) float32 XYXY anchors of an image of `image_hw`."""
    padded = padded_hw(image_hw, spec.size_divisibility)
    generator = generator or spec.generator()
    return generator.grid_anchors([feature_hw(padded, s) for s in spec.strides])


@dataclass(frozen=True)
class LevelLayout:
    """One pyramid level: its anchors of location (0, 0) before the offset shift, and counts."""

    name: str
    stride: int
    sizes: tuple[float, ...]
    aspect_ratios: tuple[float, ...]
    cell_anchors: tuple[tuple[float, float, float, float], ...]
    feature_size: tuple[int, int]
    num_anchors: int

    @property
    def anchors_per_location(self) -> int:
        return len(self.cell_anchors)


@dataclass(frozen=True)
class AnchorLayout:
    """All levels for one input size (H x W) and its padded size."""

    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    levels: tuple[LevelLayout, ...]

    @property
    def total_anchors(self) -> int:
        return sum(level.num_anchors for level in self.levels)

    def to_json(self) -> dict[str, Any]:
        """`retina anchors --json`: levels (name, stride, sizes, aspect_ratios, cell_anchors,
        feature_size, num_anchors), total_anchors, image_size and padded_size ([h, w])."""
        return {
            "image_size": list(self.image_size),
            "padded_size": list(self.padded_size),
            "levels": [
                {
                    "name": level.name,
                    "stride": level.stride,
                    "sizes": list(level.sizes),
                    "aspect_ratios": list(level.aspect_ratios),
                    "cell_anchors": [list(box) for box in level.cell_anchors],
                    "feature_size": list(level.feature_size),
                    "num_anchors": level.num_anchors,
                }
                for level in self.levels
            ],
            "total_anchors": self.total_anchors,
        }


def describe_anchors(spec: AnchorSpec, image_hw: tuple[int, int]) -> AnchorLayout:
    """The anchors of every level for a model input of `image_hw` (before padding)."""
    generator = spec.generator()
    padded = padded_hw(image_hw, spec.size_divisibility)
    levels = []
    for name, stride, sizes, ratios, cell in zip(
        spec.level_names,
        spec.strides,
        spec.sizes,
        spec.aspect_ratios,
        generator.cell_anchors,
        strict=True,
    ):
        h, w = feature_hw(padded, stride)
        levels.append(
            LevelLayout(
                name=name,
                stride=stride,
                sizes=tuple(sizes),
                aspect_ratios=tuple(ratios),
                cell_anchors=tuple(tuple(box) for box in cell.tolist()),
                feature_size=(h, w),
                num_anchors=h * w * cell.shape[0],
            )
        )
    return AnchorLayout(image_size=tuple(image_hw), padded_size=padded, levels=tuple(levels))


def format_number(value: float, digits: int = 2) -> str:
    """32 -> '32', 40.3174... -> '40.32': whole numbers bare, others to `digits` decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.{digits}f}"


def _numbers(text: str, option: str) -> list[float]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not values or any(not math.isfinite(v) for v in values):
        raise UsageError(f"{option} {text}: expected comma-separated numbers, e.g. 0.5,1,2")
    return values


def _positive_numbers(text: str, option: str) -> list[float]:
    values = _numbers(text, option)
    if any(v <= 0 for v in values):
        raise UsageError(f"{option} {text}: every value must be positive (height / width)")
    return values


def _yaml_list(text: str, option: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise UsageError(
            f"{option} {text}: not a valid list; write e.g. [[32, 40.3], [64, 80.6]]"
        ) from None
