"""`--suggest`: proposals keep the head valid and never lower coverage."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from retinacli.anchors_tool.coverage import GroundTruth, coverage_report
from retinacli.anchors_tool.layout import AnchorSpec
from retinacli.anchors_tool.suggest import suggest_anchors
from retinacli.build import build_anchor_spec
from retinacli.recipe import Recipe, recipe_from_dict

THRESHOLD = 0.5


def _boxes(
    rng: np.random.Generator, n: int, *, sizes: tuple[float, float], ratios: tuple[float, float]
) -> GroundTruth:
    """n boxes of log-uniform side in `sizes` and h/w in `ratios`, placed in 4 images of 320x480."""
    side = np.exp(rng.uniform(*np.log(sizes), n))
    ratio = np.exp(rng.uniform(*np.log(ratios), n))
    w, h = side / np.sqrt(ratio), side * np.sqrt(ratio)
    w, h = np.minimum(w, 470), np.minimum(h, 310)
    x0, y0 = rng.uniform(0, 480 - w), rng.uniform(0, 320 - h)
    boxes = np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)
    return GroundTruth(
        boxes=boxes,
        original_boxes=boxes,
        labels=np.zeros(n, dtype=np.int64),
        image_index=rng.integers(0, 4, n),
        image_ids=np.arange(4),
        file_names=tuple(f"img{i}.png" for i in range(4)),
        resized_hw=np.full((4, 2), (320, 480)),
        class_names=("object",),
    )


def _default_spec() -> AnchorSpec:
    return build_anchor_spec(Recipe().model)  # detectron2's 32..512, 3 scales, ratios 0.5, 1, 2


def _key(report) -> tuple[int, int]:
    return report.overall.positive, report.overall.total - report.overall.none


@pytest.mark.parametrize(
    ("sizes", "ratios"),
    [((40, 300), (0.3, 3.0)), ((60, 90), (2.5, 4.0)), ((100, 300), (0.9, 1.1))],
)
def test_never_lower_coverage_and_structure_kept(sizes, ratios) -> None:
    spec = _default_spec()
    gt = _boxes(np.random.default_rng(1), 150, sizes=sizes, ratios=ratios)
    suggestion = suggest_anchors(spec, gt, threshold=THRESHOLD)
    assert _key(suggestion.after) >= _key(suggestion.before)
    before = coverage_report(spec, gt, threshold=THRESHOLD)
    assert suggestion.before.overall == before.overall
    # The head stays valid: same levels, sizes per level, ratios shared, A per location.
    assert len(suggestion.sizes) == 5 and all(len(level) == 3 for level in suggestion.sizes)
    assert (
        len({tuple(r) for r in suggestion.aspect_ratios}) == 1
        and len(suggestion.aspect_ratios[0]) == 3
    )
    if suggestion.improved:
        assert _key(suggestion.after) > _key(suggestion.before)
        proposed = spec.with_anchors(sizes=suggestion.sizes, aspect_ratios=suggestion.aspect_ratios)
        # "after" is the coverage of exactly the printed anchors.
        assert (
            coverage_report(proposed, gt, threshold=THRESHOLD).overall == suggestion.after.overall
        )
    else:
        assert suggestion.after is suggestion.before and suggestion.candidate == "recipe"


def test_small_objects_get_better_anchors_and_the_snippet_is_a_valid_recipe() -> None:
    # 8..20 px squares: the default 32-px p3 anchors reach IoU 0.5 with hardly any of them.
    spec = _default_spec()
    gt = _boxes(np.random.default_rng(2), 200, sizes=(8, 20), ratios=(0.8, 1.25))
    suggestion = suggest_anchors(spec, gt, threshold=THRESHOLD)
    assert suggestion.improved
    assert suggestion.after.coverage > suggestion.before.coverage + 0.3
    snippet = yaml.safe_load(suggestion.snippet())
    recipe = recipe_from_dict(snippet)
    assert recipe.model.anchors.sizes == [list(level) for level in suggestion.sizes]
    assert recipe.model.anchors.aspect_ratios == [list(r) for r in suggestion.aspect_ratios]


def test_keeps_anchors_that_already_cover_everything() -> None:
    # Boxes identical to p5 cell anchors centred on grid points: all IoU 1 already.
    spec = _default_spec()
    cells = spec.generator().cell_anchors[2].numpy()  # p5, stride 32
    boxes = (cells + np.array([224, 160, 224, 160], dtype=np.float32))[[1, 4, 7]]
    gt = GroundTruth(
        boxes=boxes,
        original_boxes=boxes,
        labels=np.zeros(3, dtype=np.int64),
        image_index=np.zeros(3, dtype=np.int64),
        image_ids=np.zeros(1, dtype=np.int64),
        file_names=("img.png",),
        resized_hw=np.array([[320, 480]]),
        class_names=("object",),
    )
    suggestion = suggest_anchors(spec, gt, threshold=THRESHOLD)
    assert suggestion.before.coverage == 1.0
    assert not suggestion.improved and suggestion.sizes == spec.sizes
    assert "scales: null" in suggestion.snippet()
