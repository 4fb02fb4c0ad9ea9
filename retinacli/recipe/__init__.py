"""Recipes: the typed schema, safe loading, `_base_` chains, `--set` overrides, safe expressions
and the translation of detectron2 configs."""

from retinacli.recipe.loading import (
    Override,
    diff_from_defaults,
    dump_recipe,
    key_override,
    load_recipe,
    parse_override,
    recipe_from_dict,
    recipe_to_dict,
    validate_recipe,
)
from retinacli.recipe.schema import Recipe

__all__ = [
    "Override",
    "Recipe",
    "diff_from_defaults",
    "dump_recipe",
    "key_override",
    "load_recipe",
    "parse_override",
    "recipe_from_dict",
    "recipe_to_dict",
    "validate_recipe",
]
