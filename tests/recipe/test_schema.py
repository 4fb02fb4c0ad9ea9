"""Schema rules that span several keys: the box-aware augmentations."""

from __future__ import annotations

import pytest

from retinacli.errors import RecipeError
from retinacli.recipe import load_recipe
from retinacli.recipe.schema import Recipe


def test_augmentations_are_off_by_default():
    augment = Recipe().data.train.augment
    probs = [augment.color.prob, augment.expand.prob, augment.crop.prob, augment.scale_jitter.prob,
             augment.vertical_flip, augment.mosaic]
    assert probs == [0.0] * 6


def test_two_vertical_flips_are_refused_with_the_fix():
    with pytest.raises(RecipeError, match=r"data\.train[\s\S]*both flip top-bottom"):
        load_recipe(None, ["data.train.flip=vertical", "data.train.augment.vertical_flip=0.5"])
    recipe = load_recipe(None, ["data.train.flip=horizontal", "data.train.augment.vertical_flip=0.5"])
    assert recipe.data.train.augment.vertical_flip == 0.5


@pytest.mark.parametrize(
    "override",
    [
        "data.train.augment.mosaic=1.5",
        "data.train.augment.color.hue=0.6",
        "data.train.augment.crop.min_scale=0",
        "data.train.augment.expand.max_ratio=0.9",
        "data.train.augment.min_visible=0",
        "data.train.augment.fill=256",
        "data.train.augment.scale_jitter.min_scale=2.0",
        "data.train.augment.colour.prob=0.5",
    ],
)
def test_bad_augment_values_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=key.rsplit(".", 1)[-1]):
        load_recipe(None, [override])


def test_inspect_config_shows_the_augment_keys(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from tests.cli_helpers import run_cli

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    mine = tmp_path / "raccoon_small.yaml"
    mine.write_text(f"_base_: ['{recipes / 'raccoon.yaml'}', '{recipes / 'small_data.yaml'}']\n")
    result = run_cli(["inspect-config", str(mine), "--diff"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    for text in ("augment", "color", "crop", "scale_jitter", "ema", "AdamW"):
        assert text in result.stdout, text
    # the dataset's recipe keeps its model and data; small_data.yaml only adds
    resolved = load_recipe(mine)
    assert resolved.model.head.num_classes == 1 and resolved.data.train.images_per_batch == 8
    assert resolved.data.train.augment.color.prob == 0.8 and resolved.solver.ema.enabled
