from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from retinacli.data.augment.resize_flip import Augmentation
from retinacli.data.loader import (
    Batch,
    TrainBatchSampler,
    build_test_loader,
    build_train_loader,
    shard_indices,
)
from retinacli.engine.structures import Targets
from retinacli.errors import DatasetError
from tests.data.datasets import load_coco

TRAIN_AUG = Augmentation(short_sizes=(48, 56, 64), max_size=96, flip="horizontal")


def _take(loader, n: int) -> list[Batch]:
    return list(itertools.islice(iter(loader), n))


def _assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.image_ids == y.image_ids and x.original_sizes == y.original_sizes
        for ix, iy in zip(x.images, y.images, strict=True):
            torch.testing.assert_close(ix, iy, rtol=0, atol=0)
        for tx, ty in zip(x.targets, y.targets, strict=True):
            torch.testing.assert_close(tx.boxes, ty.boxes, rtol=0, atol=0)
            torch.testing.assert_close(tx.labels, ty.labels, rtol=0, atol=0)


def _train_loader(dataset, *, workers: int, **kwargs):
    args = {
        "dataset": dataset,
        "augmentation": TRAIN_AUG,
        "input_format": "BGR",
        "images_per_batch": 3,
        "seed": 7,
        "num_workers": workers,
    }
    return build_train_loader(**{**args, **kwargs})


def test_batch_contents(tiny_shapes) -> None:
    (batch,) = _take(_train_loader(tiny_shapes, workers=0), 1)
    assert isinstance(batch, Batch) and len(batch) == 3
    by_id = {r.image_id: r for r in tiny_shapes.records}
    for image, targets, size, image_id, name in zip(
        batch.images,
        batch.targets,
        batch.original_sizes,
        batch.image_ids,
        batch.file_names,
        strict=True,
    ):
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert min(image.shape[1:]) in (48, 56, 64) or max(image.shape[1:]) == 96
        assert isinstance(targets, Targets)
        assert targets.boxes.dtype == torch.float32 and targets.labels.dtype == torch.int64
        assert (targets.boxes[:, 2:] <= torch.tensor([image.shape[2], image.shape[1]])).all()
        record = by_id[image_id]
        assert size == (record.height, record.width) and name == record.file_name


def test_worker_count_does_not_change_batches(tiny_shapes) -> None:
    single = _take(_train_loader(tiny_shapes, workers=0), 6)
    _assert_same(single, _take(_train_loader(tiny_shapes, workers=2), 6))
    _assert_same(single, _take(_train_loader(tiny_shapes, workers=0), 6))  # and across runs
    other_seed = _take(_train_loader(tiny_shapes, workers=0, seed=8), 6)
    assert [b.image_ids for b in other_seed] != [b.image_ids for b in single]


def test_resume_skips_to_the_same_batches(tiny_shapes) -> None:
    full = _take(_train_loader(tiny_shapes, workers=0), 5)
    resumed = _take(_train_loader(tiny_shapes, workers=0, start_iteration=3), 2)
    _assert_same(full[3:], resumed)


def test_flip_and_size_vary_per_sample(tiny_shapes) -> None:
    batches = _take(_train_loader(tiny_shapes, workers=0, aspect_ratio_grouping=False), 8)
    shorts = Counter(min(img.shape[1:]) for b in batches for img in b.images)
    assert len(shorts) > 1


def _sizes(n: int, *, portrait_every: int = 3) -> list[tuple[int, int]]:
    return [(200, 100) if i % portrait_every == 0 else (100, 200) for i in range(n)]


def test_sampler_is_a_permutation_per_pass() -> None:
    sampler = TrainBatchSampler(
        image_sizes=_sizes(10), images_per_batch=5, seed=0, aspect_ratio_grouping=False
    )
    keys = [k for batch in itertools.islice(iter(sampler), 4) for k in batch]
    assert sorted(i for i, _ in keys[:10]) == list(range(10))
    assert sorted(i for i, _ in keys[10:]) == list(range(10))
    assert [p for _, p in keys] == list(range(20))  # global stream positions
    assert [i for i, _ in keys[:10]] != [i for i, _ in keys[10:]]  # reshuffled each pass


def test_sharding_covers_each_image_once_per_pass() -> None:
    n, world = 11, 3
    seen = []
    for rank in range(world):
        sampler = TrainBatchSampler(
            image_sizes=_sizes(n),
            images_per_batch=1,
            seed=4,
            rank=rank,
            world_size=world,
            aspect_ratio_grouping=False,
        )
        # positions rank, rank+3, ... below 2*n: this rank's share of two passes
        keys = list(itertools.islice((b[0] for b in sampler), 8))
        seen += [k for k in keys if k[1] < 2 * n]
    positions = sorted(p for _, p in seen)
    assert positions == list(range(2 * n))
    first_pass = sorted(i for i, p in seen if p < n)
    assert first_pass == list(range(n))


def test_aspect_ratio_grouping() -> None:
    sizes = _sizes(30)
    sampler = TrainBatchSampler(image_sizes=sizes, images_per_batch=4, seed=1)
    batches = list(itertools.islice(iter(sampler), 20))
    for batch in batches:
        kinds = {sizes[i][0] > sizes[i][1] for i, _ in batch}
        assert len(kinds) == 1, batch
    assert {sizes[b[0][0]][0] > sizes[b[0][0]][1] for b in batches} == {True, False}
    # a square image goes with the portrait ones (detectron2: bucket 0 only when w > h)
    square = TrainBatchSampler(image_sizes=[(50, 50), (80, 40), (40, 80)], images_per_batch=2, seed=0)
    assert sorted(i for i, _ in next(iter(square))) == [0, 1]


def test_repeat_factors_follow_category_frequency(tiny_shapes) -> None:
    from retinacli.data.loader import repeat_factors

    # Hand-made: 4 images; class 0 in all 4 (f = 1), class 1 in one (f = 0.25, in a crowd box).
    records = [
        replace(tiny_shapes.records[i], labels=np.array([0]), boxes=np.zeros((1, 4), np.float32),
                crowd_labels=np.array([1] if i == 3 else [], dtype=np.int64))
        for i in range(4)
    ]
    dataset = replace(tiny_shapes, records=tuple(records), contiguous_to_dataset_id=(1, 2), class_names=("a", "b"))
    # t = 0.5: r(0) = max(1, sqrt(0.5 / 1)) = 1; r(1) = sqrt(0.5 / 0.25) = sqrt(2).
    factors = repeat_factors(dataset, repeat_threshold=0.5)
    assert factors.tolist() == pytest.approx([1.0, 1.0, 1.0, math.sqrt(2)], rel=1e-6)
    assert repeat_factors(dataset, repeat_threshold=0.5, sqrt=False)[3] == pytest.approx(2.0)


def test_repeat_factor_sampler_repeats_rare_images_and_resumes_exactly() -> None:
    sizes = [(10, 20)] * 6
    factors = np.array([1, 1, 1, 1, 1, 3.5], dtype=np.float32)
    sampler = TrainBatchSampler(image_sizes=sizes, images_per_batch=1, seed=3, aspect_ratio_grouping=False,
                                repeat_factors=factors)
    stream = [key for (key,) in itertools.islice(iter(sampler), 4000)]
    counts = np.bincount([i for i, _ in stream], minlength=6)
    # image 5 appears 3.5 times as often on average (floor 3, +1 with probability 0.5)
    assert counts[5] / counts[:5].mean() == pytest.approx(3.5, rel=0.05)
    assert [p for _, p in stream] == list(range(4000))  # stream positions are consecutive
    resumed = TrainBatchSampler(image_sizes=sizes, images_per_batch=1, seed=3, aspect_ratio_grouping=False,
                                repeat_factors=factors, start_iteration=1000)
    assert [key for (key,) in itertools.islice(iter(resumed), 100)] == stream[1000:1100]
    # two processes split the same stream
    ranks = [TrainBatchSampler(image_sizes=sizes, images_per_batch=1, seed=3, aspect_ratio_grouping=False,
                               repeat_factors=factors, rank=r, world_size=2) for r in range(2)]
    merged = sorted(k for r in ranks for (k,) in itertools.islice(iter(r), 500))
    assert merged == sorted(stream[:1000])


def test_shard_indices() -> None:
    # 10 images on 3 processes: 4, 3, 3
    shards = [shard_indices(num_images=10, rank=r, world_size=3) for r in range(3)]
    assert [list(s) for s in shards] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert list(shard_indices(num_images=2, rank=2, world_size=3)) == []


def test_test_loader_in_order_and_sharded(tiny_shapes) -> None:
    aug = Augmentation(short_sizes=(64,), max_size=96)
    ids = [r.image_id for r in tiny_shapes.records]
    loader = build_test_loader(
        dataset=tiny_shapes, augmentation=aug, input_format="RGB", num_workers=0, images_per_batch=5
    )
    assert len(loader) == 3
    assert [i for b in loader for i in b.image_ids] == ids
    parts = []
    for rank in range(2):
        sharded = build_test_loader(
            dataset=tiny_shapes,
            augmentation=aug,
            input_format="RGB",
            num_workers=0,
            rank=rank,
            world_size=2,
        )
        parts += [i for b in sharded for i in b.image_ids]
    assert parts == ids
    twice = [
        b.images[0]
        for b in build_test_loader(
            dataset=tiny_shapes, augmentation=aug, input_format="RGB", num_workers=0
        )
    ]
    again = [
        b.images[0]
        for b in build_test_loader(
            dataset=tiny_shapes, augmentation=aug, input_format="RGB", num_workers=0
        )
    ]
    for a, b in zip(twice, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_golden_test_loader_pixels(golden_dir: Path) -> None:
    dataset = load_coco(
        annotations=golden_dir / "annotations.json",
        images=golden_dir / "images",
        filter_empty=False,
    )
    loader = build_test_loader(
        dataset=dataset,
        augmentation=Augmentation(short_sizes=(320,), max_size=533),
        input_format="BGR",
        num_workers=0,
    )
    first = next(iter(loader))
    expected = torch.load(golden_dir / "expected" / "tensors.pt", weights_only=True)[
        "eval/img0/resized_image_hwc_uint8"
    ]
    torch.testing.assert_close(first.images[0], expected.permute(2, 0, 1), rtol=0, atol=0)
    assert first.original_sizes == [(240, 320)] and first.image_ids == [1]


def test_empty_training_set_is_an_error(tiny_shapes) -> None:
    with pytest.raises(DatasetError, match="no training images left"):
        _train_loader(tiny_shapes.with_records([]), workers=0)


def test_batch_to_device(tiny_shapes) -> None:
    (batch,) = _take(_train_loader(tiny_shapes, workers=0), 1)
    moved = batch.to("cpu")
    assert moved.image_ids == batch.image_ids
    np.testing.assert_array_equal(moved.images[0].numpy(), batch.images[0].numpy())
