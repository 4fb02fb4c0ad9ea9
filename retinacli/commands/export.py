"""`retina export MODEL`: the detector as one ONNX or TorchScript file, checked against the
PyTorch model before the command succeeds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retinacli import __version__
from retinacli.build import build_test_dataset, inference_resize
from retinacli.commands.model_files import LoadedDetector, load_detector
from retinacli.data.augment.resize_flip import resize_for_inference, to_chw_tensor
from retinacli.data.images import read_image, rgb_to_input_format
from retinacli.data.shapes import ShapesSpec, generate_shapes_image
from retinacli.errors import ExportError, RetinaError, UsageError
from retinacli.export.exporters import (
    DEFAULT_OPSET,
    MIN_SIDE,
    ExportFormat,
    ExportMetadata,
    export_model,
)
from retinacli.export.parity import Parity, compare
from retinacli.export.runtime import open_exported
from retinacli.files import prepare_output_file
from retinacli.recipe import Override

SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".ts"}
CHECK_IMAGES = 4


@dataclass(frozen=True)
class ExportResult:
    """The file written, its metadata, the parity check (None with `verify=False`), where the
    check's images came from, and the seconds the export took."""

    path: Path
    metadata: ExportMetadata
    parity: Parity | None
    check_images: str
    seconds: float


def export(
    model_path: Path,
    *,
    export_format: ExportFormat = "onnx",
    out: Path | None = None,
    opset: int = DEFAULT_OPSET,
    network_only: bool = False,
    verify: bool = True,
    overrides: Sequence[str | Override] = (),
    overwrite: bool = False,
) -> ExportResult:
    """Export the model file at `model_path` (default output: beside it, `.onnx` or `.ts`) and,
    with `verify`, run the file on a few images and compare with the PyTorch model.

    Raises:
        UsageError: the output exists (without `overwrite`; a folder or other non-file is refused
            even with it), or a bad opset.
        ExportError: the exported file's results differ from the model's (the file is kept, so
            that it can be inspected, and the message says where it is).
    """
    if export_format == "onnx" and opset < 18:
        raise UsageError(f"--opset {opset}: the ONNX exporter writes opset 18 or newer; pass --opset 18 or more")
    target = out if out is not None else model_path.with_suffix(SUFFIXES[export_format])
    prepare_output_file(target, overwrite=overwrite, flag="--out")
    loaded = load_detector(model_path, overrides)
    model = loaded.model.eval()
    short_size, max_size = inference_resize(loaded.recipe.data.test)
    metadata = ExportMetadata.of_model(
        model,
        class_names=loaded.classes.names,
        class_dataset_ids=loaded.classes.dataset_ids,
        input_format=loaded.recipe.model.input_format,
        short_size=short_size,
        max_size=max_size,
        network_only=network_only,
        source=str(model_path),
        retinacli_version=__version__,
    )
    images, source = check_images(loaded, short_size=short_size, max_size=max_size)
    start = time.perf_counter()
    export_model(model, target, export_format=export_format, metadata=metadata, example=images[0], opset=opset)
    seconds = time.perf_counter() - start
    parity = None
    if verify:
        # the file this command has just written from the model file: its code is our own
        parity = compare(model, open_exported(target, trust_code=True), images)
        if not parity.ok:
            raise ExportError(
                f"{target}: the exported file does not compute what {model_path} computes "
                f"({len(parity.problems)} differences; first: {parity.problems[0]}; largest box "
                f"difference {parity.max_box_difference:.4g} px, score {parity.max_score_difference:.3g}); "
                "the file is kept for inspection: do not deploy it, and report this with the model file"
            )
    return ExportResult(target, metadata, parity, source, seconds)


def check_images(loaded: LoadedDetector, *, short_size: int, max_size: int) -> tuple[list[torch.Tensor], str]:
    """Up to CHECK_IMAGES images of the recipe's test set (when its files are reachable), else
    generated shapes, plus one generated image of odd size; resized as the test resize says,
    (3, H, W) uint8 in the model's channel order."""
    fmt = loaded.recipe.model.input_format
    pictures: list[np.ndarray] = []  # (H, W, 3) uint8 in the model's channel order
    source = "2 generated images"
    dataset = loaded.recipe.data.test.dataset
    if dataset is not None:
        try:
            test_set = build_test_dataset(dataset, key="data.test.dataset")
            for record in test_set.records[:CHECK_IMAGES]:
                pictures.append(read_image(record.file_name, input_format=fmt, image_id=record.image_id))
            source = f"{len(pictures)} images of data.test.dataset ({test_set.annotations}) and 1 generated image"
        except RetinaError:
            pictures = []
    spec = ShapesSpec(image_size=(200, 333))
    for index in range(1 if pictures else 2):  # generated images are RGB
        rgb = generate_shapes_image(seed=0, split="export", index=index, spec=spec).image
        pictures.append(rgb_to_input_format(rgb, input_format=fmt))
    # the test resize, each side at least the exported graph's smallest input
    tensors = [
        to_chw_tensor(resize_for_inference(picture, short_size=short_size, max_size=max_size, min_side=MIN_SIDE))
        for picture in pictures
    ]
    return tensors, source
