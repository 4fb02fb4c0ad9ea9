"""`retina import-detectron2` on the golden case, as a user runs it."""

from __future__ import annotations

import torch

from retinacli.commands.model_files import load_detector
from retinacli.recipe import load_recipe
from retinacli.weights.names import detectron2_to_retinacli
from tests.cli_helpers import run_cli


def test_import_writes_recipe_and_model_file(golden_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "d2"
    result = run_cli(
        ["import-detectron2", str(golden_dir / "config.yaml"), "--weights", str(golden_dir / "model_final.pth"),
         "--output-dir", str(out), "--classes", "circle,square,triangle"],
        capsys, monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "recipe.yaml" in result.stdout
    loaded = load_detector(out / "model.pth")
    assert loaded.recipe == load_recipe(out / "recipe.yaml")
    assert loaded.classes.names == ("circle", "square", "triangle")
    assert loaded.classes.dataset_ids == (1, 2, 3)
    d2_state = torch.load(golden_dir / "model_final.pth", weights_only=True)["model"]
    mapped, unmapped = detectron2_to_retinacli(d2_state)
    assert unmapped == []
    ours = loaded.model.state_dict()
    assert set(ours) == set(mapped)
    for key, value in mapped.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)


def test_weights_that_do_not_fit_are_refused_and_nothing_written(golden_dir, tmp_path, capsys, monkeypatch):
    state = torch.load(golden_dir / "model_final.pth", weights_only=True)["model"]
    del state["head.cls_score.weight"]
    broken = tmp_path / "broken.pth"
    torch.save({"model": state}, broken)
    out = tmp_path / "out"
    result = run_cli(
        ["import-detectron2", str(golden_dir / "config.yaml"), "--weights", str(broken), "--output-dir", str(out)],
        capsys, monkeypatch,
    )
    assert result.exit_code == 2
    assert "broken.pth" in result.stderr and "head.cls_score.weight" in result.stderr
    assert not (out / "model.pth").exists()


def test_wrong_class_count_is_a_clear_error(golden_dir, tmp_path, capsys, monkeypatch):
    result = run_cli(
        ["import-detectron2", str(golden_dir / "config.yaml"), "--weights", str(golden_dir / "model_final.pth"),
         "--output-dir", str(tmp_path / "o"), "--classes", "a,b"],
        capsys, monkeypatch,
    )
    assert result.exit_code == 2 and "names 2 classes but the config has 3" in result.stderr


def test_a_config_alone_becomes_a_recipe(golden_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "migrated"
    result = run_cli(["import-detectron2", str(golden_dir / "config.yaml"), "--output-dir", str(out)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".retinacli-output.json", "recipe.yaml"]
    recipe = load_recipe(out / "recipe.yaml")
    assert recipe.model.backbone.depth == 18 and recipe.model.head.num_classes == 3
    again = run_cli(["import-detectron2", str(golden_dir / "config.yaml"), "--output-dir", str(out)], capsys, monkeypatch)
    assert again.exit_code == 2
    assert "holds an earlier output of `retina import-detectron2` (recipe.yaml); pass --overwrite" in again.stderr


def test_weights_of_another_kind_are_refused(golden_dir, tmp_path, capsys, monkeypatch):
    import torchvision

    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    result = run_cli(["import-detectron2", str(golden_dir / "config.yaml"), "--weights", str(resnet),
                      "--output-dir", str(tmp_path / "o")], capsys, monkeypatch)
    assert result.exit_code == 2 and "holds torchvision weights, not a detectron2 model" in result.stderr
    assert not (tmp_path / "o").exists()
