"""Recipes: the typed schema, safe loading, `_base_` chains and `--set` overrides."""

from retinacli.recipe.loading import (
    diff_from_defaults,
    dump_recipe,
    load_recipe,
    parse_override,
    recipe_from_dict,
    recipe_to_dict,
    validate_recipe,
)
from retinacli.recipe.schema import Recipe

__all__ = [
    "Recipe",
    "diff_from_defaults",
    "dump_recipe",
    "load_recipe",
    "parse_override",
    "recipe_from_dict",
    "recipe_to_dict",
    "validate_recipe",
]
