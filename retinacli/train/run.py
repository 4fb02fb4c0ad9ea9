"""`retina train`: a recipe becomes a training run in an output directory.

The output directory holds `config.yaml` (the resolved recipe), `metrics.jsonl`, TensorBoard
event files, checkpoints (`model_NNNNNNN.pth`, `model_final.pth`, `last_checkpoint`) and the
evaluations (`eval/<iteration>/metrics.json` and `coco_results.json`). Iterations are 0-based
everywhere: `model_0000999.pth`, `eval/999` and the metrics line with `"iteration": 999` all
come after the 1000th iteration.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinacli.build import build_augmentation, build_dataset, build_model, build_solver
from retinacli.data.loader import build_train_loader
from retinacli.errors import CheckpointError, RecipeError, UsageError
from retinacli.model_files import ClassInfo
from retinacli.recipe import Recipe, dump_recipe, recipe_to_dict
from retinacli.train.checkpoints import CheckpointManager, load_checkpoint
from retinacli.train.distributed import ProcessContext, init_process, shutdown_process
from retinacli.train.loop import (
    ClipSettings,
    NonFinitePolicy,
    Reporter,
    SilentReporter,
    Trainer,
    write_text_atomically,
)
from retinacli.train.metrics import MetricsWriter

CONFIG_NAME = "config.yaml"


@dataclass
class TrainResult:
    """What a finished run leaves: where, how far, and the last evaluation (rank 0)."""

    output_dir: Path
    iterations_run: int
    final_checkpoint: Path | None
    last_metrics: Mapping[str, Any] | None
    model: torch.nn.Module | None = None


def train_from_recipe(
    recipe: Recipe,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    show_eval: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> TrainResult:
    """Train as `recipe` says, in `recipe.output_dir`; `resume` continues its last checkpoint."""
    ctx = init_process(recipe.device)
    try:
        return _train(recipe, ctx, resume=resume, reporter=reporter, show_eval=show_eval)
    finally:
        shutdown_process()


def _train(
    recipe: Recipe,
    ctx: ProcessContext,
    *,
    resume: bool,
    reporter: Reporter | None,
    show_eval: Callable[[int, Mapping[str, Any]], None] | None,
) -> TrainResult:
    reporter = reporter if (reporter is not None and ctx.is_main) else SilentReporter()
    out = Path(recipe.output_dir)
    manager = CheckpointManager(out, keep_last=recipe.solver.keep_checkpoints)
    last = manager.find_last()
    if last is not None and not resume:
        raise UsageError(
            f"{out} already holds a run (last checkpoint {last.name}); pass --resume to continue "
            "it, or --output-dir to start a new run elsewhere"
        )
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
    _seed_everything(recipe.seed)

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
    test_set = None
    if recipe.data.test.dataset is not None:
        test_set, _ = build_dataset(
            recipe.data.test.dataset, key="data.test.dataset", filter_empty=False, fix_bad_boxes=True
        )
    else:
        reporter.message("data.test.dataset is not set: training runs without evaluation")
    classes = ClassInfo(tuple(train_set.class_names), tuple(train_set.contiguous_to_dataset_id))

    model = build_model(recipe.model)
    if recipe.model.weights and last is None:
        from retinacli.model_init import init_from_weights

        reporter.message(init_from_weights(model, recipe.model.weights).summary())
    model.to(ctx.device)
    solver = recipe.solver
    optimizer, scheduler = build_solver(solver, model)
    ddp_model = None
    if ctx.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
        )
    if ctx.is_main:
        write_text_atomically(out / CONFIG_NAME, dump_recipe(recipe))
    metrics = MetricsWriter(out, enabled=ctx.is_main)
    augmentation = build_augmentation(recipe.data.train.resize, flip=recipe.data.train.flip)

    def make_data(start_iteration: int):  # noqa: ANN202 - an iterator of Batches
        return iter(
            build_train_loader(
                dataset=train_set,
                augmentation=augmentation,
                input_format=recipe.model.input_format,
                images_per_batch=total_batch // ctx.world_size,
                seed=recipe.seed,
                num_workers=recipe.data.num_workers,
                aspect_ratio_grouping=recipe.data.train.aspect_ratio_grouping,
                rank=ctx.rank,
                world_size=ctx.world_size,
                start_iteration=start_iteration,
                pin_memory=ctx.device.type == "cuda",
            )
        )

    last_metrics: dict[str, Any] = {}

    def evaluate(iteration: int) -> Mapping[str, Any] | None:
        from retinacli.evaluation.coco_eval import evaluate_detector

        assert test_set is not None
        resize = recipe.data.test.resize
        result = evaluate_detector(
            model,
            test_set,
            out / "eval" / str(iteration),
            short_size=resize.short_sizes[0],
            max_size=resize.max_size,
            input_format=recipe.model.input_format,
            images_per_batch=recipe.data.test.images_per_batch,
            num_workers=min(recipe.data.num_workers, 2),
        )
        if ctx.is_main and result:
            last_metrics.clear()
            last_metrics.update(result)
            metrics.write(iteration, {f"eval/{k}": v for k, v in result.items() if k in _SCALAR_METRICS and v is not None})
            if show_eval is not None:
                show_eval(iteration, result)
        return result

    clip = solver.clip_gradients
    trainer = Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        make_data=make_data,
        max_iter=solver.max_iter,
        device=ctx.device,
        checkpoints=manager,
        checkpoint_period=solver.checkpoint_period,
        metrics=metrics,
        checkpoint_extra={"recipe": recipe_to_dict(recipe), "classes": classes.to_dict()},
        is_main=ctx.is_main,
        ddp_model=ddp_model,
        clip=ClipSettings(clip.type, clip.value, clip.norm_type, clip.scope) if clip.enabled else None,
        amp=recipe.amp,
        log_period=recipe.log_period,
        eval_period=recipe.eval_period,
        evaluate=evaluate if test_set is not None else None,
        nonfinite=NonFinitePolicy(recipe.on_nonfinite, recipe.max_rollbacks, recipe.rollback_lr_factor),
        reporter=reporter,
    )
    start = 0
    if last is not None:
        state = load_checkpoint(last)
        try:
            start = trainer.load_state(state)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(
                f"{last}: cannot resume from it ({str(exc).splitlines()[0]}); the recipe changed "
                "the model or solver since it was written; resume with the recipe in "
                f"{out / CONFIG_NAME} or start a new run"
            ) from None
        reporter.message(f"resuming from {last} at iteration {start} of {solver.max_iter}")
    elif resume:
        reporter.message(f"no checkpoint in {out}: starting a new run")
    else:
        reporter.message(
            f"starting a new run in {out} on {ctx.device}"
            + (f" ({ctx.world_size} processes)" if ctx.distributed else "")
            + ("" if recipe.model.weights else ", from scratch (model.weights is null)")
        )
    if recipe.amp and ctx.device.type != "cuda":
        reporter.message("amp applies on CUDA only; training in float32 on the CPU")
    if start >= solver.max_iter:
        reporter.message(f"{last} is already at the end ({solver.max_iter} iterations): nothing to do")
        metrics.close()
        return TrainResult(out, 0, out / "model_final.pth", None)
    try:
        ran = trainer.train(start)
    finally:
        metrics.close()
    final = out / "model_final.pth"
    return TrainResult(out, ran, final if final.exists() else None, dict(last_metrics) or None, model)


_SCALAR_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
