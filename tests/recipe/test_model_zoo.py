"""The bundled COCO recipes are detectron2's RetinaNet model-zoo configs, key by key.

The tables in tests/recipe/data/ hold what detectron2 resolves configs/COCO-Detection/
retinanet_R_50_FPN_{1x,3x}.yaml to (the config over Base-RetinaNet.yaml over defaults.py), for
every key retinacli reads. Each is translated to a recipe (import-detectron2's translation) and
compared with recipes/coco.yaml and coco_3x.yaml, leaf by leaf. What differs on purpose is listed
in DELIBERATE, each with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retinacli.recipe import load_recipe, recipe_to_dict, validate_recipe
from retinacli.recipe.detectron2 import translate

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"

DELIBERATE = {
    # detectron2 downloads its ImageNet weights from a URL; retinacli never downloads and points at
    # a local file (${RETINA_WEIGHTS}/R-50.pkl).
    "model.weights",
    # detectron2 names registered datasets (coco_2017_train); a recipe names the json and images.
    "data.train.dataset",
    "data.test.dataset",
    "output_dir",  # ./output in detectron2, one folder per recipe here
    "device",  # detectron2's MODEL.DEVICE cuda; auto uses CUDA when there is one
}


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and "kind" not in data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


@pytest.mark.parametrize(("table", "recipe"), [("1x", "coco.yaml"), ("3x", "coco_3x.yaml")])
def test_bundled_coco_recipe_resolves_to_the_model_zoo_config(table, recipe):
    resolved = json.loads((DATA / f"detectron2_retinanet_R_50_FPN_{table}.json").read_text())
    resolved.pop("_what")
    zoo = _leaves(recipe_to_dict(validate_recipe(translate(resolved).recipe)))
    ours = _leaves(recipe_to_dict(load_recipe(REPO / "recipes" / recipe)))
    assert zoo.keys() == ours.keys()
    differ = {key: (ours[key], zoo[key]) for key in ours if ours[key] != zoo[key]}
    assert set(differ) == DELIBERATE, differ


def test_schema_defaults_are_the_model_zoo_base():
    """An empty recipe is Base-RetinaNet.yaml over defaults.py, with R-50 (the DEPTH default)."""
    resolved = json.loads((DATA / "detectron2_retinanet_R_50_FPN_1x.json").read_text())
    resolved.pop("_what")
    zoo = _leaves(recipe_to_dict(validate_recipe(translate(resolved).recipe)))
    defaults = _leaves(recipe_to_dict(load_recipe(None)))
    differ = {key for key in defaults if defaults[key] != zoo[key]}
    # The translation keeps no URL and no registered dataset name, so weights and datasets are
    # null in both; the seed is 0 in both (detectron2's -1 means random, translated to 0).
    assert differ == {"output_dir", "device"}
