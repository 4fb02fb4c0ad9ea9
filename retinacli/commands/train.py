"""`retina train`: a recipe becomes a training run in an output directory.

The output directory holds `config.yaml` (the resolved recipe), `metrics.jsonl`, TensorBoard
event files, checkpoints (`model_NNNNNNN.pth`, `model_final.pth`, `last_checkpoint`) and the
evaluations (`eval/<iteration>/metrics.json` and `coco_results.json`). Iterations are 0-based
everywhere: `model_0000999.pth`, `eval/999` and the metrics line with `"iteration": 999` all
come after the 1000th iteration.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from retinacli.build import (
    build_box_augment,
    build_clip_settings,
    build_dataset,
    build_model,
    build_nonfinite_policy,
    build_repeat_factors,
    build_solver,
    build_test_dataset,
    build_train_augmentation,
    inference_resize,
)
from retinacli.commands.report import report as render_report
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.images import InputFormat
from retinacli.data.loader import Batch, build_train_loader
from retinacli.errors import (
    CheckpointError,
    RecipeError,
    RetinaError,
    TrainingInterrupted,
    UsageError,
)
from retinacli.evaluation.classes import ClassInfo
from retinacli.files import save_torch, write_json, write_text
from retinacli.recipe import (
    Override,
    Recipe,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)
from retinacli.recipe.loading import flat_keys
from retinacli.recipe.scaling import scale_schedule_dict, scaled_periods
from retinacli.recipe.schema import TestDataConfig
from retinacli.training.best import BestTracker
from retinacli.training.checkpoints import CheckpointManager, load_checkpoint
from retinacli.training.distributed import (
    ProcessContext,
    broadcast_object,
    init_process,
    launch_local,
    shutdown_process,
    wrap_for_processes,
)
from retinacli.training.ema import ModelEma
from retinacli.training.loop import Reporter, SilentReporter, Trainer
from retinacli.training.metrics import MetricsWriter
from retinacli.training.mlflow_tracking import RUN_FILE as MLFLOW_RUN_FILE
from retinacli.training.mlflow_tracking import MlflowTracker, flat_params
from retinacli.training.results_plot import save_results_png
from retinacli.training.rng import capture_rng_state, restore_rng_state, seed_everything
from retinacli.training.run_folder import (
    Resume,
    RunFolder,
    plan_run,
    resume_command,
)
from retinacli.training.run_lock import RunLock
from retinacli.training.run_log import TeeReporter, TextLog
from retinacli.training.schedules import ignored_steps_note
from retinacli.training.time_budget import (
    MEASURED_ITERATIONS,
    WARMUP_ITERATIONS,
    BudgetPlan,
    BudgetTooSmall,
    Speed,
    format_seconds,
    plan_iterations,
    seconds_per_iteration,
)
from retinacli.weights.download import cached_file, download, download_url
from retinacli.weights.loading import init_from_weights
from retinacli.weights.zoo import UnknownZooName, find_entry, zoo_name

SCALAR_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BUDGET_FILE = "time_budget.json"  # a time-budgeted run's measurements and chosen max_iter
EVAL_PROBE_IMAGES = 8  # images an evaluation's speed is measured on

budget_clock: Callable[[], float] = time.perf_counter
"""The clock a time budget is measured with (a test sets a fake one)."""


@dataclass
class TrainResult:
    """What a finished run leaves: where, how far, and the last evaluation (rank 0)."""

    output_dir: Path
    iterations_run: int
    final_model: Path | None
    last_metrics: Mapping[str, Any] | None
    model: torch.nn.Module | None = None
    stopped_by_callback: bool = False  # `on_evaluation` asked to stop (a tuner's pruning)


def train(
    recipe_path: Path,
    overrides: Sequence[str | Override] = (),
    *,
    output_dir: Path | None = None,
    mlflow: str | None = None,
    time_budget: str | None = None,
    resume: Resume = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """`retina train RECIPE [--set ...] [--output-dir DIR] [--mlflow URI] [--time 30m]
    [--resume | --auto-resume]` in this process."""
    return train_from_recipe(
        load_recipe(recipe_path, _with_options(overrides, output_dir, mlflow, time_budget)),
        resume=resume,
        reporter=reporter,
        recipe_file=recipe_path,
    )


def train_in_processes(
    recipe_path: Path,
    overrides: Sequence[str],
    *,
    num_processes: int,
    output_dir: Path | None = None,
    mlflow: str | None = None,
    time_budget: str | None = None,
    resume: Resume = False,
    message: Callable[[str], None] | None = None,
) -> int:
    """The same training in `num_processes` local processes (torch.distributed, as torchrun
    starts them); the recipe is checked here first, and `zoo:` weights are fetched (`message`
    hears how). Returns the exit code of the group."""
    recipe = load_recipe(recipe_path, _with_options(overrides, output_dir, mlflow, time_budget))
    if recipe.model.weights and zoo_name(recipe.model.weights) is not None:
        # Fetched once here, so that the processes find the file instead of each downloading it.
        zoo_weights_file(recipe.model.weights, message=message or (lambda _text: None))
    argv = ["train", str(recipe_path), *[a for o in overrides for a in ("--set", o)]]
    if output_dir is not None:
        argv += ["--output-dir", str(output_dir)]
    if mlflow is not None:
        argv += ["--mlflow", mlflow]
    if time_budget is not None:
        argv += ["--time", time_budget]
    resume_args = ["--auto-resume"] if resume == "auto" else ["--resume"] if resume else []
    return launch_local(num_processes, [*argv, *resume_args])


def _with_options(
    overrides: Sequence[str | Override], output_dir: Path | None, mlflow: str | None, time_budget: str | None = None
) -> list[str | Override]:
    """`overrides` and the options that stand for recipe keys (`--output-dir`: output_dir,
    `--mlflow`: tracking.mlflow.tracking_uri, `--time`: solver.time_budget), which come last and
    so win."""
    given = list(overrides)
    if time_budget is not None:
        given.append(Override(("solver", "time_budget"), time_budget, f"--time {time_budget}"))
    if output_dir is not None:
        given.append(Override(("output_dir",), str(output_dir), f"--output-dir {output_dir}"))
    if mlflow is not None:
        given.append(Override(("tracking", "mlflow", "tracking_uri"), mlflow, f"--mlflow {mlflow}"))
    return given


def train_from_recipe(
    recipe: Recipe,
    *,
    resume: Resume = False,
    reporter: Reporter | None = None,
    recipe_file: Path | None = None,
    on_evaluation: Callable[[int, Mapping[str, Any]], bool] | None = None,
) -> TrainResult:
    """Train as `recipe` says, in `recipe.output_dir`; `resume` continues its last checkpoint
    (the newest that loads: a truncated or corrupted one is named and skipped).

    `on_evaluation(iteration, metrics)`, when given, hears every periodic evaluation (rank 0);
    True stops training there with a checkpoint (`TrainResult.stopped_by_callback`).

    The output folder must be new, empty or a run (`train/run_folder.py`): a folder holding
    anything else is refused before anything is written. `recipe_file`, the recipe named on the
    command line, is never written to, even when it is the run's own config.yaml.

    Rank 0 holds the folder's lock (`run_lock`: a second run on it is refused), shows progress
    through `reporter` and writes everything it shows to `log.txt` too. A SIGINT/SIGTERM stops
    after the current iteration with a checkpoint (TrainingInterrupted, exit 130/143).
    """
    ctx = init_process(recipe.device)
    try:
        return _train(recipe, ctx, resume=resume, shown=reporter, recipe_file=recipe_file, on_evaluation=on_evaluation)
    finally:
        shutdown_process()


def _train(
    recipe: Recipe,
    ctx: ProcessContext,
    *,
    resume: Resume,
    shown: Reporter | None,
    recipe_file: Path | None,
    on_evaluation: Callable[[int, Mapping[str, Any]], bool] | None = None,
) -> TrainResult:
    started = budget_clock()
    run = RunFolder(Path(recipe.output_dir))
    out = run.path
    manager = CheckpointManager(out, keep_checkpoints=recipe.solver.keep_checkpoints)
    _check_recipe(recipe, ctx)
    budgeted = recipe.solver.time_budget
    if budgeted is not None and resume:
        recipe = _on_rank_0(ctx, lambda: _with_stored_plan(recipe, run))
    _on_rank_0(ctx, lambda: run.check_writable(resume=resume))
    _on_rank_0(ctx, lambda: _check_recipe_file_kept(recipe, run, recipe_file))
    lock = RunLock(out) if ctx.is_main else None
    previous_owner = _on_rank_0(ctx, lock.acquire if lock is not None else lambda: None)
    try:
        plan = _on_rank_0(
            ctx, lambda: plan_run(run, manager, resume, differing_keys=lambda config: _differing_keys(config, recipe))
        )
        if ctx.is_main:
            run.mark()
        log = TextLog(run.log) if ctx.is_main else None
        reporter: Reporter = SilentReporter()
        if ctx.is_main:
            reporter = TeeReporter([shown or SilentReporter(), log])
        if previous_owner is not None:
            reporter.message(
                f"took over the lock of {out}: the run that held it ({previous_owner.describe()}) is gone"
            )
        for note in plan.notes:
            reporter.message(note)
        if budgeted is not None and recipe.solver.time_budget is None:
            reporter.message(
                f"time budget {format_seconds(budgeted)}: this run's plan is kept ({BUDGET_FILE}): "
                f"max_iter {recipe.solver.max_iter}, as at its start"
            )
        try:
            return _run(
                recipe, ctx, manager=manager, last=plan.last, resume=bool(resume), reporter=reporter, started=started,
                on_evaluation=on_evaluation,
            )
        except TrainingInterrupted as exc:
            reporter.message(str(exc))
            raise
        except RetinaError as exc:
            reporter.message(f"error: {exc}")
            raise
        finally:
            if log is not None:
                log.close()
    finally:
        if lock is not None:
            lock.release()


def _on_rank_0(ctx: ProcessContext, decide: Callable[[], Any]) -> Any:
    """`decide()` on rank 0, its result (or its RetinaError, raised) on every rank."""
    if not ctx.distributed:
        return decide()
    outcome: tuple[Any, type[RetinaError] | None, str] = (None, None, "")
    if ctx.is_main:
        try:
            outcome = (decide(), None, "")
        except RetinaError as exc:
            outcome = (None, type(exc), str(exc))
    result, error, message = broadcast_object(outcome)  # type: ignore[misc]
    if error is not None:
        raise error(message)
    return result


def _check_recipe_file_kept(recipe: Recipe, run: RunFolder, recipe_file: Path | None) -> None:
    """Refuse to start when training would rewrite the recipe file named on the command line:
    that happens only when it is the run's own config.yaml and --set changes the recipe."""
    if recipe_file is None or not run.config.is_file() or not recipe_file.is_file():
        return
    if not os.path.samefile(recipe_file, run.config):
        return
    if run.config.read_text(encoding="utf-8") != dump_recipe(recipe):
        raise UsageError(
            f"{recipe_file}: is the run's own config.yaml, and the overrides given would rewrite "
            "it; the recipe named on the command line is never written to: copy it to another "
            "file, name that one, and pass --output-dir"
        )


def _differing_keys(config: Path, recipe: Recipe, limit: int = 5) -> list[str]:
    """The dotted keys (at most `limit`, then "...") where the recipe stored in `config` differs
    from `recipe`; output_dir is left out (the same folder may be named differently). A folder
    without `config` holds no recipe to differ from."""
    if not config.is_file():
        return []
    stored = flat_keys(recipe_to_dict(load_recipe(config)))
    given = flat_keys(recipe_to_dict(recipe))
    # output_dir: the same folder may be named differently; tracking: where a run is logged
    # changes no weight, so --mlflow may be added to a resumed run
    keys = sorted(
        k for k in stored.keys() | given.keys()
        if k != "output_dir" and not k.startswith("tracking.") and stored.get(k) != given.get(k)
    )
    return keys[:limit] + (["..."] if len(keys) > limit else [])




def _run(
    recipe: Recipe,
    ctx: ProcessContext,
    *,
    manager: CheckpointManager,
    last: Path | None,
    resume: bool,
    reporter: Reporter,
    started: float,
    on_evaluation: Callable[[int, Mapping[str, Any]], bool] | None = None,
) -> TrainResult:
    run = RunFolder(Path(recipe.output_dir))
    out = run.path
    seed_everything(recipe.seed)
    data = _datasets(recipe, reporter)
    if recipe.solver.time_budget is not None:
        rng = capture_rng_state()  # the measurement trains a copy: the run starts as without it
        recipe = _plan_time_budget(recipe, data, ctx, started=started, reporter=reporter)
        restore_rng_state(rng)
    model = build_model(recipe.model)
    if recipe.model.weights and last is None:
        reporter.message(_init_weights(model, recipe.model.weights, message=reporter.message))
    # Channels-last weights: convolutions (forward and backward) about 10% faster on the CPU
    # (benchmarks/engine_vs_torchvision.py); the same numbers up to float rounding.
    model.to(ctx.device, memory_format=torch.channels_last)
    optimizer, scheduler = build_solver(recipe.solver, model)
    if scheduler.schedule.ignored_steps:
        reporter.message(ignored_steps_note(scheduler.schedule))
    ddp_model = wrap_for_processes(model, ctx.device) if ctx.distributed else None
    if ctx.is_main:
        text = dump_recipe(recipe)
        config = run.config
        if not (config.is_file() and config.read_text(encoding="utf-8") == text):
            write_text(config, text)
    tracker = _mlflow_tracker(recipe, run, resume=resume, reporter=reporter) if ctx.is_main else None
    _on_rank_0(ctx, lambda: _start_tracking(tracker, recipe, reporter) if tracker is not None else None)
    metrics = MetricsWriter(out, enabled=ctx.is_main, sink=tracker)
    ema = _build_ema(recipe, model)
    periodic = data.val if data.val is not None else data.test
    split = "val" if data.val is not None else "test"
    last_metrics: dict[str, Any] = {}
    evaluated_in: list[Path] = []  # the folder of each evaluation of this process's run
    evaluate = None
    if periodic is not None:
        section = recipe.data.val if data.val is not None else recipe.data.test
        evaluate = _evaluator(
            recipe, periodic, section=section, split=split, ctx=ctx, metrics=metrics, last=last_metrics,
            reporter=reporter, folders=evaluated_in,
        )
    trainer = Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        make_data=_data_stream(recipe, data.train, ctx),
        max_iter=recipe.solver.max_iter,
        device=ctx.device,
        checkpoints=manager,
        checkpoint_period=recipe.solver.checkpoint_period,
        metrics=metrics,
        checkpoint_extra={"recipe": recipe_to_dict(recipe), "classes": ClassInfo.of_dataset(data.train).to_dict()},
        is_main=ctx.is_main,
        ddp_model=ddp_model,
        clip=build_clip_settings(recipe.solver.clip_gradients),
        amp=recipe.amp,
        log_period=recipe.log_period,
        eval_period=recipe.eval_period,
        evaluate=evaluate,
        nonfinite=build_nonfinite_policy(recipe),
        reporter=reporter,
        ema=ema,
        best=(
            BestTracker(recipe.eval.best_metric, patience=recipe.solver.early_stop_patience)
            if data.val is not None
            else None
        ),
        images_per_batch=recipe.data.train.images_per_batch,
        epoch_size=len(data.train),
        resume_command=resume_command(out, world_size=ctx.world_size),
        stop_after_evaluation=on_evaluation,
    )
    start = _resume_or_start(trainer, recipe, ctx, last=last, resume=resume, reporter=reporter)
    if start >= recipe.solver.max_iter:
        written = trainer.finish_model_file(start)
        reporter.message(
            f"{last} is already at the end ({recipe.solver.max_iter} iterations): "
            + (f"wrote {written.name}, which was missing" if written else "nothing to do")
        )
        metrics.close()
        if tracker is not None:
            tracker.finish("FINISHED")
        return TrainResult(out, 0, run.final_model, None)
    status: Literal["FINISHED", "FAILED", "KILLED"] = "FAILED"
    try:
        ran = trainer.train(start)
        if ctx.is_main and evaluated_in and periodic is not None:
            _final_diagnostics(periodic, evaluated_in[-1], reporter)
        if data.val is not None and data.test is not None:
            final_iteration = start + ran - 1
            evaluated = ema.module if ema is not None else model
            test_eval = _evaluator(
                recipe, data.test, section=recipe.data.test, split="test", ctx=ctx, metrics=metrics,
                last=last_metrics, reporter=reporter, folder=run.test_eval_dir,
            )
            test_eval(final_iteration, evaluated)
            if ctx.is_main:
                _final_diagnostics(data.test, run.test_eval_dir, reporter)
        status = "FINISHED"
    except TrainingInterrupted:
        status = "KILLED"
        raise
    finally:
        metrics.close()
        if ctx.is_main:
            save_results_png(run.metrics, run.results_png)
        if tracker is not None:
            _finish_tracking(tracker, run, status, reporter)
    final = run.final_model
    return TrainResult(
        out, ran, final if final.exists() else None, dict(last_metrics) or None, model, trainer.stopped_on_request
    )


def _build_ema(recipe: Recipe, model: torch.nn.Module) -> ModelEma | None:
    """The moving average of `model`'s weights that `solver.ema` asks for, or None."""
    settings = recipe.solver.ema
    return ModelEma(model, decay=settings.decay, tau=settings.tau) if settings.enabled else None


def _with_stored_plan(recipe: Recipe, run: RunFolder) -> Recipe:
    """For a resumed time-budgeted run: `recipe` with the schedule its run chose at its start
    (the run's config.yaml, when its time_budget.json holds the same budget), so nothing is
    measured again; `recipe` as it is otherwise (the recipe comparison then names what differs)."""
    plan_file = run.path / BUDGET_FILE
    if not (plan_file.is_file() and run.config.is_file()) or plan_file.stat().st_size > 1 << 20:
        return recipe
    try:
        stored_plan = json.loads(plan_file.read_text(encoding="utf-8"))
        same = float(stored_plan["budget_seconds"]) == recipe.solver.time_budget
    except (OSError, ValueError, KeyError, TypeError):
        return recipe
    if not same:
        return recipe
    stored = recipe_to_dict(load_recipe(run.config))
    given = recipe_to_dict(recipe)
    for key in ("max_iter", "steps", "warmup_iters", "checkpoint_period", "time_budget"):
        given["solver"][key] = stored["solver"][key]
    given["eval_period"] = stored["eval_period"]
    return recipe_from_dict(given, source=str(run.config))


def _plan_time_budget(
    recipe: Recipe, data: _Datasets, ctx: ProcessContext, *, started: float, reporter: Reporter
) -> Recipe:
    """The recipe whose max_iter fits `solver.time_budget` (counted from `started`), its
    schedule scaled to it and time_budget null; the measurements and the plan go to the run's
    time_budget.json and the log."""
    budget = float(recipe.solver.time_budget or 0)
    reporter.message(
        f"time budget {format_seconds(budget)}: measuring the speed of training "
        f"({WARMUP_ITERATIONS + MEASURED_ITERATIONS} iterations of the real data on a copy of the model)"
    )
    speed = _measure_speed(recipe, data, ctx, started=started)

    def decide() -> BudgetPlan:
        try:
            return plan_iterations(budget, speed, periods=lambda n: scaled_periods(recipe, n))
        except BudgetTooSmall as exc:
            raise RecipeError(
                f"solver.time_budget: {exc}; give at least {format_seconds(exc.needed)}, or remove it "
                "to train solver.max_iter iterations"
            ) from None

    plan = _on_rank_0(ctx, decide)
    scaled = scale_schedule_dict(recipe_to_dict(recipe), plan.max_iter)
    scaled["solver"]["time_budget"] = None
    resolved = recipe_from_dict(scaled, source="the time budget's schedule")
    if ctx.is_main:
        run = RunFolder(Path(recipe.output_dir))
        write_json(run.path / BUDGET_FILE, {**plan.to_dict(), "recipe_max_iter": recipe.solver.max_iter})
    s = resolved.solver
    reporter.message(
        f"{plan.explain()}. Schedule: max_iter {s.max_iter} (the recipe's {recipe.solver.max_iter} "
        f"x {s.max_iter / recipe.solver.max_iter:.3g}), steps {s.steps}, warmup_iters {s.warmup_iters}, "
        f"eval_period {resolved.eval_period}, checkpoint_period {s.checkpoint_period}; written to config.yaml"
    )
    return resolved


def _measure_speed(recipe: Recipe, data: _Datasets, ctx: ProcessContext, *, started: float) -> Speed:
    """Seconds per training iteration (data loading and augmentation included, on a copy of the
    model that is then thrown away), per checkpoint, and per evaluation of the periodic and final
    evaluation sets (timed on a few of their images), and the time spent since `started`."""
    model = build_model(recipe.model)
    model.to(ctx.device, memory_format=torch.channels_last)
    measured = WARMUP_ITERATIONS + MEASURED_ITERATIONS
    # the copy's schedule is long enough for the measurement, whatever the recipe's max_iter
    optimizer, scheduler = build_solver(
        recipe.solver.model_copy(update={"max_iter": max(recipe.solver.max_iter, measured + 1)}), model
    )
    ema = _build_ema(recipe, model)
    with tempfile.TemporaryDirectory(prefix="retina-speed-") as tmp:
        trainer = Trainer(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            make_data=_data_stream(recipe, data.train, ctx),
            max_iter=recipe.solver.max_iter,
            device=ctx.device,
            checkpoints=CheckpointManager(Path(tmp), keep_checkpoints=1),
            checkpoint_period=recipe.solver.checkpoint_period,
            metrics=MetricsWriter(Path(tmp), enabled=False),
            checkpoint_extra={"recipe": recipe_to_dict(recipe), "classes": ClassInfo.of_dataset(data.train).to_dict()},
            clip=build_clip_settings(recipe.solver.clip_gradients),
            amp=recipe.amp,
            ema=ema,
            handle_signals=False,
        )
        per_iteration = seconds_per_iteration(
            trainer.time_iterations(measured, clock=budget_clock)
        )
        begin = budget_clock()
        save_torch(Path(tmp) / "checkpoint.pth", trainer.state(0))
        save_torch(Path(tmp) / "model.pth", trainer.model_file(0))
        per_checkpoint = budget_clock() - begin
    evaluated = ema.module if ema is not None else model
    periodic, final = (data.val, data.test) if data.val is not None else (data.test, None)
    per_image = 0.0
    if periodic is not None:
        section = recipe.data.val if data.val is not None else recipe.data.test
        probe = periodic.with_records(periodic.records[:EVAL_PROBE_IMAGES])
        begin = budget_clock()
        _infer(evaluated, probe, recipe, section)
        per_image = (budget_clock() - begin) / len(probe)
    return Speed(
        per_iteration=per_iteration,
        per_evaluation=per_image * len(periodic) if periodic is not None else 0.0,
        per_checkpoint=per_checkpoint,
        final_evaluation=per_image * len(final) if final is not None else 0.0,
        spent=budget_clock() - started,
    )


def _infer(model: torch.nn.Module, dataset: DetectionDataset, recipe: Recipe, section: TestDataConfig) -> None:
    """Inference over `dataset` as an evaluation during training runs it (the results unused)."""
    from retinacli.evaluation.inference import infer_dataset

    short_size, max_size = inference_resize(section)
    infer_dataset(
        model,
        dataset,
        short_size=short_size,
        max_size=max_size,
        input_format=recipe.model.input_format,
        images_per_batch=section.images_per_batch,
        num_workers=min(recipe.data.num_workers, 2),
    )


@dataclass
class _Datasets:
    train: DetectionDataset
    val: DetectionDataset | None
    test: DetectionDataset | None


def _check_recipe(recipe: Recipe, ctx: ProcessContext) -> None:
    """Settings that cannot work, refused before anything is built."""
    _check_processes(recipe, ctx)
    if recipe.solver.early_stop_patience is not None and recipe.data.val.dataset is None:
        raise RecipeError(
            "solver.early_stop_patience needs data.val.dataset: early stopping watches the "
            "validation set (choosing by the test set would leak it into the choice); set "
            "data.val.dataset (`retina data split` makes one) or remove early_stop_patience"
        )


def _check_processes(recipe: Recipe, ctx: ProcessContext) -> None:
    """Settings that only fail with several processes, refused before anything is built."""
    total_batch = recipe.data.train.images_per_batch
    if total_batch % ctx.world_size != 0:
        raise RecipeError(
            f"data.train.images_per_batch {total_batch} is the total over all processes and must "
            f"divide evenly among {ctx.world_size} processes"
        )
    sync_bn = [
        key
        for key, norm in (
            ("model.backbone.norm", recipe.model.backbone.norm),
            ("model.fpn.norm", recipe.model.fpn.norm),
            ("model.head.norm", recipe.model.head.norm),
        )
        if norm == "SyncBN"
    ]
    if sync_bn and ctx.distributed and ctx.device.type != "cuda":
        raise RecipeError(
            f"{', '.join(sync_bn)}: SyncBN synchronises over CUDA (nccl) only; on the CPU use BN "
            "or GN with several processes"
        )


def _mlflow_tracker(recipe: Recipe, run: RunFolder, *, resume: bool, reporter: Reporter) -> MlflowTracker | None:
    settings = recipe.tracking.mlflow
    if settings is None:
        return None
    return MlflowTracker(
        tracking_uri=settings.tracking_uri,
        experiment=settings.experiment,
        run_name=settings.run_name,
        run_dir=run.path,
        resume=resume,
        warn=reporter.message,
    )


def _start_tracking(tracker: MlflowTracker, recipe: Recipe, reporter: Reporter) -> None:
    run_id = tracker.start(flat_params(recipe_to_dict(recipe)))
    reporter.message(
        f"MLflow: {'continuing' if tracker.continued else 'logging to'} run {run_id} of experiment "
        f"{tracker.experiment!r} at {tracker.where} (its id is in {MLFLOW_RUN_FILE})"
    )


def _finish_tracking(tracker: MlflowTracker, run: RunFolder, status: Literal["FINISHED", "FAILED", "KILLED"], reporter: Reporter) -> None:
    """At the end of a finished run, upload the model files, results.png and the run's report
    page (rendered into a temporary folder: the run folder gains no file); then close the MLflow run."""
    if status == "FINISHED":
        with tempfile.TemporaryDirectory(prefix="retina-mlflow-") as tmp:
            page = Path(tmp) / "report.html"
            try:
                render_report(run.path, out=page)
            except RetinaError as exc:
                reporter.message(f"MLflow: the report page was not uploaded ({exc})")
            logged = tracker.log_artifacts([run.best_model, run.final_model, run.results_png, page])
        if logged:
            reporter.message(f"MLflow: uploaded {', '.join(p.name for p in logged)} to run {tracker.run_id}")
    tracker.finish(status)


def _datasets(recipe: Recipe, reporter: Reporter) -> _Datasets:
    """The training set (checked against the model's class count), and the validation and test
    sets when the recipe has them."""
    train_set, train_report = build_dataset(
        recipe.data.train.dataset,
        key="data.train.dataset",
        filter_empty=recipe.data.train.filter_empty,
        fix_bad_boxes=recipe.data.fix_bad_boxes,
    )
    if train_set.num_classes != recipe.model.head.num_classes:
        raise RecipeError(
            f"data.train.dataset has {train_set.num_classes} classes "
            f"({', '.join(train_set.class_names[:8])}) but model.head.num_classes is "
            f"{recipe.model.head.num_classes}; set --set model.head.num_classes={train_set.num_classes}"
        )
    if train_report.fixed:
        reporter.message(f"data: fixed {len(train_report.fixed)} box problems (see `retina data check`)")
    val = test = None
    if recipe.data.val.dataset is not None:
        val = build_test_dataset(recipe.data.val.dataset, key="data.val.dataset")
    if recipe.data.test.dataset is not None:
        test = build_test_dataset(recipe.data.test.dataset, key="data.test.dataset")
    if val is None and test is None:
        reporter.message("data.val.dataset and data.test.dataset are not set: training runs without evaluation")
    elif val is None:
        reporter.message(
            "data.val.dataset is not set: the periodic evaluations use data.test, and no "
            "model_best.pth is kept (choosing a checkpoint by test numbers leaks the test set)"
        )
    return _Datasets(train_set, val, test)


def _init_weights(model: torch.nn.Module, weights: str, *, message: Callable[[str], None]) -> str:
    """Initialise from `model.weights` (a path, or `zoo:NAME`, fetched first); the summary for
    the log."""
    if zoo_name(weights) is not None:
        weights = str(zoo_weights_file(weights, message=message))
    elif not Path(weights).exists():
        raise CheckpointError(
            f"model.weights: {weights} not found; download it (e.g. detectron2's ImageNet "
            "R-50.pkl or a torchvision resnet50-*.pth) and put it there, name pretrained weights "
            "as zoo:NAME (`retina weights list`), or set --set model.weights=PATH (null trains "
            "from scratch)"
        )
    try:
        return init_from_weights(model, weights).summary()
    except CheckpointError as exc:
        raise CheckpointError(f"model.weights: {exc}") from None


def zoo_weights_file(weights: str, *, message: Callable[[str], None]) -> Path:
    """The cached, verified file of `model.weights: zoo:NAME`, downloaded first when missing
    (`weights.download`); `message` hears what happens (the start of a transfer, each quarter of
    it, what was verified)."""
    name = zoo_name(weights) or ""
    try:
        entry = find_entry(name)
    except UnknownZooName as exc:  # validated recipes name known entries; a stored one may not
        raise RecipeError(f"model.weights: {weights!r} names no pretrained weights retina knows; {exc.hint()}") from None
    next_quarter = [0]  # 0 until the transfer starts; then the next quarter to report

    def progress(done: int, total: int | None) -> None:
        if next_quarter[0] == 0:
            size = f" ({total / 2**20:.1f} MiB)" if total else ""
            resumed = f", continuing after {done / 2**20:.1f} MiB" if done else ""
            message(f"model.weights zoo:{name}: downloading {download_url(entry)}{size} into {cached_file(entry)}{resumed}")
            next_quarter[0] = 1 + (4 * done // total if total else 0)
        while total and next_quarter[0] < 4 and done >= total * next_quarter[0] / 4:
            message(f"model.weights zoo:{name}: {25 * next_quarter[0]}% ({done / 2**20:.1f} of {total / 2**20:.1f} MiB)")
            next_quarter[0] += 1

    fetched = download(entry, progress=progress)
    how = "downloaded" if fetched.downloaded else "cached"
    message(f"model.weights zoo:{name}: {how} {fetched.path}; {fetched.check_text()}")
    if fetched.note:
        message(f"model.weights zoo:{name}: {fetched.note}")
    return fetched.path


def _evaluator(
    recipe: Recipe,
    dataset: DetectionDataset,
    *,
    section: TestDataConfig,
    split: str,
    ctx: ProcessContext,
    metrics: MetricsWriter,
    last: dict[str, Any],
    reporter: Reporter,
    folder: Path | None = None,
    folders: list[Path] | None = None,
) -> Callable[[int, torch.nn.Module], Mapping[str, Any] | None]:
    """`evaluate(iteration, model)`: COCO AP of `model` on `dataset` into `eval/<iteration>/`
    (or `folder`), logged as `<split>/AP`... and kept in `last` (rank 0), `results.png` redrawn;
    each folder written is appended to `folders`."""
    short_size, max_size = inference_resize(section)
    run = RunFolder(Path(recipe.output_dir))

    def evaluate(iteration: int, model: torch.nn.Module) -> Mapping[str, Any] | None:
        where = folder if folder is not None else run.eval_dir(iteration)
        result = _evaluate_into(
            model,
            dataset,
            where,
            short_size=short_size,
            max_size=max_size,
            input_format=recipe.model.input_format,
            images_per_batch=section.images_per_batch,
            num_workers=min(recipe.data.num_workers, 2),
        )
        if folders is not None:
            folders.append(where)
        if ctx.is_main and result:
            last.clear()
            last.update(result)
            scalars = {k: v for k, v in result.items() if k in SCALAR_METRICS and v is not None}
            metrics.write(iteration, {f"{split}/{k}": v for k, v in scalars.items()})
            reporter.evaluation(iteration, split, result)
            save_results_png(run.metrics, run.results_png)
        return result

    return evaluate


def _evaluate_into(
    model: torch.nn.Module,
    dataset: DetectionDataset,
    output_dir: Path,
    *,
    short_size: int,
    max_size: int,
    input_format: InputFormat,
    images_per_batch: int,
    num_workers: int,
) -> dict[str, Any]:
    """One evaluation during training: inference over `dataset` (every process its shard),
    then on rank 0 the COCO scores, written as coco_results.json and metrics.json into
    `output_dir`. Returns the metrics on rank 0, {} elsewhere."""
    from retinacli.evaluation import coco_eval
    from retinacli.evaluation.inference import infer_dataset
    from retinacli.evaluation.outputs import write_evaluation

    inference = infer_dataset(
        model,
        dataset,
        short_size=short_size,
        max_size=max_size,
        input_format=input_format,
        images_per_batch=images_per_batch,
        num_workers=num_workers,
    )
    if not inference.is_main:
        return {}
    score = coco_eval.score_detections(inference.images, dataset)
    result = {**score.metrics, "images_per_second": inference.images_per_second}
    write_evaluation(output_dir, results=score.results, metrics=result)
    return result


def _final_diagnostics(dataset: DetectionDataset, folder: Path, reporter: Reporter) -> None:
    """PR curves, confusion matrix, errors and pictures of the evaluation in `folder` (`retina
    eval --diagnostics` with its defaults), written beside its metrics.json."""
    from retinacli.evaluation.coco_eval import evaluate_results
    from retinacli.evaluation.diagnostics import DiagnosticsOptions
    from retinacli.evaluation.diagnostics_output import diagnose_and_write
    from retinacli.evaluation.outputs import RESULTS_NAME, read_results

    if not (folder / RESULTS_NAME).is_file():
        return
    evaluator = evaluate_results(dataset, read_results(folder))
    content = diagnose_and_write(evaluator, dataset, folder, options=DiagnosticsOptions()).content
    gains = {k: v for k, v in content["errors"].get("ap50_gain", {}).items() if v is not None}
    dominant = f" (dominant error: {max(gains, key=gains.__getitem__)})" if gains else ""
    reporter.message(f"diagnostics of the evaluation in {folder}{dominant}: `retina report` shows them")


def _data_stream(recipe: Recipe, train_set: DetectionDataset, ctx: ProcessContext) -> Callable[[int], Iterator[Batch]]:
    """`make_data(start_iteration)`: this process's batches from that iteration on."""
    augmentation = build_train_augmentation(recipe.data.train)
    per_process = recipe.data.train.images_per_batch // ctx.world_size
    factors = build_repeat_factors(recipe.data.train, train_set)
    box_augment = build_box_augment(recipe.data.train)

    def make_data(start_iteration: int) -> Iterator[Batch]:
        return iter(
            build_train_loader(
                dataset=train_set,
                augmentation=augmentation,
                input_format=recipe.model.input_format,
                images_per_batch=per_process,
                seed=recipe.seed,
                num_workers=recipe.data.num_workers,
                aspect_ratio_grouping=recipe.data.train.aspect_ratio_grouping,
                rank=ctx.rank,
                world_size=ctx.world_size,
                start_iteration=start_iteration,
                pin_memory=ctx.device.type == "cuda",
                repeat_factors=factors,
                box_augment=box_augment,
            )
        )

    return make_data


def _resume_or_start(
    trainer: Trainer,
    recipe: Recipe,
    ctx: ProcessContext,
    *,
    last: Path | None,
    resume: bool,
    reporter: Reporter,
) -> int:
    """Restore the last checkpoint (the first iteration still to run) or say a new run starts."""
    run = RunFolder(Path(recipe.output_dir))
    start = 0
    if last is not None:
        state = load_checkpoint(last)
        try:
            start = trainer.load_state(state)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(
                f"{last}: cannot resume from it ({str(exc).splitlines()[0]}); the recipe changed "
                "the model or solver since it was written; resume with the recipe in "
                f"{run.config} or start a new run"
            ) from None
        reporter.message(f"resuming from {last} at iteration {start} of {recipe.solver.max_iter}")
    else:
        reporter.message(
            f"starting a new run in {run.path} on {ctx.device}"
            + (f" ({ctx.world_size} processes)" if ctx.distributed else "")
            + ("" if recipe.model.weights else ", from scratch (model.weights is null)")
        )
    if recipe.amp and ctx.device.type != "cuda":
        reporter.message("amp applies on CUDA only; training in float32 on the CPU")
    return start
