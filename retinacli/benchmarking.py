"""Measuring a detector: parameters, FLOPs, inference and training speed, peak memory, and
the machine's own fp32 peak.

Timing: each measurement runs `warmup` untimed calls, then timed ones until at least
`min_repeats` calls and `min_seconds` of timed work (at most `max_repeats`), and reports the
median call and the 90th percentile; CUDA work is synchronised before each clock reading. FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` over one eval forward (multiply-adds counted as 2
FLOPs, convolutions and matrix products only, as the counter does). Peak memory: on CUDA the
allocator's peak (`torch.cuda.max_memory_allocated`) for the phase; on the CPU the process's peak
resident set (VmHWM), reset before the phase where Linux allows it (`/proc/self/clear_refs`), so
each phase's figure is its own; elsewhere the process's lifetime peak. `added_peak_memory`
reports what a phase adds to the resident set it starts from (loading a file and running it),
after returning freed memory to the system (glibc's `malloc_trim`), so that formats measured
one after the other in one process are compared on what each one needs.

The machine's peak (`fp32_peak`): the best FLOP/s of three large dense fp32 kernels, measured
with torch's thread count: a 2048 x 2048 matrix product (`torch.mm`, MKL), the same product as a
1 x 1 convolution, and a 3 x 3 convolution of 256 channels on 64 x 64 (both oneDNN, the library
that runs the detector's convolutions). On this project's AMD CPU MKL's product is not the
fastest of them (oneDNN's 3 x 3 convolution reached 1.2x its FLOP/s, docs/engine.md), so a
product alone understates the limit and a detector could appear to pass it. A detector's FLOPs
per image over its latency, divided by the peak, is the fraction of that limit it reaches.
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
    """The median and 90th-percentile seconds of one call, over `repeats` timed calls after
    `warmup` untimed ones."""

    median: float
    repeats: int
    warmup: int
    p90: float

    def scaled(self, factor: float) -> Timing:
        """The same timing with its seconds multiplied by `factor` (per image from per batch)."""
        return Timing(self.median * factor, self.repeats, self.warmup, self.p90 * factor)


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
    return Timing(statistics.median(times), len(times), warmup, _percentile(times, 0.9))


def _percentile(values: list[float], q: float) -> float:
    """The `q` quantile of `values`, linear between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Peak:
    """FLOP/s of each dense fp32 kernel `fp32_peak` measured, and the best of them."""

    kernels: dict[str, float]

    @property
    def flops_per_second(self) -> float:
        return max(self.kernels.values())


def nominal_fp32_peak(threads: int) -> float | None:
    """`threads` x the clock Linux reports (`cpu MHz` of /proc/cpuinfo) x 32 FLOP per cycle (two
    8-wide fp32 FMA units, AVX2 + FMA), in FLOP/s; None where /proc/cpuinfo, the clock or AVX2
    and FMA are not there. The reported clock is the nominal one: a core boosting above it
    does more, so a measured kernel may pass this figure."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    clock = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz" and clock is None:
            with contextlib.suppress(ValueError):
                clock = float(value) * 1e6
        elif key.strip() == "flags" and flags is None:
            flags = set(value.split())
    if clock is None or flags is None or not {"avx2", "fma"} <= flags:
        return None
    return threads * clock * 32


def fp32_peak(*, device: torch.device | None = None) -> Peak:
    """The FLOP/s of the dense fp32 kernels of the module docstring on `device`."""
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    size = 2048
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    pixels = a.T.reshape(1, size, size // 32, 32)  # (1, C, H, W), H * W = size
    kernel = b.T.reshape(size, size, 1, 1)  # (K, C, 1, 1)
    features = torch.randn(1, 256, 64, 64, generator=gen).to(device)
    weights3 = torch.randn(256, 256, 3, 3, generator=gen).to(device)
    conv = torch.nn.functional.conv2d
    kernels = {
        "matmul 2048": (lambda: torch.mm(a, b), 2.0 * size**3),
        "conv 1x1 2048": (lambda: conv(pixels, kernel), 2.0 * size**3),
        "conv 3x3 256x64x64": (lambda: conv(features, weights3, padding=1), 2.0 * 256 * 256 * 9 * 64 * 64),
    }
    rates = {}
    with torch.no_grad():
        for name, (fn, flops) in kernels.items():
            timing = time_calls(fn, device=device, warmup=2, min_repeats=5, min_seconds=1.0)
            rates[name] = flops / timing.median
    return Peak(rates)


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


def added_peak_memory(fn: Callable[[], object]) -> Memory:
    """Run `fn` once (on the CPU) and report how far the process's resident set rose above where
    it stood before (module docstring): "cpu rss added"."""
    import gc

    gc.collect()
    _release_free_memory()
    before = _rss_now()
    _reset_rss_peak()
    fn()
    return Memory(max(_rss_peak() - before, 0), "cpu rss added")


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


def _release_free_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_now() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_peak() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
