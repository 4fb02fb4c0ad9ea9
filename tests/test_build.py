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
