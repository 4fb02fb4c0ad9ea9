"""Model files: written atomically, read back whole, every damage reported with the file name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retinacli.build import build_model
from retinacli.commands.model_files import load_detector, save_model_file
from retinacli.errors import CheckpointError
from retinacli.evaluation.classes import ClassInfo
from retinacli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.backbone.depth=18", "model.backbone.res2_out_channels=64", "model.backbone.norm=BN",
    "model.fpn.out_channels=32", "model.head.num_classes=2", "model.head.num_convs=1",
]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    recipe = load_recipe(None, TINY)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    model.loss_normalizer = 123.0
    path = tmp_path_factory.mktemp("m") / "model.pth"
    save_model_file(path, model=model, recipe=recipe, classes=ClassInfo(("cat", "dog"), (3, 7)))
    return path


def test_round_trip_restores_weights_recipe_and_classes(tiny_file):
    loaded = load_detector(tiny_file)
    saved = torch.load(tiny_file, weights_only=True)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, saved["model"][key], rtol=0, atol=0)
    assert loaded.recipe == load_recipe(None, TINY)
    assert loaded.classes == ClassInfo(("cat", "dog"), (3, 7))
    assert loaded.model.loss_normalizer == 123.0 and not loaded.model.training


def test_overrides_change_the_stored_recipe(tiny_file):
    loaded = load_detector(tiny_file, ["model.test.score_thresh=0.4"])
    assert loaded.model.score_thresh == 0.4 and loaded.recipe.model.test.score_thresh == 0.4


def test_architecture_override_that_does_not_fit_is_named(tiny_file):
    with pytest.raises(CheckpointError, match=r"model\.pth: the weights do not fit .*shape differs"):
        load_detector(tiny_file, ["model.fpn.out_channels=16"])


def test_truncated_file_is_reported(tiny_file, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(tiny_file.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_detector(broken)


def test_foreign_file_is_reported(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="other.pth: not a retinacli checkpoint or model file"):
        load_detector(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": "retinacli-checkpoint", "x": Path("/")}, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        load_detector(path)


def test_a_format_1_file_with_old_key_names_still_loads(tiny_file, tmp_path):
    data = torch.load(tiny_file, weights_only=True)
    clip = data["recipe"]["solver"]["clip_gradients"]
    clip["type"], clip["value"] = clip.pop("clip_type"), clip.pop("clip_value")
    data["format_version"] = 1
    old = tmp_path / "old.pth"
    torch.save(data, old)
    loaded = load_detector(old)
    assert loaded.recipe == load_recipe(None, TINY)


def test_a_format_1_file_with_a_shared_bn_head_gets_per_level_statistics(tmp_path):
    recipe = load_recipe(None, [*TINY, "model.head.norm=BN"])
    model = build_model(recipe.model)
    save_model_file(tmp_path / "new.pth", model=model, recipe=recipe, classes=ClassInfo(("a", "b"), (1, 2)))
    data = torch.load(tmp_path / "new.pth", weights_only=True)
    # What format 1 wrote: one BatchNorm per subnet position, its statistics shared by the levels.
    state = {}
    for key, value in data["model"].items():
        parts = key.split(".")
        if key.startswith("head.") and len(parts) == 5 and parts[3].isdigit():
            if parts[3] == "0":
                state[".".join(parts[:3] + parts[4:])] = value + 1.0 if value.is_floating_point() else value
        else:
            state[key] = value
    data.update(model=state, format_version=1)
    torch.save(data, tmp_path / "old.pth")
    loaded = load_detector(tmp_path / "old.pth").model.state_dict()
    for level in range(5):
        assert torch.equal(loaded[f"head.cls_subnet.1.{level}.running_mean"], state["head.cls_subnet.1.running_mean"])
