from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from retinacli.data.coco import load_coco
from retinacli.data.loader import build_train_loader
from retinacli.data.shapes import ShapesSpec, make_shapes
from retinacli.data.transforms import Augmentation
from retinacli.data.visualize import PALETTE, draw_boxes, show_dataset


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
