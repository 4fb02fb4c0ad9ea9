"""`retina eval`: COCO box AP of a model file on its recipe's test set (or a given dataset)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.build import build_test_dataset, inference_resize
from retinacli.commands.model_files import load_detector
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import UsageError
from retinacli.evaluation import coco_eval
from retinacli.evaluation.classes import match_classes
from retinacli.evaluation.diagnostics import DiagnosticsOptions
from retinacli.evaluation.diagnostics_output import DIAGNOSTICS_FILES, WORST_IMAGES_DIR
from retinacli.evaluation.inference import ProgressCallback
from retinacli.files import refuse_existing
from retinacli.recipe import Override, key_override
from retinacli.recipe.schema import CocoDataset


@dataclass
class EvalResult:
    """The metrics (as in metrics.json), where they were written, and a note on class matching."""

    metrics: dict[str, Any]
    output_dir: Path
    class_note: str

    @property
    def results_path(self) -> Path:
        return self.output_dir / coco_eval.RESULTS_NAME

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / coco_eval.METRICS_NAME


def default_output_dir(model_path: Path, dataset: Path | None) -> Path:
    """`<model dir>/eval_<model stem>[_<dataset stem>]`."""
    suffix = f"_{dataset.stem}" if dataset is not None else ""
    return model_path.parent / f"eval_{model_path.stem}{suffix}"


def evaluate(
    model_path: Path,
    *,
    dataset: Path | None = None,
    images: Path | None = None,
    overrides: Sequence[str | Override] = (),
    output_dir: Path | None = None,
    images_per_batch: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    diagnostics: DiagnosticsOptions | None = None,
) -> EvalResult:
    """Run the model file over its recipe's `data.test.dataset` (or `dataset`/`images`), write
    coco_results.json and metrics.json to `output_dir` (and the diagnostics files, when asked)
    and return the metrics.

    `images_per_batch` and `device` stand for `data.test.images_per_batch` and `device`.
    """
    if (dataset is None) != (images is None):
        raise UsageError("--dataset and --images go together: pass the COCO json and its image folder")
    flags = list(overrides)
    if images_per_batch is not None:
        flags.append(
            key_override("data.test.images_per_batch", str(images_per_batch), origin=f"--images-per-batch {images_per_batch}")
        )
    if device is not None:
        flags.append(key_override("device", device, origin=f"--device {device}"))
    loaded = load_detector(model_path, flags)
    recipe = loaded.recipe
    if dataset is not None and images is not None:
        source = CocoDataset(annotations=str(dataset), images=str(images))
        key = "--dataset"
    elif recipe.data.test.dataset is not None:
        source, key = recipe.data.test.dataset, "data.test.dataset"
    else:
        raise UsageError(
            f"{model_path}: its recipe has no data.test.dataset; pass --dataset JSON --images DIR"
        )
    out = output_dir if output_dir is not None else default_output_dir(model_path, dataset)
    outputs = [out / coco_eval.METRICS_NAME, out / coco_eval.RESULTS_NAME]
    if diagnostics is not None:
        outputs += [out / name for name in DIAGNOSTICS_FILES] + [out / WORST_IMAGES_DIR]
    refuse_existing(outputs, overwrite=overwrite)
    test_set = build_test_dataset(source, key=key)
    match = match_classes(loaded.classes, test_set, model_path=model_path)
    model = prepare_for_inference(loaded.model).to(resolve_device(recipe.device, source="--device" if device else "device"))
    short_size, max_size = inference_resize(recipe.data.test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)  # metrics notes say it
        metrics = coco_eval.evaluate_detector(
            model,
            test_set,
            out,
            short_size=short_size,
            max_size=max_size,
            input_format=recipe.model.input_format,
            images_per_batch=recipe.data.test.images_per_batch,
            num_workers=recipe.data.num_workers,
            class_dataset_ids=match.dataset_ids,
            progress=progress,
            diagnostics=diagnostics,
        )
    return EvalResult(metrics=metrics, output_dir=out, class_note=match.note)
