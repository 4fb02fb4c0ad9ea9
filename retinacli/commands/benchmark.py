"""`retina benchmark RECIPE_OR_MODEL`: how big and how fast a detector is on this machine.

A recipe gives a randomly initialised model of its architecture, a model file its own weights.
Inputs are uint8 noise images of `--image-size` (default: the recipe's test short side, and
4/3 of it for the long side within the test max size) with 5 random boxes each for training.
Inference runs the model as `retina eval` does (BatchNorm folded, channels-last, inference
mode), on batches of `images_per_batch` images; onnxruntime runs the exported whole detector (exported
into a temporary folder first) one image at a time, with torch's thread count. A training
iteration is forward, backward and the optimizer step of the recipe's solver (with AMP on CUDA
when asked).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinacli import __version__
from retinacli.benchmarking import (
    Memory,
    Timing,
    added_peak_memory,
    count_parameters,
    flops_per_image,
    fp32_peak,
    nominal_fp32_peak,
    peak_memory,
    random_batch,
    time_calls,
)
from retinacli.build import (
    DatasetFiles,
    build_given_dataset,
    build_model,
    build_solver,
    build_test_dataset,
    inference_resize,
)
from retinacli.commands.model_files import load_detector
from retinacli.data.calibration import calibration_images
from retinacli.data.formats.coco import DetectionDataset
from retinacli.devices import resolve_device
from retinacli.engine.detector import RetinaNet
from retinacli.engine.fuse import fold_batch_norms, prepare_for_inference
from retinacli.errors import RetinaError, UsageError
from retinacli.evaluation.ap_check import check_ap
from retinacli.evaluation.classes import ClassInfo, match_classes
from retinacli.evaluation.detectors import ImageDetector, TorchDetector
from retinacli.export.exporters import MIN_SIDE, ExportMetadata, export_model
from retinacli.export.formats import DEPLOY_FORMATS, is_int8, suffix_of, write_deploy_file
from retinacli.export.runtime import open_exported
from retinacli.recipe import Override, key_override, load_recipe
from retinacli.recipe.schema import Recipe

RECIPE_SUFFIXES = frozenset({".yaml", ".yml"})
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything `retina benchmark` measured (module docstring); None where not measured."""

    source: str
    device: str
    threads: int
    image_size: tuple[int, int]
    images_per_batch: int
    amp: bool
    parameters: int
    flops_per_image: int
    inference: Timing
    inference_memory: Memory
    onnx: Timing | None
    onnx_note: str
    training: Timing | None
    training_memory: Memory | None

    @property
    def inference_images_per_second(self) -> float:
        return self.images_per_batch / self.inference.median

    @property
    def onnx_images_per_second(self) -> float | None:
        return None if self.onnx is None else 1.0 / self.onnx.median

    @property
    def training_images_per_second(self) -> float | None:
        return None if self.training is None else self.images_per_batch / self.training.median

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        data["inference_images_per_second"] = self.inference_images_per_second
        data["onnx_images_per_second"] = self.onnx_images_per_second
        data["training_images_per_second"] = self.training_images_per_second
        data["training_iterations_per_second"] = None if self.training is None else 1.0 / self.training.median
        return data


def benchmark(
    source: Path,
    *,
    image_size: tuple[int, int] | None = None,
    images_per_batch: int = 1,
    device: str | None = None,
    amp: bool = False,
    onnx: bool = True,
    training: bool = True,
    overrides: Sequence[str | Override] = (),
    progress: Progress | None = None,
) -> BenchmarkResult:
    """Measure `source` (a recipe or a model file) as the module docstring says.

    Raises:
        UsageError: a bad image size or images_per_batch, AMP without CUDA.
        RecipeError, CheckpointError: the recipe or model file cannot be read.
    """
    if images_per_batch < 1:
        raise UsageError(f"--images-per-batch {images_per_batch}: must be at least 1")
    flags = list(overrides)
    if device is not None:
        flags.append(key_override("device", device, origin=f"--device {device}"))
    if source.suffix.lower() in RECIPE_SUFFIXES:
        recipe = load_recipe(source, flags)
        torch.manual_seed(0)
        model = build_model(recipe.model)
    else:
        loaded = load_detector(source, flags)
        recipe, model = loaded.recipe, loaded.model
    target = resolve_device(recipe.device, source="--device" if device else "device")
    if amp and target.type != "cuda":
        raise UsageError("--amp: mixed precision runs on CUDA only; pass --device cuda (or drop --amp)")
    height, width = image_size if image_size is not None else _default_size(recipe)
    if min(height, width) < 32:
        raise UsageError(f"--image-size {height}x{width}: both sides must be at least 32 pixels")
    images, targets = random_batch(num_images=images_per_batch, height=height, width=width, num_classes=model.num_classes)
    images = [image.to(target) for image in images]
    targets = [t.to(target) for t in targets]
    say = progress or (lambda _: None)

    say("counting parameters and FLOPs")
    parameters = count_parameters(model)
    flops = flops_per_image(model, images[0].cpu())

    say("timing inference")
    inference_model = prepare_for_inference(copy.deepcopy(model)).to(target)

    def infer() -> object:
        with torch.inference_mode(), torch.autocast(target.type, enabled=amp):
            return inference_model(images)

    inference = time_calls(infer, device=target, progress=lambda: say("timing inference"))
    inference_memory = peak_memory(infer, device=target)

    onnx_timing, onnx_note = None, "not measured (--no-onnx)"
    if onnx:
        say("exporting to ONNX and timing onnxruntime")
        onnx_timing, onnx_note = _time_onnx(model, recipe, images, say)

    train_timing = train_memory = None
    if training:
        say("timing training iterations")
        train_model = copy.deepcopy(model).to(target).train()
        optimizer, _ = build_solver(recipe.solver, train_model)
        scaler = torch.amp.GradScaler(target.type, enabled=amp)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(target.type, enabled=amp):
                losses = train_model(images, targets)
                loss = losses["loss_cls"] + losses["loss_box_reg"]
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        train_timing = time_calls(step, device=target, warmup=3, progress=lambda: say("timing training iterations"))
        train_memory = peak_memory(step, device=target)
    return BenchmarkResult(
        source=str(source),
        device=str(target),
        threads=torch.get_num_threads(),
        image_size=(height, width),
        images_per_batch=images_per_batch,
        amp=amp,
        parameters=parameters,
        flops_per_image=flops,
        inference=inference,
        inference_memory=inference_memory,
        onnx=onnx_timing,
        onnx_note=onnx_note,
        training=train_timing,
        training_memory=train_memory,
    )


def _default_size(recipe: Recipe) -> tuple[int, int]:
    short, max_size = inference_resize(recipe.data.test)
    return short, min(max_size, round(short * 4 / 3))


def _time_onnx(model: torch.nn.Module, recipe: Recipe, images: list[torch.Tensor], say: Progress) -> tuple[Timing | None, str]:
    try:
        import onnxruntime
    except ImportError:
        return None, 'onnxruntime is not installed (pip install -e ".[onnx]")'
    if min(images[0].shape[-2:]) < 129:
        return None, "not measured: the exported graph needs images of at least 129 pixels a side"
    from retinacli.export.exporters import ExportMetadata, export_model
    from retinacli.export.runtime import open_exported

    short, max_size = inference_resize(recipe.data.test)
    metadata = ExportMetadata.of_model(
        model,
        class_names=tuple(f"class_{i}" for i in range(model.num_classes)),
        class_dataset_ids=tuple(range(1, model.num_classes + 1)),
        input_format=recipe.model.input_format,
        short_size=short,
        max_size=max_size,
        network_only=False,
        source="retina benchmark",
        retinacli_version="",
    )
    cpu_images = [image.cpu() for image in images]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_model(copy.deepcopy(model).cpu().eval(), path, export_format="onnx", metadata=metadata, example=cpu_images[0])
        exported = open_exported(path, threads=torch.get_num_threads())
        arrays = [image.numpy() for image in cpu_images]
        timing = time_calls(
            lambda: [exported.run(a) for a in arrays], device=torch.device("cpu"), progress=lambda: say("timing onnxruntime")
        )
    per_image = timing.scaled(1 / len(arrays))
    return per_image, f"onnxruntime {onnxruntime.__version__}, one image per call"


FORMATS: tuple[str, ...] = ("pytorch", *DEPLOY_FORMATS)
"""What `retina benchmark --formats` compares: the model as `retina eval` runs it, and each deploy
format of `retina export` (`export.formats`)."""


@dataclass(frozen=True)
class FormatRow:
    """One format measured: its file's size in bytes (an IR's .xml and .bin together; for
    "pytorch" the model file), COCO AP (0-100) on the dataset when one was given, the latency of
    one image (batch 1, after warm-up), the memory loading the file and running one image adds
    to the process, and the fraction of the machine's fp32 peak it reaches (`flops_per_image`
    over the median latency, over `BenchmarkFormats.peak_flops_per_second`; an INT8 file does
    the same work in fewer, cheaper operations, so its fraction can pass 1)."""

    format: str
    file_bytes: int
    ap: float | None
    latency: Timing
    memory: Memory
    peak_fraction: float

    @property
    def images_per_second(self) -> float:
        return 1.0 / self.latency.median

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "file_bytes": self.file_bytes,
            "ap": self.ap,
            "latency_median_s": self.latency.median,
            "latency_p90_s": self.latency.p90,
            "repeats": self.latency.repeats,
            "warmup": self.latency.warmup,
            "images_per_second": self.images_per_second,
            "peak_memory_bytes": self.memory.peak_bytes,
            "memory_kind": self.memory.kind,
            "peak_fraction": self.peak_fraction,
        }


@dataclass(frozen=True)
class BenchmarkFormats:
    """Everything `retina benchmark --formats` measured: the rows in the order asked, the input
    size, threads, FLOPs of one image (the model's, fp32), the machine's measured fp32 peak
    (`benchmarking.fp32_peak` in this run: the best FLOP/s and each kernel's), the nominal peak
    (`benchmarking.nominal_fp32_peak`, None where unknown), and where AP and
    calibration images came from."""

    source: str
    image_size: tuple[int, int]
    threads: int
    flops_per_image: int
    peak_flops_per_second: float
    peak_kernels: dict[str, float]
    nominal_peak_flops_per_second: float | None
    dataset: str | None
    calibration: str | None
    rows: list[FormatRow]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "image_size": list(self.image_size),
            "threads": self.threads,
            "flops_per_image": self.flops_per_image,
            "peak_flops_per_second": self.peak_flops_per_second,
            "peak_kernels": dict(self.peak_kernels),
            "nominal_peak_flops_per_second": self.nominal_peak_flops_per_second,
            "dataset": self.dataset,
            "calibration": self.calibration,
            "formats": [row.to_json() for row in self.rows],
        }


def parse_formats(text: str) -> list[str]:
    """`--formats a,b,c` -> the list, each checked against FORMATS (order kept, repeats dropped)."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise UsageError(f"--formats {text}: {', '.join(unknown) or 'nothing named'}; choose from {','.join(FORMATS)}")
    return list(dict.fromkeys(names))


def benchmark_formats(
    source: Path,
    formats: Sequence[str],
    *,
    dataset: DatasetFiles | None = None,
    calibration_images: int = 32,
    image_size: tuple[int, int] | None = None,
    overrides: Sequence[str | Override] = (),
    progress: Progress | None = None,
) -> BenchmarkFormats:
    """Measure `source` (a model file or a recipe: a randomly initialised model) in each of
    `formats` on the CPU with torch's thread count (the runtimes are given the same count),
    as `FormatRow` says. The exported files are written into a temporary folder from the model
    with its BatchNorms folded, as `retina export` writes them; INT8 files are calibrated on
    `calibration_images` images of the recipe's training set when it can be read, else of
    `dataset`, else on the noise input itself (then said in `calibration`). Latency is timed on
    one uint8 noise image of `image_size` (default as `benchmark`), `detect` of each format
    from the resized image to detections, at least 10 timed calls.

    Raises:
        UsageError: an unknown format, a bad image size, a missing runtime.
        RecipeError, CheckpointError, DatasetError: the source or the dataset cannot be read.
    """
    say = progress or (lambda _: None)
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise UsageError(f"--formats: {', '.join(unknown)}; choose from {','.join(FORMATS)}")
    threads = torch.get_num_threads()
    if source.suffix.lower() in RECIPE_SUFFIXES:
        recipe = load_recipe(source, list(overrides))
        torch.manual_seed(0)
        model = build_model(recipe.model)
        classes = ClassInfo(tuple(f"class_{i}" for i in range(model.num_classes)), tuple(range(1, model.num_classes + 1)))
    else:
        loaded = load_detector(source, list(overrides))
        recipe, model, classes = loaded.recipe, loaded.model, loaded.classes
    model = model.cpu().eval()
    height, width = image_size if image_size is not None else _default_size(recipe)
    if min(height, width) < MIN_SIDE:
        raise UsageError(f"--image-size {height}x{width}: exported files take images of at least {MIN_SIDE} pixels a side")
    short, max_size = inference_resize(recipe.data.test)
    images, _ = random_batch(num_images=1, height=height, width=width, num_classes=model.num_classes)
    image = images[0]  # (3, H, W) uint8
    test_set = None
    if dataset is not None:
        test_set = build_given_dataset(dataset)
        match_classes(classes, test_set, model_path=source)

    say("measuring the machine's fp32 peak")
    peak = fp32_peak()
    flops = flops_per_image(model, image)
    metadata = ExportMetadata.of_model(
        model,
        class_names=classes.names,
        class_dataset_ids=classes.dataset_ids,
        input_format=recipe.model.input_format,
        short_size=short,
        max_size=max_size,
        network_only=False,
        source=str(source),
        retinacli_version=__version__,
    )
    rows: list[FormatRow] = []
    calibration_name: str | None = None
    with tempfile.TemporaryDirectory(prefix="retinacli-benchmark-") as folder:
        scratch = Path(folder)
        files: dict[str, Path] = {}
        deploy = [name for name in formats if name != "pytorch"]
        if deploy:
            say("exporting")
            folded = copy.deepcopy(model)
            fold_batch_norms(folded)
            float_onnx = export_model(folded, scratch / "float.onnx", export_format="onnx", metadata=metadata, example=image)
            arrays: list[np.ndarray] = []
            if any(is_int8(name) for name in deploy):
                arrays, calibration_name = _calibration(recipe, test_set, image, calibration_images, metadata, say)
            for name in deploy:
                say(f"writing {name}")
                files[name] = write_deploy_file(
                    float_onnx,
                    scratch / (name + suffix_of(name)),
                    deploy_format=name,  # type: ignore[arg-type]
                    metadata=metadata,
                    calibration=arrays,
                )
        for name in formats:
            say(f"measuring {name}")
            rows.append(
                _measure_format(
                    name, source=source, file=files.get(name), model=model, image=image, test_set=test_set,
                    classes=classes, metadata=metadata, threads=threads, flops=flops, peak=peak.flops_per_second, overrides=overrides, say=say,
                )
            )
    return BenchmarkFormats(
        source=str(source),
        image_size=(height, width),
        threads=threads,
        flops_per_image=flops,
        peak_flops_per_second=peak.flops_per_second,
        peak_kernels=peak.kernels,
        nominal_peak_flops_per_second=nominal_fp32_peak(threads),
        dataset=None if dataset is None else str(dataset.annotations),
        calibration=calibration_name,
        rows=rows,
    )


def _calibration(
    recipe: Recipe,
    test_set: DetectionDataset | None,
    image: torch.Tensor,
    count: int,
    metadata: ExportMetadata,
    say: Progress,
) -> tuple[list[np.ndarray], str]:
    """Calibration images for the INT8 formats and where they came from (`benchmark_formats`)."""
    say(f"reading {count} calibration images")
    chosen: tuple[DetectionDataset, str] | None = None
    if recipe.data.train.dataset is not None:
        with contextlib.suppress(RetinaError):
            train = build_test_dataset(recipe.data.train.dataset, key="data.train.dataset")
            chosen = (train, f"{len(train) if count >= len(train) else count} images of data.train.dataset ({train.annotations})")
    if chosen is None and test_set is not None:
        chosen = (test_set, f"{min(count, len(test_set))} images of the benchmark's --dataset (the training set could not be read)")
    if chosen is None:
        return [image.numpy()], "the noise input image (no dataset to calibrate on: INT8 AP and speed are indicative only)"
    arrays = calibration_images(
        chosen[0],
        count,
        input_format=metadata.input_format,
        short_size=metadata.short_size,
        max_size=metadata.max_size,
        min_side=MIN_SIDE,
    )
    return arrays, chosen[1]


def _measure_format(
    name: str,
    *,
    source: Path,
    file: Path | None,
    model: RetinaNet,
    image: torch.Tensor,
    test_set: DetectionDataset | None,
    classes: ClassInfo,
    metadata: ExportMetadata,
    threads: int,
    flops: int,
    peak: float,
    overrides: Sequence[str | Override],
    say: Progress,
) -> FormatRow:
    size = (int(image.shape[1]), int(image.shape[2]))
    opened: list[ImageDetector] = []

    def load_and_run() -> None:
        if file is None:  # pytorch: the model as `retina eval` runs it
            detector: ImageDetector = TorchDetector(prepare_for_inference(copy.deepcopy(model)))
        else:
            detector = open_exported(file, threads=threads)
        detector.detect([image], [size])
        opened.append(detector)

    memory = added_peak_memory(load_and_run)
    detector = opened[0]
    latency = time_calls(lambda: detector.detect([image], [size]), device=torch.device("cpu"), min_repeats=10, progress=lambda: say(f"timing {name}"))
    ap = None
    if test_set is not None:
        say(f"AP of {name} on {len(test_set)} images")
        ap = check_ap(
            detector,
            test_set,
            classes=classes,
            short_size=metadata.short_size,
            max_size=metadata.max_size,
            input_format=metadata.input_format,  # type: ignore[arg-type]
            source=source,
        ).ap
    if file is None:
        file_bytes = source.stat().st_size if source.suffix.lower() not in RECIPE_SUFFIXES else _state_bytes(model)
    else:
        file_bytes = sum(path.stat().st_size for path in (file, file.with_suffix(".bin")) if path.is_file())
    return FormatRow(
        format=name,
        file_bytes=file_bytes,
        ap=ap,
        latency=latency,
        memory=memory,
        peak_fraction=flops / latency.median / peak,
    )


def _state_bytes(model: torch.nn.Module) -> int:
    """The bytes of a model's parameters and buffers (the size of a model file, near enough, for
    a recipe's random model, which has no file)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
