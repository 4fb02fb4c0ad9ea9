"""`retina eval`: tables and files on raccoon val, and every error before any inference runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retinacli.evaluation.coco_eval import METRIC_NAMES
from tests.cli_helpers import run_cli


def test_tiny_model_on_raccoon_val_writes_metrics_and_tables(
    tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch
):
    # An untrained model (training lands later): the check is the plumbing, not the accuracy.
    out = tmp_path / "eval"
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(raccoon_subset)]
    result = run_cli(
        [*args, "--images", str(raccoon_dir / "images"), "--output-dir", str(out), "--device", "cpu"],
        capsys,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert "COCO box AP, 3 images" in result.stdout
    assert "raccoon" in result.stdout and "images/s" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for name in METRIC_NAMES:
        assert metrics[name] is None or 0.0 <= metrics[name] <= 100.0, name
    assert 0.0 <= metrics["AP"] <= 100.0
    assert list(metrics["per_category"]) == ["raccoon"]
    assert 0.0 <= metrics["per_category"]["raccoon"] <= 100.0
    results = json.loads((out / "coco_results.json").read_text())
    # at most 20 per image (threshold 0; clipping drops some degenerate boxes)
    assert 0 < metrics["num_detections"] == len(results) <= 3 * 20
    assert {r["category_id"] for r in results} == {1}
    assert sorted({r["image_id"] for r in results}) == sorted(
        img["id"] for img in json.loads(raccoon_subset.read_text())["images"]
    )


def test_default_output_dir_and_json_flag(
    tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch
):
    model = tmp_path / "run" / "model_0000999.pth"
    model.parent.mkdir()
    model.write_bytes(tiny_raccoon_model.read_bytes())
    args = ["eval", str(model), "--dataset", str(raccoon_subset), "--images"]
    result = run_cli([*args, str(raccoon_dir / "images"), "--json"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    out = tmp_path / "run" / "eval_model_0000999_val3"
    assert json.loads(result.stdout) == json.loads((out / "metrics.json").read_text())
    # The same evaluation again keeps the first one's files unless told to replace them.
    before = (out / "metrics.json").read_bytes()
    again = run_cli([*args, str(raccoon_dir / "images"), "--images-per-batch", "2"], capsys, monkeypatch)
    assert again.exit_code == 2 and "holds an earlier output of `retina eval`" in again.stderr
    assert (out / "metrics.json").read_bytes() == before
    replaced = run_cli([*args, str(raccoon_dir / "images"), "--images-per-batch", "2", "--overwrite", "--json"],
                       capsys, monkeypatch)
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout)["num_images"] == 3


def test_class_mismatch_is_an_error_before_inference(
    tiny_raccoon_model, golden_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "eval"
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(golden_dir / "annotations.json")]
    result = run_cli(
        [*args, "--images", str(golden_dir / "images"), "--output-dir", str(out)], capsys, monkeypatch
    )
    assert result.exit_code == 2
    assert "annotations.json" in result.stderr and "do not fit the classes" in result.stderr
    assert "1=raccoon" in result.stderr and "1=circle" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_ours"])
def test_bad_checkpoint_exits_2_naming_the_file(
    damage, tiny_raccoon_model, tmp_path, capsys, monkeypatch
):
    bad = tmp_path / "bad.pth"
    data = tiny_raccoon_model.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"\x00not a checkpoint\xff" * 100)
    else:
        torch.save({"model": {"w": torch.zeros(2)}}, bad)
    result = run_cli(["eval", str(bad)], capsys, monkeypatch)
    assert result.exit_code == 2, result.output
    assert str(bad) in result.stderr
    assert "Traceback" not in result.output


def test_missing_checkpoint_and_half_a_dataset_are_usage_errors(
    tiny_raccoon_model, raccoon_subset, tmp_path, capsys, monkeypatch
):
    result = run_cli(["eval", str(tmp_path / "nope.pth")], capsys, monkeypatch)
    assert result.exit_code == 2 and "nope.pth" in result.stderr
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(raccoon_subset)]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2 and "--images" in result.stderr


def test_several_test_sizes_are_refused(tiny_raccoon_model, capsys, monkeypatch):
    args = ["eval", str(tiny_raccoon_model), "--set", "data.test.resize.short_sizes=[320,352]"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2
    assert "data.test.resize" in result.stderr and "one short size" in result.stderr


def test_recipe_test_set_is_the_default_dataset(tiny_raccoon_model, tmp_path, capsys, monkeypatch):
    # The stored recipe points at raccoon val; --set swaps in a missing json to prove it is read.
    missing = tmp_path / "missing.json"
    args = ["eval", str(tiny_raccoon_model), "--set", f"data.test.dataset.annotations={missing}"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2
    assert f"{missing}: annotation file not found" in result.stderr


def test_model_without_test_dataset_asks_for_one(tmp_path, capsys, monkeypatch):
    from retinacli.build import build_model
    from retinacli.commands.model_files import save_model_file
    from retinacli.evaluation.classes import ClassInfo
    from retinacli.recipe import load_recipe

    recipe = load_recipe(None, ["model.backbone.depth=18", "model.backbone.res2_out_channels=64"])
    path = tmp_path / "m.pth"
    save_model_file(
        path, model=build_model(recipe.model), recipe=recipe, classes=ClassInfo.default(80)
    )
    result = run_cli(["eval", str(path)], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "no data.test.dataset" in result.stderr and "--dataset" in result.stderr


def test_shapes_test_set_from_the_recipe(tmp_path, capsys, monkeypatch):
    # A recipe whose test set is the generated shapes dataset with non-default classes: eval
    # must generate exactly what training would (same spec), and name the classes from it.
    from retinacli.build import build_model
    from retinacli.commands.model_files import save_model_file
    from retinacli.evaluation.classes import ClassInfo
    from retinacli.recipe import load_recipe

    shapes = (
        "{kind: shapes, split: test, num_images: 2, image_size: [64, 80], "
        f"classes: [diamond, cross], objects_per_image: [1, 2], cache_dir: {tmp_path / 'cache'}}}"
    )
    recipe = load_recipe(
        None,
        [
            "model.backbone.depth=18",
            "model.backbone.res2_out_channels=64",
            "model.fpn.out_channels=16",
            "model.head.num_classes=2",
            "model.head.num_convs=1",
            "data.num_workers=0",
            "data.test.resize.short_sizes=[64]",
            f"data.test.dataset={shapes}",
        ],
    )
    torch.manual_seed(0)
    path = tmp_path / "m.pth"
    save_model_file(
        path,
        model=build_model(recipe.model),
        recipe=recipe,
        classes=ClassInfo(("diamond", "cross"), (1, 2)),
    )
    result = run_cli(["eval", str(path), "--json"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert list(metrics["per_category"]) == ["diamond", "cross"]
    assert metrics["num_images"] == 2


def test_diagnostics_are_written_beside_the_metrics_and_agree_with_them(
    tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch
):
    from PIL import Image

    out = tmp_path / "eval"
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(raccoon_subset), "--images", str(raccoon_dir / "images")]
    args += ["--output-dir", str(out), "--device", "cpu", "--diagnostics", "--worst", "2"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "worst classes" in result.stdout and "AP50 gained if fixed" in result.stdout
    assert "dominant error:" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert "diagnostics" not in metrics  # metrics.json keeps its contract
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    curves = json.loads((out / "pr_curves.json").read_text())
    assert curves == diagnostics["pr_curves"] and len(curves["recall"]) == 101
    raccoon = curves["classes"]["raccoon"]
    assert sum(raccoon["iou50_95"]) / 101 * 100 == pytest.approx(metrics["per_category"]["raccoon"], abs=1e-3)
    assert sum(raccoon["iou50"]) / 101 * 100 == pytest.approx(metrics["AP50"], abs=1e-3)
    confusion = json.loads((out / "confusion_matrix.json").read_text())
    counts = confusion["counts"]
    num_gt = len(json.loads(raccoon_subset.read_text())["annotations"])
    assert sum(counts[0]) == num_gt  # every ground-truth box once: found, or missed
    false_positives = sum(diagnostics["errors"]["false_positives"].values())
    assert sum(map(sum, counts)) == num_gt + false_positives
    worst = sorted((out / "worst_images").iterdir())
    assert 1 <= len(worst) <= 2 and [w["file"] for w in diagnostics["worst_images"]] == [
        f"worst_images/{p.name}" for p in worst
    ]
    for name in ("pr_curves.png", "confusion_matrix.png", "errors.png", *(f"worst_images/{p.name}" for p in worst)):
        with Image.open(out / name) as picture:
            picture.load()
            assert picture.format == "PNG" and min(picture.size) >= 200, name
            assert len(np.unique(np.asarray(picture.convert("L")))) > 8, f"{name} is blank"
    # Again without --overwrite: refused before anything runs; the files are still there.
    again = run_cli(args, capsys, monkeypatch)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert (out / "diagnostics.json").is_file()


def test_diagnostics_json_is_the_same_data_for_scripts(
    tiny_raccoon_model, raccoon_subset, raccoon_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "eval"
    args = ["eval", str(tiny_raccoon_model), "--dataset", str(raccoon_subset), "--images", str(raccoon_dir / "images")]
    args += ["--output-dir", str(out), "--device", "cpu", "--diagnostics", "--diagnostics-thresh", "0.1", "--worst", "0"]
    result = run_cli([*args, "--json"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["diagnostics"] == json.loads((out / "diagnostics.json").read_text())
    assert printed["diagnostics"]["thresholds"] == {"raccoon": 0.1}
    assert not (out / "worst_images").exists()


def test_diagnostics_flags_need_diagnostics(tiny_raccoon_model, capsys, monkeypatch):
    result = run_cli(["eval", str(tiny_raccoon_model), "--worst", "3"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--worst go with --diagnostics" in result.stderr
