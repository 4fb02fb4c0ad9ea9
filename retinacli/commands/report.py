"""`retina report RUN_DIR`: one self-contained HTML page of a training run, finished or not.

It reads what the run folder holds so far (config.yaml, metrics.jsonl, eval/<iteration>/,
eval_test/, their diagnostics, model_best.pth, log.txt) and says what is missing instead of
failing. The gallery is drawn from the final evaluation's coco_results.json and its dataset
(the recipe's data.val or data.test), with each class's F1-optimal threshold.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retinacli.build import build_test_dataset
from retinacli.commands.train import CONFIG_NAME, EVAL_DIR, LOG_NAME, TEST_EVAL_DIR
from retinacli.errors import RetinaError, UsageError
from retinacli.evaluation import coco_eval
from retinacli.evaluation.diagnostic_plots import draw_image_errors
from retinacli.evaluation.diagnostics import diagnose
from retinacli.evaluation.diagnostics_output import DIAGNOSTICS_NAME
from retinacli.files import load_torch, write_text
from retinacli.recipe import load_recipe, recipe_to_dict
from retinacli.recipe.schema import Recipe
from retinacli.report.page import GENERATOR, Evaluation, Picture, ReportData, render_report
from retinacli.train.checkpoints import BEST_NAME, FINAL_NAME
from retinacli.train.metrics import METRICS_FILE
from retinacli.train.results_plot import read_metrics, results_png

REPORT_NAME = "report.html"
LOG_LINES = 80
DIAGNOSTICS_PICTURES = (
    ("pr_curves.png", "precision-recall per class (IoU 0.5 and 0.5:0.95)"),
    ("confusion_matrix.png", "confusion matrix at IoU 0.5 and each class's threshold"),
    ("errors.png", "errors by type and the AP50 fixing each would add"),
)


@dataclass(frozen=True)
class ReportResult:
    """Where the page was written, the run's status line, and what it could not show (why)."""

    path: Path
    status: str
    num_evaluations: int
    missing: dict[str, str]


def report(run_dir: Path, *, out: Path | None = None, overwrite: bool = False, gallery: int = 8) -> ReportResult:
    """Write the report page of the run in `run_dir` to `out` (default `RUN_DIR/report.html`).

    An existing file at `out` is replaced only when it is an earlier report (its generator tag)
    or with `overwrite`. gallery: how many evaluation images to draw (0: none).
    """
    run = Path(run_dir)
    _check_run_folder(run)
    target = out if out is not None else run / REPORT_NAME
    _refuse_foreign(target, overwrite=overwrite)
    missing: dict[str, str] = {}
    recipe = _read_recipe(run, missing)
    records = read_metrics(run / METRICS_FILE)
    curves = results_png(records)
    if curves is None:
        missing["curves"] = f"{run / METRICS_FILE}: no logged iteration yet"
    evaluations, folders = _evaluations(run, recipe, records)
    final = evaluations[-1] if evaluations else None
    final_folder = folders[-1] if folders else None
    diagnostics, diagnostics_pictures, worst = _diagnostics(final_folder, missing)
    pictures = _gallery(recipe, final, final_folder, gallery, missing) if final is not None else []
    data = ReportData(
        title=f"retina run: {run.resolve()}",
        status=_status(run, recipe, records),
        generated_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        recipe_changes=_changes(recipe) if recipe is not None else None,
        recipe_text=(run / CONFIG_NAME).read_text(encoding="utf-8") if recipe is not None else None,
        curves=Picture(curves, "losses, learning rate and evaluation metrics against the iteration") if curves else None,
        evaluations=evaluations,
        final=final,
        best=_best(run),
        diagnostics=diagnostics,
        diagnostics_pictures=diagnostics_pictures,
        worst_images=worst,
        gallery=pictures,
        log_tail=_log_tail(run / LOG_NAME),
        missing=missing,
    )
    write_text(target, render_report(data))
    return ReportResult(target, data.status, len(evaluations), missing)


def _check_run_folder(run: Path) -> None:
    if not run.is_dir():
        raise UsageError(f"{run}: not a folder; pass the output_dir of a `retina train` run")
    markers = (CONFIG_NAME, METRICS_FILE, EVAL_DIR, TEST_EVAL_DIR, LOG_NAME)
    if not any((run / name).exists() for name in markers):
        raise UsageError(
            f"{run}: not a training run folder (none of {', '.join(markers)} is there); pass the "
            "output_dir of a `retina train` run"
        )


def _refuse_foreign(target: Path, *, overwrite: bool) -> None:
    """Refuse to replace a file that is not an earlier report, unless `overwrite`."""
    if overwrite or not target.exists():
        return
    try:
        head = target.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        head = ""
    if target.is_dir() or f'content="{GENERATOR}"' not in head:
        raise UsageError(
            f"{target}: already exists and is not a retina report; choose another --out, remove it, "
            "or pass --overwrite to replace it"
        )


def _read_recipe(run: Path, missing: dict[str, str]) -> Recipe | None:
    path = run / CONFIG_NAME
    if not path.is_file():
        missing["recipe"] = f"{path} is missing (training writes it when it starts)"
        return None
    try:
        return load_recipe(path)
    except RetinaError as exc:
        missing["recipe"] = f"{path} cannot be read: {exc}"
        return None


def _changes(recipe: Recipe) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) of every leaf the recipe sets differently from the defaults."""
    ours, defaults = _leaves(recipe_to_dict(recipe)), _leaves(recipe_to_dict(Recipe()))
    return [(key, ours.get(key), defaults.get(key)) for key in ours if ours.get(key) != defaults.get(key)] + [
        (key, None, defaults[key]) for key in defaults if key not in ours
    ]


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    found: dict[str, Any] = {}
    for key, value in tree.items():
        found.update(_leaves(value, f"{prefix}{key}."))
    return found


def _status(run: Path, recipe: Recipe | None, records: list[dict[str, Any]]) -> str:
    logged = max((int(r["iteration"]) for r in records), default=None)
    total = f" of {recipe.solver.max_iter}" if recipe is not None else ""
    if (run / FINAL_NAME).is_file():
        return f"finished: {FINAL_NAME} written" + (f", last logged iteration {logged}{total}" if logged is not None else "")
    if logged is None:
        return "not started or nothing logged yet (no metrics.jsonl line)"
    return f"not finished (no {FINAL_NAME} yet): last logged iteration {logged}{total}"


def _evaluations(
    run: Path, recipe: Recipe | None, records: list[dict[str, Any]]
) -> tuple[list[Evaluation], list[Path]]:
    """The periodic evaluations (by iteration), then the final test one; with their folders."""
    has_val = any(key.startswith("val/") for r in records for key in r) or (
        recipe is not None and recipe.data.val.dataset is not None
    )
    periodic = "val" if has_val else "test"
    rows, folders = [], []
    eval_dir = run / EVAL_DIR
    numbered = sorted(
        (p for p in eval_dir.iterdir() if p.name.isdigit()) if eval_dir.is_dir() else [], key=lambda p: int(p.name)
    )
    for folder in numbered:
        metrics = _read_json(folder / coco_eval.METRICS_NAME)
        if metrics is not None:
            rows.append(Evaluation(periodic, int(folder.name), metrics))
            folders.append(folder)
    test = _read_json(run / TEST_EVAL_DIR / coco_eval.METRICS_NAME)
    if test is not None:
        at = [int(r["iteration"]) for r in records if "test/AP" in r]
        rows.append(Evaluation("test", at[-1] if at else None, test))
        folders.append(run / TEST_EVAL_DIR)
    return rows, folders


def _diagnostics(
    folder: Path | None, missing: dict[str, str]
) -> tuple[dict[str, Any] | None, list[Picture], list[Picture]]:
    if folder is None:
        missing["diagnostics"] = "no evaluation yet"
        return None, [], []
    content = _read_json(folder / DIAGNOSTICS_NAME)
    if content is None:
        missing["diagnostics"] = (
            f"{folder}: no diagnostics yet (training writes them for its final evaluation; "
            f"`retina eval MODEL --diagnostics` makes them for any model file)"
        )
        return None, [], []
    pictures = [
        Picture((folder / name).read_bytes(), caption) for name, caption in DIAGNOSTICS_PICTURES if (folder / name).is_file()
    ]
    worst = []
    for entry in content.get("worst_images", []):
        path = folder / entry["file"]
        if path.is_file():
            kinds = ", ".join(f"{count} {kind}" for kind, count in entry["errors"].items())
            worst.append(_jpeg(path.read_bytes(), f"image {entry['image_id']}: {kinds}"))
    return content, pictures, worst


def _gallery(
    recipe: Recipe | None, final: Evaluation, folder: Path | None, count: int, missing: dict[str, str]
) -> list[Picture]:
    """`count` images spread over the evaluated dataset, drawn with predictions and ground truth."""
    if count == 0:
        missing["gallery"] = "no gallery asked for (--gallery 0)"
        return []
    section = None
    if recipe is not None:
        section = recipe.data.val if final.split == "val" else recipe.data.test
    if section is None or section.dataset is None or folder is None:
        missing["gallery"] = f"no data.{final.split}.dataset in the run's recipe to draw images from"
        return []
    results = _read_json(folder / coco_eval.RESULTS_NAME)
    if results is None:
        missing["gallery"] = f"{folder / coco_eval.RESULTS_NAME} is missing"
        return []
    try:
        dataset = build_test_dataset(section.dataset, key=f"data.{final.split}.dataset")
    except RetinaError as exc:
        missing["gallery"] = f"cannot read data.{final.split}.dataset: {exc}"
        return []
    import warnings

    gt = coco_eval.coco_ground_truth(dataset.annotations, image_ids=[r.image_id for r in dataset.records])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)
        _, evaluator = coco_eval.evaluate_boxes(gt, results)
    names = coco_eval.category_names(evaluator)
    diag = diagnose(evaluator, class_names=names, measure_ap_gain=False)
    entries = {entry["image_id"]: entry for entry in diag.images}
    records = sorted(dataset.records, key=lambda r: r.image_id)
    step = max(1, len(records) // count)
    pictures = []
    from retinacli.data.images import read_image

    for record in records[::step][:count]:
        entry = entries.get(record.image_id, {"detections": [], "ground_truth": [], "missed": []})
        rgb = read_image(record.file_name, input_format="RGB", image_id=record.image_id)
        canvas = draw_image_errors(rgb, entry, class_names=names, min_side=320, max_side=640)
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=85)
        found = sum(1 for d in entry["detections"] if not d["error"])
        pictures.append(
            Picture(
                buffer.getvalue(),
                f"image {record.image_id}: {found} of {len(entry['ground_truth'])} found, "
                f"{sum(1 for d in entry['detections'] if d['error'])} false positives",
                mime="image/jpeg",
            )
        )
    return pictures


def _best(run: Path) -> dict[str, Any] | None:
    path = run / BEST_NAME
    if not path.is_file():
        return None
    try:
        best = load_torch(path).get("best") or {}
    except RetinaError:
        return None
    if best.get("value") is None:
        return None
    return {"metric": best.get("metric"), "value": best["value"], "iteration": best.get("iteration")}


def _log_tail(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_LINES:]


def _read_json(path: Path) -> Any:
    """The JSON content of `path`; None when missing or being written (not valid yet)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _jpeg(png: bytes, caption: str) -> Picture:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return Picture(buffer.getvalue(), caption, mime="image/jpeg")
