"""`retina eval`: COCO box AP of a model file on its recipe's test set (or a given dataset)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retinacli.build import build_test_dataset, inference_resize
from retinacli.commands.model_files import load_detector
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import UsageError
from retinacli.evaluation import coco_eval
from retinacli.evaluation.classes import match_classes
from retinacli.evaluation.diagnostics import DiagnosticsOptions
from retinacli.evaluation.diagnostics_output import WORST_IMAGES_DIR, diagnose_and_write
from retinacli.evaluation.inference import ProgressCallback, infer_dataset
from retinacli.evaluation.outputs import METRICS_NAME, RESULTS_NAME, write_evaluation
from retinacli.export.runtime import is_exported
from retinacli.files import PathOutsideRoot, check_output_dir, contained_path, prepare_output_dir
from retinacli.recipe import Override, key_override
from retinacli.recipe.schema import CocoDataset

COMMAND = "eval"


@dataclass
class EvalResult:
    """The metrics (as in metrics.json; with diagnostics also "diagnostics", the content of
    diagnostics.json), where they were written, and a note on class matching. On a process
    other than rank 0 the metrics are {} and nothing is written."""

    metrics: dict[str, Any]
    output_dir: Path
    class_note: str

    @property
    def results_path(self) -> Path:
        return self.output_dir / RESULTS_NAME

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / METRICS_NAME


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
    """Run the model file over its recipe's `data.test.dataset` (or `dataset`/`images`), score
    the detections, write coco_results.json and metrics.json to `output_dir` (and the
    diagnostics files, when asked) and return the metrics: inference
    (`inference.infer_dataset`), scoring (`coco_eval.score_detections`), files
    (`outputs.write_evaluation`) and diagnostics (`diagnostics_output.diagnose_and_write`)
    composed here.

    `images_per_batch` and `device` stand for `data.test.images_per_batch` and `device`.

    `output_dir` (default `default_output_dir`) follows the output rule
    (`files.prepare_output_dir`): a new or empty folder, or an earlier output of `retina eval`
    with `overwrite`; it is checked before the model file is read and created only once the
    classes are known to fit, so a refused evaluation leaves nothing behind. Only model files
    are evaluated: an exported .onnx/.ts file is refused without being opened.
    """
    if (dataset is None) != (images is None):
        raise UsageError("--dataset and --images go together: pass the COCO json and its image folder")
    if is_exported(model_path):
        raise UsageError(
            f"{model_path}: retina eval takes a model file or training checkpoint (.pth), not an "
            "exported file (nothing of it was opened); evaluate the model file it was exported from"
        )
    out = output_dir if output_dir is not None else default_output_dir(model_path, dataset)
    check_output_dir(out, command=COMMAND, overwrite=overwrite)
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
        source = _given_dataset(dataset, images)
        key = "--dataset"
    elif recipe.data.test.dataset is not None:
        source, key = recipe.data.test.dataset, "data.test.dataset"
    else:
        raise UsageError(
            f"{model_path}: its recipe has no data.test.dataset; pass --dataset JSON --images DIR"
        )
    test_set = build_test_dataset(source, key=key)
    match = match_classes(loaded.classes, test_set, model_path=model_path)
    prepare_output_dir(out, command=COMMAND, overwrite=overwrite)
    if diagnostics is not None:
        _refuse_leaving_link(out / WORST_IMAGES_DIR, out)
    model = prepare_for_inference(loaded.model).to(resolve_device(recipe.device, source="--device" if device else "device"))
    short_size, max_size = inference_resize(recipe.data.test)
    run = infer_dataset(
        model,
        test_set,
        short_size=short_size,
        max_size=max_size,
        input_format=recipe.model.input_format,
        images_per_batch=recipe.data.test.images_per_batch,
        num_workers=recipe.data.num_workers,
        progress=progress,
    )
    if not run.is_main:  # the other processes ran their shard, nothing else (as in detectron2)
        return EvalResult(metrics={}, output_dir=out, class_note=match.note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)  # metrics notes say it
        score = coco_eval.score_detections(run.images, test_set, class_dataset_ids=match.dataset_ids)
    metrics = {**score.metrics, "images_per_second": run.images_per_second}
    write_evaluation(out, results=score.results, metrics=metrics)
    if diagnostics is not None:
        written = diagnose_and_write(score.evaluator, test_set, out, options=diagnostics)
        metrics = {**metrics, "diagnostics": written.content}
    return EvalResult(metrics=metrics, output_dir=out, class_note=match.note)


def _refuse_leaving_link(folder: Path, out: Path) -> None:
    """Refuse, before anything runs, a `worst_images` of an earlier output that leads out of
    `out` (a link someone put there): its pictures would be removed and written elsewhere."""
    try:
        contained_path(out, folder.name)
    except PathOutsideRoot:
        raise UsageError(
            f"{folder}: leads outside the output folder {out} (a link); nothing was written there; "
            "remove the link, or choose another --output-dir"
        ) from None


def _given_dataset(dataset: Path, images: Path) -> CocoDataset:
    """The dataset of --dataset/--images; a value the schema refuses (an unset ${VAR} in it) is
    a UsageError naming the flag, not a pydantic traceback."""
    try:
        return CocoDataset(annotations=str(dataset), images=str(images))
    except ValidationError as exc:
        given = {"annotations": ("--dataset", dataset), "images": ("--images", images)}
        problems = []
        for error in exc.errors():
            flag, value = given.get(str(error["loc"][0]) if error["loc"] else "", ("--dataset", dataset))
            problems.append(f"{flag} {value}: {str(error['msg']).removeprefix('Value error, ')}")
        raise UsageError("; ".join(problems)) from None
