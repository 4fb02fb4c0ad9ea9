"""ResizeShortestEdge and RandomFlip with detectron2's exact arithmetic.

Pixels are resized with PIL's bilinear filter on uint8, as detectron2 does; PIL antialiases when
it shrinks, so `torch.nn.functional.interpolate` (and torchvision's tensor resize) give other
pixels. Boxes follow detectron2's `Transform.apply_box`: the four corners are mapped in float64,
the min/max of the mapped corners is the new box, which is then clipped to the image, cast to
float32, and dropped if its width or height is not above 1e-5 px (`Boxes.nonempty`).

Randomness comes only from the `numpy.random.Generator` passed to `Augmentation.sample`, so a
caller that seeds it from (seed, sample index) gets the same augmentation whatever process or
worker runs it.

The test resize (one short side, no flip) is `resize_for_inference` for an image alone and
`inference_augmentation` for a loader's image and boxes; `to_chw_tensor` makes the model's input of
either. Every caller (evaluation, `retina predict` on images and videos, `retina export`'s check,
`retina anchors --image`) goes through them; the sizes come from `build.inference_resize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

Sampling = Literal["choice", "range"]
Flip = Literal["horizontal", "vertical", "none"]

# detectron2's `Boxes.nonempty(threshold=1e-5)` as used by `filter_empty_instances`.
MIN_BOX_SIDE = 1e-5


def resized_hw(*, height: int, width: int, short_size: int, max_size: int) -> tuple[int, int]:
    """Output (height, width) of ResizeShortestEdge for one image.

    The short side becomes `short_size`, the other keeps the aspect ratio, then both are scaled
    down if the long side exceeds `max_size`; all in float64, each side rounded as int(x + 0.5).
    `short_size` 0 means no resize (detectron2's convention).

    Each side is at least 1 px: an image of an extreme aspect ratio (20000x5 px) would round its
    short side to 0 after the long side is capped, which detectron2 passes on to a resize that
    fails; here it stays 1 px (and the long side `max_size`). Every other image is unchanged.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"resized_hw: image size must be positive, got {height}x{width} (HxW)")
    if short_size == 0:
        return height, width
    size = float(short_size)
    scale = size / min(height, width)
    if height < width:
        new_h, new_w = size, scale * width
    else:
        new_h, new_w = scale * height, size
    longer = max(new_h, new_w)
    if longer > max_size:
        scale = max_size / longer
        new_h, new_w = new_h * scale, new_w * scale
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def resize_image(
    image: np.ndarray, *, height: int, width: int, hflip: bool = False, vflip: bool = False
) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8 with PIL bilinear (antialiased when
    shrinking), then mirrored left-right (`hflip`) and/or top-bottom (`vflip`).

    Channels are filtered independently, so the channel order does not matter. Flipping in PIL
    is a pure pixel permutation, like numpy's, and several times faster on HWC arrays.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"resize_image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if image.shape[:2] == (height, width) and not (hflip or vflip):
        return image
    pil = Image.fromarray(image)
    if image.shape[:2] != (height, width):
        pil = pil.resize((width, height), Image.Resampling.BILINEAR)
    if hflip:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if vflip:
        pil = pil.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return np.array(pil)  # writable, unlike np.asarray of a PIL image


def resize_for_inference(image: np.ndarray, *, short_size: int, max_size: int, min_side: int = 1) -> np.ndarray:
    """The test resize of one (H, W, 3) uint8 image: ResizeShortestEdge to `short_size` with the
    long side capped at `max_size` (`resized_hw`), PIL bilinear (`resize_image`), no flip.

    min_side: each side of the result is at least this many pixels (an exported graph's smallest
    input, `retina export`'s check); 1, the default, changes nothing (`resized_hw` gives >= 1).
    The loader's form of the same resize is `inference_augmentation`.
    """
    if image.ndim != 3:
        raise ValueError(f"resize_for_inference: expected an (H, W, 3) image, got shape {image.shape}")
    new_h, new_w = resized_hw(
        height=image.shape[0], width=image.shape[1], short_size=short_size, max_size=max_size
    )
    return resize_image(image, height=max(new_h, min_side), width=max(new_w, min_side))


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> the model's input (3, H, W) uint8, C-contiguous, channel order kept."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"to_chw_tensor: expected an (H, W, 3) image, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, H, W)


def transform_boxes(
    boxes: np.ndarray,
    *,
    from_hw: tuple[int, int],
    to_hw: tuple[int, int],
    hflip: bool,
    vflip: bool,
) -> np.ndarray:
    """Map (G, 4) XYXY boxes through a resize from `from_hw` to `to_hw`, then the flips.

    Returns (G, 4) float64, not yet clipped. Scale factors are new/old in float64 (detectron2's
    `ResizeTransform.apply_coords`); a flip maps x to W - x with W the resized width.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (old_h, old_w), (new_h, new_w) = from_hw, to_hw
    xs = boxes[:, [0, 2]] * (new_w * 1.0 / old_w)  # (G, 2)
    ys = boxes[:, [1, 3]] * (new_h * 1.0 / old_h)  # (G, 2)
    if hflip:
        xs = new_w - xs
    if vflip:
        ys = new_h - ys
    # min/max of the mapped corners, as apply_box does: a flip swaps x1 and x2.
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)


def clip_and_filter_boxes(
    boxes: np.ndarray, labels: np.ndarray, *, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Clip (G, 4) XYXY boxes to [0, width] x [0, height], cast to float32, and drop those whose
    width or height is not above `MIN_BOX_SIDE`.

    Returns (boxes (G', 4) float32, labels (G',) of `labels`'s dtype), order kept.
    """
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.minimum(np.asarray(boxes, dtype=np.float64).clip(min=0), limits)
    clipped = clipped.astype(np.float32).reshape(-1, 4)
    keep = ((clipped[:, 2] - clipped[:, 0]) > MIN_BOX_SIDE) & (
        (clipped[:, 3] - clipped[:, 1]) > MIN_BOX_SIDE
    )
    return clipped[keep], np.asarray(labels)[keep]


@dataclass(frozen=True)
class AugmentParams:
    """What was drawn for one sample: the short side and the flips."""

    short_size: int
    hflip: bool
    vflip: bool


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """ResizeShortestEdge followed by an optional RandomFlip (probability 0.5).

    short_sizes: short-side lengths in pixels; "choice" picks one of them uniformly, "range"
    needs [min, max] and picks an integer in min..max inclusive (detectron2's two styles).
    max_size: cap on the long side in pixels. flip: "horizontal", "vertical" or "none".
    For evaluation use one short size and flip "none": the result is then deterministic.
    """

    short_sizes: tuple[int, ...]
    max_size: int
    sampling: Sampling = "choice"
    flip: Flip = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "short_sizes", tuple(int(s) for s in self.short_sizes))
        if not self.short_sizes or any(s < 0 for s in self.short_sizes):
            raise ValueError(f"Augmentation: short_sizes must be >= 0, got {self.short_sizes}")
        if self.sampling not in ("choice", "range"):
            raise ValueError(f"Augmentation: sampling must be choice|range, got {self.sampling!r}")
        if self.sampling == "range" and (
            len(self.short_sizes) != 2 or self.short_sizes[0] > self.short_sizes[1]
        ):
            raise ValueError(
                f"Augmentation: sampling 'range' needs short_sizes (min, max), got "
                f"{self.short_sizes}"
            )
        if self.max_size < 1:
            raise ValueError(f"Augmentation: max_size must be >= 1, got {self.max_size}")
        if self.flip not in ("horizontal", "vertical", "none"):
            raise ValueError(
                f"Augmentation: flip must be horizontal|vertical|none, got {self.flip!r}"
            )

    def sample(self, rng: np.random.Generator) -> AugmentParams:
        """Draw the short side, then the flip, from `rng` (in that order, as detectron2 does)."""
        if self.sampling == "choice":
            short = self.short_sizes[int(rng.integers(len(self.short_sizes)))]
        else:
            short = int(rng.integers(self.short_sizes[0], self.short_sizes[1] + 1))
        flipped = self.flip != "none" and bool(rng.random() < 0.5)
        return AugmentParams(
            short_size=short,
            hflip=flipped and self.flip == "horizontal",
            vflip=flipped and self.flip == "vertical",
        )

    def apply(
        self, image: np.ndarray, *, boxes: np.ndarray, labels: np.ndarray, params: AugmentParams
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Resize and flip one image and its ground truth.

        Args:
            image: (H, W, 3) uint8. boxes: (G, 4) XYXY in its pixels. labels: (G,).
            params: from `sample` (or built by hand).

        Returns:
            image (H', W', 3) uint8 C-contiguous, boxes (G', 4) float32 XYXY in its pixels
            (clipped, degenerate ones dropped), labels (G',).
        """
        height, width = image.shape[:2]
        new_h, new_w = resized_hw(
            height=height, width=width, short_size=params.short_size, max_size=self.max_size
        )
        out = resize_image(image, height=new_h, width=new_w, hflip=params.hflip, vflip=params.vflip)
        mapped = transform_boxes(
            boxes,
            from_hw=(height, width),
            to_hw=(new_h, new_w),
            hflip=params.hflip,
            vflip=params.vflip,
        )
        out_boxes, out_labels = clip_and_filter_boxes(mapped, labels, height=new_h, width=new_w)
        return np.ascontiguousarray(out), out_boxes, out_labels


def inference_augmentation(*, short_size: int, max_size: int) -> Augmentation:
    """The test resize as a loader's `Augmentation` (one short side, no flip: deterministic); its
    image is exactly `resize_for_inference`'s, and the boxes follow."""
    return Augmentation(short_sizes=(short_size,), max_size=max_size, flip="none")
