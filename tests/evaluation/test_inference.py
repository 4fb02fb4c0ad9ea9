"""run_inference: order, modes, progress, and gathering over two real gloo processes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from retinacli.data.loader import Batch, shard_indices
from retinacli.engine.structures import Detections, Targets
from retinacli.evaluation.inference import run_inference

NUM_IMAGES = 7


class StubDetector(nn.Module):
    """One detection per image: box (0, 0, v, v) with v the image's first pixel value."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.seen_grad_enabled: list[bool] = []
        self.seen_training: list[bool] = []

    def forward(
        self, images: Sequence[Tensor], original_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        self.seen_grad_enabled.append(torch.is_grad_enabled())
        self.seen_training.append(self.training)
        out = []
        for image in images:
            v = image.flatten()[0].float() * self.weight
            out.append(
                Detections(
                    boxes=torch.stack([v * 0, v * 0, v, v])[None],
                    scores=torch.tensor([0.5]),
                    labels=torch.tensor([0]),
                )
            )
        return out


def make_batches(indices: Sequence[int], per_batch: int) -> list[Batch]:
    batches = []
    for start in range(0, len(indices), per_batch):
        chunk = indices[start : start + per_batch]
        batches.append(
            Batch(
                images=[torch.full((3, 4, 5), 10 + i, dtype=torch.uint8) for i in chunk],
                targets=[Targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))]
                * len(chunk),
                original_sizes=[(8, 10)] * len(chunk),
                image_ids=[100 + i for i in chunk],
                file_names=[f"{i}.png" for i in chunk],
            )
        )
    return batches


def test_order_modes_progress_and_no_gradients():
    model = StubDetector().train()
    calls: list[tuple[int, int | None]] = []
    run = run_inference(
        model, make_batches(range(NUM_IMAGES), 3), progress=lambda d, t: calls.append((d, t))
    )
    assert [item.image_id for item in run.images] == [100 + i for i in range(NUM_IMAGES)]
    assert [item.detections.boxes[0, 2].item() for item in run.images] == [
        10.0 + i for i in range(NUM_IMAGES)
    ]
    assert (run.images[0].height, run.images[0].width, run.images[0].file_name) == (8, 10, "0.png")
    assert calls == [(3, None), (6, None), (7, None)]
    assert model.seen_grad_enabled == [False] * 3 and model.seen_training == [False] * 3
    assert model.training  # restored
    assert run.local_images == NUM_IMAGES and run.images_per_second > 0


def _worker(rank: int, world_size: int, port: int, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        shard = list(shard_indices(num_images=NUM_IMAGES, rank=rank, world_size=world_size))
        if rank == 1:
            shard = shard + [0]  # a padded shard repeating an image of rank 0
        run = run_inference(StubDetector(), make_batches(shard, 2))
        queue.put((rank, run.local_images, [item.image_id for item in run.images]))
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_every_image_once_in_dataset_order():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children inherit the imported modules, so they start in well under a second
    context = mp.get_context("fork")
    queue = context.Queue()
    mp.start_processes(_worker, args=(2, port, queue), nprocs=2, start_method="fork", join=True)
    reports = sorted(queue.get(timeout=30) for _ in range(2))
    expected = [100 + i for i in range(NUM_IMAGES)]
    assert reports == [(0, 4, expected), (1, 4, expected)]  # rank 1 ran 3 + the repeat
