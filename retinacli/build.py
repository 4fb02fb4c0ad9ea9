"""The one place a recipe's sections become engine, data and training objects.

Engine, data, train and evaluation modules take explicit typed arguments and never see a recipe;
these builders read the recipe's sections and pass their values on, one name per concept (the
recipe key `model.test.score_thresh` is the argument `score_thresh`). The commands layer
(`retinacli/commands/`) calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retinacli.anchors_tool.layout import AnchorSpec
from retinacli.data.augment.box import BoxAugment, Color, Crop, Expand, ScaleJitter
from retinacli.data.augment.resize_flip import Augmentation, inference_augmentation
from retinacli.data.checks import DatasetReport, prepare_coco
from retinacli.data.formats.coco import DetectionDataset
from retinacli.data.loader import repeat_factors
from retinacli.data.shapes import ShapesSpec, ensure_shapes
from retinacli.engine.anchors import AnchorGenerator
from retinacli.engine.backbone import ResNet
from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.detector import RetinaNet
from retinacli.engine.fpn import FPN, ResNetFPN
from retinacli.engine.head import RetinaNetHead
from retinacli.engine.matcher import Matcher
from retinacli.errors import DatasetError, RecipeError, UsageError
from retinacli.levels import stage_stride
from retinacli.recipe.schema import (
    ClipGradientsConfig,
    CocoDataset,
    ModelConfig,
    Recipe,
    ShapesDataset,
    SolverConfig,
    TestDataConfig,
    TrainDataConfig,
)
from retinacli.training.loop import ClipSettings, NonFinitePolicy
from retinacli.training.schedules import Schedule, WarmupScheduler
from retinacli.training.solver import build_optimizer

# ----------------------------------------------------------------------------- model


def build_anchor_generator(model: ModelConfig) -> AnchorGenerator:
    """Anchors of the recipe's pyramid levels (sizes and ratios already one list per level)."""
    return AnchorGenerator(
        sizes=model.anchors.sizes,
        aspect_ratios=model.anchors.aspect_ratios,
        strides=model.fpn.level_strides,
        offset=model.anchors.offset,
    )


def build_anchor_spec(model: ModelConfig) -> AnchorSpec:
    """What `retina anchors` measures: the recipe's pyramid levels and their anchors."""
    return AnchorSpec(
        level_names=tuple(model.fpn.level_names),
        strides=tuple(model.fpn.level_strides),
        sizes=tuple(tuple(level) for level in model.anchors.sizes),
        aspect_ratios=tuple(tuple(level) for level in model.anchors.aspect_ratios),
        offset=model.anchors.offset,
        size_divisibility=stage_stride(model.fpn.in_features[-1]),
    )


def build_model(model: ModelConfig) -> RetinaNet:
    """A freshly initialised RetinaNet as the recipe's `model` section describes it."""
    body = ResNet(
        depth=model.backbone.depth,
        norm=model.backbone.norm,
        freeze_at=model.backbone.freeze_at,
        stride_in_1x1=model.backbone.stride_in_1x1,
        stem_out_channels=model.backbone.stem_out_channels,
        res2_out_channels=model.backbone.res2_out_channels,
        out_features=model.backbone.out_features,
    )
    fpn = FPN(
        in_channels=[body.feature_channels[f] for f in model.fpn.in_features],
        in_strides=[body.feature_strides[f] for f in model.fpn.in_features],
        out_channels=model.fpn.out_channels,
        norm=model.fpn.norm,
        fuse_type=model.fpn.fuse_type,
        top_block_input=model.fpn.top_block_input,
    )
    anchor_generator = build_anchor_generator(model)
    head = RetinaNetHead(
        in_channels=model.fpn.out_channels,
        num_classes=model.head.num_classes,
        num_anchors=anchor_generator.num_anchors_per_location[0],
        num_convs=model.head.num_convs,
        norm=model.head.norm,
        prior_prob=model.head.prior_prob,
        num_levels=len(model.fpn.level_names),
    )
    detector = RetinaNet(
        backbone=ResNetFPN(body=body, fpn=fpn, in_features=model.fpn.in_features),
        head=head,
        anchor_generator=anchor_generator,
        box_coder=BoxCoder(weights=model.box_coder.weights, scale_clamp=model.box_coder.scale_clamp),
        matcher=Matcher(
            iou_thresholds=model.matcher.iou_thresholds,
            iou_labels=model.matcher.iou_labels,
            allow_low_quality_matches=model.matcher.allow_low_quality_matches,
        ),
        num_classes=model.head.num_classes,
        focal_alpha=model.loss.focal_alpha,
        focal_gamma=model.loss.focal_gamma,
        box_loss=model.loss.box_loss,
        smooth_l1_beta=model.loss.smooth_l1_beta,
        score_thresh=model.test.score_thresh,
        topk_candidates=model.test.topk_candidates,
        nms_thresh=model.test.nms_thresh,
        detections_per_image=model.test.detections_per_image,
        pixel_mean=model.pixel_mean,
        pixel_std=model.pixel_std,
    )
    for part in model.freeze:  # "fpn" is backbone.fpn; "head.x" is head.x
        module = detector.backbone.fpn if part == "fpn" else detector.get_submodule(part)
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return detector


# ----------------------------------------------------------------------------- solver


def build_schedule(solver: SolverConfig) -> Schedule:
    """The learning-rate schedule of `solver` (steps only count for WarmupMultiStepLR).

    Raises RecipeError naming the setting when the schedule is not well defined.
    """
    try:
        return Schedule(
            base_lr=solver.base_lr,
            scheduler=solver.scheduler,
            max_iter=solver.max_iter,
            steps=solver.steps if solver.scheduler == "WarmupMultiStepLR" else [],
            gamma=solver.gamma,
            warmup_factor=solver.warmup_factor,
            warmup_iters=solver.warmup_iters,
            warmup_method=solver.warmup_method,
            base_lr_end=solver.base_lr_end,
            num_decays=solver.num_decays,
            rescale_interval=solver.rescale_interval,
        )
    except ValueError as exc:
        raise RecipeError(f"solver.{exc}") from None


def build_solver(solver: SolverConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, WarmupScheduler]:
    """The optimizer over `model`'s parameter groups and its per-iteration LR scheduler."""
    optimizer = build_optimizer(
        model,
        optimizer=solver.optimizer,
        base_lr=solver.base_lr,
        momentum=solver.momentum,
        nesterov=solver.nesterov,
        betas=solver.betas,
        weight_decay=solver.weight_decay,
        weight_decay_norm=solver.weight_decay_norm,
        weight_decay_bias=solver.weight_decay_bias,
        bias_lr_factor=solver.bias_lr_factor,
    )
    return optimizer, WarmupScheduler(optimizer, schedule=build_schedule(solver))


def build_clip_settings(clip: ClipGradientsConfig) -> ClipSettings | None:
    """Gradient clipping for the loop, None when `solver.clip_gradients.enabled` is false."""
    if not clip.enabled:
        return None
    return ClipSettings(
        clip_type=clip.clip_type, clip_value=clip.clip_value, norm_type=clip.norm_type, scope=clip.scope
    )


def build_nonfinite_policy(recipe: Recipe) -> NonFinitePolicy:
    """What the loop does when a loss becomes infinite or NaN."""
    return NonFinitePolicy(
        on_nonfinite=recipe.on_nonfinite,
        max_rollbacks=recipe.max_rollbacks,
        rollback_lr_factor=recipe.rollback_lr_factor,
    )


# ----------------------------------------------------------------------------- data


def build_train_augmentation(train: TrainDataConfig) -> Augmentation:
    """ResizeShortestEdge + RandomFlip as `data.train` says."""
    return Augmentation(
        short_sizes=tuple(train.resize.short_sizes),
        max_size=train.resize.max_size,
        sampling=train.resize.sampling,
        flip=train.flip,
    )


def build_box_augment(train: TrainDataConfig) -> BoxAugment | None:
    """The box-aware augmentations of `data.train.augment`; None when every probability is 0
    (the loader then runs detectron2's resize and flip alone)."""
    augment = train.augment
    spec = BoxAugment(
        color=Color(
            prob=augment.color.prob,
            brightness=augment.color.brightness,
            contrast=augment.color.contrast,
            saturation=augment.color.saturation,
            hue=augment.color.hue,
        ),
        expand=Expand(prob=augment.expand.prob, max_ratio=augment.expand.max_ratio),
        crop=Crop(
            prob=augment.crop.prob,
            min_scale=augment.crop.min_scale,
            min_box_overlap=augment.crop.min_box_overlap,
        ),
        scale_jitter=ScaleJitter(
            prob=augment.scale_jitter.prob,
            min_scale=augment.scale_jitter.min_scale,
            max_scale=augment.scale_jitter.max_scale,
        ),
        vertical_flip=augment.vertical_flip,
        mosaic=augment.mosaic,
        min_visible=augment.min_visible,
        fill=augment.fill,
    )
    return spec if spec.active else None


def build_repeat_factors(train: TrainDataConfig, dataset: DetectionDataset) -> np.ndarray | None:
    """Per-image repeat factors for `data.train.sampler: RepeatFactorTrainingSampler`, else None."""
    if train.sampler != "RepeatFactorTrainingSampler":
        return None
    return repeat_factors(dataset, repeat_threshold=train.repeat_threshold, sqrt=train.repeat_sqrt)


def inference_resize(test: TestDataConfig) -> tuple[int, int]:
    """(short side, max size) of the test resize: the one rule every evaluation, `retina predict`
    and `retina anchors` use. The schema allows exactly one short size there."""
    return test.resize.short_sizes[0], test.resize.max_size


def build_test_augmentation(test: TestDataConfig) -> Augmentation:
    """The deterministic test resize (one short side, no flip)."""
    short_size, max_size = inference_resize(test)
    return inference_augmentation(short_size=short_size, max_size=max_size)


def dataset_files(dataset: CocoDataset | ShapesDataset) -> tuple[Path, Path]:
    """(COCO json, image folder) of a dataset section; shapes are generated once if needed."""
    if isinstance(dataset, CocoDataset):
        return Path(dataset.annotations), Path(dataset.images)
    written = ensure_shapes(
        dataset.cache_dir,
        num_images=dataset.num_images,
        seed=dataset.seed,
        split=dataset.split,
        spec=ShapesSpec(
            image_size=tuple(dataset.image_size),
            objects_per_image=tuple(dataset.objects_per_image),
            classes=tuple(dataset.classes),
        ),
    )
    return written.annotations, written.images


def build_dataset(
    dataset: CocoDataset | ShapesDataset | None,
    *,
    key: str,
    filter_empty: bool,
    fix_bad_boxes: bool,
    from_recipe: bool = True,
) -> tuple[DetectionDataset, DatasetReport]:
    """Load and check a dataset section (`key` names it in errors, e.g. "data.train.dataset").
    With `from_recipe` an error also says how to change the recipe key; without it (a dataset
    named by command-line flags, `key` the flag) the error stands alone.

    Every problem in the data is found here, before any training or inference starts.
    """
    if dataset is None:
        raise RecipeError(
            f"{key} is not set; add it to the recipe (a COCO json and image folder, or "
            f"kind: shapes) or pass --set {key}=\"{{kind: coco, annotations: a.json, images: dir}}\""
        )
    annotations, images = dataset_files(dataset)
    try:
        return prepare_coco(
            annotations=annotations, images=images, filter_empty=filter_empty, fix_bad_boxes=fix_bad_boxes
        )
    except DatasetError as exc:
        if not from_recipe:
            raise
        hint = (
            f"\n(set by {key} in the recipe; change it with --set {key}.annotations=... and "
            f"--set {key}.images=..., or set the environment variable the recipe's path uses)"
        )
        raise DatasetError(f"{exc}{hint}") from None


@dataclass(frozen=True)
class DatasetFiles:
    """A COCO json and the folder its file names are relative to, as named on a command line
    (`--dataset JSON --images DIR`, `--check-dataset/--check-images`)."""

    annotations: Path
    images: Path


def build_given_dataset(files: DatasetFiles, *, flags: tuple[str, str] = ("--dataset", "--images")) -> DetectionDataset:
    """`build_test_dataset` of a dataset named by command-line `flags` (json flag, images flag);
    a value the schema refuses (an unset ${VAR} in it) is a UsageError naming the flag.

    Raises:
        UsageError: a value the schema refuses.
        DatasetError: as `build_test_dataset`.
    """
    from pydantic import ValidationError

    try:
        spec = CocoDataset(annotations=str(files.annotations), images=str(files.images))
    except ValidationError as exc:
        given = {"annotations": (flags[0], files.annotations), "images": (flags[1], files.images)}
        problems = []
        for error in exc.errors():
            flag, value = given.get(str(error["loc"][0]) if error["loc"] else "", given["annotations"])
            problems.append(f"{flag} {value}: {str(error['msg']).removeprefix('Value error, ')}")
        raise UsageError("; ".join(problems)) from None
    if not Path(spec.images).is_dir():
        raise DatasetError(f"{flags[1]} {spec.images}: image folder not found; pass the folder the json's file_name entries are relative to")
    return build_test_dataset(spec, key=flags[0], from_recipe=False)


def build_test_dataset(dataset: CocoDataset | ShapesDataset | None, *, key: str, from_recipe: bool = True) -> DetectionDataset:
    """An evaluation dataset: every image kept (with or without boxes), boxes reaching outside
    their image clipped in the records, which only feed the loader (the ground truth of the
    metrics is the json itself, as in detectron2).

    `key` and `from_recipe` as `build_dataset`.

    Raises:
        DatasetError: the json or an image file is missing or malformed, or there is no image.
    """
    if isinstance(dataset, CocoDataset) and not Path(dataset.images).is_dir():
        raise DatasetError(
            f"{dataset.images}: image folder not found; pass the folder the json's file_name "
            f"entries are relative to (set by {key})"
        )
    loaded, _ = build_dataset(dataset, key=key, filter_empty=False, fix_bad_boxes=True, from_recipe=from_recipe)
    if len(loaded) == 0:
        raise DatasetError(f"{loaded.annotations}: the json has no images; nothing to evaluate")
    return loaded
