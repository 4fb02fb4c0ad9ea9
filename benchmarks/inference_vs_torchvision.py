"""Inference of one 480x640 image: retinacli (as trained, and as `retina eval` runs it) and
its exported ONNX file in onnxruntime, against torchvision's RetinaNet with the same weights.

The models are those of `engine_vs_torchvision.py` (ResNet-50-FPN, BatchNorm, 80 classes,
random weights copied into torchvision's model, the classification bias set so that 2% of the
scores pass the 0.05 threshold). Each variant runs on the same uint8 image; medians of
`--repeats` runs after `--warmup`, variants interleaved, in one process, for each thread count
of `--threads`. Ratios are against torchvision's eager model.

Usage: python benchmarks/inference_vs_torchvision.py [--threads 1 2] [--repeats 7] [--warmup 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_vs_torchvision import (  # noqa: E402
    FRACTION_ABOVE_THRESHOLD,
    HEIGHT,
    WIDTH,
    build_ours,
    build_torchvision,
    copy_weights_to_torchvision,
    set_score_fraction,
)

from retinacli.engine.detector import RetinaNet  # noqa: E402
from retinacli.engine.fuse import prepare_for_inference  # noqa: E402
from retinacli.export.exporters import ExportMetadata, export_model  # noqa: E402
from retinacli.export.runtime import open_exported  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--classes", type=int, default=80)
    args = parser.parse_args()
    ours, theirs, image = inference_pair(args.classes)
    prepared = prepare_for_inference(copy.deepcopy(ours))
    tv_image = [image.float() / 255]
    metadata = export_metadata(ours, args.classes)
    with tempfile.TemporaryDirectory() as folder:
        path = export_model(ours, Path(folder) / "r50.onnx", export_format="onnx", metadata=metadata, example=image)
        array = image.numpy()
        print(f"torch {torch.__version__}; one {HEIGHT}x{WIDTH} image, R50-FPN, K={args.classes}; median of {args.repeats} after {args.warmup} warm-up")
        for threads in args.threads:
            torch.set_num_threads(threads)
            session = open_exported(path, threads=threads)
            variants: dict[str, Callable[[], object]] = {
                "torchvision eager": lambda: theirs(tv_image),
                "retinacli eager, as trained": lambda: ours([image]),
                "retinacli eager, as retina eval": lambda: prepared([image]),
                "retinacli onnxruntime": lambda session=session: session.run(array),
            }
            times = interleaved_medians(variants, args.repeats, args.warmup)
            base = times["torchvision eager"]
            print(f"threads {threads}:")
            for name, seconds in times.items():
                print(f"  {name:<34} {seconds * 1e3:8.1f} ms  ratio {seconds / base:5.2f}")


def inference_pair(num_classes: int) -> tuple[RetinaNet, torch.nn.Module, torch.Tensor]:
    """Our R50-FPN and torchvision's with the same weights, in eval mode, and the (3, H, W)
    uint8 image they are timed on (its scores set so that FRACTION_ABOVE_THRESHOLD pass 0.05)."""
    torch.manual_seed(0)
    ours = build_ours(num_classes)
    theirs = build_torchvision(num_classes)
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), generator=gen, dtype=torch.uint8)
    set_score_fraction(ours, [image], FRACTION_ABOVE_THRESHOLD)
    copy_weights_to_torchvision(ours, theirs)
    return ours.eval(), theirs.eval(), image


def export_metadata(model: RetinaNet, num_classes: int) -> ExportMetadata:
    """The metadata of the benchmark model's export: RGB input, test resize HEIGHT x WIDTH."""
    return ExportMetadata.of_model(
        model, class_names=[f"c{i}" for i in range(num_classes)], class_dataset_ids=range(1, num_classes + 1),
        input_format="RGB", short_size=HEIGHT, max_size=WIDTH, network_only=False, source="benchmark",
        retinacli_version="",
    )


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each variant: all warmed up, then one timed call of each in turn."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():
            for _ in range(warmup):
                fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
