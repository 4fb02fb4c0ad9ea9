"""`retina predict`: a model file's detections on image files and folders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from retinacli.build import inference_resize
from retinacli.commands.model_files import load_detector
from retinacli.devices import resolve_device
from retinacli.errors import DatasetError
from retinacli.evaluation.predict import (
    PREDICTIONS_NAME,
    PredictReport,
    find_images,
    predict_images,
)
from retinacli.files import refuse_existing
from retinacli.recipe import Override, key_override


def predict(
    model_path: Path,
    inputs: Sequence[Path],
    *,
    output_dir: Path,
    score_thresh: float | None = None,
    overrides: Sequence[str | Override] = (),
    device: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PredictReport:
    """Detect objects in `inputs`; pictures with the boxes drawn and predictions.json go to
    `output_dir`.

    `score_thresh` and `device` stand for `model.test.score_thresh` and `device`, and override
    the model file's recipe (and `overrides`) only when given.

    Raises:
        UsageError: an input is missing, nothing to read, or outputs exist (without `overwrite`).
        DatasetError: none of the images could be read.
    """
    found = find_images(inputs, out_dir=output_dir)
    refuse_existing([output_dir / PREDICTIONS_NAME, *(i.picture for i in found)], overwrite=overwrite)
    flags = list(overrides)
    if score_thresh is not None:
        flags.append(key_override("model.test.score_thresh", repr(score_thresh), origin=f"--score-thresh {score_thresh:g}"))
    if device is not None:
        flags.append(key_override("device", device, origin=f"--device {device}"))
    loaded = load_detector(model_path, flags)
    recipe = loaded.recipe
    short_size, max_size = inference_resize(recipe.data.test)
    model = loaded.model.to(resolve_device(recipe.device, source="--device" if device else "device"))
    report = predict_images(
        model,
        found,
        out_dir=output_dir,
        class_names=loaded.classes.names,
        class_dataset_ids=loaded.classes.dataset_ids,
        input_format=recipe.model.input_format,
        short_size=short_size,
        max_size=max_size,
        model_name=str(model_path),
        progress=progress,
    )
    if not report.images:
        raise DatasetError(
            f"none of the {len(report.skipped)} images could be read ({report.skipped[0]['file']}: "
            f"{report.skipped[0]['reason']}); pass image files Pillow can open"
        )
    return report
