from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from retinacli.data.augment.color import OPERATIONS, ColorParams, adjust_color, sample_color


def test_brightness_scales_pixels() -> None:
    image = torch.full((3, 4, 5), 100, dtype=torch.uint8)
    params = ColorParams(order=("brightness",), brightness=0.5, contrast=1.0, saturation=1.0, hue=0.0)
    out = adjust_color(image, params, input_format="RGB")
    assert (out == 50).all()  # 100 * 0.5
    assert (image == 100).all()  # the input is not changed


def test_bgr_images_are_adjusted_as_rgb() -> None:
    # pure red: desaturated fully it becomes the grey of red (luma weight 0.2989: 255 -> 76 or so),
    # not the grey of blue (weight 0.114, about 29), which a BGR image taken for RGB would give
    rgb = torch.zeros((3, 2, 2), dtype=torch.uint8)
    rgb[0] = 255
    params = ColorParams(order=("saturation",), brightness=1.0, contrast=1.0, saturation=0.0, hue=0.0)
    from_rgb = adjust_color(rgb, params, input_format="RGB")
    from_bgr = adjust_color(rgb.flip(0), params, input_format="BGR")
    torch.testing.assert_close(from_bgr, from_rgb.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(from_rgb, F.adjust_saturation(rgb, 0.0), rtol=0, atol=0)
    assert 75 <= int(from_rgb[0, 0, 0]) <= 77


def test_sample_color_ranges_order_and_zero_strength() -> None:
    for seed in range(100):
        p = sample_color(np.random.default_rng(seed), brightness=0.4, contrast=1.5, saturation=0.0, hue=0.1)
        assert 0.6 <= p.brightness <= 1.4
        assert 0.0 <= p.contrast <= 2.5  # max(0, 1 - 1.5) = 0
        assert -0.1 <= p.hue <= 0.1
        assert sorted(p.order) == sorted(n for n in OPERATIONS if n != "saturation")  # strength 0: left out
    a = sample_color(np.random.default_rng(1), brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02)
    b = sample_color(np.random.default_rng(1), brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02)
    assert a == b
