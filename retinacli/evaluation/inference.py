"""Run a detector over a dataset (`infer_dataset`) or a test loader (`run_inference`): batched,
without gradients, on the model's device. Scoring the detections is `coco_eval`'s, writing them
`outputs`'; the commands compose the three.

Each process runs the images of its own shard (see `retinacli.data.loader.build_test_loader`).
When torch.distributed is initialised, the per-process results are gathered with
`all_gather_object`, so every process ends with the detections of the whole dataset, each image
once (duplicates dropped by image id, the first kept) and in dataset order: shards are contiguous
blocks in rank order, so concatenating them by rank restores the order.

Batches of more than one image are padded together, which changes features near the bottom and
right borders and so some detections there (see `engine/detector.py`); 1 image per batch is
detectron2's choice and the default everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from retinacli.data.augment.resize_flip import inference_augmentation
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import InputFormat
from retinacli.data.loader import Batch, build_test_loader, checked_batch
from retinacli.engine.detector import RetinaNet
from retinacli.engine.structures import Detections
from retinacli.evaluation.detectors import ImageDetector, model_device

ProgressCallback = Callable[[int, int | None], None]
"""Called after every batch with (images done in this process, images in this shard or None)."""


@dataclass
class ImageDetections:
    """The detections of one image, on the CPU, in original-image pixels.

    image_id: the dataset's image id. file_name: the image file. height, width: original size.
    detections: boxes (D, 4) float32 XYXY, scores (D,) descending, labels (D,) contiguous
    class indices 0..K-1.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    detections: Detections


@dataclass
class InferenceRun:
    """What `run_inference` returns: the images (whole dataset once gathered) and timing.

    seconds: wall time of this process's loop, data loading included. local_images: images
    this process ran. rank: this process's rank (0 without torch.distributed); only rank 0
    scores and writes (`is_main`), as in detectron2.
    """

    images: list[ImageDetections]
    seconds: float
    local_images: int
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def images_per_second(self) -> float:
        return self.local_images / self.seconds if self.seconds > 0 else 0.0


def shard_size(loader: Iterable[Any]) -> int | None:
    """Images a test loader yields, counted from its batch sampler without reading any image;
    None when the loader has no batch sampler to count."""
    sampler = getattr(loader, "batch_sampler", None)
    if sampler is None:
        return None
    return sum(len(keys) for keys in sampler)


def infer_dataset(
    model: RetinaNet | ImageDetector,
    dataset: DetectionDataset,
    *,
    short_size: int,
    max_size: int,
    input_format: InputFormat,
    images_per_batch: int = 1,
    num_workers: int = 0,
    progress: ProgressCallback | None = None,
) -> InferenceRun:
    """Detections of `model` on every image of `dataset`, in the dataset's order.

    Each process runs its shard (its rank and the world size read from torch.distributed when it
    is initialised) and the shards are gathered, so every process ends with all the images.

    Args:
        model: a RetinaNet, on the device it should run on (its train/eval mode is restored),
            or any `ImageDetector` (an exported file), which runs the batches as they come.
        dataset: the records to run (each image once).
        short_size, max_size: the test resize (`build.inference_resize`), applied by the loader
            as `inference_augmentation`.
        input_format: "BGR" or "RGB", the model's channel order.
        images_per_batch: per process; 1 (default) matches detectron2 exactly.
        num_workers: data-loading worker processes.
        progress: called after every batch with (images done, images in this process's shard).
    """
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world_size = dist.get_world_size() if distributed else 1
    loader = build_test_loader(
        dataset=dataset,
        augmentation=inference_augmentation(short_size=short_size, max_size=max_size),
        input_format=input_format,
        num_workers=num_workers,
        images_per_batch=images_per_batch,
        rank=rank,
        world_size=world_size,
    )
    run = run_inference(model, loader, progress=progress)
    order = {record.image_id: n for n, record in enumerate(dataset.records)}
    images = sorted(run.images, key=lambda item: order.get(item.image_id, len(order)))
    return InferenceRun(images=images, seconds=run.seconds, local_images=run.local_images, rank=rank)


def run_inference(
    model: RetinaNet | ImageDetector,
    loader: Iterable[Batch],
    *,
    progress: ProgressCallback | None = None,
) -> InferenceRun:
    """Detections of every image the loader yields, gathered over processes if distributed.

    A RetinaNet runs in eval mode under `torch.inference_mode()` on its own device (batches are
    moved there); its previous train/eval mode is restored afterwards, so training can call this
    at its evaluation periods. Any other `ImageDetector` (an exported file) gets the CPU
    batches as they are. Results are moved to the CPU.
    """
    module = model if isinstance(model, torch.nn.Module) else None
    device = model_device(module) if module is not None else torch.device("cpu")
    total = shard_size(loader)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    local: list[ImageDetections] = []
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for item in loader:
                batch = checked_batch(item)  # an unreadable image: its DatasetError
                if module is not None:
                    outputs = module(batch.to(device).images, original_sizes=batch.original_sizes)
                else:
                    outputs = model.detect(batch.images, batch.original_sizes)
                for i, dets in enumerate(outputs):
                    height, width = batch.original_sizes[i]
                    local.append(
                        ImageDetections(
                            image_id=int(batch.image_ids[i]),
                            file_name=str(batch.file_names[i]),
                            height=int(height),
                            width=int(width),
                            detections=dets.to("cpu"),
                        )
                    )
                if progress is not None:
                    progress(len(local), total)
    finally:
        if module is not None:
            module.train(was_training)
    seconds = time.perf_counter() - start
    return InferenceRun(images=gather_images(local), seconds=seconds, local_images=len(local))


def gather_images(local: list[ImageDetections]) -> list[ImageDetections]:
    """All processes' images in rank order, each image id once; `local` itself when not
    distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return merge_shards([local])
    shards: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, local)
    return merge_shards(shards)


def merge_shards(shards: Sequence[Sequence[ImageDetections]]) -> list[ImageDetections]:
    """Concatenate per-rank results in rank order, keeping the first result of each image id
    (a sampler that pads shards to equal length repeats images)."""
    seen: set[int] = set()
    merged: list[ImageDetections] = []
    for shard in shards:
        for item in shard:
            if item.image_id not in seen:
                seen.add(item.image_id)
                merged.append(item)
    return merged
