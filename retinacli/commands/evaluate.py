"""`retina eval`: COCO box AP of a model file on its recipe's test set (or a given dataset), or
of an exported file (.onnx, OpenVINO .xml, TorchScript with --trust-code) on a given dataset."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.build import DatasetFiles, build_given_dataset, build_test_dataset, inference_resize
from retinacli.commands.model_files import load_detector
from retinacli.data.formats.coco import DetectionDataset
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import UsageError
from retinacli.evaluation import coco_eval
from retinacli.evaluation.bootstrap import ImageMatches, bootstrap_intervals
from retinacli.evaluation.classes import ClassInfo, ClassMatch, match_classes
from retinacli.evaluation.detectors import ImageDetector
from retinacli.evaluation.diagnostics import DiagnosticsOptions
from retinacli.evaluation.diagnostics_output import WORST_IMAGES_DIR, diagnose_and_write
from retinacli.evaluation.inference import InferenceRun, ProgressCallback, infer_dataset
from retinacli.evaluation.outputs import METRICS_NAME, RESULTS_NAME, write_evaluation
from retinacli.export.runtime import is_exported, open_exported, refuse_untrusted_code
from retinacli.files import (
    PathOutsideRoot,
    check_output_dir,
    contained_path,
    file_sha256,
    prepare_output_dir,
)
from retinacli.recipe import Override, key_override

COMMAND = "eval"
BOOTSTRAP_SEED = 0  # the same evaluation gives the same interval


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
    trust_code: bool = False,
    threads: int | None = None,
    bootstrap: int = 0,
) -> EvalResult:
    """Run the model file over its recipe's `data.test.dataset` (or `dataset`/`images`), score
    the detections, write coco_results.json and metrics.json to `output_dir` (and the
    diagnostics files, when asked) and return the metrics: inference
    (`inference.infer_dataset`), scoring (`coco_eval.score_detections`), files
    (`outputs.write_evaluation`) and diagnostics (`diagnostics_output.diagnose_and_write`)
    composed here.

    `images_per_batch` and `device` stand for `data.test.images_per_batch` and `device`.

    An exported file (`export.runtime.open_exported`: onnxruntime, OpenVINO, or TorchScript
    with `trust_code`) runs on the CPU one image at a time with `threads` threads, on `dataset`
    and `images` (it holds no recipe), with its built-in resize and thresholds: `overrides`,
    `device` and `images_per_batch` are refused for it.

    `bootstrap` > 0 adds 95 % intervals of AP and AP50 from that many resamplings of the images
    (`evaluation.bootstrap`) as `AP_ci` and `AP50_ci`. metrics.json also names the evaluated
    json and its sha256 (`dataset`, `dataset_sha256`), which `retina compare` checks.

    `output_dir` (default `default_output_dir`) follows the output rule
    (`files.prepare_output_dir`): a new or empty folder, or an earlier output of `retina eval`
    with `overwrite`; it is checked before the model file is read and created only once the
    classes are known to fit, so a refused evaluation leaves nothing behind. A TorchScript file
    without `trust_code` is refused before it is opened.
    """
    if (dataset is None) != (images is None):
        raise UsageError("--dataset and --images go together: pass the COCO json and its image folder")
    if bootstrap < 0:
        raise UsageError(f"--bootstrap {bootstrap}: the number of resamplings, 0 (none) or more (1000 is usual)")
    refuse_untrusted_code(model_path, trust_code=trust_code, command="eval")
    out = output_dir if output_dir is not None else default_output_dir(model_path, dataset)
    check_output_dir(out, command=COMMAND, overwrite=overwrite)
    if is_exported(model_path):
        given = [
            flag
            for flag, value in (("--set", list(overrides) or None), ("--device", device), ("--images-per-batch", images_per_batch))
            if value
        ]
        if given:
            raise UsageError(
                f"{model_path}: an exported file has its resize, thresholds and device built in and runs one image "
                f"at a time on the CPU; {', '.join(given)} apply to model files only"
            )
        if dataset is None or images is None:
            raise UsageError(
                f"{model_path}: an exported file holds no recipe, so no test set; pass --dataset JSON --images DIR"
            )
        return _evaluate_exported(
            model_path,
            build_given_dataset(DatasetFiles(dataset, images)),
            out=out,
            overwrite=overwrite,
            progress=progress,
            diagnostics=diagnostics,
            trust_code=trust_code,
            threads=threads,
            bootstrap=bootstrap,
        )
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
        test_set = build_given_dataset(DatasetFiles(dataset, images))
    elif recipe.data.test.dataset is not None:
        test_set = build_test_dataset(recipe.data.test.dataset, key="data.test.dataset")
    else:
        raise UsageError(
            f"{model_path}: its recipe has no data.test.dataset; pass --dataset JSON --images DIR"
        )
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
    return _score_and_write(run, test_set, match, out, diagnostics, bootstrap)


def _evaluate_exported(
    path: Path,
    test_set: DetectionDataset,
    *,
    out: Path,
    overwrite: bool,
    progress: ProgressCallback | None,
    diagnostics: DiagnosticsOptions | None,
    trust_code: bool,
    threads: int | None,
    bootstrap: int,
) -> EvalResult:
    """`evaluate` for an exported file (its docstring)."""
    exported = open_exported(path, trust_code=trust_code, threads=threads)
    meta = exported.metadata
    if meta.network_only:
        raise UsageError(
            f"{path}: a network-only export (logits, deltas, anchors) has no detections to score; "
            "export the whole detector (without --network-only) to evaluate it"
        )
    match = match_classes(ClassInfo(meta.class_names, meta.class_dataset_ids), test_set, model_path=path)
    prepare_output_dir(out, command=COMMAND, overwrite=overwrite)
    if diagnostics is not None:
        _refuse_leaving_link(out / WORST_IMAGES_DIR, out)
    detector: ImageDetector = exported
    run = infer_dataset(
        detector,
        test_set,
        short_size=meta.short_size,
        max_size=meta.max_size,
        input_format=meta.input_format,
        progress=progress,
    )
    return _score_and_write(run, test_set, match, out, diagnostics, bootstrap)


def _score_and_write(
    run: InferenceRun,
    test_set: DetectionDataset,
    match: ClassMatch,
    out: Path,
    diagnostics: DiagnosticsOptions | None,
    bootstrap: int,
) -> EvalResult:
    """COCO scores of `run`'s detections, written into `out` (with intervals and diagnostics
    when asked)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)  # metrics notes say it
        score = coco_eval.score_detections(run.images, test_set, class_dataset_ids=match.dataset_ids)
    metrics = {
        **score.metrics,
        **(_intervals(score.evaluator, bootstrap) if bootstrap else {}),
        "images_per_second": run.images_per_second,
        "dataset": str(test_set.annotations),
        "dataset_sha256": file_sha256(test_set.annotations),
    }
    write_evaluation(out, results=score.results, metrics=metrics)
    if diagnostics is not None:
        written = diagnose_and_write(score.evaluator, test_set, out, options=diagnostics)
        metrics = {**metrics, "diagnostics": written.content}
    return EvalResult(metrics=metrics, output_dir=out, class_note=match.note)


def _intervals(evaluator: Any, samples: int) -> dict[str, Any]:
    """AP_ci and AP50_ci ([low, high], percent) from `samples` resamplings of the images."""
    found = bootstrap_intervals(ImageMatches.of(evaluator), samples=samples, seed=BOOTSTRAP_SEED)
    return {
        "AP_ci": found["AP"].as_list() if found["AP"].defined else None,
        "AP50_ci": found["AP50"].as_list() if found["AP50"].defined else None,
        "bootstrap": {"samples": samples, "seed": BOOTSTRAP_SEED, "level": 0.95, "method": "percentile; images resampled"},
    }


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
