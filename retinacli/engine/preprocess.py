"""Normalising and padding a list of images into one batch tensor, as detectron2's ImageList.

Images are (3, H_i, W_i), uint8 or float with pixel values in 0..255, already resized and in the
model's channel order. They become float32 ``(x - mean) / std`` and are padded at the bottom and
right with 0.0 (after normalisation, so padding has the mean colour) to the largest H and W of
the batch, each rounded up to a multiple of ``size_divisibility``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def normalize_and_pad(
    images: Sequence[Tensor], *, pixel_mean: Tensor, pixel_std: Tensor, size_divisibility: int
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Returns the (B, 3, H, W) float32 batch and the per-image (h, w) before padding.

    pixel_mean, pixel_std: (3,) float32 in the images' channel order and 0..255 units.
    size_divisibility: H and W are multiples of it (1 = no rounding).
    """
    if len(images) == 0:
        raise ValueError("normalize_and_pad: got no images; pass at least one (3, H, W) tensor")
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(
                f"normalize_and_pad: image {i} has shape {tuple(img.shape)}; expected (3, H, W)"
            )
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
    divisor = max(int(size_divisibility), 1)
    height = _round_up(max(h for h, _ in sizes), divisor)
    width = _round_up(max(w for _, w in sizes), divisor)
    device = images[0].device
    mean = pixel_mean.to(device=device, dtype=torch.float32).reshape(3, 1, 1)
    std = pixel_std.to(device=device, dtype=torch.float32).reshape(3, 1, 1)
    batch = torch.zeros((len(images), 3, height, width), dtype=torch.float32, device=device)
    if all(s == sizes[0] for s in sizes):
        # Same-size images: one normalisation for the whole batch.
        stacked = torch.stack([img.to(device) for img in images]).float()  # (B, 3, h, w)
        batch[:, :, : sizes[0][0], : sizes[0][1]] = (stacked - mean) / std
    else:
        for img, (h, w), out in zip(images, sizes, batch, strict=True):
            out[:, :h, :w] = (img.to(device).float() - mean) / std
    return batch, sizes
