"""Recipes: valid files, round trips, _base_ chains, --set typing and the eval-tag refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from retinacli.errors import RecipeError
from retinacli.recipe import Recipe, diff_from_defaults, dump_recipe, load_recipe, parse_override

REPO = Path(__file__).resolve().parents[2]
BUNDLED = sorted((REPO / "recipes").glob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_detectron2_retinanet_defaults():
    r = Recipe()
    assert r.model.input_format == "BGR"
    assert r.model.pixel_mean == [103.530, 116.280, 123.675]
    assert r.model.pixel_std == [1.0, 1.0, 1.0]
    assert r.model.matcher.iou_thresholds == [0.4, 0.5]
    assert r.model.matcher.iou_labels == [0, -1, 1]
    assert r.model.head.prior_prob == 0.01
    assert (r.model.loss.focal_alpha, r.model.loss.focal_gamma) == (0.25, 2.0)
    assert r.model.loss.smooth_l1_beta == 0.0  # Base-RetinaNet.yaml (defaults.py has 0.1)
    t = r.model.test
    assert (t.score_thresh, t.topk_candidates, t.nms_thresh, t.detections_per_image) == (0.05, 1000, 0.5, 100)
    s = r.solver
    assert (s.warmup_factor, s.warmup_iters, s.warmup_method) == (0.001, 1000, "linear")
    assert (s.base_lr, s.steps, s.max_iter) == (0.01, [60000, 80000], 90000)
    assert len(r.model.anchors.sizes) == 5 and len(r.model.anchors.aspect_ratios) == 5
    assert r.model.fpn.level_names == ["p3", "p4", "p5", "p6", "p7"]
    assert r.model.fpn.level_strides == [8, 16, 32, 64, 128]


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_recipes_validate_and_round_trip(path, tmp_path):
    recipe = load_recipe(path)
    again = load_recipe(write(tmp_path, "again.yaml", dump_recipe(recipe)))
    assert again == recipe
    assert dump_recipe(again) == dump_recipe(recipe)


def test_coco_recipe_is_detectron2_r50_fpn_1x():
    r = load_recipe(REPO / "recipes" / "coco.yaml")
    assert r.data.train.images_per_batch == 16
    assert r.solver.base_lr == 0.01 and r.solver.max_iter == 90000
    assert r.solver.steps == [60000, 80000]
    assert r.data.train.resize.short_sizes == list(range(640, 801, 32))
    assert (r.data.test.resize.short_sizes, r.data.test.resize.max_size) == ([800], 1333)
    three_x = load_recipe(REPO / "recipes" / "coco_3x.yaml")
    assert three_x.solver.max_iter == 270000 and three_x.data == r.data


def test_round_trip_of_non_default_values(tmp_path):
    recipe = load_recipe(
        None,
        [
            "model.anchors.sizes=[[10.5, 13.25]]",
            "model.anchors.offset=0.5",
            "solver.scheduler=WarmupCosineLR",
            "data.train.dataset={kind: shapes, num_images: 10}",
        ],
    )
    again = load_recipe(write(tmp_path, "r.yaml", dump_recipe(recipe)))
    assert again == recipe
    assert again.model.anchors.sizes == [[10.5, 13.25]] * 5


def test_diff_from_defaults_shows_only_changes():
    recipe = load_recipe(None, ["solver.base_lr=0.02", "model.head.num_classes=3"])
    assert diff_from_defaults(recipe) == {"model": {"head": {"num_classes": 3}}, "solver": {"base_lr": 0.02}}
    assert diff_from_defaults(Recipe()) == {}


def test_base_chain_merges_child_over_parent(tmp_path):
    write(tmp_path, "c.yaml", "solver: {base_lr: 0.1, max_iter: 100, steps: [50]}\nseed: 3\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/b.yaml", "_base_: ../c.yaml\nsolver: {base_lr: 0.2}\n")
    a = write(tmp_path, "a.yaml", "_base_: sub/b.yaml\nsolver: {max_iter: 200}\n")
    r = load_recipe(a)
    assert (r.solver.base_lr, r.solver.max_iter, r.solver.steps, r.seed) == (0.2, 200, [50], 3)


def test_base_list_applies_in_order(tmp_path):
    write(tmp_path, "x.yaml", "seed: 1\nlog_period: 7\n")
    write(tmp_path, "y.yaml", "seed: 2\n")
    r = load_recipe(write(tmp_path, "a.yaml", "_base_: [x.yaml, y.yaml]\n"))
    assert (r.seed, r.log_period) == (2, 7)


def test_base_cycle_is_reported_with_the_chain(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(RecipeError, match=r"cycle .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_base_names_both_files(tmp_path):
    with pytest.raises(RecipeError, match=r"a\.yaml: _base_ 'nope.yaml' not found"):
        load_recipe(write(tmp_path, "a.yaml", "_base_: nope.yaml\n"))


def test_dataset_in_child_replaces_base_dataset_whole(tmp_path):
    write(tmp_path, "b.yaml", "data: {train: {dataset: {kind: coco, annotations: a.json, images: im}}}\n")
    a = write(tmp_path, "a.yaml", "_base_: b.yaml\ndata: {train: {dataset: {kind: shapes}}}\n")
    assert load_recipe(a).data.train.dataset.kind == "shapes"


@pytest.mark.parametrize(
    ("override", "path", "value"),
    [
        ("solver.base_lr=0.02", ["solver", "base_lr"], 0.02),
        ("solver.steps=[10, 20]", ["solver", "steps"], [10, 20]),
        ("model.backbone.stride_in_1x1=false", ["model", "backbone", "stride_in_1x1"], False),
        ("model.weights=123", ["model", "weights"], "123"),
        ("model.weights=null", ["model", "weights"], None),
        ("output_dir=007", ["output_dir"], "007"),
        ("model.anchors.sizes=16..256", ["model", "anchors", "sizes"], "16..256"),
        ("data.train.dataset={kind: shapes}", ["data", "train", "dataset"], {"kind": "shapes"}),
    ],
)
def test_set_values_are_parsed_by_the_key_type(override, path, value):
    parsed = parse_override(override)
    assert (list(parsed.key_path), parsed.value) == (path, value)
    assert parsed.origin == f"--set {override}"


def test_set_applies_after_the_file(tmp_path):
    path = write(tmp_path, "r.yaml", "solver: {base_lr: 0.5}\n")
    r = load_recipe(path, ["solver.base_lr=0.25", "model.anchors.sizes=16..256", "model.anchors.scales=2"])
    assert r.solver.base_lr == 0.25
    assert r.model.anchors.sizes[0] == [16.0, 16.0 * 2**0.5]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.base_rl=0.1", "did you mean 'base_lr'"),
        ("solver", "expected KEY=VALUE"),
        ("model.head.num_classes.x=1", "is a value, not a section"),
        ("solver..base_lr=1", "not a dotted key"),
        ("solver.steps=[1, 2", "not valid YAML"),
    ],
)
def test_bad_set_says_what_is_wrong(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, [override])


def test_set_value_of_wrong_type_names_the_key():
    with pytest.raises(RecipeError, match=r"solver\.max_iter[\s\S]*--set solver\.max_iter=lots"):
        load_recipe(None, ["solver.max_iter=lots"])


def test_detectron2_eval_tag_is_refused_with_safe_form(tmp_path):
    path = write(
        tmp_path,
        "d2.yaml",
        "model:\n  anchors:\n    sizes: !!python/object/apply:eval "
        '["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"]\n',
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "d2.yaml" in message and "line 3" in message and "model.anchors.sizes" in message
    assert 'sizes: "32..512"' in message and "scales: 3" in message
    # the suggested form gives exactly the sizes detectron2's expression computes
    suggested = load_recipe(None, ["model.anchors.sizes=32..512", "model.anchors.scales=3"])
    assert suggested.model.anchors.sizes == [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]


def test_any_python_tag_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = write(tmp_path, "evil.yaml", f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(RecipeError, match=r"line 1, seed: the tag !!python/object/apply:os.system"):
        load_recipe(path)
    assert not marker.exists()


def test_golden_detectron2_config_is_refused(shared_dir):
    with pytest.raises(RecipeError, match="!!python/object/apply:eval"):
        load_recipe(shared_dir / "golden" / "d2_retinanet_r18" / "config.yaml")


def test_environment_variables_expand_in_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("RETINA_DATASETS", "/data")
    r = load_recipe(REPO / "recipes" / "raccoon.yaml")
    assert r.data.train.dataset.annotations == "/data/raccoon/train.json"
    monkeypatch.delenv("RETINA_DATASETS")
    r = load_recipe(REPO / "recipes" / "raccoon.yaml")
    assert r.data.train.dataset.annotations == "../shared/data/raccoon/train.json"
    with pytest.raises(RecipeError, match="environment variable NOPE_NOT_SET is not set"):
        load_recipe(None, ["model.weights=${NOPE_NOT_SET}/w.pth"])


def test_json_dump_matches_yaml_dump():
    recipe = load_recipe(REPO / "recipes" / "shapes.yaml")
    assert json.loads(json.dumps(yaml.safe_load(dump_recipe(recipe)))) == yaml.safe_load(dump_recipe(recipe))
