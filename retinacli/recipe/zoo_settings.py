"""`model.weights: zoo:NAME`: the recipe keys that belong to named pretrained weights.

Weights are trained with one channel order, one pixel normalisation and one network shape; a
model that gets them wrong trains and runs without any error, only worse (BGR weights fed RGB
pixels see every red object as blue). So a zoo name carries those keys (the entry's `settings`
in `retinacli/weights/zoo.json`: `model.input_format`, `model.pixel_mean`, `model.pixel_std`,
`model.backbone.depth`, `model.backbone.res2_out_channels`, `model.backbone.stride_in_1x1`), and
validating a recipe that names one:

- fills in each of them the recipe does not set (in the file, a `_base_` or `--set`), so the
  resolved recipe (`retina inspect-config`, a run's `config.yaml`) shows them;
- refuses (RecipeError) a recipe that sets one of them to another value, naming both values and
  where the recipe set it;
- refuses an unknown name, listing the known ones.

Only the table is read here; the file itself is fetched when training starts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retinacli.errors import RecipeError
from retinacli.recipe.schema import Recipe, expand_env
from retinacli.weights import zoo as weight_zoo

Where = Callable[[Sequence[str]], "str | None"]
"""Where a key path of the merged recipe was set ('recipe.yaml line 4', '--set ...'), if known."""

_WHY = {
    "model.input_format": "a model fed the other channel order learns from wrong colours, without any error",
    "model.pixel_mean": "the weights expect pixels normalised with these values",
    "model.pixel_std": "the weights expect pixels normalised with these values",
    "model.backbone.depth": "the weights hold a ResNet of this depth",
    "model.backbone.res2_out_channels": "the weights hold a ResNet of these widths",
    "model.backbone.stride_in_1x1": "the weights were trained with the stride in this convolution",
}


@dataclass(frozen=True)
class ZooSettings:
    """The settings of the zoo entry a recipe's `model.weights` names, and which of them the
    recipe itself sets (`explicit`, dotted keys)."""

    name: str
    settings: Mapping[str, Any]
    explicit: frozenset[str]
    source: str
    where: Where

    def filled(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the merged recipe `raw` with every setting it does not set filled in."""
        data = copy.deepcopy(dict(raw))
        for key, value in self.settings.items():
            if key in self.explicit:
                continue
            node: Any = data
            parts = key.split(".")
            for part in parts[:-1]:
                child = node.setdefault(part, {}) if isinstance(node, dict) else None
                if not isinstance(child, dict):  # a malformed section: the schema names it
                    break
                node = child
            else:
                node[parts[-1]] = copy.deepcopy(value)
        return data

    def check(self, recipe: Recipe) -> None:
        """RecipeError naming every key the recipe sets to another value than the weights'."""
        problems = []
        for key in sorted(self.explicit):
            expected = self.settings[key]
            actual = _value_at(recipe, key)
            if not _same(actual, expected):
                problems.append(
                    f"  {key} is {_shown(actual)}{self._origin(key)}, but the weights were trained "
                    f"with {_shown(expected)} ({_WHY[key]})"
                )
        if problems:
            raise RecipeError(
                f"{self.source}: model.weights zoo:{self.name}{self._origin('model.weights')} does "
                "not fit the recipe:\n" + "\n".join(problems) + "\nRemove these keys from the "
                "recipe (the zoo name sets them), or name weights trained with your values "
                "(`retina weights list`)"
            )

    def _origin(self, key: str) -> str:
        where = self.where(key.split("."))
        return f" (from {where})" if where and where != self.source else ""


def zoo_settings(raw: Mapping[str, Any], *, source: str, where: Where) -> ZooSettings | None:
    """The ZooSettings of a merged recipe (plain data) whose `model.weights` is `zoo:NAME`, None
    when it names no zoo entry (a path, null, or a value the schema will refuse). RecipeError for
    an unknown name, listing the known ones."""
    model = raw.get("model") if isinstance(raw, Mapping) else None  # not a mapping: the schema says so
    if not isinstance(model, Mapping) or not isinstance(model.get("weights"), str):
        return None
    try:
        weights = expand_env(model["weights"])
    except ValueError:  # an unset variable: the schema reports it with the key
        return None
    name = weight_zoo.zoo_name(weights)
    if name is None:
        return None
    try:
        entry = weight_zoo.find_entry(name)
    except weight_zoo.UnknownZooName as exc:
        origin = where(["model", "weights"])
        raise RecipeError(
            f"{source}: model.weights{f' (from {origin})' if origin and origin != source else ''}: "
            f"{weights!r} names no pretrained weights retina knows; {exc.hint()} "
            "(`retina weights list`); or give the path of a weights file"
        ) from None
    explicit = frozenset(key for key in entry.settings if _is_set(raw, key))
    return ZooSettings(name=entry.name, settings=entry.settings, explicit=explicit, source=source, where=where)


def _is_set(raw: Mapping[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _value_at(recipe: Recipe, key: str) -> Any:
    node: Any = recipe
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, list) and isinstance(actual, list | tuple):
        return len(actual) == len(expected) and all(_same(a, e) for a, e in zip(actual, expected, strict=True))
    return bool(actual == expected)


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)
