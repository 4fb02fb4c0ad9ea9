from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from retinacli.data import shapes
from retinacli.data.checks import check_coco
from retinacli.data.shapes import ShapesSpec, ensure_shapes, generate_shapes_image, make_shapes
from tests.data.datasets import load_coco

SPEC = ShapesSpec()


def _sample(index: int, *, seed: int = 0, split: str = "train"):
    return generate_shapes_image(seed=seed, split=split, index=index, spec=SPEC)


def _image_bytes(index: int) -> bytes:
    return _sample(index).image.tobytes()


def test_same_seed_same_images_and_boxes() -> None:
    first = [_sample(i) for i in range(4)]
    again = [_sample(i) for i in reversed(range(4))][::-1]  # order of generation is irrelevant
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_independent_of_process() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        elsewhere = list(pool.map(_image_bytes, range(4)))
    assert elsewhere == [_image_bytes(i) for i in range(4)]


def test_seeds_and_splits_differ() -> None:
    base = _sample(0).image
    assert not np.array_equal(base, _sample(0, seed=1).image)
    assert not np.array_equal(base, _sample(0, split="test").image)


def test_statistics_of_a_split() -> None:
    samples = [_sample(i) for i in range(40)]
    counts = [len(s.boxes) for s in samples]
    assert np.mean(counts) >= 2.5  # several objects per image
    overlapping = 0
    for s in samples:
        h, w = s.image.shape[:2]
        assert 192 <= h <= 256 and 192 <= w <= 256 and s.image.dtype == np.uint8
        boxes = s.boxes
        assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= [w, h])).all()
        sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        assert ((sides >= 12) & (sides <= 120)).all()
        for i in range(len(boxes)):
            for j in range(i):
                iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                overlapping += iw > 0 and ih > 0
    assert overlapping > 0
    labels = np.concatenate([s.labels for s in samples])
    assert set(labels.tolist()) == {0, 1, 2}


def test_box_is_tight_around_the_shape() -> None:
    # without noise, the pixels just outside a lone object's box are background, the box's
    # edge rows/columns touch the object
    spec = ShapesSpec(objects_per_image=(1, 1), noise_std=0.0, classes=("square",))
    sample = generate_shapes_image(seed=3, split="train", index=0, spec=spec)
    x1, y1, x2, y2 = sample.boxes[0].astype(int)
    inside = sample.image[y1:y2, x1:x2].reshape(-1, 3)
    assert (inside == inside[0]).all()  # one flat colour: the square fills its box exactly


def test_make_shapes_writes_a_coco_dataset(tmp_path: Path) -> None:
    split = make_shapes(tmp_path, num_images=6, seed=0, split="test")
    assert split.annotations == tmp_path / "test.json" and split.images == tmp_path
    dataset = load_coco(annotations=split.annotations, images=split.images, filter_empty=False)
    assert dataset.class_names == ("circle", "square", "triangle")
    assert dataset.contiguous_to_dataset_id == (1, 2, 3)
    assert len(dataset) == 6
    for index, record in enumerate(dataset.records):
        sample = generate_shapes_image(seed=0, split="test", index=index, spec=SPEC)
        np.testing.assert_array_equal(record.boxes, sample.boxes)
        np.testing.assert_array_equal(record.labels, sample.labels)
    _, report = check_coco(
        annotations=split.annotations, images=split.images, fix_bad_boxes=False, decode_images=True
    )
    assert report.ok and report.problems == ()


def test_ensure_shapes_writes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_shapes(tmp_path, num_images=3, seed=1, split="train")
    assert first.annotations.is_file()
    stamp = first.annotations.stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(shapes, "make_shapes", must_not_run)
    again = ensure_shapes(tmp_path, num_images=3, seed=1, split="train")
    assert again == first and first.annotations.stat().st_mtime_ns == stamp
    # only the finished folder is left in the cache
    assert [p.name for p in tmp_path.iterdir()] == [first.images.name]


def test_ensure_shapes_never_leaves_a_partial_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shapes.make_shapes

    def interrupted(out_dir, **kwargs):
        real(out_dir, **{**kwargs, "num_images": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "make_shapes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(tmp_path, num_images=3, seed=2)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shapes, "make_shapes", real)
    split = ensure_shapes(tmp_path, num_images=3, seed=2)
    assert len(json.loads(split.annotations.read_text())["images"]) == 3


def test_bad_spec() -> None:
    with pytest.raises(ValueError, match="classes"):
        ShapesSpec(classes=("circle", "hexagon"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        ShapesSpec(image_size=(300, 200))
