"""`retina train` with a validation set: model_best.pth, early stopping, EMA, and resume of all of
them; the final test evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from retinacli.commands import train as train_module
from retinacli.commands.model_files import load_detector
from retinacli.commands.train import train_from_recipe
from retinacli.errors import RecipeError
from retinacli.training import loop as loop_module
from retinacli.training.checkpoints import load_checkpoint, load_model_file
from tests.training.tiny import tiny_recipe

VAL = "data.val.dataset={kind: shapes, split: test, num_images: 2, seed: 5, image_size: [64, 96], cache_dir: '%s'}"


pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, *extra):
    return tiny_recipe(tmp_path, VAL % (tmp_path / "cache"), "eval_period=2", "solver.checkpoint_period=2", *extra)


@pytest.fixture
def scripted_ap(monkeypatch):
    """Evaluations report the APs of a script (by evaluation on data.val), real ones for the test
    set; the real evaluation still runs and writes its files."""
    real = train_module._evaluate_into
    script = {"values": [], "seen": []}

    def evaluate(model, dataset, output_dir, **kwargs):
        metrics = real(model, dataset, output_dir, **kwargs)
        if "eval_test" in str(output_dir):
            return metrics
        value = script["values"][len(script["seen"])]
        script["seen"].append(str(output_dir))
        return {**metrics, "AP": value}

    monkeypatch.setattr(train_module, "_evaluate_into", evaluate)
    return script


def test_model_best_is_the_best_evaluation_and_test_runs_once_at_the_end(tmp_path, scripted_ap):
    scripted_ap["values"] = [10.0, 30.0, 20.0]  # evaluations after iterations 1, 3, 5
    result = train_from_recipe(_recipe(tmp_path))
    out = result.output_dir
    best = torch.load(out / "model_best.pth", weights_only=True)
    assert best["best"]["metric"] == "AP" and best["best"]["value"] == 30.0 and best["best"]["iteration"] == 3
    # The weights are those of iteration 3 (its checkpoint was written at the same iteration).
    at_3 = load_checkpoint(out / "model_0000003.pth")["model"]
    for key, value in at_3.items():
        torch.testing.assert_close(best["model"][key], value, rtol=0, atol=0, msg=key)
    assert load_detector(out / "model_best.pth").iteration == 3  # a model file for retina eval
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines if "val/AP" in line] == [1, 3, 5]
    assert [line["iteration"] for line in lines if "test/AP" in line] == [5]  # once, at the end
    assert (out / "eval_test" / "metrics.json").is_file()
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["1", "3", "5"]
    log = (out / "log.txt").read_text()
    assert "new best AP 30.000 at iteration 3: model_best.pth" in log
    # The final evaluations (last on data.val, and data.test) carry the diagnostics; earlier do not.
    for folder in (out / "eval" / "5", out / "eval_test"):
        diagnostics = json.loads((folder / "diagnostics.json").read_text())
        assert set(diagnostics["per_class"]) == set(diagnostics["classes"]), folder
        assert (folder / "confusion_matrix.png").is_file() and (folder / "pr_curves.png").is_file()
    assert not (out / "eval" / "3" / "diagnostics.json").exists()
    assert f"diagnostics of the evaluation in {out / 'eval_test'}" in log


def test_early_stopping_stops_at_the_expected_evaluation(tmp_path, scripted_ap):
    scripted_ap["values"] = [10.0, 8.0, 9.0]  # no improvement after the first: stop after the third
    recipe = _recipe(tmp_path, "solver.max_iter=12", "solver.early_stop_patience=2")
    reporter_lines = []

    class Collect(loop_module.SilentReporter):
        def message(self, text):
            reporter_lines.append(text)

    result = train_from_recipe(recipe, reporter=Collect())
    assert result.iterations_run == 6  # iterations 0..5; evaluations after 1, 3, 5
    assert len(scripted_ap["seen"]) == 3
    stop = next(line for line in reporter_lines if line.startswith("early stop"))
    assert "AP did not improve for 2 evaluations" in stop and "AP 10.000 at iteration 1" in stop
    assert "model_best.pth" in stop
    assert load_model_file(result.output_dir / "model_final.pth")["iteration"] == 5


def test_early_stopping_needs_a_validation_set(tmp_path):
    with pytest.raises(RecipeError, match="solver.early_stop_patience needs data.val.dataset"):
        train_from_recipe(tiny_recipe(tmp_path, "solver.early_stop_patience=2"))


def test_ema_weights_are_evaluated_and_saved(tmp_path, scripted_ap):
    scripted_ap["values"] = [10.0, 30.0, 20.0]
    result = train_from_recipe(_recipe(tmp_path, "solver.ema.enabled=true", "solver.ema.tau=2"))
    out = result.output_dir
    at_3 = load_checkpoint(out / "model_0000003.pth")
    assert at_3["ema"]["updates"] == 4
    best = torch.load(out / "model_best.pth", weights_only=True)
    assert best["best"]["ema"] is True
    for key, value in at_3["ema"]["model"].items():
        torch.testing.assert_close(best["model"][key], value, rtol=0, atol=0, msg=key)
    # The average differs from the trained weights, and model files stand for it.
    trained = at_3["model"]["head.cls_score.weight"]
    assert not torch.equal(at_3["ema"]["model"]["head.cls_score.weight"], trained)
    loaded = load_detector(out / "model_final.pth")
    assert loaded.uses_ema
    final = load_model_file(out / "model_final.pth")
    # model_final.pth holds the average as its weights (and no separate copy of the trained ones)
    assert "ema" not in final and "optimizer" not in final
    torch.testing.assert_close(loaded.model.state_dict()["head.cls_score.weight"], final["model"]["head.cls_score.weight"])


def test_resume_keeps_best_patience_and_ema_bit_identical(tmp_path, monkeypatch, scripted_ap):
    extra = ("solver.max_iter=8", "solver.ema.enabled=true", "solver.ema.tau=3", "solver.early_stop_patience=5")
    scripted_ap["values"] = [10.0, 30.0, 20.0, 25.0]
    straight_dir = tmp_path / "a"
    straight_dir.mkdir()
    train_from_recipe(_recipe(straight_dir, *extra))

    crashed_dir = tmp_path / "b"
    crashed_dir.mkdir()
    scripted_ap["seen"].clear()
    real_step = loop_module.Trainer._step
    calls = {"n": 0}

    def crash_on_sixth(self, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # during iteration 5, after the checkpoint and evaluation of 3
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.Trainer, "_step", crash_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        train_from_recipe(_recipe(crashed_dir, *extra))
    monkeypatch.setattr(loop_module.Trainer, "_step", real_step)
    scripted_ap["seen"][:] = scripted_ap["seen"][:2]  # the resumed run evaluates after 5 and 7
    train_from_recipe(_recipe(crashed_dir, *extra), resume=True)

    a = load_checkpoint(straight_dir / "run" / "model_0000007.pth")
    b = load_checkpoint(crashed_dir / "run" / "model_0000007.pth")
    for part in ("model", "ema"):
        state_a = a[part] if part == "model" else a[part]["model"]
        state_b = b[part] if part == "model" else b[part]["model"]
        for key in state_a:
            torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=f"{part} {key}")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 8
    assert a["best"] == b["best"] == {"metric": "AP", "value": 30.0, "iteration": 3, "evaluations_since_best": 2}


def test_fine_tuning_on_other_classes_reinitialises_only_the_classifier(tmp_path):
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = train_from_recipe(tiny_recipe(source_dir, "solver.max_iter=2", "solver.checkpoint_period=2"))
    messages = []

    class Collect(loop_module.SilentReporter):
        def message(self, text):
            messages.append(text)

    cache = tmp_path / "cache"
    one_class = f"{{kind: shapes, split: train, num_images: 8, seed: 0, image_size: [64, 96], classes: [circle], cache_dir: '{cache}'}}"
    target = tmp_path / "target"
    target.mkdir()
    recipe = tiny_recipe(
        target, f"data.train.dataset={one_class}", "data.test.dataset=null", "model.head.num_classes=1",
        f"model.weights={source.final_model}", "model.freeze=[fpn]", "solver.max_iter=2",
    )
    result = train_from_recipe(recipe, reporter=Collect())
    summary = next(m for m in messages if m.startswith("initialised"))
    assert "re-initialised, the file's shape differs" in summary and "head.cls_score.weight" in summary
    before = load_model_file(source.final_model)["model"]
    after = load_model_file(result.final_model)["model"]
    # frozen: the FPN is exactly the source's; the classifier has one class now
    for key in (k for k in before if k.startswith("backbone.fpn.")):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert after["head.cls_score.weight"].shape[0] == 6 * 1  # 6 anchors per location x 1 class


def test_box_aware_augmentation_drops_are_logged(tmp_path):
    augment = ["data.train.augment.mosaic=1.0", "data.train.augment.crop.prob=1.0",
               "data.train.augment.crop.min_scale=0.3", "data.train.augment.crop.min_box_overlap=0.2",
               "solver.max_iter=4", "solver.checkpoint_period=4"]
    result = train_from_recipe(tiny_recipe(tmp_path / "aug", *augment))
    lines = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [line for line in lines if "boxes_dropped" in line]
    assert [line["iteration"] for line in logged] == [1, 3]  # every log period (2)
    for line in logged:
        assert line["boxes_dropped"] >= 0 and 0.0 <= line["boxes_dropped_frac"] <= 1.0

    plain = train_from_recipe(tiny_recipe(tmp_path / "plain", "solver.max_iter=2", "solver.checkpoint_period=2"))
    text = (plain.output_dir / "metrics.jsonl").read_text()
    assert "boxes_dropped" not in text  # the detectron2 path logs nothing new
