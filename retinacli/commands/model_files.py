"""Model files: a detector with its recipe and class names, written and read back safely.

A *model file* is the self-contained form `retina eval` and `retina predict` take: a
`torch.load(weights_only=True)`-readable dict with the retinacli format marker
(`files.FORMAT_MARKER`), the model's state dict (`model`), the resolved recipe (`recipe`), the
classes (`classes`: names and dataset ids) and the loss normaliser. Training checkpoints are model
files too: they add optimizer, scheduler, iteration and RNG state.

A model file may come from a stranger, so its stored recipe is not trusted to size anything:
it is validated by the schema (whose bounds cap every size), then compared with the tensors the
file carries (`check_recipe_fits_tensors`: the recipe keys that set shapes, then every tensor
against a model built on PyTorch's `meta` device, which allocates nothing), and only then is the
model built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retinacli.build import build_model
from retinacli.engine.detector import RetinaNet
from retinacli.errors import CheckpointError
from retinacli.evaluation.classes import ClassInfo
from retinacli.files import FORMAT_MARKER, FORMAT_VERSION, read_retinacli_file, save_torch
from retinacli.recipe import Override, Recipe, recipe_from_dict, recipe_to_dict
from retinacli.recipe.loading import upgrade_stored_recipe
from retinacli.recipe.schema import ModelConfig
from retinacli.weights.loading import describe_state_mismatch, load_exactly


@dataclass
class LoadedDetector:
    """A detector rebuilt from a model file, in eval mode on the CPU; `uses_ema` says the weights
    are a training run's moving average (solver.ema)."""

    model: RetinaNet
    recipe: Recipe
    classes: ClassInfo
    iteration: int | None
    path: Path
    uses_ema: bool = False


def save_model_file(
    path: str | os.PathLike[str], *, model: RetinaNet, recipe: Recipe, classes: ClassInfo
) -> Path:
    """Write a model file atomically (temporary file, fsync, rename)."""
    return save_torch(
        path,
        {
            "format": FORMAT_MARKER,
            "format_version": FORMAT_VERSION,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "recipe": recipe_to_dict(recipe),
            "classes": classes.to_dict(),
            "loss_normalizer": float(model.loss_normalizer),
        },
    )


_SHARED_HEAD_STAT = re.compile(r"^(head\.(?:cls|bbox)_subnet\.\d+)\.(running_mean|running_var|num_batches_tracked)$")


def _per_level_head_statistics(state: dict[str, Any], *, num_levels: int) -> dict[str, Any]:
    """Format 1 shared one set of head BatchNorm statistics across levels; format 2 keeps one per
    level (detectron2's). Each level starts from the shared statistics."""
    upgraded: dict[str, Any] = {}
    for key, value in state.items():
        match = _SHARED_HEAD_STAT.match(key)
        if match is None:
            upgraded[key] = value
            continue
        for level in range(num_levels):
            upgraded[f"{match[1]}.{level}.{match[2]}"] = value.clone()
    return upgraded


def load_detector(
    path: str | os.PathLike[str], overrides: Sequence[str | Override] = ()
) -> LoadedDetector:
    """Rebuild the detector a model file (or training checkpoint) describes.

    `overrides` (`--set` strings or flags) change the stored recipe first, e.g.
    `model.test.score_thresh`. Raises CheckpointError naming the file for anything that is not a
    whole retinacli model file, RecipeError for an override the stored recipe does not accept.
    """
    target = Path(path)
    data = read_retinacli_file(target, required=("model", "recipe"))
    if not isinstance(data["recipe"], dict) or not isinstance(data["model"], dict):
        raise CheckpointError(
            f"{target}: the file lacks a valid model or recipe; it is damaged or was not written "
            "by retinacli; use another checkpoint"
        )
    stored = upgrade_stored_recipe(data["recipe"], format_version=data["format_version"])
    recipe = recipe_from_dict(stored, overrides, source=f"{target} (stored recipe)")
    # A checkpoint of a run with solver.ema holds the moving average too: it is what evaluations
    # used, so it is the model the file stands for.
    ema = data.get("ema")
    uses_ema = isinstance(ema, dict) and isinstance(ema.get("model"), dict)
    state = ema["model"] if uses_ema else data["model"]
    if data["format_version"] < 2 and recipe.model.head.norm in ("BN", "SyncBN"):
        state = _per_level_head_statistics(state, num_levels=len(recipe.model.fpn.level_names))
    fix = "the file is damaged, or --set changed the architecture"
    check_recipe_fits_tensors(recipe.model, state, source=str(target), fix=fix)
    model = build_model(recipe.model)
    load_exactly(model, state, source=str(target), fix=fix)
    model.loss_normalizer = float(data.get("loss_normalizer", model.loss_normalizer))
    model.eval()
    classes_data = data.get("classes")
    classes = (
        ClassInfo.from_dict(classes_data)
        if isinstance(classes_data, dict)
        else ClassInfo.default(recipe.model.head.num_classes)
    )
    if len(classes.names) != recipe.model.head.num_classes:
        raise CheckpointError(
            f"{target}: names {len(classes.names)} classes but the model has "
            f"{recipe.model.head.num_classes}; the file is damaged"
        )
    iteration = data.get("iteration")
    return LoadedDetector(
        model=model,
        recipe=recipe,
        classes=classes,
        iteration=int(iteration) if isinstance(iteration, int) else None,
        path=target,
        uses_ema=uses_ema or bool((data.get("best") or {}).get("ema")),
    )


_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_SUBNET_CONV = re.compile(r"^head\.cls_subnet\.(\d+)\.weight$")
_RES4_BLOCK = re.compile(r"^backbone\.body\.layer3\.(\d+)\.conv1\.weight$")


def check_recipe_fits_tensors(model: ModelConfig, state: dict[str, Any], *, source: str, fix: str) -> None:
    """Raise CheckpointError `<source>: the weights do not fit ...` unless the tensors of `state`
    have the shapes the recipe's `model` section implies, before any model is built.

    The recipe keys that set shapes are checked first, so that the message names the key and
    both values (model.fpn.out_channels, model.backbone.stem_out_channels, anchors per location,
    model.head.num_classes, model.head.num_convs, model.backbone.depth); then every tensor name
    and shape against a model built on the `meta` device (shapes only, no memory).
    """

    def refuse(detail: str) -> None:
        raise CheckpointError(f"{source}: the weights do not fit the model: {detail}; {fix}")

    anchors = len(model.anchors.sizes[0]) * len(model.anchors.aspect_ratios[0])
    stem, channels, classes = model.backbone.stem_out_channels, model.fpn.out_channels, model.head.num_classes
    for key, value, name, implied, what in (
        ("model.backbone.stem_out_channels", stem, "backbone.body.conv1.weight", stem, "output channels"),
        ("model.fpn.out_channels", channels, f"backbone.fpn.output_convs.{model.fpn.level_names[0]}.weight",
         channels, "output channels"),
        ("anchors per location (model.anchors sizes x aspect_ratios)", anchors, "head.bbox_pred.weight",
         4 * anchors, "output channels (4 per anchor)"),
        ("model.head.num_classes", classes, "head.cls_score.weight", classes * anchors,
         f"output channels ({anchors} anchors x classes)"),
    ):
        tensor = state.get(name)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
            continue  # the comparison with the meta model below names it
        if int(tensor.shape[0]) != implied:
            refuse(
                f"the recipe's {key} is {value}, so {name} would have {implied} {what}, but the "
                f"file's has {int(tensor.shape[0])} (shape differs: {tuple(tensor.shape)})"
            )
    names = [name for name in state if isinstance(name, str)]
    subnet = [name for name in names if _SUBNET_CONV.match(name)]
    convs = sum(1 for name in subnet if isinstance(state[name], torch.Tensor) and state[name].dim() == 4)
    if subnet and convs != model.head.num_convs:
        refuse(f"the recipe's model.head.num_convs is {model.head.num_convs}, the file's head.cls_subnet has {convs}")
    blocks = {int(m[1]) for m in map(_RES4_BLOCK.match, names) if m}
    expected_blocks = _BLOCKS_PER_STAGE[model.backbone.depth][2]
    if blocks and len(blocks) != expected_blocks:
        refuse(
            f"the recipe's model.backbone.depth {model.backbone.depth} has {expected_blocks} blocks "
            f"in res4, the file's backbone.body.layer3 has {len(blocks)}"
        )
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = build_model(model).state_dict()
    mismatch = describe_state_mismatch(expected, state)
    if mismatch:
        refuse(mismatch)
