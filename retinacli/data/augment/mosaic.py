"""Mosaic: four training images in one, meeting at a random centre (YOLOv4's mosaic, on a canvas
of the first image's size so batches keep the sizes the resize step gives).

The canvas (H, W) is split at a centre (cx, cy), each uniform in the middle half of its side,
into four quadrants: 0 top-left [0, cx) x [0, cy), 1 top-right, 2 bottom-left, 3 bottom-right.
Each tile is scaled, keeping its aspect ratio, by the smallest factor that makes it cover its
quadrant, and the part of it next to the centre fills the quadrant (the top-left quadrant shows
its tile's bottom-right corner, and so on); its boxes are moved, clipped to the quadrant and
lose visible fraction as in `retinacli.data.augment.geometry.window`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from retinacli.data.augment.geometry import Tile, resize, window

QUADRANTS = 4


@dataclass(frozen=True)
class MosaicParams:
    """The centre (cx, cy) in canvas pixels and, for each tile, its quadrant (a permutation of
    0..3; tile 0 is the sampled image)."""

    cx: int
    cy: int
    quadrants: tuple[int, ...]


def sample_mosaic(rng: np.random.Generator, *, hw: tuple[int, int]) -> MosaicParams:
    """cx uniform integer in [W // 4, W - W // 4], cy likewise, and a random quadrant per tile."""
    h, w = hw
    cx = int(rng.integers(w // 4, w - w // 4 + 1))
    cy = int(rng.integers(h // 4, h - h // 4 + 1))
    return MosaicParams(cx, cy, tuple(int(q) for q in rng.permutation(QUADRANTS)))


def quadrant_box(quadrant: int, *, cx: int, cy: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a quadrant on the (H, W) canvas."""
    h, w = hw
    top, height = (0, cy) if quadrant in (0, 1) else (cy, h - cy)
    left, width = (0, cx) if quadrant in (0, 2) else (cx, w - cx)
    return top, left, height, width


def mosaic(tiles: Sequence[Tile], params: MosaicParams, *, fill: int) -> Tile:
    """Four tiles -> one tile of `tiles[0]`'s size (see the module docstring). A quadrant of zero
    width or height (an image under 4 px) stays `fill`, its tile's boxes dropped as invisible."""
    if len(tiles) != QUADRANTS or sorted(params.quadrants) != list(range(QUADRANTS)):
        raise ValueError(f"mosaic: need 4 tiles and a permutation of 0..3, got {len(tiles)} and {params.quadrants}")
    hw = tiles[0].hw
    canvas = torch.full((3, *hw), fill, dtype=torch.uint8)
    boxes, labels, visible = [], [], []
    for tile, quadrant in zip(tiles, params.quadrants, strict=True):
        top, left, height, width = quadrant_box(quadrant, cx=params.cx, cy=params.cy, hw=hw)
        if height < 1 or width < 1:
            boxes.append(tile.boxes[:0])
            labels.append(tile.labels[:0])
            visible.append(tile.visible[:0])
            continue
        th, tw = tile.hw
        scale = max(height / th, width / tw)
        scaled = resize(tile, height=max(height, int(th * scale + 0.5)), width=max(width, int(tw * scale + 0.5)))
        sh, sw = scaled.hw
        # the part of the scaled tile next to the centre
        from_top = sh - height if quadrant in (0, 1) else 0
        from_left = sw - width if quadrant in (0, 2) else 0
        part = window(scaled, top=from_top, left=from_left, height=height, width=width, fill=fill)
        canvas[:, top : top + height, left : left + width] = part.image
        shift = torch.tensor([left, top, left, top], dtype=part.boxes.dtype)
        boxes.append(part.boxes + shift)
        labels.append(part.labels)
        visible.append(part.visible)
    return Tile(canvas, torch.cat(boxes), torch.cat(labels), torch.cat(visible))
