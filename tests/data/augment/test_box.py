from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from retinacli.data.augment.box import BoxAugment, Color, Crop, Expand, ScaleJitter, augment_sample
from retinacli.data.augment.resize_flip import Augmentation, resized_hw
from retinacli.data.loader import MappedDataset, build_train_loader

BASE = Augmentation(short_sizes=(48, 56, 64), max_size=96, flip="horizontal")
EVERYTHING = BoxAugment(
    color=Color(prob=0.8),
    expand=Expand(prob=0.5, max_ratio=2.0),
    crop=Crop(prob=0.5),
    scale_jitter=ScaleJitter(prob=0.5, min_scale=0.5, max_scale=1.5),
    vertical_flip=0.5,
    mosaic=0.5,
    min_visible=0.5,
)


def _one_box_images(count: int = 5):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(count)]
    boxes = np.array([[10.0, 5.0, 30.0, 25.0]], dtype=np.float32)

    def load(index: int):
        return images[index], boxes, np.array([index % 2])

    return load


def _run(spec: BoxAugment, position: int = 0, *, base: Augmentation = BASE, load=None):
    load = load or _one_box_images()
    params = base.sample(np.random.default_rng([0, 1, position]))
    return augment_sample(
        load, 0, num_images=5, spec=spec, base=base, base_params=params, rng_key=(0, 2, position), input_format="BGR"
    )


def _same(a, b) -> None:
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=0)
    torch.testing.assert_close(a.labels, b.labels, rtol=0, atol=0)
    assert (a.boxes_in, a.boxes_dropped, a.applied) == (b.boxes_in, b.boxes_dropped, b.applied)


def test_defaults_are_off() -> None:
    assert not BoxAugment().active
    assert EVERYTHING.active


def test_all_off_is_the_detectron2_path_bit_for_bit(tiny_shapes) -> None:
    args = {"records": tiny_shapes.records, "augmentation": BASE, "input_format": "BGR", "seed": 3}
    plain, off = MappedDataset(**args), MappedDataset(**args, box_augment=BoxAugment())
    for key in [(0, 0), (3, 7), (11, 40)]:
        a, b = plain[key], off[key]
        torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
        torch.testing.assert_close(a.targets.boxes, b.targets.boxes, rtol=0, atol=0)
        assert b.boxes_in is None and b.applied == ()


def test_vertical_flip_through_the_pipeline_hand_computed() -> None:
    # no resize (short side 40 of a 40 x 60 image), no horizontal flip: the box [10, 5, 30, 25]
    # is mirrored in y to [10, 40 - 25, 30, 40 - 5] = [10, 15, 30, 35]
    base = Augmentation(short_sizes=(40,), max_size=100, flip="none")
    out = _run(BoxAugment(vertical_flip=1.0), base=base)
    assert out.applied == ("vertical_flip",)
    torch.testing.assert_close(out.boxes, torch.tensor([[10.0, 15.0, 30.0, 35.0]]))
    assert (out.boxes_in, out.boxes_dropped) == (1, 0)


def test_a_full_size_crop_keeps_the_box() -> None:
    base = Augmentation(short_sizes=(40,), max_size=100, flip="none")
    out = _run(BoxAugment(crop=Crop(prob=1.0, min_scale=1.0)), base=base)
    assert out.applied == ("crop",)
    torch.testing.assert_close(out.boxes, torch.tensor([[10.0, 5.0, 30.0, 25.0]]))


def test_same_position_same_sample_other_positions_differ() -> None:
    _same(_run(EVERYTHING, 4), _run(EVERYTHING, 4))
    outputs = [_run(EVERYTHING, p) for p in range(8)]
    assert len({o.applied for o in outputs}) > 1  # the probabilities do vary per sample
    assert any(not torch.equal(outputs[0].boxes, o.boxes) for o in outputs[1:])


def test_each_augmentation_draws_from_its_own_stream() -> None:
    # adding colour changes the pixels but not one box or draw of the geometric augmentations
    geometric = BoxAugment(crop=Crop(prob=1.0), scale_jitter=ScaleJitter(prob=1.0), mosaic=1.0)
    coloured = BoxAugment(crop=Crop(prob=1.0), scale_jitter=ScaleJitter(prob=1.0), mosaic=1.0, color=Color(prob=1.0))
    for position in range(4):
        a, b = _run(geometric, position), _run(coloured, position)
        torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=0)
        assert b.applied == (*a.applied, "color")
        assert not torch.equal(a.image, b.image)


def test_mosaic_counts_the_boxes_of_all_four_images() -> None:
    for position in range(6):
        out = _run(BoxAugment(mosaic=1.0), position)
        assert out.applied[-1] == "mosaic"
        assert out.boxes_in == 4  # one box in each of the four images
        assert out.boxes_dropped == 4 - len(out.boxes)
        # the canvas keeps the size the resize gave the sampled 40 x 60 image
        params = BASE.sample(np.random.default_rng([0, 1, position]))
        expected = resized_hw(height=40, width=60, short_size=params.short_size, max_size=BASE.max_size)
        assert tuple(out.image.shape[1:]) == expected


def test_boxes_stay_inside_the_image_and_above_the_rule(tiny_shapes) -> None:
    mapped = MappedDataset(records=tiny_shapes.records, augmentation=BASE, input_format="RGB", seed=1, box_augment=EVERYTHING)
    for position in range(40):
        sample = mapped[(position % len(tiny_shapes), position)]
        _, h, w = sample.image.shape
        boxes = sample.targets.boxes
        assert sample.image.dtype == torch.uint8 and sample.image.is_contiguous()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) > 0).all()
        assert sample.boxes_dropped == sample.boxes_in - len(boxes)
        assert len(sample.targets.labels) == len(boxes)


def _batches(dataset, *, workers: int, start: int = 0, n: int = 4):
    loader = build_train_loader(
        dataset=dataset, augmentation=BASE, input_format="BGR", images_per_batch=3, seed=7,
        num_workers=workers, start_iteration=start, box_augment=EVERYTHING,
    )
    return list(itertools.islice(iter(loader), n))


def test_loader_batches_are_the_same_with_workers_and_after_a_resume(tiny_shapes) -> None:
    reference = _batches(tiny_shapes, workers=0, n=5)
    for other in (_batches(tiny_shapes, workers=2, n=5), [*reference[:2], *_batches(tiny_shapes, workers=0, start=2, n=3)]):
        for x, y in zip(reference, other, strict=True):
            assert x.image_ids == y.image_ids
            assert (x.boxes_in, x.boxes_dropped) == (y.boxes_in, y.boxes_dropped)
            for ix, iy in zip(x.images, y.images, strict=True):
                torch.testing.assert_close(ix, iy, rtol=0, atol=0)
            for tx, ty in zip(x.targets, y.targets, strict=True):
                torch.testing.assert_close(tx.boxes, ty.boxes, rtol=0, atol=0)
    assert all(b.boxes_in is not None and b.boxes_in >= len(b) for b in reference)


def test_without_box_augmentation_batches_count_nothing(tiny_shapes) -> None:
    loader = build_train_loader(
        dataset=tiny_shapes, augmentation=BASE, input_format="BGR", images_per_batch=2, seed=0, num_workers=0
    )
    batch = next(iter(loader))
    assert batch.boxes_in is None and batch.boxes_dropped is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: BoxAugment(mosaic=1.5), "mosaic"),
        (lambda: BoxAugment(min_visible=0.0), "min_visible"),
        (lambda: BoxAugment(fill=300), "fill"),
        (lambda: BoxAugment(expand=Expand(max_ratio=0.5)), "max_ratio"),
        (lambda: BoxAugment(crop=Crop(min_scale=0.0)), "min_scale"),
        (lambda: BoxAugment(scale_jitter=ScaleJitter(min_scale=2.0, max_scale=1.0)), "scale_jitter"),
    ],
)
def test_bad_settings_are_refused(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        spec()


SINGLE = {
    "color": BoxAugment(color=Color(prob=1.0)),
    "expand": BoxAugment(expand=Expand(prob=1.0)),
    "crop": BoxAugment(crop=Crop(prob=1.0)),
    "scale_jitter": BoxAugment(scale_jitter=ScaleJitter(prob=1.0)),
    "vertical_flip": BoxAugment(vertical_flip=1.0),
    "mosaic": BoxAugment(mosaic=1.0),
}


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_each_augmentation_alone_is_deterministic_and_named(name) -> None:
    for position in range(3):
        a, b = _run(SINGLE[name], position), _run(SINGLE[name], position)
        _same(a, b)
        assert a.applied == (name,)


def test_color_moves_no_box() -> None:
    base = Augmentation(short_sizes=(40,), max_size=100, flip="none")
    out = _run(SINGLE["color"], base=base)
    torch.testing.assert_close(out.boxes, torch.tensor([[10.0, 5.0, 30.0, 25.0]]))
    assert (out.boxes_in, out.boxes_dropped) == (1, 0)
