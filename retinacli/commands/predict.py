"""`retina predict`: detections of a model file, or of an exported file, on images, folders of
images and videos."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from retinacli.build import inference_resize
from retinacli.commands.model_files import load_detector
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import DatasetError, UsageError
from retinacli.evaluation.predict import (
    ImageInput,
    PredictReport,
    TorchDetector,
    find_images,
    predict_images,
)
from retinacli.evaluation.prediction_formats import (
    COCO_NAME,
    PREDICTIONS_NAME,
    YOLO_DIR,
    PredictionFormat,
)
from retinacli.evaluation.video import VideoReport, is_video, predict_video
from retinacli.export.runtime import is_exported, open_exported
from retinacli.files import refuse_existing
from retinacli.recipe import Override, key_override


@dataclass
class PredictResult:
    """The images' report (None when only videos were given) and one report per video."""

    images: PredictReport | None
    videos: list[VideoReport] = field(default_factory=list)


def predict(
    model_path: Path,
    inputs: Sequence[Path],
    *,
    output_dir: Path,
    score_thresh: float | None = None,
    overrides: Sequence[str | Override] = (),
    device: str | None = None,
    images_per_batch: int | None = None,
    formats: Sequence[PredictionFormat] = ("json",),
    annotations: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Detect objects in `inputs` (images, folders, videos); pictures with the boxes drawn and
    the `formats` go to `output_dir`, an annotated copy and per-frame JSON of each video too.

    `model_path` is a model file or an exported `.onnx` / `.ts` file (then its own thresholds
    and resize apply: `score_thresh`, `overrides` and `device` are refused). `score_thresh`,
    `device` and `images_per_batch` stand for `model.test.score_thresh`, `device` and
    `data.test.images_per_batch` and override the model file's recipe only when given.
    `annotations`: the COCO json whose image ids the "coco" format uses (required with it).

    Raises:
        UsageError: an input is missing, nothing to read, outputs exist (without `overwrite`),
            a flag that does not apply, an image missing from `annotations`.
        DatasetError: none of the images could be read.
    """
    videos = [Path(p) for p in inputs if Path(p).is_file() and is_video(p)]
    others = [Path(p) for p in inputs if Path(p) not in videos]
    found = find_images(others, out_dir=output_dir) if others else []
    if "coco" in formats and annotations is None:
        raise UsageError("--format coco needs --annotations JSON: the COCO file whose image ids the results use")
    outputs = [output_dir / PREDICTIONS_NAME, *(i.picture for i in found)] if found else []
    if found and "coco" in formats:
        outputs.append(output_dir / COCO_NAME)
    if found and "yolo" in formats:
        outputs.append(output_dir / YOLO_DIR)
    for video in videos:
        outputs += [output_dir / f"{video.stem}.mp4", output_dir / f"{video.stem}.json"]
    refuse_existing(outputs, overwrite=overwrite)
    image_ids = _coco_image_ids(annotations, found, others) if found and "coco" in formats else None

    if is_exported(model_path):
        given = [flag for flag, value in (("--score-thresh", score_thresh), ("--set", overrides or None), ("--device", device)) if value]
        if given:
            raise UsageError(
                f"{model_path}: an exported file has its thresholds and device settings built in; "
                f"{', '.join(given)} apply to model files only (export again with --set to change them)"
            )
        exported = open_exported(model_path)
        meta = exported.metadata
        detector, names, ids = exported, meta.class_names, meta.class_dataset_ids
        input_format, short_size, max_size = meta.input_format, meta.short_size, meta.max_size
        per_batch, workers = images_per_batch or 1, 0
    else:
        flags = list(overrides)
        if score_thresh is not None:
            flags.append(key_override("model.test.score_thresh", repr(score_thresh), origin=f"--score-thresh {score_thresh:g}"))
        if device is not None:
            flags.append(key_override("device", device, origin=f"--device {device}"))
        if images_per_batch is not None:
            flags.append(
                key_override("data.test.images_per_batch", str(images_per_batch), origin=f"--images-per-batch {images_per_batch}")
            )
        loaded = load_detector(model_path, flags)
        recipe = loaded.recipe
        short_size, max_size = inference_resize(recipe.data.test)
        model = prepare_for_inference(loaded.model).to(resolve_device(recipe.device, source="--device" if device else "device"))
        detector, names, ids = TorchDetector(model), loaded.classes.names, loaded.classes.dataset_ids
        input_format = recipe.model.input_format
        per_batch, workers = recipe.data.test.images_per_batch, recipe.data.num_workers
    common = dict(class_names=names, class_dataset_ids=ids, input_format=input_format, short_size=short_size, max_size=max_size)
    result = PredictResult(None)
    if found:
        report = predict_images(
            detector,
            found,
            out_dir=output_dir,
            images_per_batch=per_batch,
            num_workers=workers if len(found) > per_batch else 0,
            model_name=str(model_path),
            formats=formats,
            coco_image_ids=image_ids,
            progress=progress,
            **common,
        )
        if not report.images and not videos:
            raise DatasetError(
                f"none of the {len(report.skipped)} images could be read ({report.skipped[0]['file']}: "
                f"{report.skipped[0]['reason']}); pass image files Pillow can open"
            )
        result.images = report
    for video in videos:
        result.videos.append(
            predict_video(detector, video, out_dir=output_dir, images_per_batch=max(per_batch, 1), progress=progress, **common)
        )
    return result


def _coco_image_ids(annotations: Path | None, found: Sequence[ImageInput], roots: Sequence[Path]) -> dict[Path, int]:
    """The image id of each image in `annotations`: by its path relative to the folder it was
    found in (as a COCO file_name), else by its file name when that is unique in the json."""
    assert annotations is not None
    try:
        data = json.loads(Path(annotations).read_text(encoding="utf-8"))
        images = [(str(img["file_name"]), int(img["id"])) for img in data["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--annotations {annotations}: not a readable COCO json with images ({exc})") from None
    by_name = {name.replace("\\", "/"): image_id for name, image_id in images}
    by_base: dict[str, list[int]] = {}
    for name, image_id in images:
        by_base.setdefault(Path(name).name, []).append(image_id)
    ids: dict[Path, int] = {}
    missing = []
    for item in found:
        relative = [item.path.relative_to(root).as_posix() for root in roots if root.is_dir() and item.path.is_relative_to(root)]
        match = next((by_name[r] for r in relative if r in by_name), None)
        if match is None and len(by_base.get(item.path.name, [])) == 1:
            match = by_base[item.path.name][0]
        if match is None:
            missing.append(str(item.path))
        else:
            ids[item.path] = match
    if missing:
        raise UsageError(
            f"--annotations {annotations}: {len(missing)} image(s) are not in it (first: {missing[0]}); "
            "predict on the images the json lists, or pass the json they belong to"
        )
    return ids
