"""Images to calibrate an INT8 file on: a few images spread evenly over a dataset, read and
resized exactly as the deployed file takes them (the test resize, the model's channel order)."""

from __future__ import annotations

import numpy as np

from retinacli.data.augment.resize_flip import resize_for_inference, to_chw_tensor
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import InputFormat, read_image


def spread_indices(length: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(length), first and last included (all of them
    when `count >= length`)."""
    if length <= 0 or count <= 0:
        return []
    if count >= length:
        return list(range(length))
    if count == 1:
        return [0]
    return sorted({round(i * (length - 1) / (count - 1)) for i in range(count)})


def calibration_images(
    dataset: DetectionDataset,
    count: int,
    *,
    input_format: InputFormat,
    short_size: int,
    max_size: int,
    min_side: int = 1,
) -> list[np.ndarray]:
    """`count` images of `dataset` (`spread_indices` over its records, in id order) as (3, H, W)
    uint8 arrays in `input_format`'s channel order, resized with the test resize.

    Raises:
        DatasetError: an image cannot be read (names the file and the image id).
    """
    arrays = []
    for index in spread_indices(len(dataset.records), count):
        record = dataset.records[index]
        picture = read_image(record.file_name, input_format=input_format, image_id=record.image_id)
        resized = resize_for_inference(picture, short_size=short_size, max_size=max_size, min_side=min_side)
        arrays.append(to_chw_tensor(resized).numpy())
    return arrays
