"""`model.weights: zoo:NAME` fills in the keys of those weights, and refuses a recipe that sets
them otherwise (recipe/zoo_settings.py). Only the table is read: nothing is downloaded here."""

from __future__ import annotations

import pytest

from retinacli.commands.inspect_config import inspect_config
from retinacli.errors import RecipeError
from retinacli.recipe import load_recipe, recipe_from_dict, recipe_to_dict

TORCHVISION_MEAN = [123.675, 116.28, 103.53]
TORCHVISION_STD = [58.395, 57.12, 57.375]


def test_a_torchvision_name_fills_in_rgb_its_statistics_and_its_network(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  weights: zoo:torchvision/resnet34\n  head:\n    num_classes: 3\n")
    model = inspect_config(recipe)["model"]  # what `retina inspect-config` prints
    assert model["input_format"] == "RGB"
    assert model["pixel_mean"] == TORCHVISION_MEAN and model["pixel_std"] == TORCHVISION_STD
    assert model["backbone"]["depth"] == 34 and model["backbone"]["res2_out_channels"] == 64
    assert model["backbone"]["stride_in_1x1"] is False
    assert model["weights"] == "zoo:torchvision/resnet34"
    # The resolved recipe (a run's config.yaml, a model file's recipe) loads back the same.
    again = recipe_from_dict(recipe_to_dict(load_recipe(recipe)))
    assert recipe_to_dict(again) == recipe_to_dict(load_recipe(recipe))


def test_a_detectron2_name_fills_in_bgr_and_its_depth():
    model = load_recipe(None, ["model.weights=zoo:detectron2/retinanet_R_101_FPN_3x"]).model
    assert model.input_format == "BGR" and model.pixel_mean == [103.53, 116.28, 123.675]
    assert model.pixel_std == [1.0, 1.0, 1.0] and model.backbone.depth == 101 and model.backbone.stride_in_1x1


def test_keys_set_to_the_weights_values_are_accepted():
    model = load_recipe(
        None,
        ["model.weights=zoo:torchvision/resnet50", "model.input_format=RGB", "model.pixel_std=[58.395, 57.12, 57.375]"],
    ).model
    assert model.input_format == "RGB" and model.backbone.depth == 50


def test_a_recipe_that_sets_another_channel_order_is_refused_naming_both_values(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  input_format: BGR\n  pixel_mean: [103.53, 116.28, 123.675]\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("_base_: base.yaml\nmodel:\n  weights: zoo:torchvision/resnet50\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, ["model.backbone.stride_in_1x1=true"])
    message = str(caught.value)
    assert f"{recipe}: model.weights zoo:torchvision/resnet50 (from {recipe} line 3) does not fit the recipe" in message
    assert f"model.input_format is BGR (from {base} line 2), but the weights were trained with RGB" in message
    assert "model.pixel_mean is [103.53, 116.28, 123.675]" in message and "with [123.675, 116.28, 103.53]" in message
    assert "model.backbone.stride_in_1x1 is true (from --set model.backbone.stride_in_1x1=true)" in message
    assert "Remove these keys from the recipe" in message


def test_a_conflicting_depth_is_refused():
    with pytest.raises(RecipeError, match=r"model.backbone.depth is 50 .*trained with 101"):
        load_recipe(None, ["model.weights=zoo:detectron2/retinanet_R_101_FPN_3x", "model.backbone.depth=50"])


def test_an_unknown_zoo_name_names_the_key_and_lists_the_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_MODEL", "torchvision/resnet05")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  weights: zoo:${ZOO_MODEL}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    assert message.startswith(f"{recipe}: model.weights (from {recipe} line 2): 'zoo:torchvision/resnet05'")
    assert "did you mean 'torchvision/resnet50'?" in message and "detectron2/retinanet_R_50_FPN_1x" in message


def test_paths_and_null_are_left_alone():
    model = load_recipe(None, ["model.weights=pretrained/R-50.pkl"]).model
    assert model.input_format == "BGR" and model.backbone.stride_in_1x1  # the defaults, not filled
    assert load_recipe(None, ["model.input_format=RGB"]).model.input_format == "RGB"
