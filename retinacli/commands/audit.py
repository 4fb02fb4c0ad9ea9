"""`retina data audit`: rank the likely mistakes in a dataset's labels.

Two ways to get the detections the labels are compared with (`audit.scoring`):

- SOURCE a recipe: K-fold cross-fitting. The dataset (the recipe's `data.train.dataset`, or
  `--dataset/--images`) is split by image into K class-stratified folds (`audit.folds`); for
  each fold the recipe is trained on the other folds (`--iters` shortens its schedule) and the
  model predicts the held-out fold, so every image is judged by a model that never saw its
  labels. Each fold lives in `DIR/folds/fold<k>/`: `train.json`, `heldout.json`, the run
  (`run/`, a normal training run folder) and `detections.json` (COCO results) once its
  predictions are written, which marks the fold done. `--resume` continues a killed audit with
  the folds not done (a fold killed mid-training continues from its last checkpoint).
- SOURCE a model file or an exported file: its detections on `--dataset/--images` (a model
  file's recipe's `data.test.dataset` by default), for a dataset the model never trained on.

DIR then gets issues.json, issues.csv, summary.json and pictures of the top issues
(`audit.outputs`), and with `--cleanlab` cleanlab.json (`audit.cleanlab_scores`); `detections.json` (all folds together) and `audit_plan.json` (what the
detections depend on) stay, so a rerun with `--resume` and other thresholds only rescores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retinacli.audit.cleanlab_scores import cleanlab_scores, import_cleanlab
from retinacli.audit.folds import assign_folds, fold_jsons
from retinacli.audit.issues import Issue, find_issues, predictions_from_results, summarize
from retinacli.audit.outputs import PICTURES_DIR, draw_issues, fixed_json, write_issues
from retinacli.audit.scoring import AuditThresholds
from retinacli.build import (
    DatasetFiles,
    build_dataset,
    build_given_dataset,
    build_test_dataset,
    dataset_files,
    inference_resize,
)
from retinacli.commands.model_files import load_detector
from retinacli.data.formats.coco import DetectionDataset, read_coco_json
from retinacli.devices import resolve_device
from retinacli.engine.fuse import prepare_for_inference
from retinacli.errors import RecipeError, UsageError
from retinacli.evaluation.classes import ClassInfo, match_classes
from retinacli.evaluation.coco_eval import detections_to_coco_results
from retinacli.evaluation.inference import ProgressCallback, infer_dataset
from retinacli.export.runtime import is_exported, open_exported, refuse_untrusted_code
from retinacli.files import (
    check_output_dir,
    output_owner,
    prepare_output_dir,
    prepare_output_file,
    write_json,
)
from retinacli.recipe import Override, key_override, load_recipe, recipe_from_dict, recipe_to_dict
from retinacli.recipe.scaling import scale_schedule_dict
from retinacli.training.loop import Reporter, SilentReporter

COMMAND = "data audit"
PLAN_NAME = "audit_plan.json"
FOLDS_DIR = "folds"
DETECTIONS_NAME = "detections.json"
FOLDS_NAME = "folds.json"
CLEANLAB_NAME = "cleanlab.json"
RECIPE_SUFFIXES = (".yaml", ".yml")
_OWN_ENTRIES = (FOLDS_DIR, FOLDS_NAME, CLEANLAB_NAME, PICTURES_DIR, PLAN_NAME, DETECTIONS_NAME, "issues.json", "issues.csv", "summary.json")


@dataclass
class AuditResult:
    """What an audit found and wrote. folds_trained / folds_reused: folds trained in this call
    and folds whose detections an earlier call had written (K-fold mode)."""

    output_dir: Path
    mode: str
    issues: list[Issue]
    summary: dict[str, Any]
    pictures: list[Path] = field(default_factory=list)
    fixed: Path | None = None
    fixed_counts: tuple[int, int] = (0, 0)
    folds_trained: list[int] = field(default_factory=list)
    folds_reused: list[int] = field(default_factory=list)
    cleanlab: Path | None = None


def audit(
    source: Path,
    *,
    output_dir: Path,
    dataset: Path | None = None,
    images: Path | None = None,
    overrides: Sequence[str | Override] = (),
    folds: int = 4,
    iters: int | None = None,
    thresholds: AuditThresholds | None = None,
    pictures: int = 50,
    write_fixed: Path | None = None,
    fix_score: float = 0.8,
    resume: bool = False,
    overwrite: bool = False,
    cleanlab: bool = False,
    device: str | None = None,
    trust_code: bool = False,
    threads: int | None = None,
    reporter: Reporter | None = None,
    progress: ProgressCallback | None = None,
) -> AuditResult:
    """`retina data audit SOURCE` (see the module docstring).

    Raises:
        UsageError: flags that do not go together (`--dataset` without `--images`, `--folds` or
            `--iters` with a model file, `--resume` with `--overwrite`), an output folder that is
            not new, empty, an earlier audit (with `--overwrite`) or, for `--resume`, an audit of
            the same plan; a `--write-fixed` file that exists or is the audited json.
        RecipeError, DatasetError, CheckpointError: as training, `retina eval` and `data check`.
    """
    shown = reporter or SilentReporter()
    thresholds = thresholds or AuditThresholds()
    if (dataset is None) != (images is None):
        raise UsageError("--dataset and --images go together: pass the COCO json and its image folder")
    if resume and overwrite:
        raise UsageError("--resume continues an audit and --overwrite starts it afresh: pass one of them")
    is_recipe = Path(source).suffix.lower() in RECIPE_SUFFIXES
    if not is_recipe and (iters is not None or folds != 4):
        raise UsageError(
            f"{source}: --folds and --iters train fold models from a recipe; a model file is audited "
            "with its own detections: drop them, or pass a recipe"
        )
    if iters is not None and iters < 1:
        raise UsageError(f"--iters {iters}: at least 1")
    if not is_recipe:
        refuse_untrusted_code(source, trust_code=trust_code, command="data audit")
        given = [flag for flag, value in (("--set", list(overrides)), ("--device", device)) if value]
        if is_exported(source) and given:
            raise UsageError(
                f"{source}: an exported file has its thresholds and device built in; {', '.join(given)} "
                "apply to recipes and model files only"
            )
    if cleanlab:
        import_cleanlab()  # missing: said before anything runs
    out = Path(output_dir)
    if not resume:
        check_output_dir(out, command=COMMAND, overwrite=overwrite)
    if write_fixed is not None:
        prepare_output_file(write_fixed, overwrite=overwrite, flag="--write-fixed")

    if is_recipe:
        recipe_dict, audited, files = _recipe_dataset(source, overrides, dataset, images, device)
        plan = _plan("k-fold", source, files, folds=folds, iters=iters, recipe=recipe_dict)
    else:
        audited, files = _model_dataset(source, dataset, images, overrides, trust_code)
        plan = _plan("model", source, files, folds=None, iters=None, recipe=None)
    if write_fixed is not None and Path(write_fixed).resolve() == files.annotations.resolve():
        raise UsageError(f"--write-fixed {write_fixed}: is the audited json; name a new file beside it")
    _open_output(out, plan, resume=resume, overwrite=overwrite)

    result = AuditResult(output_dir=out, mode=plan["mode"], issues=[], summary={})
    if is_recipe:
        results = _cross_fit(recipe_dict, audited, files, out, folds=folds, iters=iters, shown=shown, result=result, progress=progress)
    else:
        results = _model_detections(source, audited, out, overrides=overrides, device=device, trust_code=trust_code, threads=threads, progress=progress, reuse=resume)
    predictions = predictions_from_results(results, audited)
    issues = find_issues(audited, predictions, thresholds)
    summary = {
        **summarize(audited, issues),
        "mode": plan["mode"],
        "source": str(source),
        "dataset": str(files.annotations),
        "images": str(files.images),
        "folds": folds if is_recipe else None,
        "iters": iters,
        "thresholds": vars(thresholds),
    }
    write_issues(out, issues, summary=summary)
    result.issues, result.summary = issues, summary
    _remove_own(out, (PICTURES_DIR, CLEANLAB_NAME))  # a rescored audit's earlier ones
    result.pictures = [path for _, path in draw_issues(out, issues, audited, limit=pictures)]
    if cleanlab:
        write_json(out / CLEANLAB_NAME, cleanlab_scores(audited, predictions, confident=thresholds.score_thresh))
        result.cleanlab = out / CLEANLAB_NAME
    if write_fixed is not None:
        fixed, removed, added = fixed_json(read_coco_json(files.annotations), issues, audited, add_score=fix_score)
        result.fixed, result.fixed_counts = write_json(write_fixed, fixed), (removed, added)
    return result


# ----------------------------------------------------------------------------- the audited data


def _recipe_dataset(
    source: Path, overrides: Sequence[str | Override], dataset: Path | None, images: Path | None, device: str | None
) -> tuple[dict[str, Any], DetectionDataset, DatasetFiles]:
    flags = list(overrides)
    if device is not None:
        flags.append(key_override("device", device, origin=f"--device {device}"))
    recipe = load_recipe(source, flags)
    if dataset is not None and images is not None:
        files = DatasetFiles(Path(dataset), Path(images))
        audited = build_given_dataset(files)
    else:
        if recipe.data.train.dataset is None:
            raise RecipeError(f"{source}: data.train.dataset is not set; set it or pass --dataset JSON --images DIR")
        annotations, folder = dataset_files(recipe.data.train.dataset)
        files = DatasetFiles(annotations, folder)
        audited, _ = build_dataset(
            recipe.data.train.dataset, key="data.train.dataset", filter_empty=False, fix_bad_boxes=recipe.data.fix_bad_boxes
        )
    return recipe_to_dict(recipe), audited, files


def _model_dataset(
    source: Path, dataset: Path | None, images: Path | None, overrides: Sequence[str | Override], trust_code: bool
) -> tuple[DetectionDataset, DatasetFiles]:
    if dataset is not None and images is not None:
        files = DatasetFiles(Path(dataset), Path(images))
        return build_given_dataset(files), files
    if is_exported(source):
        raise UsageError(f"{source}: an exported file holds no recipe, so no dataset; pass --dataset JSON --images DIR")
    recipe = load_detector(source, overrides).recipe
    if recipe.data.test.dataset is None:
        raise UsageError(f"{source}: its recipe has no data.test.dataset; pass --dataset JSON --images DIR")
    annotations, folder = dataset_files(recipe.data.test.dataset)
    return build_test_dataset(recipe.data.test.dataset, key="data.test.dataset"), DatasetFiles(annotations, folder)


def _plan(
    mode: str, source: Path, files: DatasetFiles, *, folds: int | None, iters: int | None, recipe: dict[str, Any] | None
) -> dict[str, Any]:
    """What the detections of an audit depend on: a `--resume` must give the same plan."""
    if recipe is not None:
        recipe = {k: v for k, v in recipe.items() if k != "output_dir"}
    return {
        "mode": mode,
        "source": str(Path(source).resolve()),
        "source_sha256": _sha256(Path(source)) if mode == "model" else None,
        "dataset": str(files.annotations.resolve()),
        "dataset_sha256": _sha256(files.annotations),
        "images": str(files.images.resolve()),
        "folds": folds,
        "iters": iters,
        "recipe": recipe,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_output(out: Path, plan: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Make `out` this audit's folder: new (or, with `overwrite`, an earlier audit's, whose
    files are removed first), or for `resume` an earlier audit of the same plan."""
    plan_file = out / PLAN_NAME
    if resume:
        if not out.is_dir() or output_owner(out) != COMMAND or not plan_file.is_file():
            raise UsageError(f"{out}: holds no audit to resume; run the audit without --resume")
        try:
            earlier = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{plan_file}: unreadable ({exc}); start afresh with --overwrite") from None
        changed = [key for key in plan if earlier.get(key) != plan[key]] if isinstance(earlier, dict) else ["all"]
        if changed:
            raise UsageError(
                f"{out}: holds an audit of another plan (differing: {', '.join(changed)}); --resume continues "
                "only the same source, dataset, folds, iterations and recipe; start afresh with --overwrite "
                "or choose another --output-dir"
            )
        return
    if overwrite and output_owner(out) == COMMAND:
        _remove_own(out, _OWN_ENTRIES)
    prepare_output_dir(out, command=COMMAND, overwrite=overwrite)
    write_json(plan_file, plan)


def _remove_own(out: Path, names: Sequence[str]) -> None:
    """Remove the audit's own entries `names` of `out` (a link is removed, never followed)."""
    for name in names:
        entry = out / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


# ----------------------------------------------------------------------------- detections


def _cross_fit(
    recipe: dict[str, Any],
    audited: DetectionDataset,
    files: DatasetFiles,
    out: Path,
    *,
    folds: int,
    iters: int | None,
    shown: Reporter,
    result: AuditResult,
    progress: ProgressCallback | None,
) -> list[dict[str, Any]]:
    """Train one model per fold on the other folds and collect its detections on the fold."""
    from retinacli.commands.train import train_from_recipe

    fold_of = _stored_folds(out / FOLDS_NAME, audited, folds)
    if fold_of is None:
        try:
            fold_of = assign_folds(audited, folds=folds, seed=int(recipe["seed"]))
        except ValueError as exc:
            raise UsageError(f"--folds {folds}: {exc}") from None
        write_json(out / FOLDS_NAME, {"folds": folds, "fold_of_image": [[i, k] for i, k in sorted(fold_of.items())]})
    data = read_coco_json(files.annotations)
    root = out / FOLDS_DIR
    root.mkdir(exist_ok=True)
    results: list[dict[str, Any]] = []
    for k in range(folds):
        folder = root / f"fold{k}"
        done = folder / DETECTIONS_NAME
        if done.is_file():
            result.folds_reused.append(k)
            shown.message(f"fold {k + 1}/{folds}: done earlier, its detections are reused")
            results += json.loads(done.read_text(encoding="utf-8"))
            continue
        folder.mkdir(exist_ok=True)
        train_json, heldout_json = fold_jsons(data, fold_of, k)
        write_json(folder / "train.json", train_json)
        write_json(folder / "heldout.json", heldout_json)
        run = folder / "run"
        final = run / "model_final.pth"
        shown.message(
            f"fold {k + 1}/{folds}: training on {len(train_json['images'])} images, "
            f"judging the {len(heldout_json['images'])} it holds out; run in {run}"
        )
        if not final.is_file():
            fold_recipe = recipe_from_dict(_fold_recipe(recipe, folder / "train.json", files.images, run, iters), source=f"fold {k} of the audit")
            train_from_recipe(fold_recipe, resume="auto", reporter=shown)
        heldout = build_given_dataset(DatasetFiles(folder / "heldout.json", files.images))
        fold_results = _detect_with_model_file(final, heldout, overrides=(), device=None, progress=progress)
        write_json(done, fold_results)
        result.folds_trained.append(k)
        results += fold_results
    write_json(out / DETECTIONS_NAME, results)
    return results


def _stored_folds(path: Path, audited: DetectionDataset, folds: int) -> dict[int, int] | None:
    """The folds an earlier call of this audit chose (folds.json), so that a resumed audit holds
    out the same images; None when there is no such file. Raises UsageError when the file does
    not give every image of the dataset one of the `folds` folds."""
    if not path.is_file():
        return None
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))["fold_of_image"]
        fold_of = {int(i): int(k) for i, k in pairs}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc!r}); start the audit afresh with --overwrite") from None
    if set(fold_of) != {r.image_id for r in audited.records} or not set(fold_of.values()) <= set(range(folds)):
        raise UsageError(f"{path}: does not fit the dataset's images and {folds} folds; start afresh with --overwrite")
    return fold_of


def _fold_recipe(recipe: dict[str, Any], train_json: Path, images: Path, run: Path, iters: int | None) -> dict[str, Any]:
    """The recipe of one fold: trained on `train_json`, no evaluation (nothing held out is looked
    at while training), in `run`, its schedule scaled to `iters` iterations when given."""
    fold = json.loads(json.dumps(recipe))
    fold["data"]["train"]["dataset"] = {"kind": "coco", "annotations": str(train_json), "images": str(images)}
    fold["data"]["val"]["dataset"] = None
    fold["data"]["test"]["dataset"] = None
    fold["eval_period"] = 0
    fold["solver"]["early_stop_patience"] = None
    fold["output_dir"] = str(run)
    return scale_schedule_dict(fold, iters) if iters is not None else fold


def _model_detections(
    source: Path,
    audited: DetectionDataset,
    out: Path,
    *,
    overrides: Sequence[str | Override],
    device: str | None,
    trust_code: bool,
    threads: int | None,
    progress: ProgressCallback | None,
    reuse: bool,
) -> list[dict[str, Any]]:
    """The model's detections on the audited dataset (those of an earlier run of the same plan
    with `reuse`), written to DIR/detections.json."""
    done = out / DETECTIONS_NAME
    if reuse and done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    if is_exported(source):
        exported = open_exported(source, trust_code=trust_code, threads=threads)
        meta = exported.metadata
        if meta.network_only:
            raise UsageError(f"{source}: a network-only export has no detections; export the whole detector")
        match = match_classes(ClassInfo(meta.class_names, meta.class_dataset_ids), audited, model_path=Path(source))
        run = infer_dataset(
            exported, audited, short_size=meta.short_size, max_size=meta.max_size, input_format=meta.input_format, progress=progress
        )
        results = detections_to_coco_results(run.images, class_dataset_ids=match.dataset_ids)
    else:
        results = _detect_with_model_file(source, audited, overrides=overrides, device=device, progress=progress)
    write_json(done, results)
    return results


def _detect_with_model_file(
    path: Path,
    dataset: DetectionDataset,
    *,
    overrides: Sequence[str | Override],
    device: str | None,
    progress: ProgressCallback | None,
) -> list[dict[str, Any]]:
    """COCO results of a model file on `dataset` (its classes matched to the dataset's)."""
    flags = list(overrides)
    if device is not None:
        flags.append(key_override("device", device, origin=f"--device {device}"))
    loaded = load_detector(path, flags)
    match = match_classes(loaded.classes, dataset, model_path=Path(path))
    recipe = loaded.recipe
    model = prepare_for_inference(loaded.model).to(resolve_device(recipe.device, source="--device" if device else "device"))
    short_size, max_size = inference_resize(recipe.data.test)
    run = infer_dataset(
        model,
        dataset,
        short_size=short_size,
        max_size=max_size,
        input_format=recipe.model.input_format,
        images_per_batch=recipe.data.test.images_per_batch,
        num_workers=recipe.data.num_workers,
        progress=progress,
    )
    return detections_to_coco_results(run.images, class_dataset_ids=match.dataset_ids)


