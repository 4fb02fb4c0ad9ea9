"""Malformed recipes: each gets one clear screen naming the key, and exit code 2."""

from __future__ import annotations

import pytest

from tests.cli_helpers import run_cli

CASES = [
    ("modle: {}\n", ["modle", "did you mean 'model'"]),
    ("model: {head: {num_clases: 3}}\n", ["model.head.num_clases", "did you mean 'num_classes'"]),
    ("model: {head: {num_classes: 0}}\n", ["model.head.num_classes", "greater than or equal to 1"]),
    ("model: {head: {prior_prob: 1.5}}\n", ["model.head.prior_prob", "less than 1"]),
    ("model: {backbone: {depth: 20}}\n", ["model.backbone.depth", "18, 34, 50 or 101"]),
    ("model: {backbone: {norm: batchnorm}}\n", ["model.backbone.norm", "FrozenBN"]),
    ("model: {backbone: {depth: 18}}\n", ["model.backbone", "res2_out_channels must be 64"]),
    ("model: {fpn: {in_features: [res3, res5]}}\n", ["model.fpn.in_features", "consecutive"]),
    ("model: {fpn: {in_features: [res2, res3, res4]}}\n", ["model", "fpn.in_features ['res2']"]),
    ("model: {anchors: {sizes: [[32], [64]]}}\n", ["model", "anchors.sizes has 2 levels"]),
    ("model: {anchors: {aspect_ratios: [-1]}}\n", ["model.anchors.aspect_ratios", "positive"]),
    ("model: {anchors: {sizes: [[32, 64]], scales: 3}}\n", ["model.anchors", "scales applies"]),
    ("model: {matcher: {iou_thresholds: [0.5, 0.4]}}\n", ["model.matcher.iou_thresholds", "non-decreasing"]),
    ("model: {matcher: {iou_labels: [0, 1]}}\n", ["model.matcher", "iou_labels needs one label per interval"]),
    ("model: {box_coder: {weights: [1, 1, 1]}}\n", ["model.box_coder.weights", "4 positive numbers"]),
    ("model: {pixel_mean: [1, 2]}\n", ["model.pixel_mean", "3 values"]),
    ("model: {input_format: YUV}\n", ["model.input_format", "'BGR' or 'RGB'"]),
    ("model: {loss: {box_loss: l2}}\n", ["model.loss.box_loss", "'smooth_l1' or 'giou'"]),
    ("solver: {steps: [100, 50]}\n", ["solver.steps", "strictly increasing"]),
    ("solver: {steps: [500, 1000], max_iter: 1000}\n", ["solver", "a step at max_iter 1000", "detectron2 refuses it"]),
    ("solver: {steps: [0, 5]}\n", ["solver.steps", "positive and strictly increasing"]),
    ("solver: {scheduler: WarmupCosineLR, base_lr: 0.01, base_lr_end: 0.1}\n", ["solver", "base_lr_end 0.1 is above base_lr 0.01"]),
    ("solver: {base_lr: -1}\n", ["solver.base_lr", "greater than 0"]),
    ("solver: {optimizer: Adam}\n", ["solver.optimizer", "'SGD' or 'AdamW'"]),
    ("solver: {max_iter: 1.5}\n", ["solver.max_iter", "integer"]),
    ("solver: {clip_gradients: {scope: full_model}}\n", ["solver.clip_gradients", "full_model needs clip_type norm"]),
    ("data: {train: {images_per_batch: 0}}\n", ["data.train.images_per_batch", "greater than or equal to 1"]),
    ("data: {train: {resize: {sampling: range, short_sizes: [1, 2, 3]}}}\n", ["data.train.resize", "needs short_sizes [min, max]"]),
    ("data: {train: {dataset: {kind: coco, images: x}}}\n", ["data.train.dataset.annotations", "required"]),
    ("data: {train: {dataset: {kind: lmdb}}}\n", ["data.train.dataset", "'coco', 'shapes'"]),
    ("data: {test: {dataset: {kind: shapes, image_size: [8, 4]}}}\n", ["data.test.dataset.image_size", "32 <= min <= max"]),
    ("device: gpu\n", ["device", "'auto', 'cpu' or 'cuda'"]),
    ("data: {test: {resize: {short_sizes: [640, 800]}}}\n", ["data.test.resize", "the test resize takes one short size"]),
    ("model: {test: {score_thresh: 1.0}}\n", ["model.test.score_thresh", "less than 1"]),
    ("model: {anchors: {sizes: '32..500'}}\n", ["model.anchors.sizes", "power of two"]),
    ("model: {anchors: {scales: 0}}\n", ["model.anchors.scales", "scales must be a whole number >= 1"]),
    ("", ["the file is empty", "or {} to take every default"]),
    ("# only a comment\n", ["the file is empty"]),
    ("seed: abc\n", ["seed", "integer"]),
    ("- model\n- data\n", ["must be a mapping", "got a list"]),
    ("model: {head: {num_classes: 3}\n", ["line", "not valid YAML"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0].strip()[:40] for c in CASES])
def test_malformed_recipe_gets_one_clear_screen(text, expected, tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "bad.yaml" in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.output


def test_error_names_the_line_of_the_key(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\nmodel:\n  head:\n    num_clases: 3\n")
    result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
    assert "bad.yaml line 4" in result.stderr


def test_error_in_a_base_names_the_base_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "base.yaml").write_text("solver:\n  base_lr: -3\n")
    path = tmp_path / "child.yaml"
    path.write_text("_base_: base.yaml\n")
    result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "solver.base_lr" in result.stderr and "base.yaml line 2" in result.stderr


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: abc\n")
    from retinacli.errors import RecipeError

    with pytest.raises(RecipeError):
        run_cli(["--debug", "inspect-config", str(path)], capsys, monkeypatch)


def test_an_empty_base_is_refused_too(tmp_path, capsys, monkeypatch):
    (tmp_path / "base.yaml").write_text("")
    path = tmp_path / "child.yaml"
    path.write_text("_base_: base.yaml\nseed: 3\n")
    result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
    assert result.exit_code == 2 and "base.yaml: the file is empty" in result.stderr


def test_an_explicit_empty_mapping_is_every_default(tmp_path, capsys, monkeypatch):
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n")
    result = run_cli(["inspect-config", str(path), "--diff"], capsys, monkeypatch)
    assert result.exit_code == 0 and "the recipe equals the defaults" in result.stdout
