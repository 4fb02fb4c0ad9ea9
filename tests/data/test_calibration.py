"""data/calibration.py: which images INT8 calibration reads, and in what form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from retinacli.build import DatasetFiles, build_given_dataset
from retinacli.data.calibration import calibration_images, spread_indices
from retinacli.errors import DatasetError
from tests.data.conftest import image_entry


@given(length=st.integers(0, 500), count=st.integers(0, 600))
def test_spread_indices_are_distinct_sorted_in_range_and_reach_both_ends(length, count):
    indices = spread_indices(length, count)
    assert indices == sorted(set(indices))
    assert all(0 <= i < length for i in indices)
    if length == 0 or count == 0:
        assert indices == []
        return
    assert len(indices) == min(count, length)  # as many as asked, never more than there are
    assert indices[0] == 0
    if count >= 2:
        assert indices[-1] == length - 1
    if 2 <= count < length:  # even: no gap more than one step wider than the ideal spacing
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= 1


def test_calibration_images_are_the_files_resized_in_the_model_channel_order(write_coco, tmp_path):
    images = [image_entry(i, width=90 + i, height=60) for i in range(1, 6)]
    for img in images:
        img["file_name"] = f"{img['id']}.png"
    json_path = write_coco(images=images, annotations=[])
    for img in images:  # pure red files: channel order shows
        Image.new("RGB", (img["width"], img["height"]), (255, 0, 0)).save(tmp_path / "images" / img["file_name"])
    dataset = build_given_dataset(DatasetFiles(json_path, tmp_path / "images"))
    arrays = calibration_images(dataset, 3, input_format="BGR", short_size=30, max_size=1000)
    assert len(arrays) == 3
    widths = [a.shape[2] for a in arrays]
    assert [a.shape[:2] for a in arrays] == [(3, 30)] * 3
    assert widths == [int(w * 30 / 60 + 0.5) for w in (91, 93, 95)]  # ids 1, 3, 5; detectron2 rounds half up
    for array in arrays:
        assert array.dtype == np.uint8
        assert (array[2] == 255).all() and (array[0] == 0).all()  # BGR: red is the last channel
    rgb = calibration_images(dataset, 1, input_format="RGB", short_size=30, max_size=1000)
    assert (rgb[0][0] == 255).all()


def test_an_unreadable_calibration_image_names_the_file(write_coco, tmp_path):
    images = [image_entry(1), image_entry(2)]
    json_path = write_coco(images=images, annotations=[])
    dataset = build_given_dataset(DatasetFiles(json_path, tmp_path / "images"))
    (tmp_path / "images" / images[1]["file_name"]).write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=images[1]["file_name"]):
        calibration_images(dataset, 2, input_format="RGB", short_size=30, max_size=100)
