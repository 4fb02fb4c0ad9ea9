"""`retina report RUN_DIR`: one self-contained HTML page of a training run, finished or not.

It reads what the run folder holds so far (config.yaml, metrics.jsonl, eval/<iteration>/,
eval_test/, their diagnostics, model_best.pth, log.txt) and says what is missing instead of
failing. The gallery is drawn from the final evaluation's coco_results.json and its dataset
(the recipe's data.val or data.test), with each class's F1-optimal threshold.

A run folder may be a stranger's (mailed, downloaded, unpacked from an archive), so everything
in it is data, read in bounded amounts:

- every file is read through `RunFolderReader`, which resolves its name inside the run folder
  (`files.contained_path`: `..`, absolute names and symbolic links to outside are refused) and
  reads regular files only, up to a size limit per kind of file. The picture names that
  diagnostics.json gives (`worst_images[].file`) go the same way. What is refused is never read:
  it is named on the page ("Left out of this page") and in the result the CLI prints.
- config.yaml is read as a run writes it: one resolved recipe, so a `_base_` in it (which would
  read other files of the machine) is refused rather than followed.
- metrics.jsonl: its last `METRICS_BYTES` are read; only curves of plain names and finite values
  are drawn, at most `MAX_METRIC_CURVES` of them.
- the page is written with `files.prepare_output_file`: an existing file (the default
  `RUN_DIR/report.html` included) is replaced only with `--overwrite`.

The gallery reads the dataset that config.yaml names (`data.val` / `data.test`), as training
did, only when asked (`gallery` > 0, `--gallery N`): those files lie outside the run folder, and
a run folder from someone else could name any dataset on the machine. The result names that
dataset (`gallery_source`).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from retinacli.audit.outputs import ISSUES_JSON, PICTURES_DIR, SUMMARY_JSON
from retinacli.build import build_test_dataset
from retinacli.errors import RetinaError, UsageError
from retinacli.evaluation import coco_eval
from retinacli.evaluation.diagnostic_plots import draw_image_errors
from retinacli.evaluation.diagnostics import diagnose
from retinacli.evaluation.diagnostics_output import DIAGNOSTICS_NAME
from retinacli.files import (
    PathOutsideRoot,
    contained_path,
    format_bytes,
    load_torch,
    output_owner,
    prepare_output_file,
    write_text,
)
from retinacli.recipe import recipe_to_dict, validate_recipe
from retinacli.recipe.loading import BASE_KEY, read_yaml_file
from retinacli.recipe.schema import Recipe
from retinacli.report.audit_page import AuditPageData, AuditPicture, render_audit
from retinacli.report.page import Evaluation, Picture, ReportData, render_report
from retinacli.report.tune_page import TunePageData, render_tune
from retinacli.training.checkpoints import BEST_NAME, FINAL_NAME
from retinacli.training.metrics import METRICS_FILE
from retinacli.training.results_plot import TRAINING_PANELS, results_png
from retinacli.training.run_folder import (
    CONFIG_NAME,
    EVAL_DIR,
    LOG_NAME,
    REPORT_NAME,
    TEST_EVAL_DIR,
)
from retinacli.training.tuning import HISTORY_PNG, IMPORTANCE_PNG, TRIALS_JSON, TUNE_COMMAND

LOG_LINES = 80
DIAGNOSTICS_PICTURES = (
    ("pr_curves.png", "precision-recall per class (IoU 0.5 and 0.5:0.95)"),
    ("confusion_matrix.png", "confusion matrix at IoU 0.5 and each class's threshold"),
    ("errors.png", "errors by type and the AP50 fixing each would add"),
)

# How much of a run folder is read: far above what a run writes, low enough that a hostile
# folder cannot make the page (or the memory it takes) unbounded.
PICTURE_BYTES = 20 * 2**20  # one picture file
JSON_BYTES = 64 * 2**20  # metrics.json, diagnostics.json, coco_results.json
RECIPE_BYTES = 2**20  # config.yaml
METRICS_BYTES = 32 * 2**20  # the end of metrics.jsonl that is read
LOG_BYTES = 2**20  # the end of log.txt that is read
MAX_WORST_IMAGES = 48  # pictures of diagnostics.json's worst_images shown
WORST_IMAGE_SIDE = 1600  # their longer side on the page, in pixels
MAX_METRIC_CURVES = 24  # evaluation curves ("split/metric") drawn
MAX_ITERATION = 10**12
MAX_CURVE_VALUE = 1e100
MAX_AUDIT_PICTURES = 200  # pictures of an audit shown
AUDIT_COMMAND = "data audit"
_AUDIT_PICTURE = re.compile(r"(\d{1,6})_([a-z_]{1,20})_(-?\d{1,19})\.jpg")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}(/[A-Za-z0-9_.:\-]{1,64})?")


@dataclass(frozen=True)
class ReportResult:
    """Where the page was written, the run's status line, what it could not show (section ->
    why), what the run folder holds that was left out (refused names, files over a limit,
    malformed entries), and the dataset the gallery was drawn from (None: no gallery)."""

    path: Path
    status: str
    num_evaluations: int
    missing: dict[str, str]
    left_out: list[str] = field(default_factory=list)
    gallery_source: str | None = None


def report(run_dir: Path, *, out: Path | None = None, overwrite: bool = False, gallery: int = 0) -> ReportResult:
    """Write the report page of the run in `run_dir` to `out` (default `RUN_DIR/report.html`).

    An existing file at `out` (or at the default path) is replaced only with `overwrite`.
    gallery: how many evaluation images to draw (0: none).
    """
    run = Path(run_dir)
    if run.is_dir() and output_owner(run) == TUNE_COMMAND:
        target = prepare_output_file(out if out is not None else run / REPORT_NAME, overwrite=overwrite, flag="--out")
        return _tune_report(run, target)
    if _is_audit_folder(run):
        target = prepare_output_file(out if out is not None else run / REPORT_NAME, overwrite=overwrite, flag="--out")
        return _audit_report(run, target)
    _check_run_folder(run)
    target = prepare_output_file(out if out is not None else run / REPORT_NAME, overwrite=overwrite, flag="--out")
    folder = RunFolderReader(run)
    missing: dict[str, str] = {}
    recipe, recipe_text = _read_recipe(folder, missing)
    records = _read_metrics(folder)
    curves = results_png(records)
    if curves is None:
        missing["curves"] = f"{run / METRICS_FILE}: no logged iteration yet"
    evaluations, folders = _evaluations(folder, recipe, records)
    final = evaluations[-1] if evaluations else None
    final_folder = folders[-1] if folders else None
    diagnostics, diagnostics_pictures, worst = _diagnostics(folder, final_folder, missing)
    pictures, source = _gallery(folder, recipe, final, final_folder, gallery, missing) if final is not None else ([], None)
    data = ReportData(
        title=f"retina run: {run.resolve()}",
        status=_status(run, recipe, records),
        generated_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        recipe_changes=_changes(recipe) if recipe is not None else None,
        recipe_text=recipe_text,
        curves=Picture(curves, "losses, learning rate and evaluation metrics against the iteration") if curves else None,
        evaluations=evaluations,
        final=final,
        best=_best(folder),
        diagnostics=diagnostics,
        diagnostics_pictures=diagnostics_pictures,
        worst_images=worst,
        gallery=pictures,
        log_tail=_log_tail(folder),
        missing=missing,
        left_out=folder.left_out,
    )
    write_text(target, render_report(data))
    return ReportResult(target, data.status, len(evaluations), missing, list(folder.left_out), source)


class RunFolderReader:
    """Reads files of a run folder by their name inside it, and records what it refuses.

    A name is resolved inside the folder (symbolic links included, `files.contained_path`);
    one that leaves it, a file that is not a regular file, and a file over its size limit are
    not read, and are listed in `left_out` with the reason.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.left_out: list[str] = []

    def leave_out(self, what: str) -> None:
        if what not in self.left_out:
            self.left_out.append(what)

    def path(self, name: str) -> Path | None:
        """`root / name` when it stays inside the folder; else None (and the name left out)."""
        try:
            return contained_path(self.root, name)
        except PathOutsideRoot as exc:
            self.leave_out(f"{name!r}: {exc.reason} {self.root}; not read")
            return None

    def file(self, name: str) -> Path | None:
        """The regular file `name` inside the folder; None when missing, outside or not a file."""
        path = self.path(name)
        if path is None or not path.exists():
            return None
        if not path.is_file():
            self.leave_out(f"{name}: not a regular file; not read")
            return None
        return path

    def read_bytes(self, name: str, *, limit: int, tail: bool = False) -> bytes | None:
        """The bytes of file `name`; over `limit`: None and left out, or with `tail` its last
        `limit` bytes (and a note)."""
        path = self.file(name)
        if path is None:
            return None
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, io.SEEK_END)
                if size > limit:
                    if not tail:
                        self.leave_out(f"{name}: {format_bytes(size)}, over the {format_bytes(limit)} a report reads; not read")
                        return None
                    self.leave_out(f"{name}: {format_bytes(size)}; only its last {format_bytes(limit)} are read")
                handle.seek(max(0, size - limit))
                return handle.read(limit)
        except OSError as exc:
            self.leave_out(f"{name}: cannot be read ({exc.strerror or exc})")
            return None

    def read_json(self, name: str) -> Any:
        """The JSON content of file `name`; None when missing, refused, or not valid JSON (a file
        being written, or not ours)."""
        raw = self.read_bytes(name, limit=JSON_BYTES)
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return None


def _is_audit_folder(run: Path) -> bool:
    """A folder `retina data audit` wrote (its output marker, or its summary.json and issues.json)."""
    return run.is_dir() and (
        output_owner(run) == AUDIT_COMMAND or ((run / SUMMARY_JSON).is_file() and (run / ISSUES_JSON).is_file())
    )


def _audit_report(run: Path, target: Path) -> ReportResult:
    """The page of an audit folder: summary.json, issues.json and the pictures named
    `NNNN_<kind>_<image id>.jpg` in pictures/, read through `RunFolderReader` like a run's files."""
    folder = RunFolderReader(run)
    missing: dict[str, str] = {}
    summary = folder.read_json(SUMMARY_JSON)
    if not isinstance(summary, dict):
        missing["summary"] = f"{run / SUMMARY_JSON}: missing or not a JSON object (the audit has not finished?)"
        summary = {}
    data = folder.read_json(ISSUES_JSON)
    issues = data.get("issues") if isinstance(data, dict) else None
    if not isinstance(issues, list):
        missing["issues"] = f"{run / ISSUES_JSON}: missing or not {{\"issues\": [...]}}"
        issues = []
    pictures = []
    directory = folder.path(PICTURES_DIR)
    if directory is not None and directory.is_dir():
        names = sorted(p.name for p in directory.iterdir() if _AUDIT_PICTURE.fullmatch(p.name))
        for name in names[:MAX_AUDIT_PICTURES]:
            raw = folder.read_bytes(f"{PICTURES_DIR}/{name}", limit=PICTURE_BYTES)
            if raw is None:
                continue
            rank, kind, image_id = _AUDIT_PICTURE.fullmatch(name).groups()  # type: ignore[union-attr]
            pictures.append(AuditPicture(kind, Picture(raw, f"#{int(rank)} {kind}, image {image_id}", mime="image/jpeg")))
    page = AuditPageData(
        title=f"retina data audit: {run.resolve()}",
        generated_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        summary=summary,
        issues=issues,
        pictures=pictures,
        left_out=folder.left_out,
        missing=missing,
    )
    write_text(target, render_audit(page))
    status = f"label audit: {len(issues)} issues, {len(pictures)} pictures"
    return ReportResult(target, status, 0, missing, list(folder.left_out), None)


def _tune_report(run: Path, target: Path) -> ReportResult:
    """The page of a `retina tune` folder: trials.json and Optuna's two pictures, read through
    `RunFolderReader` like a run's files."""
    folder = RunFolderReader(run)
    missing: dict[str, str] = {}
    study = folder.read_json(TRIALS_JSON)
    if not isinstance(study, dict):
        missing["trials"] = f"{run / TRIALS_JSON}: missing or not a JSON object (no trial has finished yet?)"
        study = {}
    pictures = []
    for name, caption in ((HISTORY_PNG, "optimisation history"), (IMPORTANCE_PNG, "parameter importances")):
        raw = folder.read_bytes(name, limit=PICTURE_BYTES)
        if raw is not None and raw.startswith(b"\x89PNG"):
            pictures.append(Picture(raw, caption))
    page = TunePageData(
        title=f"retina tune: {run.resolve()}",
        generated_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        study=study,
        pictures=pictures,
        left_out=folder.left_out,
        missing=missing,
    )
    write_text(target, render_tune(page))
    trials = study.get("trials") if isinstance(study.get("trials"), list) else []
    return ReportResult(target, f"tuning study: {len(trials)} trials, {len(pictures)} pictures", 0, missing, list(folder.left_out), None)


def _check_run_folder(run: Path) -> None:
    if not run.is_dir():
        raise UsageError(f"{run}: not a folder; pass the output_dir of a `retina train` run")
    markers = (CONFIG_NAME, METRICS_FILE, EVAL_DIR, TEST_EVAL_DIR, LOG_NAME)
    if not any((run / name).exists() for name in markers):
        raise UsageError(
            f"{run}: not a training run folder (none of {', '.join(markers)} is there); pass the "
            "output_dir of a `retina train` run"
        )


def _read_recipe(folder: RunFolderReader, missing: dict[str, str]) -> tuple[Recipe | None, str | None]:
    """The run's recipe and the text of its config.yaml; (None, None) and a note when missing,
    refused or invalid."""
    path = folder.root / CONFIG_NAME
    raw = folder.read_bytes(CONFIG_NAME, limit=RECIPE_BYTES)
    if raw is None:
        missing["recipe"] = f"{path} is missing or not read (training writes it when it starts)"
        return None, None
    try:
        content = read_yaml_file(path)
        if not isinstance(content, dict):
            missing["recipe"] = f"{path}: not a mapping of recipe keys"
            return None, None
        if BASE_KEY in content:
            missing["recipe"] = (
                f"{path}: names {BASE_KEY} files; a run's config.yaml is one resolved recipe, so "
                "they are not read"
            )
            return None, None
        recipe = validate_recipe(content, source=str(path))
    except RetinaError as exc:
        missing["recipe"] = f"{path} cannot be read: {exc}"
        return None, None
    return recipe, raw.decode("utf-8", errors="replace")


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


def _read_metrics(folder: RunFolderReader) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (its last METRICS_BYTES), each reduced to its iteration and
    the values a report draws: finite numbers under plain names, at most MAX_METRIC_CURVES
    evaluation curves. A partial or malformed line is skipped."""
    raw = folder.read_bytes(METRICS_FILE, limit=METRICS_BYTES, tail=True)
    if raw is None:
        return []
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if len(raw) == METRICS_BYTES and lines:
        lines = lines[1:]  # the read may start inside a line
    records, curves, dropped = [], set(), set()
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line being written, or not ours
        iteration = record.get("iteration") if isinstance(record, dict) else None
        if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration < MAX_ITERATION:
            continue
        kept: dict[str, Any] = {"iteration": iteration}
        for name, value in record.items():
            if name == "iteration" or value is None:
                continue
            if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
                dropped.add(name)
                continue
            if "/" not in name and name not in TRAINING_PANELS:
                continue  # not drawn
            if "/" in name and name not in curves:
                if len(curves) >= MAX_METRIC_CURVES:
                    dropped.add(name)
                    continue
                curves.add(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not (math.isfinite(value) and abs(value) <= MAX_CURVE_VALUE):
                continue
            kept[name] = value
        records.append(kept)
    if dropped:
        shown = ", ".join(repr(name) for name in sorted(dropped)[:5])
        more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
        folder.leave_out(
            f"{METRICS_FILE}: {len(dropped)} value name(s) not drawn ({shown}{more}): names are letters, "
            f"digits and _.:- with at most one /, and at most {MAX_METRIC_CURVES} evaluation curves"
        )
    return records


def _status(run: Path, recipe: Recipe | None, records: list[dict[str, Any]]) -> str:
    logged = max((r["iteration"] for r in records), default=None)
    total = f" of {recipe.solver.max_iter}" if recipe is not None else ""
    if (run / FINAL_NAME).is_file():
        return f"finished: {FINAL_NAME} written" + (f", last logged iteration {logged}{total}" if logged is not None else "")
    if logged is None:
        return "not started or nothing logged yet (no metrics.jsonl line)"
    return f"not finished (no {FINAL_NAME} yet): last logged iteration {logged}{total}"


def _evaluations(
    folder: RunFolderReader, recipe: Recipe | None, records: list[dict[str, Any]]
) -> tuple[list[Evaluation], list[str]]:
    """The periodic evaluations (by iteration), then the final test one; with their folders'
    names inside the run folder."""
    has_val = any(key.startswith("val/") for r in records for key in r) or (
        recipe is not None and recipe.data.val.dataset is not None
    )
    periodic = "val" if has_val else "test"
    rows, folders = [], []
    eval_dir = folder.path(EVAL_DIR)
    numbered = sorted(
        (p.name for p in eval_dir.iterdir() if p.name.isascii() and p.name.isdigit() and len(p.name) < 13)
        if eval_dir is not None and eval_dir.is_dir()
        else [],
        key=int,
    )
    for name in numbered:
        where = f"{EVAL_DIR}/{name}"
        metrics = folder.read_json(f"{where}/{coco_eval.METRICS_NAME}")
        if isinstance(metrics, dict):
            rows.append(Evaluation(periodic, int(name), metrics))
            folders.append(where)
    test = folder.read_json(f"{TEST_EVAL_DIR}/{coco_eval.METRICS_NAME}")
    if isinstance(test, dict):
        at = [r["iteration"] for r in records if "test/AP" in r]
        rows.append(Evaluation("test", at[-1] if at else None, test))
        folders.append(TEST_EVAL_DIR)
    return rows, folders


def _diagnostics(
    folder: RunFolderReader, where: str | None, missing: dict[str, str]
) -> tuple[dict[str, Any] | None, list[Picture], list[Picture]]:
    if where is None:
        missing["diagnostics"] = "no evaluation yet"
        return None, [], []
    content = folder.read_json(f"{where}/{DIAGNOSTICS_NAME}")
    if not isinstance(content, dict):
        missing["diagnostics"] = (
            f"{folder.root / where}: no diagnostics yet (training writes them for its final evaluation; "
            f"`retina eval MODEL --diagnostics` makes them for any model file)"
        )
        return None, [], []
    pictures = []
    for name, caption in DIAGNOSTICS_PICTURES:
        data = folder.read_bytes(f"{where}/{name}", limit=PICTURE_BYTES)
        if data is not None:
            pictures.append(Picture(data, caption))
    entries = content.get("worst_images")
    entries = entries if isinstance(entries, list) else []
    if len(entries) > MAX_WORST_IMAGES:
        folder.leave_out(
            f"{where}/{DIAGNOSTICS_NAME}: {len(entries)} worst_images; the first {MAX_WORST_IMAGES} are shown"
        )
    worst = []
    for entry in entries[:MAX_WORST_IMAGES]:
        picture = _worst_image(folder, where, entry)
        if picture is not None:
            worst.append(picture)
    return content, pictures, worst


def _worst_image(folder: RunFolderReader, where: str, entry: Any) -> Picture | None:
    """One picture of diagnostics.json's worst_images, read only from inside the run folder."""
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        folder.leave_out(f"{where}/{DIAGNOSTICS_NAME}: a worst_images entry without a file name")
        return None
    try:  # relative to the evaluation folder, as diagnostics write it; never outside it
        contained_path(folder.root / where, name)
    except PathOutsideRoot as exc:
        folder.leave_out(
            f"{where}/{DIAGNOSTICS_NAME}: worst_images file {name!r} is {exc.reason} "
            f"{folder.root / where}; not read"
        )
        return None
    data = folder.read_bytes(f"{where}/{name}", limit=PICTURE_BYTES)  # and inside the run folder
    if data is None:
        return None
    errors = entry.get("errors")
    kinds = ", ".join(f"{count} {kind}" for kind, count in (errors.items() if isinstance(errors, dict) else ()))
    try:
        return _jpeg(data, f"image {entry.get('image_id')}: {kinds}")
    except ValueError as exc:
        folder.leave_out(f"{where}/{name}: not a picture ({exc})")
        return None


def _gallery(
    folder: RunFolderReader, recipe: Recipe | None, final: Evaluation, where: str | None, count: int, missing: dict[str, str]
) -> tuple[list[Picture], str | None]:
    """`count` images spread over the evaluated dataset, drawn with predictions and ground truth;
    and the dataset they come from."""
    if count == 0:
        missing["gallery"] = "not asked for: --gallery N draws N images of the run's dataset"
        return [], None
    section = None
    if recipe is not None:
        section = recipe.data.val if final.split == "val" else recipe.data.test
    if section is None or section.dataset is None or where is None:
        missing["gallery"] = f"no data.{final.split}.dataset in the run's recipe to draw images from"
        return [], None
    results = folder.read_json(f"{where}/{coco_eval.RESULTS_NAME}")
    if not isinstance(results, list):
        missing["gallery"] = f"{folder.root / where / coco_eval.RESULTS_NAME} is missing or not a list of detections"
        return [], None
    key = f"data.{final.split}.dataset"
    try:
        dataset = build_test_dataset(section.dataset, key=key)
    except RetinaError as exc:
        missing["gallery"] = f"cannot read {key}: {exc}"
        return [], None
    import warnings

    gt = coco_eval.coco_ground_truth(dataset.annotations, image_ids=[r.image_id for r in dataset.records])
    results = _valid_results(folder, f"{where}/{coco_eval.RESULTS_NAME}", results, set(gt.getImgIds()), set(gt.getCatIds()))
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
        try:
            rgb = read_image(record.file_name, input_format="RGB", image_id=record.image_id)
        except RetinaError as exc:
            folder.leave_out(f"gallery: {exc}")
            continue
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
    return pictures, f"{section.dataset} ({key} of {CONFIG_NAME})"


def _valid_results(
    folder: RunFolderReader, name: str, results: list[Any], image_ids: set[int], category_ids: set[int]
) -> list[dict[str, Any]]:
    """The detections of coco_results.json that pycocotools can take: known image and category
    ids, a box of four finite numbers with a positive size, a finite score; the rest left out."""
    kept = []
    for result in results:
        if not isinstance(result, dict):
            continue
        bbox, score = result.get("bbox"), result.get("score")
        if (
            _is_id(result.get("image_id"), image_ids)
            and _is_id(result.get("category_id"), category_ids)
            and isinstance(bbox, list)
            and len(bbox) == 4
            and all(_finite(v) for v in bbox)
            and bbox[2] >= 0
            and bbox[3] >= 0
            and _finite(score)
        ):
            kept.append({"image_id": result["image_id"], "category_id": result["category_id"], "bbox": bbox, "score": score})
    if len(kept) < len(results):
        folder.leave_out(f"{name}: {len(results) - len(kept)} of {len(results)} detections malformed or of unknown images; not drawn")
    return kept


def _is_id(value: Any, known: set[int]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in known


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and abs(value) < 1e12


def _best(folder: RunFolderReader) -> dict[str, Any] | None:
    path = folder.file(BEST_NAME)
    if path is None:
        return None
    try:
        content = load_torch(path)
    except RetinaError:
        return None
    best = content.get("best") if isinstance(content, dict) else None
    if not isinstance(best, dict) or best.get("value") is None:
        return None
    return {"metric": best.get("metric"), "value": best["value"], "iteration": best.get("iteration")}


def _log_tail(folder: RunFolderReader) -> list[str]:
    raw = folder.read_bytes(LOG_NAME, limit=LOG_BYTES, tail=True)
    if raw is None:
        return []
    return raw.decode("utf-8", errors="replace").splitlines()[-LOG_LINES:]


def _jpeg(data: bytes, caption: str) -> Picture:
    """`data` (a picture file's bytes) as a JPEG of at most WORST_IMAGE_SIDE pixels a side.
    ValueError when it is not a picture Pillow decodes within its pixel limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((WORST_IMAGE_SIDE, WORST_IMAGE_SIDE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return Picture(buffer.getvalue(), caption, mime="image/jpeg")
