"""`retina anchors`: the anchors of a recipe (or of the default recipe), measured and drawn.

The flags are overrides of the recipe, validated by its schema like `--set`, so there is one set
of defaults (detectron2's, in the schema) and one set of rules:

| flag | recipe key |
| --- | --- |
| `--sizes` | `model.anchors.sizes` |
| `--scales` | `model.anchors.scales` |
| `--aspect-ratios` | `model.anchors.aspect_ratios` |
| `--offset` | `model.anchors.offset` |
| `--strides` | `model.fpn.in_features` (and `model.backbone.out_features`): the strides of the pyramid levels the FPN builds from them |

The input size is the recipe's test resize (`build.inference_resize`), or `--image-size`, or
the test-resized size of `--image`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retinacli.anchors_tool.coverage import CoverageReport
from retinacli.anchors_tool.layout import AnchorLayout, AnchorSpec, describe_anchors
from retinacli.anchors_tool.suggest import Suggestion
from retinacli.build import build_anchor_spec, build_dataset, inference_resize
from retinacli.errors import UsageError
from retinacli.files import prepare_output_file
from retinacli.levels import stages_for_strides
from retinacli.recipe import Override, key_override, load_recipe

_IMAGE_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_NEEDS_RECIPE = (
    "--coverage/--suggest: needs a RECIPE (its training set and matcher); "
    "e.g. retina anchors recipes/raccoon.yaml --coverage"
)


@dataclass(frozen=True)
class AnchorsResult:
    """Everything `retina anchors` shows. `source` names the recipe or "the default recipe"."""

    source: str
    spec: AnchorSpec
    layout: AnchorLayout
    test_resize: tuple[int, int]  # (short side, max size) used for --image and coverage
    coverage: CoverageReport | None = None
    suggestion: Suggestion | None = None
    saved: list[Path] = field(default_factory=list)


def anchors(
    recipe: Path | None,
    overrides: Sequence[str | Override] = (),
    *,
    sizes: str | None = None,
    scales: int | None = None,
    aspect_ratios: str | None = None,
    offset: float | None = None,
    strides: str | None = None,
    image_size: str | None = None,
    image: Path | None = None,
    out: Path | None = None,
    coverage: bool = False,
    suggest: bool = False,
    worst: int = 10,
    overwrite: bool = False,
) -> AnchorsResult:
    """Resolve the anchors, then describe them and draw them (`out`, a PNG), or measure the
    coverage of the training boxes (`suggest` implies `coverage`; `out` is then the histogram).

    Raises:
        UsageError: contradictory or malformed options. RecipeError / DatasetError: from the
            recipe (flags included) and its training set.
    """
    coverage = coverage or suggest
    if coverage and recipe is None:
        raise UsageError(_NEEDS_RECIPE)
    if coverage and (image_size is not None or image is not None):
        raise UsageError(
            "--image-size/--image: coverage uses each training image's own test size; "
            "drop them with --coverage"
        )
    if image is not None and image_size is not None:
        raise UsageError(
            "--image and --image-size: the picture's test-resized size is the input size; give only one"
        )
    if image is not None and out is None:
        raise UsageError("--image: the picture is drawn under the anchors in --out; add --out anchors.png")
    if out is not None and out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the picture is a PNG file; give a name ending in .png")
    if worst < 0:
        raise UsageError(f"--worst {worst}: must be >= 0")
    if out is not None:
        prepare_output_file(out, overwrite=overwrite)

    flags = _flag_overrides(sizes=sizes, scales=scales, aspect_ratios=aspect_ratios, offset=offset, strides=strides)
    loaded = load_recipe(recipe, [*overrides, *flags])
    source = str(recipe) if recipe is not None else "the default recipe"
    spec = build_anchor_spec(loaded.model)
    test_resize = inference_resize(loaded.data.test)
    image_hw = (test_resize[0], max(test_resize))
    if image_size is not None:
        image_hw = parse_image_size(image_size)
    picture = None
    if image is not None:
        picture = _read_resized(image, test_resize)
        image_hw = picture.shape[:2]
    layout = describe_anchors(spec, image_hw)
    title = Path(source).name if recipe is not None else "anchors"

    if not coverage:
        saved = []
        if out is not None:
            from retinacli.anchors_tool.plots import save_anchor_png

            saved.append(save_anchor_png(layout, out, image=picture, title=title))
        return AnchorsResult(source=source, spec=spec, layout=layout, test_resize=test_resize, saved=saved)

    from retinacli.anchors_tool.coverage import coverage_report, gather_boxes
    from retinacli.anchors_tool.suggest import suggest_anchors

    dataset, _ = build_dataset(
        loaded.data.train.dataset,
        key="data.train.dataset",
        filter_empty=loaded.data.train.filter_empty,
        fix_bad_boxes=loaded.data.fix_bad_boxes,
    )
    gt = gather_boxes(dataset, short_size=test_resize[0], max_size=test_resize[1])
    matcher = loaded.model.matcher
    options: dict[str, Any] = {
        "threshold": matcher.iou_thresholds[-1],
        "allow_low_quality_matches": matcher.allow_low_quality_matches,
        "num_worst": worst,
    }
    suggestion = suggest_anchors(spec, gt, **options) if suggest else None
    report = suggestion.before if suggestion else coverage_report(spec, gt, **options)
    saved = []
    if out is not None:
        from retinacli.anchors_tool.plots import save_coverage_png

        after = suggestion.after if suggestion and suggestion.improved else None
        saved.append(save_coverage_png(report, out, size_buckets=gt.size_buckets, after=after, title=title))
    return AnchorsResult(
        source=source,
        spec=spec,
        layout=layout,
        test_resize=test_resize,
        coverage=report,
        suggestion=suggestion,
        saved=saved,
    )


def _flag_overrides(
    *,
    sizes: str | None,
    scales: int | None,
    aspect_ratios: str | None,
    offset: float | None,
    strides: str | None,
) -> list[Override]:
    """The recipe overrides the anchor flags stand for (module table)."""
    flags: list[Override] = []
    if sizes is not None:
        flags.append(key_override("model.anchors.sizes", sizes, origin=f"--sizes {sizes}"))
    if scales is not None:
        flags.append(key_override("model.anchors.scales", str(scales), origin=f"--scales {scales}"))
    if aspect_ratios is not None:
        flags.append(
            Override(("model", "anchors", "aspect_ratios"), _numbers_or_text(aspect_ratios), f"--aspect-ratios {aspect_ratios}")
        )
    if offset is not None:
        flags.append(key_override("model.anchors.offset", repr(offset), origin=f"--offset {offset:g}"))
    if strides is not None:
        stages = strides_to_stages(strides)
        origin = f"--strides {strides}"
        flags.append(Override(("model", "fpn", "in_features"), stages, origin))
        flags.append(Override(("model", "backbone", "out_features"), stages, origin))
    return flags


def strides_to_stages(text: str) -> list[str]:
    """The FPN `in_features` whose pyramid has the level strides `text` ('8,16,32,64,128').

    The FPN builds one level per consecutive backbone stage (res2..res5, strides 4..32) and two
    more (P6, P7) above the last, each stride double the one before; so the strides must double
    from 4, 8, 16 or 32, at least three of them, ending at most at 32 * 4 = 128 for res5.
    """
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    example = "e.g. 8,16,32,64,128 (p3..p7 from res3..res5, detectron2's RetinaNet)"
    if len(values) < 3 or values[0] < 1 or any(b != 2 * a for a, b in zip(values, values[1:], strict=False)):
        raise UsageError(
            f"--strides {text}: the FPN builds levels whose strides double, at least three "
            f"(one per backbone stage from res2..res5 plus P6 and P7); {example}"
        )
    stages = stages_for_strides(values)
    if stages is None:
        raise UsageError(
            f"--strides {text}: the backbone stages res2..res5 have strides 4..32, so the first "
            f"stride is 4, 8, 16 or 32 and the last at most 128; {example}"
        )
    return stages


def parse_image_size(text: str, *, option: str = "--image-size") -> tuple[int, int]:
    """'800x1333' -> (800, 1333): height x width of the model input, in pixels."""
    match = _IMAGE_SIZE.match(text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UsageError(f"{option} {text}: expected HEIGHTxWIDTH in pixels, e.g. 800x1333")
    return int(match[1]), int(match[2])


def _numbers_or_text(text: str) -> Any:
    """'0.5,1,2' -> [0.5, 1.0, 2.0]; anything else is passed on as YAML, for the schema to judge."""
    import yaml

    from retinacli.yaml_files import load_bounded

    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        try:
            return load_bounded(text)
        except yaml.YAMLError:
            return text


def _read_resized(path: Path, test_resize: tuple[int, int]) -> np.ndarray:
    """The picture at `path`, RGB (for drawing), resized by the test resize the model sees."""
    from retinacli.data.augment.resize_flip import resize_for_inference
    from retinacli.data.images import read_image

    pixels = read_image(path, input_format="RGB")
    return resize_for_inference(pixels, short_size=test_resize[0], max_size=test_resize[1])
