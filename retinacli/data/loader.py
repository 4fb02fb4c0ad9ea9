"""Training and test data loaders that hand the engine a `Batch`.

Reproducibility: every random choice of a training sample (its short side, its flip, and the
box-aware augmentations of `retinacli/data/augment/box.py`) comes from generators seeded by (seed,
the sample's position in the global training stream), never from a worker's RNG state, so
batches are identical with 0, 2 or 8 workers, and a resumed run
(`start_iteration`) sees exactly the batches an uninterrupted one would.

Training stream (detectron2's TrainingSampler): pass e is a permutation of all images drawn from
(seed, e); the passes are concatenated into one infinite stream and process `rank` takes the
positions p with p % world_size == rank, so each pass over all processes sees every image once.
With repeat factors (detectron2's RepeatFactorTrainingSampler, `repeat_factors`), pass e first
repeats image i floor(r_i) times, once more with probability frac(r_i) (stochastic rounding from
the same generator), then permutes that list. Within a process, aspect-ratio grouping puts
landscape (w > h) and other (portrait and square) images in separate buckets, as detectron2's
AspectRatioGroupedDataset does, and emits a batch when a bucket holds `images_per_batch` images.

Failures while training (`TrainStream`): an image that cannot be read (gone, truncated, a
decompression bomb) comes back from the worker as a `LoadFailure` and is raised in the training
process as the DatasetError that names it, without torch's worker traceback; a worker that dies
(killed, out of memory) is a TrainingError naming the images of the batch that was awaited. The
loop never waits forever: torch notices a dead worker through SIGCHLD.
"""

from __future__ import annotations

import pickle
import random
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from retinacli.data.augment.box import BoxAugment, augment_sample
from retinacli.data.augment.resize_flip import Augmentation, AugmentParams, to_chw_tensor
from retinacli.data.formats.coco import DetectionDataset, ImageRecord
from retinacli.data.images import InputFormat, read_image
from retinacli.engine.structures import Targets
from retinacli.errors import DatasetError, TrainingError

# Random streams derived from the seed; distinct first keys keep them independent.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_BOX_AUGMENT_STREAM = 2

SampleKey = tuple[int, int]
"""(index into the dataset's records, position in the global stream that seeds augmentation)."""


@dataclass
class Batch:
    """What the engine takes for one iteration (or one inference batch), B images.

    images: B tensors (3, H_i, W_i) uint8 in the model's channel order, already resized.
    targets: B `Targets` in the pixels of those resized images.
    original_sizes: B (height, width) of the images as stored, to map detections back.
    image_ids: B COCO image ids. file_names: B absolute image paths.
    boxes_in, boxes_dropped: with box-aware augmentation (`data.train.augment`), the boxes of
        every image the batch was made from and how many of them the drop rule removed; None
        without it.
    """

    images: list[Tensor]
    targets: list[Targets]
    original_sizes: list[tuple[int, int]]
    image_ids: list[int]
    file_names: list[str]
    boxes_in: int | None = None
    boxes_dropped: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=[image.to(device, non_blocking=True) for image in self.images],
            targets=[t.to(device) for t in self.targets],
            original_sizes=self.original_sizes,
            image_ids=self.image_ids,
            file_names=self.file_names,
            boxes_in=self.boxes_in,
            boxes_dropped=self.boxes_dropped,
        )

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return Batch(
            images=[image.pin_memory() for image in self.images],
            targets=[
                Targets(boxes=t.boxes.pin_memory(), labels=t.labels.pin_memory())
                for t in self.targets
            ],
            original_sizes=self.original_sizes,
            image_ids=self.image_ids,
            file_names=self.file_names,
            boxes_in=self.boxes_in,
            boxes_dropped=self.boxes_dropped,
        )


@dataclass
class Sample:
    """One loaded image: image (3, H, W) uint8, targets in its pixels, and where it came from.

    With box-aware augmentation: boxes_in and boxes_dropped as in `Batch`, dropped the (D, 4)
    visible remains of the dropped boxes, applied the augmentations that happened (in order).
    """

    image: Tensor
    targets: Targets
    original_size: tuple[int, int]
    image_id: int
    file_name: str
    boxes_in: int | None = None
    boxes_dropped: int | None = None
    dropped: Tensor | None = None
    applied: tuple[str, ...] = ()


@dataclass
class LoadFailure:
    """A sample that could not be loaded: the DatasetError's message (it names file and id)."""

    message: str


def collate(samples: Sequence[Sample | LoadFailure]) -> Batch | LoadFailure:
    """Samples -> Batch, keeping their order. Images are not padded: the model pads. A batch
    holding a `LoadFailure` is that failure."""
    for sample in samples:
        if isinstance(sample, LoadFailure):
            return sample
    return Batch(
        images=[s.image for s in samples],
        targets=[s.targets for s in samples],
        original_sizes=[s.original_size for s in samples],
        image_ids=[s.image_id for s in samples],
        file_names=[s.file_name for s in samples],
        **_box_counts(samples),
    )


def _box_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """boxes_in and boxes_dropped summed over the samples that count them (none: {})."""
    counted = [s for s in samples if s.boxes_in is not None]
    if not counted:
        return {}
    return {
        "boxes_in": sum(s.boxes_in or 0 for s in counted),
        "boxes_dropped": sum(s.boxes_dropped or 0 for s in counted),
    }


class _PackedRecords:
    """Records pickled into one numpy buffer.

    Forked workers then share a single array instead of touching (and so copying) the pages of
    many small Python objects, which keeps memory flat on COCO-sized datasets.
    """

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        blobs = [
            np.frombuffer(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
            for r in records
        ]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> ImageRecord:
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(self._buffer[start : int(self._ends[index])].tobytes())


class MappedDataset(Dataset):
    """Reads, augments and converts one record per `SampleKey`.

    `box_augment` adds the box-aware augmentations (`retinacli/data/augment/box.py`) around
    `augmentation`'s resize and flip; None, or settings with every probability 0, is
    detectron2's path bit for bit.
    """

    def __init__(
        self,
        *,
        records: Sequence[ImageRecord],
        augmentation: Augmentation,
        input_format: InputFormat,
        seed: int,
        capture_errors: bool = False,
        box_augment: BoxAugment | None = None,
    ) -> None:
        self._records = _PackedRecords(records)
        self._augmentation = augmentation
        self._input_format = input_format
        self._seed = seed
        self._capture_errors = capture_errors
        self._box_augment = box_augment if box_augment is not None and box_augment.active else None

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, key: SampleKey) -> Sample | LoadFailure:
        """The sample of `key`; with `capture_errors` a DatasetError becomes a LoadFailure (torch
        would re-raise it wrapped in a worker traceback)."""
        if not self._capture_errors:
            return self._load(key)
        try:
            return self._load(key)
        except DatasetError as exc:
            return LoadFailure(str(exc))

    def _load(self, key: SampleKey) -> Sample:
        index, position = key
        record = self._records[index]
        rng = np.random.default_rng([self._seed, _AUGMENT_STREAM, position])
        params = self._augmentation.sample(rng)
        if self._box_augment is not None:
            return self._box_augmented(self._box_augment, index, position, record, params)
        image = self._read(record)
        image, boxes, labels = self._augmentation.apply(
            image, boxes=record.boxes, labels=record.labels, params=params
        )
        return Sample(
            image=to_chw_tensor(image),
            targets=Targets(boxes=torch.from_numpy(boxes), labels=torch.from_numpy(labels)),
            original_size=(record.height, record.width),
            image_id=record.image_id,
            file_name=record.file_name,
        )

    def _read(self, record: ImageRecord) -> np.ndarray:
        return read_image(
            record.file_name,
            input_format=self._input_format,
            image_id=record.image_id,
            expected_hw=(record.height, record.width),
        )

    def _read_record(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        record = self._records[index]
        return self._read(record), record.boxes, record.labels

    def _box_augmented(
        self, spec: BoxAugment, index: int, position: int, record: ImageRecord, params: AugmentParams
    ) -> Sample:
        out = augment_sample(
            self._read_record,
            index,
            num_images=len(self._records),
            spec=spec,
            base=self._augmentation,
            base_params=params,
            rng_key=(self._seed, _BOX_AUGMENT_STREAM, position),
            input_format=self._input_format,
        )
        return Sample(
            image=out.image,
            targets=Targets(boxes=out.boxes, labels=out.labels),
            original_size=(record.height, record.width),
            image_id=record.image_id,
            file_name=record.file_name,
            boxes_in=out.boxes_in,
            boxes_dropped=out.boxes_dropped,
            dropped=out.dropped,
            applied=out.applied,
        )


class TrainBatchSampler:
    """Infinite, seeded, sharded batches of `SampleKey`s for one process.

    Args:
        image_sizes: (height, width) of every record, for aspect-ratio grouping.
        images_per_batch: images per batch in this process (the total divided by world_size).
        seed: same seed, same stream.
        rank, world_size: this process among all training processes.
        aspect_ratio_grouping: batch landscape (w > h) and other images separately.
        start_iteration: batches to skip (cheap: no image is read), to resume a run.
        repeat_factors: per image, how often it appears per pass on average (`repeat_factors`);
            None: once.
    """

    def __init__(
        self,
        *,
        image_sizes: Sequence[tuple[int, int]],
        images_per_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        aspect_ratio_grouping: bool = True,
        start_iteration: int = 0,
        repeat_factors: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if not image_sizes:
            raise ValueError("TrainBatchSampler: the dataset has no images")
        if images_per_batch < 1:
            raise ValueError(
                f"TrainBatchSampler: images_per_batch must be >= 1, got {images_per_batch}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(
                f"TrainBatchSampler: need 0 <= rank < world_size, got {rank}, {world_size}"
            )
        # detectron2's bucket: 0 when w > h, else 1 (square images go with the portrait ones).
        self._portrait = np.array([not w > h for h, w in image_sizes], dtype=bool)
        if repeat_factors is not None and len(repeat_factors) != len(image_sizes):
            raise ValueError(
                f"TrainBatchSampler: {len(repeat_factors)} repeat factors for {len(image_sizes)} images"
            )
        self._repeats = None if repeat_factors is None else np.asarray(repeat_factors, dtype=np.float32)
        self._batch = images_per_batch
        self._seed = seed
        self._rank = rank
        self._world = world_size
        self._grouping = aspect_ratio_grouping
        self._start = start_iteration

    def _pass(self, epoch: int) -> np.ndarray:
        """The image indices of pass `epoch`, in order."""
        n = len(self._portrait)
        rng = np.random.default_rng([self._seed, _SHUFFLE_STREAM, epoch])
        if self._repeats is None:
            return rng.permutation(n)
        whole = np.trunc(self._repeats)
        counts = whole + (rng.random(n, dtype=np.float32) < self._repeats - whole)
        indices = np.repeat(np.arange(n), counts.astype(np.int64))
        return indices[rng.permutation(len(indices))]

    def _stream(self) -> Iterator[SampleKey]:
        start = 0  # the stream position of the pass's first image
        epoch = 0
        while True:
            order = self._pass(epoch)
            for offset in range((self._rank - start) % self._world, len(order), self._world):
                yield int(order[offset]), start + offset
            start += len(order)
            epoch += 1

    def _batches(self) -> Iterator[list[SampleKey]]:
        buckets: list[list[SampleKey]] = [[], []]
        for key in self._stream():
            bucket = buckets[int(self._portrait[key[0]]) if self._grouping else 0]
            bucket.append(key)
            if len(bucket) == self._batch:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[list[SampleKey]]:
        batches = self._batches()
        for _ in range(self._start):
            next(batches)
        yield from batches


def checked_batch(item: Batch | LoadFailure) -> Batch:
    """`item`, or the DatasetError of the image it could not load."""
    if isinstance(item, LoadFailure):
        raise DatasetError(item.message)
    return item


class TrainStream:
    """The training batches of one process (iterate it: each iterator starts at
    `start_iteration`), with loading failures raised as errors that name the images."""

    def __init__(
        self, *, loader: DataLoader[Any], keys: TrainBatchSampler, records: Sequence[ImageRecord], start_iteration: int
    ) -> None:
        self.loader = loader
        self._keys = keys
        self._records = records
        self._start = start_iteration

    def __iter__(self) -> TrainIterator:
        return TrainIterator(self.loader, self._keys, self._records, self._start)


def is_worker_death(exc: BaseException) -> bool:
    """True for torch's error about a data-loader worker that ended abnormally. torch raises it
    from its SIGCHLD handler, so it may surface anywhere in the training process, not only
    while a batch is awaited."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and "DataLoader worker" in text and (
        "killed by signal" in text or "exited unexpectedly" in text
    )


class TrainIterator:
    """One pass of a `TrainStream`: batches from `iteration` on. `worker_died(exc)` words a
    worker's death, naming the images of the batch awaited next."""

    def __init__(
        self, loader: DataLoader[Any], keys: TrainBatchSampler, records: Sequence[ImageRecord], start: int
    ) -> None:
        self._batches = iter(loader)
        self._keys = iter(keys)  # the same sampler again: which images each batch holds
        self._records = records
        self.iteration = start
        self._awaited: list[SampleKey] | None = None

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> Batch:
        if self._awaited is None:
            self._awaited = next(self._keys)
        try:
            item = next(self._batches)
        except (ConnectionError, EOFError) as exc:
            # a worker that died while it sent a batch: its end of the queue's pipe is gone
            raise TrainingError(self.worker_died(exc)) from None
        except RuntimeError as exc:
            if not is_worker_death(exc):
                raise
            raise TrainingError(self.worker_died(exc)) from None
        if isinstance(item, LoadFailure):
            raise DatasetError(f"{item.message} (in the batch of iteration {self.iteration})")
        self._awaited = None
        self.iteration += 1
        return item

    def worker_died(self, exc: BaseException) -> str:
        # Stop the other workers first: until torch forgets their pids, every SIGCHLD raises its
        # report again, wherever this process is (here too: then that report is the cause).
        for _ in range(5):
            try:
                self._shut_down()
                break
            except RuntimeError as again:
                if not is_worker_death(again):
                    raise
                exc = again
        if self._awaited is None:
            self._awaited = next(self._keys)
        images = ", ".join(
            f"{self._records[index].file_name} (image id {self._records[index].image_id})" for index, _ in self._awaited
        )
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not is_worker_death(exc):
            said = f"{type(exc).__name__}: {said}"
        ended = self._ended_workers()
        return (
            f"a data loader worker died while batches were loading ({ended + '; ' if ended else ''}"
            f"torch: {said}); the batch awaited next, of iteration {self.iteration}, holds {images}. A worker killed "
            "by signal 9 was usually out of memory: lower data.num_workers or "
            "data.train.images_per_batch; data.num_workers=0 loads in the training process and "
            "shows any error of an image itself"
        )


    def _shut_down(self) -> None:
        shutdown = getattr(self._batches, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()

    def _ended_workers(self) -> str:
        """`pid 123 killed by SIGKILL` for each worker process that has ended (torch keeps them in
        its iterator's `_workers`; '' when that is not there)."""
        ended = []
        for worker in getattr(self._batches, "_workers", []):
            code = getattr(worker, "exitcode", None)
            if code is None or code == 0:
                continue
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            ended.append(f"pid {worker.pid} {how}")
        return ", ".join(ended)


def repeat_factors(dataset: DetectionDataset, *, repeat_threshold: float, sqrt: bool = True) -> np.ndarray:
    """(N,) float32 repeat factor of every image, as detectron2's
    `repeat_factors_from_category_frequency` (LVIS, Appendix B.2): with f(c) the fraction of
    images holding class c (crowd annotations included), r(c) = max(1, sqrt(t / f(c))) (t / f(c)
    without `sqrt`), and an image's factor is the largest r(c) of its classes (1 without any)."""
    classes = [
        np.unique(np.concatenate([record.labels, record.crowd_labels])) for record in dataset.records
    ]
    frequency = np.bincount(np.concatenate(classes).astype(np.int64), minlength=dataset.num_classes)
    frequency = frequency / max(len(dataset.records), 1)
    with np.errstate(divide="ignore"):
        ratio = np.where(frequency > 0, repeat_threshold / np.where(frequency > 0, frequency, 1.0), 0.0)
    per_class = np.maximum(1.0, np.sqrt(ratio) if sqrt else ratio)
    return np.array([per_class[c].max() if len(c) else 1.0 for c in classes], dtype=np.float32)


def shard_indices(*, num_images: int, rank: int, world_size: int) -> range:
    """The contiguous block of image indices process `rank` evaluates; the blocks of all ranks
    cover 0..num_images-1 exactly once (sizes differ by at most one)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_indices: need 0 <= rank < world_size, got {rank}, {world_size}")
    base, extra = divmod(num_images, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class TestBatchSampler:
    """Batches of this process's shard, in dataset order; finite."""

    __test__ = False  # not a pytest class

    def __init__(
        self, *, num_images: int, images_per_batch: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self._indices = shard_indices(num_images=num_images, rank=rank, world_size=world_size)
        self._batch = images_per_batch

    def __len__(self) -> int:
        return -(-len(self._indices) // self._batch)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for start in range(0, len(self._indices), self._batch):
            yield [(i, i) for i in self._indices[start : start + self._batch]]


def _seed_worker(worker_id: int) -> None:
    # Sample randomness does not come from here; this only makes any other use of the global
    # generators inside a worker repeatable. torch seeds each worker from the loader's generator.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # A forked worker inherits the training process's signal handlers (training defers the first
    # SIGINT/SIGTERM to the end of an iteration); a worker must stop when it is told to.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def build_train_loader(
    *,
    dataset: DetectionDataset,
    augmentation: Augmentation,
    input_format: InputFormat,
    images_per_batch: int,
    seed: int,
    num_workers: int,
    aspect_ratio_grouping: bool = True,
    rank: int = 0,
    world_size: int = 1,
    start_iteration: int = 0,
    pin_memory: bool = False,
    repeat_factors: np.ndarray | None = None,
    box_augment: BoxAugment | None = None,
) -> TrainStream:
    """An infinite stream of training `Batch`es for this process (see `TrainStream`).

    `images_per_batch` is per process. Iterating it never ends: stop after max_iter batches.
    `box_augment`: the box-aware augmentations (`MappedDataset`); None keeps detectron2's path.

    Raises:
        DatasetError: the dataset has no images (for example filter_empty removed them all).
    """
    if len(dataset) == 0:
        raise DatasetError(
            f"{dataset.annotations}: no training images left (after filter_empty); add "
            "annotated images or set filter_empty: false"
        )
    def sampler() -> TrainBatchSampler:
        return TrainBatchSampler(
            image_sizes=[(r.height, r.width) for r in dataset.records],
            images_per_batch=images_per_batch,
            seed=seed,
            rank=rank,
            world_size=world_size,
            aspect_ratio_grouping=aspect_ratio_grouping,
            start_iteration=start_iteration,
            repeat_factors=repeat_factors,
        )

    mapped = MappedDataset(
        records=dataset.records, augmentation=augmentation, input_format=input_format, seed=seed,
        capture_errors=True, box_augment=box_augment,
    )
    loader = DataLoader(
        mapped,
        batch_sampler=sampler(),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )
    return TrainStream(loader=loader, keys=sampler(), records=dataset.records, start_iteration=start_iteration)


def build_test_loader(
    *,
    dataset: DetectionDataset,
    augmentation: Augmentation,
    input_format: InputFormat,
    num_workers: int,
    images_per_batch: int = 1,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A finite loader over this process's shard, in dataset (image id) order.

    `augmentation` should be deterministic (one short size, flip "none"); 1 image per batch is
    detectron2's choice for inference. An image that cannot be read comes as a `LoadFailure`
    (its DatasetError's message, without a worker traceback): raise it with `checked_batch`.
    """
    sampler = TestBatchSampler(
        num_images=len(dataset), images_per_batch=images_per_batch, rank=rank, world_size=world_size
    )
    mapped = MappedDataset(
        records=dataset.records, augmentation=augmentation, input_format=input_format, seed=0,
        capture_errors=True,
    )
    return DataLoader(
        mapped,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
    )
