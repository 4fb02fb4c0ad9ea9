"""Measuring a detector: parameters, FLOPs, inference and training speed, peak memory.

Timing: each measurement runs `warmup` untimed calls, then timed ones until at least
`min_repeats` calls and `min_seconds` of timed work (at most `max_repeats`), and reports the
median call; CUDA work is synchronised before each clock reading. FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` over one eval forward (multiply-adds counted as 2
FLOPs, convolutions and matrix products only, as the counter does). Peak memory: on CUDA the
allocator's peak (`torch.cuda.max_memory_allocated`) for the phase; on the CPU the process's peak
resident set (VmHWM), reset before the phase where Linux allows it (`/proc/self/clear_refs`), so
each phase's figure is its own; elsewhere the process's lifetime peak.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from retinacli.engine.detector import RetinaNet
from retinacli.engine.structures import Targets


@dataclass(frozen=True)
class Timing:
    """The median seconds of one call, over `repeats` timed calls after `warmup` untimed ones."""

    median: float
    repeats: int
    warmup: int


@dataclass(frozen=True)
class Memory:
    """Peak memory of a phase in bytes and what it measures ("cuda allocated", "cpu rss")."""

    peak_bytes: int
    kind: str


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: RetinaNet, image: Tensor) -> int:
    """FLOPs of one eval forward of `model` on one (3, H, W) image (module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model([image])
    model.train(was_training)
    return int(counter.get_total_flops())


def time_calls(
    fn: Callable[[], object],
    *,
    device: torch.device,
    warmup: int = 2,
    min_repeats: int = 3,
    max_repeats: int = 20,
    min_seconds: float = 2.0,
    progress: Callable[[], None] | None = None,
) -> Timing:
    """Time `fn` (module docstring); `progress` is called after every call."""
    for _ in range(warmup):
        fn()
        _sync(device)
        if progress is not None:
            progress()
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        if progress is not None:
            progress()
    return Timing(statistics.median(times), len(times), warmup)


def peak_memory(fn: Callable[[], object], *, device: torch.device) -> Memory:
    """Run `fn` once and report the peak memory of that run (module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return Memory(int(torch.cuda.max_memory_allocated(device)), "cuda allocated")
    _reset_rss_peak()
    fn()
    return Memory(_rss_peak(), "cpu rss")


def random_batch(
    *, num_images: int, height: int, width: int, num_classes: int, boxes_per_image: int = 5, seed: int = 0
) -> tuple[list[Tensor], list[Targets]]:
    """`num_images` uint8 noise images and as many random ground-truth sets (boxes of 8% to 40%
    of the image side), the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8) for _ in range(num_images)]
    targets = []
    for _ in range(num_images):
        size = torch.rand(boxes_per_image, 2, generator=gen) * 0.32 + 0.08
        corner = torch.rand(boxes_per_image, 2, generator=gen) * (1 - size)
        scale = torch.tensor([width, height], dtype=torch.float32)
        boxes = torch.cat([corner * scale, (corner + size) * scale], dim=1)
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=gen)
        targets.append(Targets(boxes=boxes, labels=labels))
    return images, targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_rss_peak() -> None:
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _rss_peak() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
