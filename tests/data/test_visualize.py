from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from retinacli.data.augment.resize_flip import Augmentation
from retinacli.data.loader import build_train_loader
from retinacli.data.shapes import ShapesSpec, make_shapes
from retinacli.data.visualize import PALETTE, draw_boxes, show_dataset
from tests.data.datasets import load_coco


def test_draw_boxes_outlines_in_class_colour() -> None:
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    canvas = draw_boxes(
        image,
        boxes=np.array([[10, 30, 50, 55]]),
        labels=np.array([1]),
        class_names=("a", "b"),
        scores=np.array([0.5]),
    )
    pixels = np.asarray(canvas)
    assert pixels.shape == (60, 80, 3)
    assert tuple(pixels[55, 30]) == PALETTE[1]  # bottom edge
    assert tuple(pixels[40, 10]) == PALETTE[1]  # left edge
    assert (pixels[40, 30] == 0).all()  # inside stays untouched
    assert (image == 0).all()  # input not modified


def test_show_dataset_plain_and_augmented(tmp_path: Path) -> None:
    spec = ShapesSpec(image_size=(40, 64), object_size=(8, 24), objects_per_image=(1, 2))
    split = make_shapes(tmp_path / "ds", num_images=5, seed=0, spec=spec)
    dataset = load_coco(annotations=split.annotations, images=split.images, filter_empty=False)

    plain = show_dataset(dataset=dataset, out_dir=tmp_path / "plain", num_images=3)
    assert [p.name for p in plain] == ["000_image1.png", "001_image2.png", "002_image3.png"]
    for path, record in zip(plain, dataset.records, strict=False):
        assert Image.open(path).size == (record.width, record.height)

    aug = Augmentation(short_sizes=(80, 96), max_size=160, flip="horizontal")
    shown = show_dataset(
        dataset=dataset, out_dir=tmp_path / "aug", num_images=4, augmentation=aug, seed=3
    )
    # the same images at the same sizes as the first training samples for that seed
    loader = build_train_loader(
        dataset=dataset,
        augmentation=aug,
        input_format="RGB",
        images_per_batch=1,
        seed=3,
        num_workers=0,
        aspect_ratio_grouping=False,
    )
    for path, batch in zip(shown, itertools.islice(iter(loader), 4), strict=True):
        assert path.name.endswith(f"_image{batch.image_ids[0]}.png")
        _, h, w = batch.images[0].shape
        assert Image.open(path).size == (w, h)

    assert len(show_dataset(dataset=dataset, out_dir=tmp_path / "all", num_images=16)) == 5


def test_show_dataset_draws_the_box_aware_augmentations(tmp_path: Path) -> None:
    import torch

    from retinacli.data.augment.box import BoxAugment, Crop
    from retinacli.data.loader import MappedDataset, Sample, TrainBatchSampler
    from retinacli.data.visualize import sample_title
    from retinacli.engine.structures import Targets

    spec = ShapesSpec(image_size=(40, 64), object_size=(8, 24), objects_per_image=(1, 2))
    split = make_shapes(tmp_path / "ds", num_images=5, seed=0, spec=spec)
    dataset = load_coco(annotations=split.annotations, images=split.images, filter_empty=False)
    aug = Augmentation(short_sizes=(80,), max_size=160, flip="none")
    box_augment = BoxAugment(vertical_flip=1.0, mosaic=1.0, crop=Crop(prob=1.0))
    shown = show_dataset(dataset=dataset, out_dir=tmp_path / "aug", num_images=3, augmentation=aug, seed=3,
                         box_augment=box_augment)
    # the pictures are the first training samples, augmented as training augments them
    mapped = MappedDataset(records=dataset.records, augmentation=aug, input_format="RGB", seed=3, box_augment=box_augment)
    sampler = TrainBatchSampler(image_sizes=[(r.height, r.width) for r in dataset.records], images_per_batch=1,
                                seed=3, aspect_ratio_grouping=False)
    for path, (key,) in zip(shown, itertools.islice(iter(sampler), 3), strict=True):
        sample = mapped[key]
        assert "vertical_flip" in sample.applied and "mosaic" in sample.applied
        _, h, w = sample.image.shape
        assert path.name.endswith(f"_image{sample.image_id}.png") and Image.open(path).size == (w, h)

    made = Sample(image=torch.zeros(3, 30, 40, dtype=torch.uint8), targets=Targets(boxes=torch.zeros(0, 4),
                  labels=torch.zeros(0, dtype=torch.int64)), original_size=(60, 80), image_id=7, file_name="a.png",
                  boxes_in=3, boxes_dropped=2, applied=("crop", "mosaic"))
    assert sample_title(made) == "image 7  80x60 -> 40x30  crop+mosaic  (2 boxes dropped)"


def test_dropped_boxes_are_drawn_in_grey() -> None:
    from retinacli.data.visualize import DROPPED_COLOUR

    canvas = draw_boxes(np.zeros((40, 40, 3), dtype=np.uint8), boxes=np.zeros((0, 4)), labels=np.zeros(0),
                        class_names=("a",), dropped=np.array([[5, 5, 20, 20]]))
    assert tuple(np.asarray(canvas)[20, 10]) == DROPPED_COLOUR  # bottom edge
