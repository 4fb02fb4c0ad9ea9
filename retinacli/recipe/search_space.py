"""The search space of `retina tune`: dotted recipe keys, each a float, int or categorical
dimension, checked against the recipe schema before a study runs.

SPACE.yaml maps keys to `{type: float|int|categorical, low, high, log, step, choices}`. Every
key must be a leaf of the recipe, every bound and choice must make a valid recipe (so the
schema's own ranges apply), and keys that belong to the study rather than a trial (the output,
the device, the evaluation data and settings, tracking, the length) are refused. Problems are
UsageErrors naming the file and the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinacli.errors import RecipeError, UsageError
from retinacli.recipe.loading import Override, flat_keys, load_recipe, recipe_to_dict
from retinacli.recipe.schema import Recipe
from retinacli.yaml_files import UnreadableYaml, read_yaml_mapping

MAX_SPACE_KEYS = 50
REFUSED_KEYS = ("output_dir", "device", "data.val.", "data.test.", "tracking.", "eval.", "solver.time_budget", "solver.max_iter")


@dataclass(frozen=True)
class Dimension:
    """One key of the search space."""

    key: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this key (Optuna's suggest_*; a choice that is not a number,
        string or bool travels as its JSON text)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        picked = trial.suggest_categorical(self.key, [plain_choice(c) for c in self.choices])
        return unplain_choice(picked, self.choices)

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return any(value == c for c in self.choices)
        if not _is_number(value):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        return out


def plain_choice(choice: Any) -> Any:
    """A choice as Optuna stores it: None, a bool, number or string as it is, anything else
    (a list, a mapping) as its JSON text."""
    return choice if choice is None or isinstance(choice, bool | int | float | str) else json.dumps(choice)


def unplain_choice(picked: Any, choices: Sequence[Any]) -> Any:
    """The choice of `choices` that `plain_choice` turned into `picked`."""
    for choice in choices:
        if plain_choice(choice) == picked:
            return choice
    return picked


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_space(path: Path, recipe_path: Path, overrides: Sequence[str | Override]) -> list[Dimension]:
    """The dimensions of SPACE.yaml, each checked against the recipe schema: its key is a leaf
    of the recipe, its bounds are sane, and the recipe with each bound (or choice) is valid.

    Raises UsageError naming the file, the key and what is wrong."""
    try:
        raw = read_yaml_mapping(path, what="search space")
    except UnreadableYaml as exc:
        raise UsageError(str(exc)) from None
    if not raw:
        raise UsageError(f"{path}: no key to tune; map dotted recipe keys to {{type: float, low: ..., high: ...}}")
    if len(raw) > MAX_SPACE_KEYS:
        raise UsageError(f"{path}: {len(raw)} keys; at most {MAX_SPACE_KEYS}")
    base = load_recipe(recipe_path, overrides)
    leaves = flat_keys(recipe_to_dict(base))
    dimensions = []
    for key, spec in raw.items():
        where = f"{path}: {key}"
        if isinstance(key, str) and any(key == r.rstrip(".") or (r.endswith(".") and key.startswith(r)) for r in REFUSED_KEYS):
            raise UsageError(
                f"{where}: cannot be tuned (the output, the device, the evaluation data and settings, tracking and "
                "the time budget are the study's, not a trial's; tune a trial's length with --trial-time)"
            )
        if not isinstance(key, str) or key not in leaves:
            near = sorted(k for k in leaves if isinstance(key, str) and k.split(".")[-1] == key.split(".")[-1])[:3]
            hint = f" (did you mean {', '.join(near)}?)" if near else "; `retina inspect-config RECIPE` lists the keys"
            raise UsageError(f"{where}: not a key of the recipe{hint}")
        dimension = _dimension(where, key, spec)
        values = dimension.choices if dimension.type == "categorical" else (dimension.low, dimension.high)
        for value in values:
            try:
                load_recipe(recipe_path, [*overrides, Override(tuple(key.split(".")), value, f"{where}: {value!r}")])
            except RecipeError as exc:
                raise UsageError(f"{where}: the value {value!r} is not valid for the recipe: {exc}") from None
        dimensions.append(dimension)
    return dimensions


def _dimension(where: str, key: str, spec: Any) -> Dimension:
    if not isinstance(spec, Mapping):
        raise UsageError(f"{where}: give {{type: float|int|categorical, ...}}, not {spec!r}")
    kind = spec.get("type")
    known = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"}, "categorical": {"type", "choices"}}
    if kind not in known:
        raise UsageError(f"{where}: type must be float, int or categorical, not {kind!r}")
    unknown = set(spec) - known[kind]
    if unknown:
        raise UsageError(f"{where}: {', '.join(sorted(map(str, unknown)))} do not go with type {kind} (allowed: {', '.join(sorted(known[kind]))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or len(choices) > 100:
            raise UsageError(f"{where}: choices must be a list of 1 to 100 values")
        return Dimension(key, kind, choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    if not (_is_number(low) and _is_number(high)) or not low < high:
        raise UsageError(f"{where}: low and high must be numbers with low < high, got {low!r} and {high!r}")
    if not isinstance(log, bool):
        raise UsageError(f"{where}: log must be true or false")
    if log and low <= 0:
        raise UsageError(f"{where}: a log scale needs low > 0, got {low}")
    if step is not None and (not _is_number(step) or step <= 0 or log):
        raise UsageError(f"{where}: step must be a positive number, and does not go with log")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise UsageError(f"{where}: an int dimension needs whole low, high and step")
    return Dimension(key, kind, low=low, high=high, log=log, step=step)




def recipe_values(recipe: Recipe, space: Sequence[Dimension]) -> dict[str, Any]:
    """The recipe's own value of each key the space holds it in (as `plain_choice` stores it)."""
    leaves = flat_keys(recipe_to_dict(recipe))
    return {d.key: plain_choice(leaves[d.key]) for d in space if d.contains(leaves[d.key])}
