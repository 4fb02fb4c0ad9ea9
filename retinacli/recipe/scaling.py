"""A recipe's schedule scaled to another length: what `retina train --time` (the iteration count
a time budget allows) and `retina data audit --iters` (shorter fold models) run.

Every key counted in iterations scales by `max_iter / recipe max_iter`: the steps (those that
would land at or past the end are dropped), warmup_iters, eval_period and checkpoint_period;
a cosine schedule decays over the new max_iter by itself. The numbers of evaluations and
checkpoints, and the shape of the learning-rate curve, stay about the recipe's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from retinacli.recipe.loading import recipe_from_dict, recipe_to_dict
from retinacli.recipe.schema import Recipe


def scale_schedule_dict(recipe: Mapping[str, Any], max_iter: int) -> dict[str, Any]:
    """`recipe` (a plain recipe dict) with its schedule scaled to `max_iter` iterations."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    scaled = copy.deepcopy(dict(recipe))
    solver = scaled["solver"]
    factor = max_iter / solver["max_iter"]
    solver["steps"] = sorted({max(1, round(s * factor)) for s in solver["steps"] if round(s * factor) < max_iter})
    solver["warmup_iters"] = min(round(solver["warmup_iters"] * factor), max(max_iter - 1, 0))
    solver["checkpoint_period"] = max(1, round(solver["checkpoint_period"] * factor))
    if scaled.get("eval_period"):
        scaled["eval_period"] = max(1, round(scaled["eval_period"] * factor))
    solver["max_iter"] = max_iter
    return scaled


def scale_schedule(recipe: Recipe, max_iter: int) -> Recipe:
    """`recipe` with its schedule scaled to `max_iter` iterations (see the module docstring)."""
    return recipe_from_dict(scale_schedule_dict(recipe_to_dict(recipe), max_iter), source="the scaled schedule")


def scaled_periods(recipe: Recipe, max_iter: int) -> tuple[int, int]:
    """(eval_period, checkpoint_period) of `recipe` scaled to `max_iter`, as `scale_schedule`
    sets them, without building the recipe."""
    factor = max_iter / recipe.solver.max_iter
    eval_period = max(1, round(recipe.eval_period * factor)) if recipe.eval_period else 0
    return eval_period, max(1, round(recipe.solver.checkpoint_period * factor))
