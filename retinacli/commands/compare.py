"""`retina compare EVAL_A EVAL_B`: is B really better than A? A paired bootstrap of the AP
difference of two evaluations (`retina eval` folders) of the same images.

Each resampling draws one set of images and scores both models on it, so the images both find
hard or easy cancel out and the interval says how much of the difference a different draw of
images of the same kind could undo. It does not cover the spread between training seeds: compare
runs of several seeds for that.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.data.formats.coco import read_coco_json
from retinacli.errors import DatasetError, UsageError
from retinacli.evaluation import coco_eval
from retinacli.evaluation.bootstrap import (
    DEFAULT_SAMPLES,
    ImageMatches,
    Interval,
    paired_difference,
)
from retinacli.evaluation.outputs import METRICS_NAME, RESULTS_NAME
from retinacli.files import file_sha256

MAX_RESULTS_BYTES = 2 * 1024**3  # a results file larger than this is refused unread
MAX_METRICS_BYTES = 64 * 1024**2  # as the report page's JSON limit


@dataclass(frozen=True)
class Comparison:
    """Two evaluations of the same images and the paired bootstrap of B - A (percent points)."""

    first: Path
    second: Path
    dataset: Path
    num_images: int
    first_ap: dict[str, float | None]  # AP, AP50 of A as recomputed (equal to its metrics.json)
    second_ap: dict[str, float | None]
    difference: dict[str, Interval]  # "AP", "AP50": B - A
    samples: int
    seed: int

    def sentence(self, name: str = "AP") -> str:
        """"B is better by 2.1 AP, 95% interval 0.4 to 3.9" and what the interval means."""
        d = self.difference[name]
        if not d.defined:
            return f"{name}: no ground truth to compare on"
        if d.estimate == 0 and d.low == 0 and d.high == 0:
            return f"B and A have the same {name} on every resampling: the same detections"
        word = "better" if d.estimate >= 0 else "worse"
        verdict = (
            "the interval includes 0, so the difference may be noise"
            if d.low <= 0 <= d.high
            else "the interval excludes 0"
        )
        return f"B is {word} by {abs(d.estimate):.1f} {name}, {d.level:.0%} interval {d.low:.1f} to {d.high:.1f}: {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "A": str(self.first),
            "B": str(self.second),
            "dataset": str(self.dataset),
            "num_images": self.num_images,
            "A_metrics": self.first_ap,
            "B_metrics": self.second_ap,
            "difference": {
                name: {"estimate": d.estimate, "ci": d.as_list() if d.defined else None, "level": d.level}
                for name, d in self.difference.items()
            },
            "bootstrap": {"samples": self.samples, "seed": self.seed, "method": "paired; percentile; images resampled"},
        }


def compare(
    first: Path, second: Path, *, dataset: Path | None = None, samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> Comparison:
    """The paired bootstrap of the AP of evaluation folder `second` minus that of `first`.

    Both folders hold a `retina eval` output (metrics.json, coco_results.json) of the same
    dataset: the json their metrics.json names, with the sha256 recorded there, unless
    `dataset` names it (then its sha256 must still match what both recorded, where they did).

    Raises:
        UsageError: a folder that is not an evaluation, evaluations of different data, a
            dataset that changed since, or a bad `samples`.
    """
    if samples < 1:
        raise UsageError(f"--samples {samples}: at least 1 (1000 is usual)")
    a_metrics, b_metrics = _metrics(first), _metrics(second)
    json_path = dataset if dataset is not None else _recorded_dataset(first, a_metrics, second, b_metrics)
    if not json_path.is_file():
        raise UsageError(f"{json_path}: the evaluated COCO json is not there; pass it with --dataset JSON")
    digest = file_sha256(json_path)
    for folder, metrics in ((first, a_metrics), (second, b_metrics)):
        recorded = metrics.get("dataset_sha256")
        if recorded is not None and recorded != digest:
            raise UsageError(
                f"{folder / METRICS_NAME}: evaluated a json whose sha256 is {recorded}, not {json_path} "
                f"({digest}): the two evaluations must be of the same data; evaluate both on one dataset"
            )
    try:
        data = read_coco_json(json_path)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    ground_truth = coco_eval.coco_ground_truth(data)
    image_ids = set(ground_truth.getImgIds())
    for folder, metrics in ((first, a_metrics), (second, b_metrics)):
        if metrics.get("num_images") not in (None, len(image_ids)):
            raise UsageError(
                f"{folder / METRICS_NAME}: evaluated {metrics.get('num_images')} images, but {json_path} has "
                f"{len(image_ids)}: compare evaluations of the whole of one dataset"
            )
    evaluations = [_evaluate(folder, ground_truth, image_ids) for folder in (first, second)]
    difference = paired_difference(evaluations[0][1], evaluations[1][1], samples=samples, seed=seed)
    return Comparison(
        first=first,
        second=second,
        dataset=json_path,
        num_images=len(image_ids),
        first_ap=evaluations[0][0],
        second_ap=evaluations[1][0],
        difference=difference,
        samples=samples,
        seed=seed,
    )


def _metrics(folder: Path) -> dict[str, Any]:
    path = folder / METRICS_NAME
    if not path.is_file() or not (folder / RESULTS_NAME).is_file():
        raise UsageError(
            f"{folder}: not an evaluation folder (it needs {METRICS_NAME} and {RESULTS_NAME}, as `retina eval` writes)"
        )
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise UsageError(f"{path}: larger than {MAX_METRICS_BYTES // 1024**2} MB; not a metrics file retina wrote")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); evaluate again with `retina eval`") from None
    if not isinstance(metrics, dict):
        raise UsageError(f"{path}: not a metrics object; evaluate again with `retina eval`")
    return metrics


def _recorded_dataset(first: Path, a: dict[str, Any], second: Path, b: dict[str, Any]) -> Path:
    named = [m.get("dataset") for m in (a, b)]
    if not all(isinstance(n, str) for n in named):
        without = first if not isinstance(named[0], str) else second
        raise UsageError(
            f"{without / METRICS_NAME}: does not name its dataset (an evaluation older than `retina compare`); "
            "pass the evaluated json with --dataset JSON"
        )
    if a.get("dataset_sha256") != b.get("dataset_sha256"):
        raise UsageError(
            f"{first} and {second} evaluated different data ({named[0]}, {named[1]}: their sha256 differ); "
            "compare evaluations of one dataset"
        )
    return Path(named[0])  # type: ignore[arg-type]


def _evaluate(folder: Path, ground_truth: Any, image_ids: set[int]) -> tuple[dict[str, float | None], ImageMatches]:
    path = folder / RESULTS_NAME
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise UsageError(f"{path}: larger than {MAX_RESULTS_BYTES // 1024**3} GB; not a results file retina wrote")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); evaluate again with `retina eval`") from None
    _check_results(path, results, image_ids, set(ground_truth.getCatIds()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)
        metrics, evaluator = coco_eval.evaluate_boxes(ground_truth, results)
    return {"AP": metrics["AP"], "AP50": metrics["AP50"]}, ImageMatches.of(evaluator)


def _check_results(path: Path, results: Any, image_ids: set[int], category_ids: set[int]) -> None:
    """Every record a COCO detection of an image and a category of the dataset."""
    if not isinstance(results, list):
        raise UsageError(f"{path}: not a list of COCO detections")
    for n, record in enumerate(results):
        problem = None
        if not isinstance(record, dict):
            problem = "not an object"
        elif record.get("image_id") not in image_ids:
            problem = f"image_id {record.get('image_id')!r} is not an image of the dataset"
        elif record.get("category_id") not in category_ids:
            problem = f"category_id {record.get('category_id')!r} is not a category of the dataset"
        elif not (
            isinstance(record.get("bbox"), list)
            and len(record["bbox"]) == 4
            and all(isinstance(v, int | float) for v in record["bbox"])
        ):
            problem = "bbox is not 4 numbers"
        elif not isinstance(record.get("score"), int | float):
            problem = "score is not a number"
        if problem is not None:
            raise UsageError(f"{path}: record {n}: {problem}; compare evaluations `retina eval` wrote of this dataset")
