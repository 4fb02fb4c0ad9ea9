"""The box-aware training augmentations (`data.train.augment`) around detectron2's resize and
flip, in one fixed order, each with its own probability (0: off).

For each image (the sampled one, and with mosaic the three others):

1. `expand` (zoom out onto a canvas of `fill`), 2. `crop` (zoom in, keeping at least
`min_box_overlap` of one box), 3. detectron2's ResizeShortestEdge and RandomFlip
(`data.train.resize`, `data.train.flip`, unchanged), 4. `vertical_flip`;

then for the sample: 5. `mosaic` (four images in one, the canvas of the first's size),
6. `scale_jitter` (resize by a random factor, crop or pad back to the same size), 7. `color`
(brightness, contrast, saturation, hue), and finally the drop rule: a box is kept when at least
`min_visible` of its area is still in the image (see `retinacli.data.augment.geometry`).

Randomness: the loader draws the resize and flip of the sampled image from its generator of
(seed, stream position), as without these augmentations. Every other draw comes from a generator
seeded by (`rng_key` = (seed, stream, position), tile, augmentation): each augmentation has its
own stream, so turning one on or off never changes what the others draw, and a sample depends on
nothing but the seed and its position in the stream (the same with any number of workers, and
after a resume).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from retinacli.data.augment.color import adjust_color, sample_color
from retinacli.data.augment.geometry import (
    Tile,
    crop,
    drop_hidden,
    expand,
    sample_crop,
    sample_expand,
    sample_scale_jitter,
    scale_jitter,
    vertical_flip,
)
from retinacli.data.augment.mosaic import QUADRANTS, mosaic, sample_mosaic
from retinacli.data.augment.resize_flip import Augmentation, AugmentParams
from retinacli.data.images import InputFormat

# Per-augmentation generator ids (the last entry of a generator's seed).
_EXPAND, _CROP, _RESIZE, _VERTICAL_FLIP, _MOSAIC, _SCALE_JITTER, _COLOR = range(7)


@dataclass(frozen=True, kw_only=True)
class Color:
    """Colour jitter with probability `prob`; strengths as torchvision's ColorJitter."""

    prob: float = 0.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.02


@dataclass(frozen=True, kw_only=True)
class Expand:
    """Zoom out with probability `prob`, the canvas up to `max_ratio` times the image's sides."""

    prob: float = 0.0
    max_ratio: float = 2.0


@dataclass(frozen=True, kw_only=True)
class Crop:
    """Crop with probability `prob`: sides each at least `min_scale` of the image's (the two
    fractions within a factor 2), keeping at least `min_box_overlap` of the area of at least one
    box."""

    prob: float = 0.0
    min_scale: float = 0.3
    min_box_overlap: float = 0.5


@dataclass(frozen=True, kw_only=True)
class ScaleJitter:
    """With probability `prob`, resize by a factor in [min_scale, max_scale] and crop or pad back."""

    prob: float = 0.0
    min_scale: float = 0.5
    max_scale: float = 1.5


@dataclass(frozen=True, kw_only=True)
class BoxAugment:
    """Every box-aware augmentation's settings (the recipe's `data.train.augment`).

    vertical_flip, mosaic: probabilities. min_visible: the drop rule's threshold in (0, 1].
    fill: the grey level (0..255, every channel) of canvas that no image covers.
    """

    color: Color = field(default_factory=Color)
    expand: Expand = field(default_factory=Expand)
    crop: Crop = field(default_factory=Crop)
    scale_jitter: ScaleJitter = field(default_factory=ScaleJitter)
    vertical_flip: float = 0.0
    mosaic: float = 0.0
    min_visible: float = 0.5
    fill: int = 114

    def __post_init__(self) -> None:
        probs = {
            "color.prob": self.color.prob,
            "expand.prob": self.expand.prob,
            "crop.prob": self.crop.prob,
            "scale_jitter.prob": self.scale_jitter.prob,
            "vertical_flip": self.vertical_flip,
            "mosaic": self.mosaic,
        }
        for name, value in probs.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"BoxAugment: {name} must be a probability in [0, 1], got {value}")
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"BoxAugment: min_visible must be in (0, 1], got {self.min_visible}")
        if not 0 <= self.fill <= 255:
            raise ValueError(f"BoxAugment: fill must be in 0..255, got {self.fill}")
        if self.expand.max_ratio < 1.0:
            raise ValueError(f"BoxAugment: expand.max_ratio must be >= 1, got {self.expand.max_ratio}")
        if not 0.0 < self.crop.min_scale <= 1.0 or not 0.0 <= self.crop.min_box_overlap <= 1.0:
            raise ValueError(
                f"BoxAugment: need 0 < crop.min_scale <= 1 and 0 <= crop.min_box_overlap <= 1, got "
                f"{self.crop.min_scale} and {self.crop.min_box_overlap}"
            )
        if not 0.0 < self.scale_jitter.min_scale <= self.scale_jitter.max_scale:
            raise ValueError(
                "BoxAugment: need 0 < scale_jitter.min_scale <= max_scale, got "
                f"{self.scale_jitter.min_scale} and {self.scale_jitter.max_scale}"
            )

    @property
    def active(self) -> bool:
        """True when any augmentation can happen (else the loader keeps detectron2's path)."""
        return any(
            p > 0
            for p in (
                self.color.prob, self.expand.prob, self.crop.prob, self.scale_jitter.prob,
                self.vertical_flip, self.mosaic,
            )
        )


@dataclass(frozen=True)
class AugmentedSample:
    """One augmented training sample.

    image: (3, H, W) uint8, C-contiguous, in the input format. boxes: (G, 4) float32 XYXY in its
    pixels. labels: (G,) int64. dropped: (D, 4) float32, what is left of the dropped boxes (for
    pictures). boxes_in: the boxes of every image used (4 with mosaic). boxes_dropped: boxes_in
    minus G. applied: the augmentations that happened to the sample, in order.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    dropped: Tensor
    boxes_in: int
    boxes_dropped: int
    applied: tuple[str, ...]


Loader = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""index -> (image (H, W, 3) uint8 in the input format, boxes (G, 4) XYXY, labels (G,))."""


def _rng(key: Sequence[int], tile: int, augmentation: int) -> np.random.Generator:
    return np.random.default_rng([*key, tile, augmentation])


def _happens(rng: np.random.Generator, prob: float) -> bool:
    return prob > 0 and bool(rng.random() < prob)


def _one_image(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    spec: BoxAugment,
    base: Augmentation,
    base_params: AugmentParams,
    key: Sequence[int],
    tile: int,
    applied: list[str],
) -> Tile:
    """Steps 1-4 (module docstring) on one image."""
    current = Tile.of(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(np.asarray(boxes)), torch.from_numpy(np.asarray(labels)))
    rng = _rng(key, tile, _EXPAND)
    if _happens(rng, spec.expand.prob):
        current = expand(current, sample_expand(rng, hw=current.hw, max_ratio=spec.expand.max_ratio), fill=spec.fill)
        applied.append("expand")
    rng = _rng(key, tile, _CROP)
    if _happens(rng, spec.crop.prob):
        window = sample_crop(
            rng, hw=current.hw, boxes=current.boxes, min_scale=spec.crop.min_scale,
            min_box_overlap=spec.crop.min_box_overlap,
        )
        if window is not None:
            current = crop(current, window)
            applied.append("crop")
    # detectron2's resize and flip, unchanged; the labels passed through are box indices, so the
    # labels and visible fractions follow the boxes its clipping keeps.
    hwc = np.ascontiguousarray(current.image.permute(1, 2, 0).numpy())
    resized, out_boxes, index = base.apply(
        hwc, boxes=current.boxes.numpy(), labels=np.arange(len(current.boxes)), params=base_params
    )
    keep = torch.from_numpy(index)
    current = Tile(
        torch.from_numpy(resized).permute(2, 0, 1), torch.from_numpy(out_boxes), current.labels[keep], current.visible[keep]
    )
    rng = _rng(key, tile, _VERTICAL_FLIP)
    if _happens(rng, spec.vertical_flip):
        current = vertical_flip(current)
        applied.append("vertical_flip")
    return current


def augment_sample(
    load: Loader,
    index: int,
    *,
    num_images: int,
    spec: BoxAugment,
    base: Augmentation,
    base_params: AugmentParams,
    rng_key: Sequence[int],
    input_format: InputFormat,
) -> AugmentedSample:
    """Augment training sample `index` (module docstring).

    Args:
        load: reads image `i` of the dataset with its boxes and labels.
        num_images: the dataset's size (mosaic draws its three other images from it).
        spec: the settings. base: detectron2's resize and flip; base_params: their draw for
            image `index` (the loader's, as without these augmentations).
        rng_key: (seed, stream, position): seeds every other draw.
        input_format: the channel order of the images `load` returns.
    """
    applied: list[str] = []
    image, boxes, labels = load(index)
    boxes_in = len(boxes)
    tile = _one_image(
        image, boxes, labels, spec=spec, base=base, base_params=base_params, key=rng_key, tile=0, applied=applied
    )
    rng = _rng(rng_key, 0, _MOSAIC)
    if _happens(rng, spec.mosaic):
        others = [int(i) for i in rng.integers(0, num_images, size=QUADRANTS - 1)]
        params = sample_mosaic(rng, hw=tile.hw)
        tiles = [tile]
        for k, other in enumerate(others, start=1):
            image, boxes, labels = load(other)
            boxes_in += len(boxes)
            tiles.append(
                _one_image(
                    image, boxes, labels, spec=spec, base=base,
                    base_params=base.sample(_rng(rng_key, k, _RESIZE)), key=rng_key, tile=k, applied=[],
                )
            )
        tile = mosaic(tiles, params, fill=spec.fill)
        applied.append("mosaic")
    rng = _rng(rng_key, 0, _SCALE_JITTER)
    if _happens(rng, spec.scale_jitter.prob):
        jitter = sample_scale_jitter(
            rng, hw=tile.hw, min_scale=spec.scale_jitter.min_scale, max_scale=spec.scale_jitter.max_scale
        )
        tile = scale_jitter(tile, jitter, fill=spec.fill)
        applied.append("scale_jitter")
    rng = _rng(rng_key, 0, _COLOR)
    if _happens(rng, spec.color.prob):
        params_c = sample_color(
            rng, brightness=spec.color.brightness, contrast=spec.color.contrast,
            saturation=spec.color.saturation, hue=spec.color.hue,
        )
        tile = Tile(adjust_color(tile.image, params_c, input_format=input_format), tile.boxes, tile.labels, tile.visible)
        applied.append("color")
    kept = drop_hidden(tile, min_visible=spec.min_visible)
    return AugmentedSample(
        image=tile.image.contiguous(),
        boxes=kept.boxes,
        labels=kept.labels,
        dropped=kept.dropped,
        boxes_in=boxes_in,
        boxes_dropped=boxes_in - len(kept.boxes),
        applied=tuple(applied),
    )
