"""`retina inspect-config`: the fully resolved, validated recipe."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retinacli.recipe import Override, diff_from_defaults, load_recipe, recipe_to_dict


def inspect_config(recipe: Path, overrides: Sequence[str | Override] = (), *, diff: bool = False) -> dict[str, Any]:
    """The resolved recipe as plain data, or (`diff`) only what differs from the defaults."""
    resolved = load_recipe(recipe, overrides)
    return diff_from_defaults(resolved) if diff else recipe_to_dict(resolved)
