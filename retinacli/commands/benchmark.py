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

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from retinacli.benchmarking import (
    Memory,
    Timing,
    count_parameters,
    flops_per_image,
    peak_memory,
    random_batch,
    time_calls,
)
from retinacli.build import build_model, build_solver, inference_resize
from retinacli.commands.model_files import load_detector
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import UsageError
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
    per_image = Timing(timing.median / len(arrays), timing.repeats, timing.warmup)
    return per_image, f"onnxruntime {onnxruntime.__version__}, one image per call"
