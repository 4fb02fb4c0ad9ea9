"""The diagnostics of one evaluation on disk, beside its metrics.json.

| file | what |
|---|---|
| `diagnostics.json` | everything below in one file (what `retina eval --diagnostics --json` prints) |
| `pr_curves.json`, `pr_curves.png` | per-class precision at pycocotools' 101 recall points, IoU 0.5 and 0.5:0.95 |
| `confusion_matrix.json`, `confusion_matrix.png` | (K + 1)² counts and row shares at IoU 0.5 |
| `per_class.json` | threshold, precision, recall, F1 and their counts per class |
| `errors.json`, `errors.png` | false positives by type, missed objects by size, AP50 gained per fix |
| `worst_images/NN_image<id>.png` | the images with the most errors, drawn |

Every file is written atomically, inside the output folder only (`files.output_file`);
`worst_images/` is emptied of earlier pictures first, so the folder always shows this
evaluation's (a `worst_images` link leaving the output folder is refused, never followed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import read_image
from retinacli.evaluation.coco_eval import category_names
from retinacli.evaluation.diagnostic_plots import (
    save_confusion_matrix,
    save_error_breakdown,
    save_image_errors,
    save_pr_curves,
)
from retinacli.evaluation.diagnostics import Diagnostics, DiagnosticsOptions, diagnose
from retinacli.files import output_file, write_json

DIAGNOSTICS_NAME = "diagnostics.json"
WORST_IMAGES_DIR = "worst_images"
DIAGNOSTICS_FILES: tuple[str, ...] = (
    DIAGNOSTICS_NAME,
    "pr_curves.json",
    "pr_curves.png",
    "confusion_matrix.json",
    "confusion_matrix.png",
    "per_class.json",
    "errors.json",
    "errors.png",
)


@dataclass(frozen=True)
class DiagnosticsFiles:
    """What `write_diagnostics` wrote: the folder, its files, the worst-image pictures, and the
    content of diagnostics.json."""

    output_dir: Path
    files: tuple[Path, ...]
    worst_images: tuple[Path, ...]
    content: dict[str, Any]


def diagnose_and_write(
    evaluator: Any,
    dataset: DetectionDataset,
    output_dir: Path | str,
    *,
    options: DiagnosticsOptions,
    class_names: tuple[str, ...] | None = None,
) -> DiagnosticsFiles:
    """`diagnose` an evaluated pycocotools `COCOeval` of `dataset` (`coco_eval.CocoScore`'s, or
    `coco_eval.evaluate_results` of results read back) and write the files.

    class_names: the name of each evaluated category (default: the evaluator's own,
    `coco_eval.category_names`).
    """
    names = class_names if class_names is not None else category_names(evaluator)
    diag = diagnose(evaluator, class_names=names, threshold=options.threshold, measure_ap_gain=options.ap_gain)
    return write_diagnostics(diag, dataset, output_dir, worst_images=options.worst_images)


def write_diagnostics(
    diag: Diagnostics, dataset: DetectionDataset, output_dir: Path | str, *, worst_images: int = 12
) -> DiagnosticsFiles:
    """Write the files of the module docstring into `output_dir` (created if needed); the
    `worst_images` images with the most errors (0: none) are read from `dataset`'s files."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    everything = diag.to_json()
    write_json(out / "pr_curves.json", everything["pr_curves"])
    write_json(out / "confusion_matrix.json", everything["confusion_matrix"])
    write_json(out / "per_class.json", {"thresholds": everything["thresholds"], "classes": everything["per_class"]})
    write_json(out / "errors.json", everything["errors"])
    save_pr_curves(diag, out / "pr_curves.png")
    save_confusion_matrix(diag, out / "confusion_matrix.png")
    save_error_breakdown(diag, out / "errors.png")
    pictures = _write_worst_images(diag, dataset, out, worst_images)
    everything["worst_images"] = [
        {"file": str(path.relative_to(out)), **_summary(entry)}
        for path, entry in zip(pictures, diag.images, strict=False)
    ]
    write_json(out / DIAGNOSTICS_NAME, everything)
    return DiagnosticsFiles(out, tuple(out / name for name in DIAGNOSTICS_FILES), tuple(pictures), everything)


def _write_worst_images(diag: Diagnostics, dataset: DetectionDataset, out: Path, count: int) -> list[Path]:
    """Draw the `count` images with the most errors into `out/worst_images/`, after removing the
    pictures of an earlier evaluation there. The folder and every picture are checked to lie
    inside `out` (`files.output_file`): a `worst_images` that is a link to elsewhere is refused,
    and nothing outside `out` is removed or written."""
    folder = output_file(out, WORST_IMAGES_DIR)
    if folder.is_dir():
        for old in folder.glob("*_image*.png"):
            if old.is_file() or old.is_symlink():
                old.unlink()
    chosen = [entry for entry in diag.images if entry["num_errors"] > 0][:count]
    if not chosen:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    files = {record.image_id: record.file_name for record in dataset.records}
    written = []
    for rank, entry in enumerate(chosen, start=1):
        rgb = read_image(files[entry["image_id"]], input_format="RGB", image_id=entry["image_id"])
        path = output_file(out, f"{WORST_IMAGES_DIR}/{rank:02d}_image{int(entry['image_id'])}.png")
        written.append(save_image_errors(rgb, entry, path, class_names=diag.class_names))
    return written


def _summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for det in entry["detections"]:
        if det["error"]:
            errors[det["error"]] = errors.get(det["error"], 0) + 1
    if entry["missed"]:
        errors["missed"] = len(entry["missed"])
    return {"image_id": entry["image_id"], "num_errors": entry["num_errors"], "errors": errors}
