"""The search space of `retina tune`: every key, bound and choice checked against the recipe
schema, named in the error."""

from __future__ import annotations

import pytest

from retinacli.errors import UsageError
from retinacli.recipe.search_space import Dimension, plain_choice, read_space, unplain_choice
from tests.training.tiny import REPO, tiny_overrides

RECIPE = REPO / "recipes" / "shapes.yaml"


def test_a_bad_space_is_refused_naming_the_key(tmp_path) -> None:
    overrides = tiny_overrides(tmp_path)
    cases = {
        "solver.base_rate: {type: float, low: 0.1, high: 1}\n": "solver.base_rate: not a key of the recipe",
        "solver.base_lr: {type: float, low: 0.1, high: 0.01}\n": "low and high must be numbers with low < high",
        "solver.base_lr: {type: float, low: -0.1, high: 0.01}\n": "the value -0.1 is not valid for the recipe",
        "solver.base_lr: {type: float, low: 0.0, high: 0.01, log: true}\n": "a log scale needs low > 0",
        "solver.optimizer: {type: categorical, choices: [SGD, Adam]}\n": "the value 'Adam' is not valid for the recipe",
        "data.val.dataset: {type: categorical, choices: [null]}\n": "cannot be tuned",
        "solver.max_iter: {type: int, low: 10, high: 20}\n": "cannot be tuned",
        "solver.base_lr: {type: normal}\n": "type must be float, int or categorical",
        "solver.base_lr: [1, 2]\n": "give {type: float|int|categorical, ...}",
        "- a list\n": "must be a mapping of keys",
    }
    for text, message in cases.items():
        space = tmp_path / "space.yaml"
        space.write_text(text)
        with pytest.raises(UsageError) as info:
            read_space(space, RECIPE, overrides)
        assert message in str(info.value), (text, str(info.value))
        assert str(space) in str(info.value)


def test_a_valid_space_reads_into_dimensions(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "solver.base_lr: {type: float, low: 0.0001, high: 0.01, log: true}\n"
        "data.train.images_per_batch: {type: int, low: 2, high: 8, step: 2}\n"
        "data.train.resize.short_sizes: {type: categorical, choices: [[64, 80], [80, 96]]}\n"
    )
    dims = read_space(space, RECIPE, tiny_overrides(tmp_path))
    assert dims == [
        Dimension("solver.base_lr", "float", low=0.0001, high=0.01, log=True),
        Dimension("data.train.images_per_batch", "int", low=2, high=8, step=2),
        Dimension("data.train.resize.short_sizes", "categorical", choices=([64, 80], [80, 96])),
    ]
    assert dims[1].contains(4) and not dims[1].contains(4.5) and not dims[1].contains(10)
    assert dims[2].contains([80, 96]) and not dims[2].contains([64])
    # a list travels through Optuna as its JSON text and comes back as the list
    assert plain_choice([64, 80]) == "[64, 80]" and unplain_choice("[64, 80]", dims[2].choices) == [64, 80]
