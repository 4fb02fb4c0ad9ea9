"""Raccoon fixtures for any test (a pytest plugin of tests/conftest.py): a tiny randomly
initialised raccoon model file, its ONNX export, and val subsets.

`shared_dir` and `golden_dir` come from tests/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retinacli.build import build_model
from retinacli.commands.model_files import save_model_file
from retinacli.evaluation.classes import ClassInfo
from retinacli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
# recipes/raccoon.yaml made small and fast (test size 128 instead of 320); score_thresh 0 so an
# untrained model detects.
TINY = [
    "model.fpn.out_channels=32",
    "model.head.num_convs=1",
    "model.test.score_thresh=0.0",
    "model.test.detections_per_image=20",
    "data.num_workers=0",
    "data.test.resize.short_sizes=[128]",
    "data.test.resize.max_size=213",
]


@pytest.fixture(scope="session")
def raccoon_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "raccoon"


@pytest.fixture(scope="session")
def tiny_raccoon_model(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """A randomly initialised model file of recipes/raccoon.yaml (slimmed), class "raccoon" id 1."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETINA_DATASETS", str(shared_dir / "data"))
        recipe = load_recipe(REPO / "recipes" / "raccoon.yaml", TINY)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    path = tmp_path_factory.mktemp("raccoon_model") / "model.pth"
    return save_model_file(path, model=model, recipe=recipe, classes=ClassInfo(("raccoon",), (1,)))


@pytest.fixture(scope="session")
def raccoon_subset(tmp_path_factory: pytest.TempPathFactory, raccoon_dir: Path) -> Path:
    """The first 3 images of raccoon val.json (by id) and their boxes, as a json in tmp."""
    data = json.loads((raccoon_dir / "val.json").read_text())
    images = sorted(data["images"], key=lambda img: img["id"])[:3]
    ids = {img["id"] for img in images}
    subset = {
        "images": images,
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        "categories": data["categories"],
    }
    path = tmp_path_factory.mktemp("raccoon_subset") / "val3.json"
    path.write_text(json.dumps(subset))
    return path


@pytest.fixture(scope="session")
def tiny_raccoon_onnx(tiny_raccoon_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`retina export` of the tiny raccoon model (ONNX, checked by the command itself)."""
    import sys

    from retinacli.cli import main

    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["retina", "export", str(tiny_raccoon_model), "--out", str(out)])
        patch.setenv("COLUMNS", "200")
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None), f"retina export exited with {exc.code}"
    return out
