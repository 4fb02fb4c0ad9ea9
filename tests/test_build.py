"""The builder: every value the schema accepts builds an engine object (the ranges agree), and
the one test-resize rule."""

from __future__ import annotations

import math
from collections.abc import Iterator

import annotated_types
import pytest
from pydantic import BaseModel

from retinacli.build import build_model, build_schedule, inference_resize
from retinacli.recipe import load_recipe
from retinacli.recipe.schema import LossConfig, MatcherConfig, ModelConfig, TestConfig

# A small model so that every build is fast.
SMALL = ["model.backbone.depth=18", "model.backbone.res2_out_channels=64", "model.fpn.out_channels=32",
         "model.head.num_convs=1", "model.head.num_classes=2"]


def _bounded_fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, float]]:
    """(key, value) for each numeric bound of the section's fields: the value itself where the
    bound is inclusive (ge/le), a step inside it where it is strict (gt/lt)."""
    for name, info in model.model_fields.items():
        for bound in info.metadata:
            if isinstance(bound, annotated_types.Ge):
                yield f"{prefix}{name}", bound.ge
            elif isinstance(bound, annotated_types.Le):
                yield f"{prefix}{name}", bound.le
            elif isinstance(bound, annotated_types.Gt):
                yield f"{prefix}{name}", bound.gt + 1e-6
            elif isinstance(bound, annotated_types.Lt):
                yield f"{prefix}{name}", bound.lt - 1e-6


SECTIONS = [(TestConfig, "model.test."), (LossConfig, "model.loss."), (MatcherConfig, "model.matcher.")]
EDGES = [edge for model, prefix in SECTIONS for edge in _bounded_fields(model, prefix)]
EDGES += [(f"model.head.{k}", v) for k, v in _bounded_fields(ModelConfig.model_fields["head"].annotation, "")]
EDGES += [
    (f"model.anchors.{k}", v) for k, v in _bounded_fields(ModelConfig.model_fields["anchors"].annotation, "")
    if k != "scales"
]
EDGES += [
    (f"model.box_coder.{k}", v) for k, v in _bounded_fields(ModelConfig.model_fields["box_coder"].annotation, "")
]


def test_the_edge_list_covers_the_inference_ranges():
    keys = {key for key, _ in EDGES}
    assert {"model.test.score_thresh", "model.test.nms_thresh", "model.test.topk_candidates",
            "model.head.prior_prob", "model.anchors.offset"} <= keys


@pytest.mark.parametrize(("key", "value"), EDGES, ids=[f"{k}={v:g}" for k, v in EDGES])
def test_every_value_the_schema_accepts_builds_a_model(key, value):
    number = int(value) if float(value).is_integer() and "thresh" not in key else value
    recipe = load_recipe(None, [*SMALL, f"{key}={number!r}"])
    assert math.isfinite(float(number))
    build_model(recipe.model)  # the engine's own checks agree with the schema's


def test_schedules_the_schema_accepts_build():
    for scheduler in ("WarmupMultiStepLR", "WarmupCosineLR"):
        recipe = load_recipe(None, [f"solver.scheduler={scheduler}", "solver.max_iter=10", "solver.steps=[9]",
                                    "solver.warmup_iters=0", "solver.warmup_factor=1.0"])
        assert build_schedule(recipe.solver).lr_at(9) > 0


def test_one_test_resize_for_every_consumer():
    recipe = load_recipe(None, ["data.test.resize.short_sizes=[512]", "data.test.resize.max_size=853"])
    assert inference_resize(recipe.data.test) == (512, 853)


def _augment_edges() -> list[tuple[str, float]]:
    from retinacli.recipe.schema import AugmentConfig

    edges = list(_bounded_fields(AugmentConfig, "data.train.augment."))
    for name, info in AugmentConfig.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            edges += list(_bounded_fields(info.annotation, f"data.train.augment.{name}."))
    return edges


AUGMENT_EDGES = _augment_edges()


def test_the_augment_edges_cover_every_augmentation():
    keys = {key for key, _ in AUGMENT_EDGES}
    for name in ("color", "expand", "crop", "scale_jitter"):
        assert f"data.train.augment.{name}.prob" in keys
    assert {"data.train.augment.mosaic", "data.train.augment.vertical_flip", "data.train.augment.min_visible"} <= keys


@pytest.mark.parametrize(("key", "value"), AUGMENT_EDGES, ids=[f"{k}={v:g}" for k, v in AUGMENT_EDGES])
def test_every_augment_value_the_schema_accepts_builds(key, value):
    from retinacli.build import build_box_augment

    number = int(value) if key.endswith(".fill") else value
    overrides = [f"{key}={number!r}"]
    if key.endswith("scale_jitter.min_scale"):  # keep min <= max at the edge
        overrides.append(f"data.train.augment.scale_jitter.max_scale={max(number, 1.5)!r}")
    if key.endswith("scale_jitter.max_scale"):
        overrides.append(f"data.train.augment.scale_jitter.min_scale={min(number, 0.5)!r}")
    recipe = load_recipe(None, overrides)
    build_box_augment(recipe.data.train)  # the data layer's own checks agree with the schema's


def test_box_augment_is_none_by_default_and_carries_every_key():
    from retinacli.build import build_box_augment

    assert build_box_augment(load_recipe(None).data.train) is None
    recipe = load_recipe(None, [
        "data.train.augment.color.prob=0.8", "data.train.augment.color.hue=0.1",
        "data.train.augment.expand.prob=0.3", "data.train.augment.expand.max_ratio=3.0",
        "data.train.augment.crop.prob=0.4", "data.train.augment.crop.min_box_overlap=0.7",
        "data.train.augment.scale_jitter.prob=0.5", "data.train.augment.scale_jitter.max_scale=2.0",
        "data.train.augment.vertical_flip=0.5", "data.train.augment.mosaic=0.25",
        "data.train.augment.min_visible=0.3", "data.train.augment.fill=0",
    ])
    spec = build_box_augment(recipe.data.train)
    assert spec is not None
    assert (spec.color.prob, spec.color.hue, spec.expand.prob, spec.expand.max_ratio) == (0.8, 0.1, 0.3, 3.0)
    assert (spec.crop.prob, spec.crop.min_box_overlap, spec.scale_jitter.prob, spec.scale_jitter.max_scale) == (
        0.4, 0.7, 0.5, 2.0)
    assert (spec.vertical_flip, spec.mosaic, spec.min_visible, spec.fill) == (0.5, 0.25, 0.3, 0)


def test_a_dataset_named_by_flags_is_named_by_its_flags_not_recipe_keys(tmp_path):
    from retinacli.build import DatasetFiles, build_given_dataset
    from retinacli.errors import DatasetError

    with pytest.raises(DatasetError, match=r"^--check-images .*nowhere: image folder not found"):
        build_given_dataset(DatasetFiles(tmp_path / "a.json", tmp_path / "nowhere"), flags=("--check-dataset", "--check-images"))
    with pytest.raises(DatasetError, match="a.json") as info:
        build_given_dataset(DatasetFiles(tmp_path / "a.json", tmp_path))  # no json there
    assert "--set" not in str(info.value) and "in the recipe" not in str(info.value)
