"""Anchor boxes over a feature pyramid, laid out exactly as detectron2's DefaultAnchorGenerator.

Shape legend: L levels, A anchors per location, H_l x W_l the feature map of level l.

Cell anchors (the A boxes centred on (0, 0) of one level) are listed size-major: for each size,
for each aspect ratio, ``w = sqrt(size**2 / ar)``, ``h = ar * w``, box ``(-w/2, -h/2, w/2, h/2)``,
computed in Python floats and stored as float32 with no rounding. torchvision's generator is
ratio-major and rounds, so its anchors do not fit detectron2 weights.

The grid of level l shifts the cell anchors by ``(offset + j) * stride`` along each axis, with
y outer, x inner and the cell anchor innermost: anchor ``(y * W + x) * A + a``.

This module imports only torch: the `retina anchors` tool reuses it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

# Grid anchors are cached per (feature sizes, device, dtype); multi-scale training produces a
# handful of distinct input sizes, so a small LRU is enough and bounds the memory.
_GRID_CACHE_SIZE = 32


def cell_anchors_for_level(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """The A = len(sizes) * len(aspect_ratios) anchors of one location, centred on (0, 0).

    Sizes are square roots of the anchor area in input pixels; an aspect ratio is height / width.
    Returns (A, 4) float32 XYXY, size-major (all ratios of the first size come first).
    """
    boxes = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            boxes.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def _broadcast(values: Sequence[Sequence[float]], num_levels: int, name: str) -> list[list[float]]:
    # detectron2 applies a list holding a single inner list to every level.
    if len(values) == 1:
        return [list(values[0])] * num_levels
    if len(values) != num_levels:
        raise ValueError(
            f"AnchorGenerator: {name} has {len(values)} inner lists but there are {num_levels} "
            f"strides; give one inner list per level or a single one for all levels"
        )
    return [list(v) for v in values]


class AnchorGenerator(nn.Module):
    """Anchors of every pyramid level for a given set of feature map sizes.

    Args (keyword-only):
        sizes: per level, the anchor sizes in input pixels (a single inner list is used for all
            levels, as detectron2 does).
        aspect_ratios: per level, the height/width ratios (a single inner list applies to all).
        strides: per level, the feature stride in input pixels (e.g. [8, 16, 32, 64, 128]).
        offset: where the first anchor centre lies, in units of the stride (0.0 = pixel (0, 0)
            as detectron2's default, 0.5 = centre of the first cell).

    The cell anchors are non-persistent buffers, so `.to(device)` moves them and the state dict
    holds no anchors.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[int],
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if len(strides) == 0:
            raise ValueError("AnchorGenerator: strides is empty; give one stride per level")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"AnchorGenerator: offset must be in [0, 1), got {offset}")
        num_levels = len(strides)
        level_sizes = _broadcast(sizes, num_levels, "sizes")
        level_ratios = _broadcast(aspect_ratios, num_levels, "aspect_ratios")
        for level, (s, r) in enumerate(zip(level_sizes, level_ratios, strict=True)):
            if not s or not r:
                raise ValueError(f"AnchorGenerator: level {level} has no sizes or no aspect ratios")
            if min(s) <= 0 or min(r) <= 0:
                raise ValueError(
                    f"AnchorGenerator: level {level} has a size or aspect ratio <= 0: {s}, {r}"
                )
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        self.sizes = level_sizes
        self.aspect_ratios = level_ratios
        for level, (s, r) in enumerate(zip(level_sizes, level_ratios, strict=True)):
            self.register_buffer(f"_cell_anchors_{level}", cell_anchors_for_level(s, r), False)
        self._grid_cache: OrderedDict[tuple, list[Tensor]] = OrderedDict()

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def cell_anchors(self) -> list[Tensor]:
        """Per level, the (A_l, 4) float32 cell anchors centred on (0, 0)."""
        return [getattr(self, f"_cell_anchors_{level}") for level in range(self.num_levels)]

    @property
    def num_anchors_per_location(self) -> list[int]:
        """Per level, A_l = number of sizes x number of aspect ratios."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> AnchorGenerator:
        # Moving or casting the module invalidates anchors cached on the old device.
        self._grid_cache.clear()
        return super()._apply(fn, recurse)

    def grid_anchors(self, feature_hw: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Anchors of every level for feature maps of the given (H_l, W_l) sizes.

        Returns one (H_l * W_l * A_l, 4) float32 XYXY tensor per level, in input pixels,
        on the device of the cell anchors. Results are cached; do not modify them in place.
        """
        if len(feature_hw) != self.num_levels:
            raise ValueError(
                f"AnchorGenerator.grid_anchors: got {len(feature_hw)} feature sizes for "
                f"{self.num_levels} levels"
            )
        key = tuple((int(h), int(w)) for h, w in feature_hw)
        cached = self._grid_cache.get(key)
        if cached is not None:
            self._grid_cache.move_to_end(key)
            return cached
        anchors = [
            self._grid_one_level(cell, stride, h, w)
            for cell, stride, (h, w) in zip(self.cell_anchors, self.strides, key, strict=True)
        ]
        self._grid_cache[key] = anchors
        if len(self._grid_cache) > _GRID_CACHE_SIZE:
            self._grid_cache.popitem(last=False)
        return anchors

    def _grid_one_level(self, cell: Tensor, stride: int, height: int, width: int) -> Tensor:
        start = self.offset * stride
        shifts_x = torch.arange(
            start, width * stride, step=stride, dtype=torch.float32, device=cell.device
        )
        shifts_y = torch.arange(
            start, height * stride, step=stride, dtype=torch.float32, device=cell.device
        )
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
        shift_x = shift_x.reshape(-1)
        shift_y = shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H*W, 4)
        return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)  # (H*W*A, 4)

    def forward(self, feature_hw: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Same as `grid_anchors`."""
        return self.grid_anchors(feature_hw)
