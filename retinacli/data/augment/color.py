"""Colour jitter: brightness, contrast, saturation and hue, as torchvision's `ColorJitter`, with
its factors drawn from a per-sample `numpy.random.Generator` instead of torch's global one.

The pixels are changed by torchvision's transforms v2 kernels (`adjust_brightness`,
`adjust_contrast`, `adjust_saturation`, `adjust_hue`) on the RGB image; boxes do not move. A BGR
image (`input_format: BGR`) is turned to RGB for them and back, so saturation and hue mean the
same whatever the model's channel order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from retinacli.data.images import InputFormat

OPERATIONS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class ColorParams:
    """The factors and the order they are applied in (names from `OPERATIONS`).

    brightness, contrast, saturation: multiplicative factors (1 leaves the image as it is);
    hue: a shift of the hue in turns, in [-0.5, 0.5] (0 leaves it).
    """

    order: tuple[str, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def sample_color(
    rng: np.random.Generator, *, brightness: float, contrast: float, saturation: float, hue: float
) -> ColorParams:
    """torchvision ColorJitter's distributions: a random order of the four operations, then
    factors uniform in [max(0, 1 - s), 1 + s] for brightness, contrast and saturation of
    strength s, and a hue shift uniform in [-hue, hue]. An operation of strength 0 is left out."""
    order = tuple(OPERATIONS[i] for i in rng.permutation(len(OPERATIONS)))
    factors = {}
    for name, strength in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        factors[name] = float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))
    shift = float(rng.uniform(-hue, hue))
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
    return ColorParams(
        order=tuple(name for name in order if strengths[name] > 0), hue=shift, **factors
    )


def adjust_color(image: Tensor, params: ColorParams, *, input_format: InputFormat) -> Tensor:
    """(3, H, W) uint8 in `input_format` order -> the same with the colours changed."""
    rgb = image.flip(0) if input_format == "BGR" else image
    for name in params.order:
        if name == "brightness":
            rgb = F.adjust_brightness(rgb, params.brightness)
        elif name == "contrast":
            rgb = F.adjust_contrast(rgb, params.contrast)
        elif name == "saturation":
            rgb = F.adjust_saturation(rgb, params.saturation)
        else:
            rgb = F.adjust_hue(rgb, params.hue)
    return rgb.flip(0) if input_format == "BGR" else rgb
