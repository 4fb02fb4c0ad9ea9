from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retinacli.data.augment.resize_flip import (
    Augmentation,
    AugmentParams,
    clip_and_filter_boxes,
    inference_augmentation,
    resize_for_inference,
    resize_image,
    resized_hw,
    to_chw_tensor,
    transform_boxes,
)
from retinacli.data.checks import prepare_coco
from retinacli.data.images import input_format_to_rgb, read_image, rgb_to_input_format

NO_AUG = AugmentParams(short_size=0, hflip=False, vflip=False)


@pytest.mark.parametrize(
    ("hw", "short", "max_size", "expected"),
    [
        # 240x320: scale 320/240 = 1.3333; h < w -> (320, 426.67) -> int(427.17) = 427
        ((240, 320), 320, 533, (320, 427)),
        # 200x500: scale 1.6 -> (320, 800); 800 > 533 -> *533/800 = 0.66625 -> (213.2, 533)
        ((200, 500), 320, 533, (213, 533)),
        # 400x250: h >= w -> (400*1.28, 320) = (512, 320)
        ((400, 250), 320, 533, (512, 320)),
        # square: (320, 320)
        ((300, 300), 320, 533, (320, 320)),
        # shrinking 400x480: scale 0.8 -> (320, 384)
        ((400, 480), 320, 533, (320, 384)),
        # COCO train size: 480x640 at 800 -> (800, 1066.67) -> 1067
        ((480, 640), 800, 1333, (800, 1067)),
        # 1333 cap: 500x2000 at 800 -> (800, 3200) -> *1333/3200 -> (333.25, 1333) -> 333
        ((500, 2000), 800, 1333, (333, 1333)),
        # half rounds up: 2x3 at 3 -> (3, 4.5) -> int(5.0) = 5 (Python's round() would give 4)
        ((2, 3), 3, 100, (3, 5)),
        # short size 0 is detectron2's "no resize"
        ((123, 456), 0, 100, (123, 456)),
    ],
)
def test_resized_hw_hand_computed(hw, short, max_size, expected) -> None:
    assert resized_hw(height=hw[0], width=hw[1], short_size=short, max_size=max_size) == expected


def test_resized_hw_matches_golden(golden_dir: Path) -> None:
    inference = json.loads((golden_dir / "expected" / "inference.json").read_text())
    for entry in inference:
        got = resized_hw(height=entry["height"], width=entry["width"], short_size=320, max_size=533)
        assert list(got) == entry["resized_hw"], entry["file_name"]


@pytest.fixture(scope="module")
def golden_tensors(golden_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(golden_dir / "expected" / "tensors.pt", weights_only=True)


def test_golden_pixels_and_gt_boxes_exact(golden_dir: Path, golden_tensors) -> None:
    dataset, _ = prepare_coco(
        annotations=golden_dir / "annotations.json",
        images=golden_dir / "images",
        filter_empty=False,
        fix_bad_boxes=False,
    )
    aug = Augmentation(short_sizes=(320,), max_size=533)
    params = AugmentParams(short_size=320, hflip=False, vflip=False)
    for i, record in enumerate(dataset.records):
        image = read_image(record.file_name, input_format="BGR", image_id=record.image_id)
        out, boxes, labels = aug.apply(
            image, boxes=record.boxes, labels=record.labels, params=params
        )
        expected_hw = golden_tensors["train/image_sizes"][i].tolist()
        assert list(out.shape[:2]) == expected_hw
        # detectron2's training GT after resize/clip, bit for bit
        torch.testing.assert_close(
            torch.from_numpy(boxes), golden_tensors[f"train/img{i}/gt_boxes"], rtol=0, atol=0
        )
        torch.testing.assert_close(
            torch.from_numpy(labels), golden_tensors[f"train/img{i}/gt_classes"], rtol=0, atol=0
        )
        # the test resize of an image alone is the loader's, pixel for pixel
        np.testing.assert_array_equal(resize_for_inference(image, short_size=320, max_size=533), out)
        if i == 0:
            expected = golden_tensors["eval/img0/resized_image_hwc_uint8"]
            torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=0)


def test_flip_box_arithmetic() -> None:
    boxes = np.array([[10, 20, 50, 60]], dtype=np.float32)
    # no resize, 100x200 image: hflip x -> 200 - x: [200-50, 20, 200-10, 60]
    got = transform_boxes(boxes, from_hw=(100, 200), to_hw=(100, 200), hflip=True, vflip=False)
    np.testing.assert_array_equal(got, [[150, 20, 190, 60]])
    # vflip y -> 100 - y: [10, 100-60, 50, 100-20]
    got = transform_boxes(boxes, from_hw=(100, 200), to_hw=(100, 200), hflip=False, vflip=True)
    np.testing.assert_array_equal(got, [[10, 40, 50, 80]])
    # resize x2 to 200x400 first: [20, 40, 100, 120], then hflip in the resized width 400
    got = transform_boxes(boxes, from_hw=(100, 200), to_hw=(200, 400), hflip=True, vflip=False)
    np.testing.assert_array_equal(got, [[300, 40, 380, 120]])


def test_apply_flips_pixels_and_boxes_together() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(100, 200, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 50, 60]], dtype=np.float32)
    aug = Augmentation(short_sizes=(100,), max_size=1000, flip="horizontal")
    plain, _, _ = aug.apply(
        image, boxes=boxes, labels=np.array([0]), params=AugmentParams(100, False, False)
    )
    flipped, fboxes, _ = aug.apply(
        image, boxes=boxes, labels=np.array([0]), params=AugmentParams(100, True, False)
    )
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    np.testing.assert_array_equal(fboxes, [[150, 20, 190, 60]])
    # the content inside the box moved with it
    np.testing.assert_array_equal(plain[20:60, 10:50], flipped[20:60, 150:190][:, ::-1])


def test_clip_then_drop_degenerate() -> None:
    boxes = np.array(
        [
            [-10, -5, 50, 300],  # clipped to [0, 0, 50, 100]
            [250, 10, 300, 20],  # entirely right of the image: width 0 after clipping
            [5, 5, 5, 9],  # zero width
            [1, 1, 2, 2],
        ],
        dtype=np.float64,
    )
    out, labels = clip_and_filter_boxes(boxes, np.array([0, 1, 2, 3]), height=100, width=200)
    np.testing.assert_array_equal(out, [[0, 0, 50, 100], [1, 1, 2, 2]])
    np.testing.assert_array_equal(labels, [0, 3])
    assert out.dtype == np.float32


def test_inverted_box_is_reordered_like_detectron2() -> None:
    # apply_box takes min/max of the mapped corners, so x2 < x1 becomes a valid box
    got = transform_boxes(
        np.array([[50, 10, 20, 30]]), from_hw=(100, 100), to_hw=(100, 100), hflip=False, vflip=False
    )
    np.testing.assert_array_equal(got, [[20, 10, 50, 30]])


def test_sampling_styles() -> None:
    choice = Augmentation(short_sizes=(640, 672, 800), max_size=1333, flip="horizontal")
    drawn = [choice.sample(np.random.default_rng(i)) for i in range(200)]
    assert {p.short_size for p in drawn} == {640, 672, 800}
    flips = sum(p.hflip for p in drawn)
    assert 60 < flips < 140 and not any(p.vflip for p in drawn)

    ranged = Augmentation(short_sizes=(10, 12), max_size=1333, sampling="range", flip="vertical")
    drawn = [ranged.sample(np.random.default_rng(i)) for i in range(200)]
    assert {p.short_size for p in drawn} == {10, 11, 12}  # both ends included
    assert not any(p.hflip for p in drawn) and any(p.vflip for p in drawn)

    # same generator state, same draw
    assert choice.sample(np.random.default_rng(5)) == choice.sample(np.random.default_rng(5))
    none = Augmentation(short_sizes=(320,), max_size=533)
    assert none.sample(np.random.default_rng(1)) == AugmentParams(320, False, False)


def test_bad_augmentation_arguments() -> None:
    with pytest.raises(ValueError, match="range"):
        Augmentation(short_sizes=(800, 640), max_size=1333, sampling="range")
    with pytest.raises(ValueError, match="flip"):
        Augmentation(short_sizes=(800,), max_size=1333, flip="diagonal")  # type: ignore[arg-type]


def test_no_resize_keeps_pixels() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out, boxes, labels = Augmentation(short_sizes=(0,), max_size=10).apply(
        image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros((0,), np.int64), params=NO_AUG
    )
    np.testing.assert_array_equal(out, image)
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_resize_image_flips_are_pixel_permutations() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    same = resize_image(image, height=30, width=50, hflip=True, vflip=True)
    np.testing.assert_array_equal(same, image[::-1, ::-1])
    resized = resize_image(image, height=45, width=75)
    np.testing.assert_array_equal(
        resize_image(image, height=45, width=75, vflip=True), resized[::-1]
    )
    assert resized.flags.writeable and resized.shape == (45, 75, 3)


def test_resize_for_inference_is_the_inference_augmentation_and_its_min_side() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 70, 3), dtype=np.uint8)
    boxes, labels = np.array([[1.0, 2.0, 20.0, 25.0]]), np.array([0])
    # 30x70 -> short side 60: 60x140, then the long side capped at 100: 43x100 (42.86 + 0.5)
    resized = resize_for_inference(image, short_size=60, max_size=100)
    assert resized.shape == (43, 100, 3)
    params = AugmentParams(short_size=60, hflip=False, vflip=False)
    out, _, _ = inference_augmentation(short_size=60, max_size=100).apply(image, boxes=boxes, labels=labels, params=params)
    np.testing.assert_array_equal(out, resized)
    # min_side raises a side below it (an exported graph's smallest input), nothing else
    raised = resize_for_inference(image, short_size=60, max_size=100, min_side=50)
    assert raised.shape == (50, 100, 3)
    np.testing.assert_array_equal(raised, resize_image(image, height=50, width=100))
    assert resize_for_inference(image, short_size=0, max_size=100) is image  # 0: no resize


def test_to_chw_tensor_and_the_channel_order_helpers() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # (H, W, 3)
    chw = to_chw_tensor(image)
    assert chw.shape == (3, 2, 3) and chw.dtype == torch.uint8 and chw.is_contiguous()
    torch.testing.assert_close(chw, torch.from_numpy(image).permute(2, 0, 1), rtol=0, atol=0)
    bgr = rgb_to_input_format(image, input_format="BGR")
    np.testing.assert_array_equal(bgr, image[:, :, ::-1])
    assert bgr.flags.c_contiguous
    np.testing.assert_array_equal(input_format_to_rgb(bgr, input_format="BGR"), image)
    assert rgb_to_input_format(image, input_format="RGB") is image
    with pytest.raises(ValueError, match="to_chw_tensor"):
        to_chw_tensor(image[:, :, 0])
