"""Detector files: a model with its recipe and class names, written and read back safely.

A *model file* is the self-contained form `retina eval` and `retina predict` take: a
`torch.load(weights_only=True)`-readable dict with the retinacli format marker, the model's
state dict, the resolved recipe and the classes. Training checkpoints (`train/checkpoints.py`)
are model files too: they add optimizer, scheduler, iteration and RNG state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retinacli.build import build_model
from retinacli.engine.detector import RetinaNet
from retinacli.errors import CheckpointError, RecipeError
from retinacli.recipe import Recipe, recipe_from_dict, recipe_to_dict
from retinacli.train.checkpoints import FORMAT_MARKER, FORMAT_VERSION, atomic_write, load_torch_file


@dataclass(frozen=True)
class ClassInfo:
    """Class names and the dataset category id of each contiguous class index (0..K-1)."""

    names: tuple[str, ...]
    dataset_ids: tuple[int, ...]

    @classmethod
    def default(cls, num_classes: int) -> ClassInfo:
        """Names `class_0`.. and ids 1..K: what a model with no known dataset gets."""
        return cls(tuple(f"class_{i}" for i in range(num_classes)), tuple(range(1, num_classes + 1)))

    def to_dict(self) -> dict[str, list[Any]]:
        return {"names": list(self.names), "dataset_ids": list(self.dataset_ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassInfo:
        return cls(tuple(str(n) for n in data["names"]), tuple(int(i) for i in data["dataset_ids"]))


@dataclass
class LoadedDetector:
    """A detector rebuilt from a model file, in eval mode on the CPU."""

    model: RetinaNet
    recipe: Recipe
    classes: ClassInfo
    iteration: int | None
    path: Path


def save_model_file(
    path: str | os.PathLike[str], *, model: RetinaNet, recipe: Recipe, classes: ClassInfo
) -> Path:
    """Write a model file atomically (temporary file, fsync, rename)."""
    data = {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "recipe": recipe_to_dict(recipe),
        "classes": classes.to_dict(),
        "loss_normalizer": float(model.loss_normalizer),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        torch.save(data, handle)
    return target


def load_detector(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> LoadedDetector:
    """Rebuild the detector a model file (or training checkpoint) describes.

    `overrides` (`--set` strings) change the stored recipe first, e.g. `model.test.score_thresh`.
    Raises CheckpointError naming the file for anything that is not a whole retinacli model file.
    """
    target = Path(path)
    data = load_torch_file(target)
    if not isinstance(data, dict) or data.get("format") != FORMAT_MARKER:
        raise CheckpointError(
            f"{target}: not a retinacli model file (no {FORMAT_MARKER!r} marker); pass a file "
            "written by `retina train` or `retina import-detectron2`"
        )
    missing = [key for key in ("model", "recipe") if key not in data]
    if missing or not isinstance(data["recipe"], dict) or not isinstance(data["model"], dict):
        raise CheckpointError(
            f"{target}: the file lacks {', '.join(missing) or 'a valid model or recipe'}; it is "
            "damaged or was not written by retinacli; use another checkpoint"
        )
    try:
        recipe = recipe_from_dict(data["recipe"], overrides, source=f"{target} (stored recipe)")
    except RecipeError as exc:
        raise RecipeError(str(exc)) from None
    model = build_model(recipe.model)
    state = data["model"]
    mismatch = describe_state_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"{target}: the weights do not fit the model its recipe describes ({mismatch}); "
            "the file is damaged, or --set changed the architecture"
        )
    model.load_state_dict(state)
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
    )


def describe_state_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str:
    """'' when `given` has exactly the keys and shapes of `expected`, else what differs."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and isinstance(given[k], torch.Tensor) and given[k].shape != expected[k].shape
    ]
    mismatched += [k for k in expected if k in given and not isinstance(given[k], torch.Tensor)]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape differs for {_few(mismatched)}")
    return "; ".join(problems)


def _few(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
