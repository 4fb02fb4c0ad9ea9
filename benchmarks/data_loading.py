"""Images per second of the training data path: decode + augment + collate.

Runs the real training loader on the raccoon dataset at detectron2's COCO training sizes
(short side chosen from 640..800 in steps of 32, long side at most 1333, horizontal flip, BGR)
with each requested worker count, and prints one line per count.

    python benchmarks/data_loading.py [--workers 0 2] [--batches 40] [--images-per-batch 2]

The dataset is found at $RETINA_SHARED/data/raccoon (default: ../shared next to the repo).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

from retinacli.data.augment.resize_flip import Augmentation
from retinacli.data.checks import prepare_coco
from retinacli.data.loader import build_train_loader

COCO_TRAIN_AUGMENTATION = Augmentation(
    short_sizes=(640, 672, 704, 736, 768, 800), max_size=1333, sampling="choice", flip="horizontal"
)


def _raccoon_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared"
    return Path(os.environ.get("RETINA_SHARED", default)) / "data" / "raccoon"


def measure(*, workers: int, batches: int, images_per_batch: int, warmup: int) -> float:
    """Images per second over `batches` batches, after `warmup` batches (worker start-up)."""
    root = _raccoon_dir()
    dataset, _ = prepare_coco(annotations=root / "train.json", images=root / "images", filter_empty=True, fix_bad_boxes=True)
    loader = build_train_loader(
        dataset=dataset,
        augmentation=COCO_TRAIN_AUGMENTATION,
        input_format="BGR",
        images_per_batch=images_per_batch,
        seed=0,
        num_workers=workers,
    )
    stream = iter(loader)
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    images = sum(len(batch) for batch in itertools.islice(stream, batches))
    elapsed = time.perf_counter() - start
    del stream  # stops the workers
    return images / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--images-per-batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(
        f"raccoon train, short side 640..800 (choice), max 1333, hflip, "
        f"{args.images_per_batch} images/batch, {args.batches} batches, {os.cpu_count()} CPUs"
    )
    for workers in args.workers:
        rate = measure(
            workers=workers,
            batches=args.batches,
            images_per_batch=args.images_per_batch,
            warmup=args.warmup,
        )
        print(f"num_workers={workers}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
