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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from retinacli.engine.anchors import AnchorGenerator


@dataclass(frozen=True)
class AnchorSpec:
    """Everything that decides a model's anchors, one entry per pyramid level.

    level_names: e.g. ("p3", ..., "p7"). strides: input pixels per feature cell, powers of two.
    sizes / aspect_ratios: per level (sqrt of area in input pixels; height / width).
    offset: first anchor centre at offset * stride. size_divisibility: inputs are padded to it.
    `build.build_anchor_spec` makes one from a recipe, whose schema has checked every value.
    """

    level_names: tuple[str, ...]
    strides: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    offset: float
    size_divisibility: int

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
