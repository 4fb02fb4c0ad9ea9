"""Box-aware geometric augmentations on one image: expand (zoom out), crop with a minimum box
overlap, scale jitter, vertical flip, and the rule that drops boxes cut away.

Pixels and boxes go through torchvision's transforms v2 kernels (`torchvision.transforms.v2
.functional` on `tv_tensors.Image` and `tv_tensors.BoundingBoxes`), so a crop moves and clips the
boxes exactly as it moves the pixels. Parameters are never drawn inside torchvision (its
transform classes draw from torch's global generator); every function here takes its
parameters, and `sample_*` draws them from a `numpy.random.Generator` the caller seeds per
sample (see `retinacli/data/augment/box.py`).

Each box carries its *visible fraction*: the part of its area on entry to the augmentation that
is still inside the image. Every operation that cuts the canvas (a crop, the window of a scale
jitter or a mosaic tile) multiplies it by (area after clipping) / (area before); resizing and
flipping scale both areas alike and leave it unchanged. `drop_hidden` then drops the boxes whose
fraction is below `min_visible` (or whose width or height is not above 1e-5 px, detectron2's
rule): a box that loses most of its area is no longer a fair example of its object.

Boxes are XYXY in absolute pixels of the current canvas; images (3, H, W) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from retinacli.data.augment.resize_flip import MIN_BOX_SIDE

# Attempts at a crop that keeps enough of a box before the image is left uncropped.
CROP_TRIALS = 50
# A crop's side fractions (height / image height, width / image width) differ at most this
# factor, so its shape stays within a factor 2 of the image's (SSD's aspect-ratio rule).
CROP_MAX_DISTORTION = 2.0


@dataclass
class Tile:
    """One image on its way through the augmentation.

    image: (3, H, W) uint8. boxes: (G, 4) float32 XYXY in its pixels, inside [0, W] x [0, H].
    labels: (G,) int64. visible: (G,) float64 in [0, 1], the part of each box's area on entry
    still in the image.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    visible: Tensor

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    @staticmethod
    def of(image: Tensor, boxes: Tensor, labels: Tensor) -> Tile:
        """A tile whose boxes are all fully visible; boxes are clipped to the image first."""
        height, width = int(image.shape[-2]), int(image.shape[-1])
        clipped = _clip(boxes.to(torch.float32).reshape(-1, 4), height=height, width=width)
        return Tile(image, clipped, labels.to(torch.int64).reshape(-1), torch.ones(len(clipped), dtype=torch.float64))


def box_areas(boxes: Tensor) -> Tensor:
    """(G, 4) XYXY -> (G,) float64 areas (0 for inverted boxes)."""
    boxes = boxes.to(torch.float64)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _clip(boxes: Tensor, *, height: int, width: int) -> Tensor:
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    return torch.minimum(boxes.clamp(min=0), limits)


def _wrap(tile: Tile) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    return tv_tensors.Image(tile.image), tv_tensors.BoundingBoxes(
        tile.boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=tile.hw
    )


def window(tile: Tile, *, top: int, left: int, height: int, width: int, fill: int) -> Tile:
    """The `height` x `width` window of the tile whose top-left corner is at (`left`, `top`) in
    its pixels; parts of the window outside the image (negative offsets, or reaching past the
    far edges) are filled with `fill`. Boxes are moved by (-left, -top) and clipped to the
    window, and their visible fraction shrinks by the area clipping removed.
    """
    if height < 1 or width < 1:
        raise ValueError(f"window: size must be positive, got {height}x{width} (HxW)")
    h, w = tile.hw
    pad_left, pad_top = max(0, -left), max(0, -top)
    pad_right, pad_bottom = max(0, left + width - w), max(0, top + height - h)
    image, boxes = _wrap(tile)
    if pad_left or pad_top or pad_right or pad_bottom:
        padding = [pad_left, pad_top, pad_right, pad_bottom]
        image = F.pad(image, padding, fill=fill)
        boxes = F.pad(boxes, padding)
    before = box_areas(boxes.as_subclass(Tensor))
    image = F.crop(image, top + pad_top, left + pad_left, height, width)
    boxes = F.crop(boxes, top + pad_top, left + pad_left, height, width)  # moved and clipped
    after = box_areas(boxes.as_subclass(Tensor))
    kept = torch.where(before > 0, after / torch.where(before > 0, before, 1.0), 0.0)
    return Tile(
        image.as_subclass(Tensor), boxes.as_subclass(Tensor), tile.labels, tile.visible * kept
    )


def resize(tile: Tile, *, height: int, width: int) -> Tile:
    """Resize the image (bilinear, antialiased when shrinking) and its boxes to `height` x
    `width`; the visible fractions do not change."""
    if (height, width) == tile.hw:
        return tile
    image, boxes = _wrap(tile)
    image = F.resize(image, [height, width], antialias=True)
    boxes = F.resize(boxes, [height, width])
    return Tile(image.as_subclass(Tensor), boxes.as_subclass(Tensor), tile.labels, tile.visible)


def vertical_flip(tile: Tile) -> Tile:
    """Mirror top-bottom: y becomes H - y."""
    image, boxes = _wrap(tile)
    return Tile(
        F.vertical_flip(image).as_subclass(Tensor),
        F.vertical_flip(boxes).as_subclass(Tensor),
        tile.labels,
        tile.visible,
    )


# ----------------------------------------------------------------------------- expand


@dataclass(frozen=True)
class ExpandParams:
    """Canvas size (height, width) and where the image's top-left corner sits on it."""

    height: int
    width: int
    top: int
    left: int


def sample_expand(rng: np.random.Generator, *, hw: tuple[int, int], max_ratio: float) -> ExpandParams:
    """A canvas `r` times the image's sides, r uniform in [1, max_ratio], each side rounded half
    up; the image at a uniform integer offset on it."""
    h, w = hw
    ratio = float(rng.uniform(1.0, max_ratio))
    height, width = max(h, int(h * ratio + 0.5)), max(w, int(w * ratio + 0.5))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return ExpandParams(height, width, top, left)


def expand(tile: Tile, params: ExpandParams, *, fill: int) -> Tile:
    """Zoom out: put the image on a larger canvas of `fill` (SSD's expand); boxes move by
    (left, top) and nothing is cut."""
    return window(tile, top=-params.top, left=-params.left, height=params.height, width=params.width, fill=fill)


# ----------------------------------------------------------------------------- crop


@dataclass(frozen=True)
class CropParams:
    """The crop window in the image's pixels."""

    top: int
    left: int
    height: int
    width: int


def kept_fractions(boxes: Tensor, crop: CropParams) -> Tensor:
    """(G,) float64: the part of each box's area inside the crop (0 for an empty box)."""
    x0 = boxes[:, 0].to(torch.float64).clamp(min=crop.left)
    y0 = boxes[:, 1].to(torch.float64).clamp(min=crop.top)
    x1 = boxes[:, 2].to(torch.float64).clamp(max=crop.left + crop.width)
    y1 = boxes[:, 3].to(torch.float64).clamp(max=crop.top + crop.height)
    inside = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area = box_areas(boxes)
    return torch.where(area > 0, inside / torch.where(area > 0, area, 1.0), 0.0)


def sample_crop(
    rng: np.random.Generator, *, hw: tuple[int, int], boxes: Tensor, min_scale: float, min_box_overlap: float
) -> CropParams | None:
    """A crop whose height and width are each a uniform fraction in [min_scale, 1] of the
    image's (rounded half up, at least 1 px), the two fractions within a factor
    `CROP_MAX_DISTORTION` of each other, at a uniform integer position, accepted when the image
    has no box or when at least one box keeps at least `min_box_overlap` of its area inside it.
    None (no crop) when `CROP_TRIALS` attempts found no acceptable window."""
    h, w = hw
    for _ in range(CROP_TRIALS):
        fy, fx = float(rng.uniform(min_scale, 1.0)), float(rng.uniform(min_scale, 1.0))
        if max(fy / fx, fx / fy) > CROP_MAX_DISTORTION:
            continue
        height = min(h, max(1, int(h * fy + 0.5)))
        width = min(w, max(1, int(w * fx + 0.5)))
        crop = CropParams(int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1)), height, width)
        if len(boxes) == 0 or float(kept_fractions(boxes, crop).max()) >= min_box_overlap:
            return crop
    return None


def crop(tile: Tile, params: CropParams) -> Tile:
    """Zoom in: keep only the crop window; boxes are moved, clipped and lose visible fraction."""
    return window(tile, top=params.top, left=params.left, height=params.height, width=params.width, fill=0)


# ----------------------------------------------------------------------------- scale jitter


@dataclass(frozen=True)
class ScaleJitterParams:
    """The scale factor, the scaled size, and the output window's top-left corner in the scaled
    image (negative: the image is placed that far inside a padded canvas)."""

    scale: float
    scaled_hw: tuple[int, int]
    top: int
    left: int


def sample_scale_jitter(
    rng: np.random.Generator, *, hw: tuple[int, int], min_scale: float, max_scale: float
) -> ScaleJitterParams:
    """Scale uniform in [min_scale, max_scale]; each side of the scaled image rounded half up
    (at least 1 px); along each side, a window of the original length at a uniform integer
    offset when the scaled side is longer, else the scaled image at a uniform offset inside it."""
    h, w = hw
    scale = float(rng.uniform(min_scale, max_scale))
    sh, sw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def offset(scaled: int, size: int) -> int:
        if scaled >= size:
            return int(rng.integers(0, scaled - size + 1))
        return -int(rng.integers(0, size - scaled + 1))

    top = offset(sh, h)
    left = offset(sw, w)
    return ScaleJitterParams(scale, (sh, sw), top, left)


def scale_jitter(tile: Tile, params: ScaleJitterParams, *, fill: int) -> Tile:
    """Large-scale jitter: resize by `params.scale`, then crop or pad (with `fill`) back to the
    tile's own size, so the output keeps the size the resize step gave it."""
    h, w = tile.hw
    scaled = resize(tile, height=params.scaled_hw[0], width=params.scaled_hw[1])
    return window(scaled, top=params.top, left=params.left, height=h, width=w, fill=fill)


# ----------------------------------------------------------------------------- drop rule


@dataclass(frozen=True)
class Kept:
    """The boxes left after `drop_hidden`, and what it dropped.

    boxes (G', 4) float32, labels (G',) int64: the kept ground truth, order kept.
    dropped: (D, 4) float32, the visible remains of the dropped boxes that still have an area
    (for pictures); num_dropped: every dropped box, remains or not.
    """

    boxes: Tensor
    labels: Tensor
    dropped: Tensor
    num_dropped: int


def drop_hidden(tile: Tile, *, min_visible: float) -> Kept:
    """Keep the boxes with at least `min_visible` of their area still in the image and both sides
    above `MIN_BOX_SIDE`; drop the others."""
    sides = tile.boxes[:, 2:] - tile.boxes[:, :2]
    nonempty = (sides > MIN_BOX_SIDE).all(dim=1)
    keep = nonempty & (tile.visible >= min_visible)
    return Kept(
        boxes=tile.boxes[keep].contiguous(),
        labels=tile.labels[keep].contiguous(),
        dropped=tile.boxes[~keep & nonempty].contiguous(),
        num_dropped=int((~keep).sum()),
    )
