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
from retinacli.errors import DatasetError, RetinaError, UsageError
from retinacli.evaluation.detectors import ImageDetector, TorchDetector
from retinacli.export.runtime import (
    ExportedDetector,
    is_exported,
    open_exported,
    refuse_untrusted_code,
)
from retinacli.files import OUTPUT_MARKER, check_output_dir, prepare_output_dir
from retinacli.predict.formats import (
    COCO_NAME,
    PREDICTIONS_NAME,
    PredictionFormat,
)
from retinacli.predict.images import (
    ImageInput,
    PredictReport,
    find_images,
    predict_images,
)
from retinacli.predict.video import VideoReport, is_video, predict_video, require_av
from retinacli.recipe import Override, key_override

COMMAND = "predict"


@dataclass
class PredictResult:
    """The images' report (None when only videos were given), one report per video done, and
    the videos that could not be processed ({"file", "reason"}, as the images' `skipped`)."""

    images: PredictReport | None
    videos: list[VideoReport] = field(default_factory=list)
    skipped_videos: list[dict[str, str]] = field(default_factory=list)

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Every input skipped: images first, then videos."""
        return [*(self.images.skipped if self.images is not None else []), *self.skipped_videos]


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
    trust_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Detect objects in `inputs` (images, folders, videos); pictures with the boxes drawn and
    the `formats` go to `output_dir`, an annotated copy and per-frame JSON of each video too.

    `output_dir` follows the output rule (`files.prepare_output_dir`): a new or empty folder, or
    an earlier output of `retina predict` with `overwrite`; a folder holding anything else is
    refused. Every file name made from an input's name is checked to stay inside it.

    `model_path` is a model file or an exported `.onnx` / `.ts` file (then its own resize and
    thresholds apply: `overrides` and `device` are refused, and `score_thresh` may only raise
    the file's threshold, which is then applied to its detections exactly). A TorchScript file
    is a program: it is refused unless `trust_code` (export/runtime.py). `score_thresh`,
    `device` and `images_per_batch` stand for `model.test.score_thresh`, `device` and
    `data.test.images_per_batch` and override the model file's recipe only when given.
    `annotations`: the COCO json whose image ids the "coco" format uses (required with it).

    One bad input never loses the others: an image or video that cannot be read or run is
    skipped and named in the result (and in predictions.json), and everything else is written.

    Raises:
        UsageError: an input is missing, nothing to read, the output folder is refused, a flag
            that does not apply, a TorchScript file without `trust_code`, a threshold below an
            exported file's, an image missing from `annotations`, PyAV missing for a video.
        DatasetError: no input at all could be processed (predictions.json, listing the skipped
            images, is still written).
    """
    refuse_untrusted_code(model_path, trust_code=trust_code)
    videos = [Path(p) for p in inputs if Path(p).is_file() and is_video(p)]
    others = [Path(p) for p in inputs if Path(p) not in videos]
    if videos:
        require_av()
    found = find_images(others, out_dir=output_dir) if others else []
    if "coco" in formats and annotations is None:
        raise UsageError("--format coco needs --annotations JSON: the COCO file whose image ids the results use")
    check_output_dir(output_dir, command=COMMAND, overwrite=overwrite)
    image_ids = _coco_image_ids(annotations, found, others) if found and "coco" in formats else None
    taken = {Path(name).stem for name in (PREDICTIONS_NAME, COCO_NAME, OUTPUT_MARKER)}
    taken |= {i.picture.relative_to(output_dir).with_suffix("").as_posix() for i in found}
    video_stems = _video_stems(videos, taken=taken)

    detector: ImageDetector  # a model file's RetinaNet or an exported file, run alike
    if is_exported(model_path):
        given = [flag for flag, value in (("--set", overrides or None), ("--device", device)) if value]
        if given:
            raise UsageError(
                f"{model_path}: an exported file has its resize, thresholds and device settings built in; "
                f"{', '.join(given)} apply to model files only (export again with --set to change them)"
            )
        exported = open_exported(model_path, trust_code=trust_code)
        if score_thresh is not None:
            exported = _raised_threshold(exported, score_thresh)
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
    prepare_output_dir(output_dir, command=COMMAND, overwrite=overwrite)
    common = dict(class_names=names, class_dataset_ids=ids, input_format=input_format, short_size=short_size, max_size=max_size)
    result = PredictResult(None)
    if found:
        result.images = predict_images(
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
    for video, stem in zip(videos, video_stems, strict=True):
        try:
            report = predict_video(
                detector, video, out_dir=output_dir, images_per_batch=max(per_batch, 1), progress=progress, stem=stem, **common
            )
        except DatasetError as exc:
            result.skipped_videos.append({"file": str(video), "reason": _reason(exc, video)})
        except RetinaError:
            raise
        except Exception as exc:  # PyAV's and the detector's own types: this video's problem
            result.skipped_videos.append({"file": str(video), "reason": f"cannot process it ({type(exc).__name__}: {exc})"})
        else:
            result.videos.append(report)
    done = (len(result.images.images) if result.images is not None else 0) + len(result.videos)
    if done == 0:
        first = result.skipped[0]
        raise DatasetError(
            f"none of the {len(result.skipped)} inputs could be read ({first['file']}: {first['reason']}); "
            "pass image files Pillow can open or videos FFmpeg can decode"
        )
    return result


def _raised_threshold(exported: ExportedDetector, score_thresh: float) -> ExportedDetector:
    """`exported` keeping only detections above `score_thresh`, refused below its own threshold."""
    own = exported.metadata.score_thresh
    if not 0.0 <= score_thresh < 1.0:
        raise UsageError(f"--score-thresh {score_thresh:g}: a score threshold is in [0, 1); pass one in that range")
    if score_thresh < own:
        raise UsageError(
            f"{exported.path}: --score-thresh {score_thresh:g} is below the threshold built into this exported "
            f"file ({own:g}): the detections under {own:g} are not in it; pass --score-thresh {own:g} or more, "
            "or export the model file again with --set model.test.score_thresh="
            f"{score_thresh:g} (or predict with the model file itself)"
        )
    return exported.with_score_thresh(score_thresh)


def _video_stems(videos: Sequence[Path], *, taken: set[str]) -> list[str]:
    """The output stem of each video: its own, or `<stem>-2`, ... when an earlier input (or one
    of the command's own files: predictions.json, the folder's marker) took it."""
    stems = []
    for video in videos:
        stem, n = video.stem, 2
        while stem in taken:
            stem = f"{video.stem}-{n}"
            n += 1
        taken.add(stem)
        stems.append(stem)
    return stems


def _reason(exc: BaseException, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _coco_image_ids(annotations: Path | None, found: Sequence[ImageInput], roots: Sequence[Path]) -> dict[Path, int]:
    """The image id of each image in `annotations`: by its path relative to the folder it was
    found in (as a COCO file_name), else by its file name when that is unique in the json."""
    if annotations is None:
        raise ValueError("_coco_image_ids: needs the annotations json")
    try:
        data = json.loads(Path(annotations).read_text(encoding="utf-8-sig"))
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
