"""The recipe schema: every key a recipe may hold, its type, default and meaning.

One name per concept end to end: the YAML key, the field here, the engine argument and the
`--set` path (`--set model.test.score_thresh=0.3`) are the same. Defaults are detectron2's
RetinaNet defaults (`Base-RetinaNet.yaml` on top of `defaults.py`), so an empty recipe with a
dataset is detectron2's RetinaNet R50-FPN 1x. Every model is frozen: a recipe is resolved once
at the edge and never mutated.

Each field's description is its documentation; `docs/recipe.md` is checked against it.

Every number has an upper bound a detectron2 user could need and no more (the `MAX_*` constants
below say why), so that no recipe, from whomever it comes, makes a command allocate or loop
without end; infinite and NaN floats are refused everywhere (`allow_inf_nan=False`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from retinacli.levels import STAGES, level_stride, pyramid_levels
from retinacli.recipe.anchor_sizes import MAX_SCALES, AnchorSizeError, parse_anchor_sizes

ResNetStage = Literal["res2", "res3", "res4", "res5"]
Norm = Literal["FrozenBN", "BN", "GN", "SyncBN"]

MAX_ITERATIONS = 10**8
MAX_TIME_BUDGET = 366 * 24 * 3600.0  # a year, in seconds: a bound on what a recipe may ask
"""Iterations (max_iter, steps, warmup, periods): detectron2's longest model-zoo schedule is
270000 iterations; 10**8 is a year at 3 iterations per second."""
MAX_IMAGE_SIDE = 10_000
"""Resize sizes and anchor sizes in pixels: detectron2 resizes COCO and LVIS to at most 1333 and
tests at up to 1600-2000; aerial images are tiled. At 10000 px a single image's p3 features
already take 10000**2 / 64 * 256 * 4 bytes = 1.6 GB."""
MAX_CHANNELS = 4096
"""Feature channels (FPN, stem): detectron2 uses 256 for the FPN; the widest published
RetinaNet variants use 512 to 1024."""
MAX_CLASSES = 10_000
"""Object classes: LVIS has 1203, Objects365 365, Open Images 601."""
MAX_IMAGES_PER_BATCH = 4096
"""Training images per iteration over all processes: detectron2's large-batch runs use 256."""
MAX_TEST_IMAGES_PER_BATCH = 256
"""Inference images per batch in one process (detectron2 uses 1)."""
MAX_WORKERS = 256
"""Data-loading processes per training process (the largest machines have 256 cores)."""
MAX_ANCHOR_RATIOS = 64
"""Aspect ratios per level (detectron2 uses 3); `anchor_sizes.MAX_SCALES` bounds sizes per level."""
MAX_SEED = 2**32 - 1
"""Seeds: numpy's legacy generator takes seeds below 2**32."""


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values never change, and floats
    are finite (`inf`, `nan` and a YAML `.inf` are refused with the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- model


class BackboneConfig(Section):
    """The ResNet bottom-up network (detectron2 `MODEL.RESNETS`, `MODEL.BACKBONE`)."""

    depth: Literal[18, 34, 50, 101] = Field(
        50, description="ResNet depth: 18 and 34 use basic blocks, 50 and 101 bottlenecks."
    )
    norm: Norm = Field(
        "FrozenBN",
        description="Normalisation after each convolution: FrozenBN (fixed statistics, the "
        "default for pretrained backbones), BN, GN (32 groups), SyncBN (BN synchronised across "
        "processes).",
    )
    freeze_at: int = Field(
        2,
        ge=0,
        le=5,
        description="Freeze the stem (1) and the stages up to res<freeze_at> (2..5): their "
        "parameters get no gradient. 0 trains everything.",
    )
    stride_in_1x1: bool = Field(
        True,
        description="Bottlenecks put the stride-2 in the first 1x1 convolution (MSRA/Caffe2 "
        "weights) instead of the 3x3 one (torchvision weights). Ignored for depth 18/34.",
    )
    stem_out_channels: int = Field(64, ge=1, le=MAX_CHANNELS, description="Channels out of the 7x7 stem.")
    res2_out_channels: int = Field(
        256,
        ge=1,
        le=MAX_CHANNELS // 8,
        description="Channels out of res2; doubled per stage after it (res5 has 8 times as many, "
        "so at most 4096). Must be 64 for depth 18/34.",
    )
    out_features: list[ResNetStage] = Field(
        default_factory=lambda: ["res3", "res4", "res5"],
        description="Stages whose outputs the backbone returns (in order).",
    )

    @field_validator("out_features")
    @classmethod
    def _ordered(cls, value: list[str]) -> list[str]:
        _check_stage_order(value, "out_features")
        return value

    @model_validator(mode="after")
    def _check(self) -> BackboneConfig:
        if self.depth in (18, 34) and self.res2_out_channels != 64:
            raise ValueError(
                f"res2_out_channels must be 64 for depth {self.depth} (basic blocks do not "
                f"expand), got {self.res2_out_channels}"
            )
        return self


class FPNConfig(Section):
    """The feature pyramid on top of the backbone (detectron2 `MODEL.FPN`)."""

    in_features: list[ResNetStage] = Field(
        default_factory=lambda: ["res3", "res4", "res5"],
        description="Backbone stages the pyramid is built from, consecutive and in order; "
        "res3..res5 give p3..p5, and the top block adds p6 and p7.",
    )
    out_channels: int = Field(256, ge=1, le=MAX_CHANNELS, description="Channels of every pyramid level.")
    norm: Literal["none", "BN", "GN", "SyncBN"] = Field(
        "none", description="Normalisation in the lateral and output convolutions."
    )
    fuse_type: Literal["sum", "avg"] = Field(
        "sum", description="How the top-down and lateral features are combined."
    )
    top_block_input: Literal["res5", "p5"] = Field(
        "res5",
        description="Where P6/P7 come from: res5, the backbone's last stage (detectron2), or "
        "p5, the pyramid's last level (torchvision).",
    )

    @field_validator("in_features")
    @classmethod
    def _consecutive(cls, value: list[str]) -> list[str]:
        _check_stage_order(value, "in_features")
        indices = [STAGES.index(s) for s in value]
        if indices != list(range(indices[0], indices[0] + len(indices))):
            raise ValueError("in_features must be consecutive stages")
        return value

    @property
    def level_names(self) -> list[str]:
        """Names of the pyramid levels the head sees, e.g. ['p3', 'p4', 'p5', 'p6', 'p7']."""
        return pyramid_levels(self.in_features)

    @property
    def level_strides(self) -> list[int]:
        """Stride of each pyramid level in input pixels, e.g. [8, 16, 32, 64, 128]."""
        return [level_stride(name) for name in self.level_names]


class AnchorsConfig(Section):
    """Anchor boxes per pyramid level (detectron2 `MODEL.ANCHOR_GENERATOR`)."""

    sizes: list[list[float]] = Field(
        default_factory=lambda: parse_anchor_sizes("32..512", scales=3),
        description="Anchor side lengths in input pixels (at most 10000, at most 64 per level), "
        "one list per level. Accepts "
        "'32..512' (doubling per level, expanded by scales), a list of base sizes per level "
        "([32, 64, 128, 256, 512], expanded by scales) or explicit per-level lists (one inner "
        "list applies to every level). Default: '32..512' with scales 3.",
    )
    scales: int | None = Field(
        None,
        ge=1,
        le=MAX_SCALES,
        description="Sizes per level for the compact forms of sizes: base x becomes "
        "[x * 2**(i/scales) for i < scales]. Input only: the resolved recipe holds explicit sizes.",
    )
    aspect_ratios: list[list[float]] = Field(
        default_factory=lambda: [[0.5, 1.0, 2.0]],
        description="Height/width ratios in [0.001, 1000], at most 64 per level; one list per level "
        "or one list for every level (a flat list such as [0.5, 1, 2] also means every level).",
    )
    offset: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Anchor centres sit at (i + offset) * stride; 0.0 is detectron2's default, "
        "0.5 centres them in their cell.",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "sizes" in data or data.get("scales") is not None:
            try:
                data["sizes"] = parse_anchor_sizes(data.get("sizes", "32..512"), scales=data.get("scales"))
            except AnchorSizeError as exc:
                key = "scales" if str(exc).startswith("scales") else "sizes"
                raise _error_at(cls, key, str(exc), data.get(key)) from None
        data["scales"] = None
        ratios = data.get("aspect_ratios")
        if isinstance(ratios, list) and ratios and all(_is_number(r) for r in ratios):
            data["aspect_ratios"] = [ratios]
        return data

    @field_validator("sizes")
    @classmethod
    def _bounded_sizes(cls, value: list[list[float]]) -> list[list[float]]:
        if any(len(level) > MAX_SCALES for level in value):
            raise ValueError(f"anchors.sizes takes at most {MAX_SCALES} sizes per level (detectron2 uses 3)")
        if any(size > MAX_IMAGE_SIDE for level in value for size in level):
            raise ValueError(f"anchor sizes must be at most {MAX_IMAGE_SIDE} pixels, the largest image side")
        return value

    @field_validator("aspect_ratios")
    @classmethod
    def _positive_ratios(cls, value: list[list[float]]) -> list[list[float]]:
        if not value or any(not level for level in value):
            raise ValueError("aspect_ratios needs at least one ratio per level")
        if any(len(level) > MAX_ANCHOR_RATIOS for level in value):
            raise ValueError(f"aspect_ratios takes at most {MAX_ANCHOR_RATIOS} ratios per level (detectron2 uses 3)")
        if any(not math.isfinite(r) or not 1e-3 <= r <= 1e3 for level in value for r in level):
            raise ValueError("aspect ratios must be positive numbers in [0.001, 1000]")
        return value


class HeadConfig(Section):
    """The classification and box-regression subnets (detectron2 `MODEL.RETINANET`)."""

    num_classes: int = Field(
        80, ge=1, le=MAX_CLASSES, description="Number of object classes, without background."
    )
    num_convs: int = Field(4, ge=0, le=32, description="3x3 convolutions (+ ReLU) in each subnet.")
    norm: Literal["none", "BN", "GN", "SyncBN"] = Field(
        "none",
        description="Normalisation after each subnet convolution: GN is shared across levels; BN "
        "and SyncBN keep running statistics per level with a shared affine transform, as "
        "detectron2's head does.",
    )
    prior_prob: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="Initial foreground probability of every anchor; sets the classification "
        "bias to -log((1 - p) / p) so early training is stable.",
    )


class MatcherConfig(Section):
    """How anchors are labelled from their IoU with ground truth (detectron2 `Matcher`)."""

    iou_thresholds: list[float] = Field(
        default_factory=lambda: [0.4, 0.5],
        max_length=16,
        description="Increasing IoU thresholds splitting [0, 1] into len+1 intervals.",
    )
    iou_labels: list[Literal[-1, 0, 1]] = Field(
        default_factory=lambda: [0, -1, 1],
        description="Label of each interval: 0 background, -1 ignored, 1 foreground.",
    )
    allow_low_quality_matches: bool = Field(
        True,
        description="Also make foreground every anchor whose IoU equals a ground-truth box's "
        "best IoU (ties included), so every box gets at least one anchor.",
    )

    @field_validator("iou_thresholds")
    @classmethod
    def _ordered(cls, t: list[float]) -> list[float]:
        if not t or any(not 0.0 < x <= 1.0 for x in t) or any(t[i] > t[i + 1] for i in range(len(t) - 1)):
            raise ValueError("iou_thresholds must be non-decreasing values in (0, 1]")
        return t

    @model_validator(mode="after")
    def _check(self) -> MatcherConfig:
        t = self.iou_thresholds
        if len(self.iou_labels) != len(t) + 1:
            raise ValueError(
                f"iou_labels needs one label per interval, i.e. {len(t) + 1} for "
                f"{len(t)} thresholds, got {len(self.iou_labels)}"
            )
        return self


class BoxCoderConfig(Section):
    """Box regression targets (detectron2 `Box2BoxTransform`)."""

    weights: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0],
        description="Weights (wx, wy, ww, wh) the deltas are multiplied by when encoding.",
    )
    scale_clamp: float = Field(
        math.log(1000.0 / 16),
        gt=0.0,
        description="Upper bound of dw and dh when decoding, log(1000/16) by default, so no "
        "predicted box grows more than 62.5 times its anchor.",
    )

    @field_validator("weights")
    @classmethod
    def _four_positive(cls, value: list[float]) -> list[float]:
        if len(value) != 4 or any(w <= 0 for w in value):
            raise ValueError("weights must be 4 positive numbers (wx, wy, ww, wh)")
        return value


class LossConfig(Section):
    """Training losses (detectron2 `MODEL.RETINANET.FOCAL_LOSS_*`, `BBOX_REG_LOSS_TYPE`)."""

    focal_alpha: float = Field(
        0.25, le=1.0, description="Focal loss weight of positives in [0, 1]; negative disables it."
    )
    focal_gamma: float = Field(2.0, ge=0.0, description="Focal loss focusing exponent.")
    box_loss: Literal["smooth_l1", "giou"] = Field(
        "smooth_l1",
        description="smooth_l1 on encoded deltas, or giou on decoded boxes.",
    )
    smooth_l1_beta: float = Field(
        0.0,
        ge=0.0,
        description="Smooth L1 transition point; 0 means plain L1. 0.0 is Base-RetinaNet.yaml's "
        "value, which every RetinaNet model-zoo config inherits (detectron2's defaults.py has 0.1).",
    )


class TestConfig(Section):
    """Inference (detectron2 `*_TEST` keys)."""

    __test__ = False  # not a pytest class

    score_thresh: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Candidates need a score strictly above this (so 1.0 would keep nothing).",
    )
    topk_candidates: int = Field(
        1000, ge=1, le=100_000, description="Best candidates kept per level before NMS."
    )
    nms_thresh: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Class-wise NMS suppresses boxes with IoU above this (1.0 suppresses nothing).",
    )
    detections_per_image: int = Field(
        100, ge=1, le=10_000, description="Detections kept per image (LVIS evaluations keep 300)."
    )


class ModelConfig(Section):
    """The detector."""

    input_format: Literal["BGR", "RGB"] = Field(
        "BGR",
        description="Channel order the model takes; pixel_mean and pixel_std are in this order. "
        "BGR for detectron2/MSRA weights, RGB for torchvision weights.",
    )
    pixel_mean: list[float] = Field(
        default_factory=lambda: [103.530, 116.280, 123.675],
        description="Per-channel mean subtracted from 0..255 pixels.",
    )
    pixel_std: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        description="Per-channel divisor after the mean is subtracted.",
    )
    weights: str | None = Field(
        None,
        description="File to initialise from: a retinacli checkpoint, a detectron2 .pth or "
        "model-zoo .pkl, or ImageNet backbone weights (torchvision resnet*.pth or detectron2's "
        "MSRA R-50.pkl); or zoo:NAME (`retina weights list`), downloaded and verified into "
        "torch's hub cache when training starts, which also sets input_format, pixel_mean, "
        "pixel_std and the backbone's depth, res2_out_channels and stride_in_1x1 to the weights' "
        "values (a recipe that sets one otherwise is refused). Initialising is not resuming: the "
        "iteration starts at 0. ${VAR} and ${VAR:-default} are expanded.",
    )
    freeze: list[Literal["fpn", "head.cls_subnet", "head.bbox_subnet", "head.cls_score", "head.bbox_pred"]] = Field(
        default_factory=list,
        description="Parts that get no gradient, e.g. [fpn, head.bbox_subnet] to fine-tune only "
        "the classifier; the backbone's stages are frozen by backbone.freeze_at (5: all).",
    )
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    fpn: FPNConfig = Field(default_factory=FPNConfig)
    anchors: AnchorsConfig = Field(default_factory=AnchorsConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    matcher: MatcherConfig = Field(default_factory=MatcherConfig)
    box_coder: BoxCoderConfig = Field(default_factory=BoxCoderConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    test: TestConfig = Field(default_factory=TestConfig)

    @field_validator("pixel_mean", "pixel_std")
    @classmethod
    def _three_channels(cls, value: list[float], info: Any) -> list[float]:
        if len(value) != 3:
            raise ValueError("needs 3 values, one per channel")
        if info.field_name == "pixel_std" and any(s <= 0 for s in value):
            raise ValueError("pixel_std values must be positive")
        return value

    @field_validator("weights")
    @classmethod
    def _expand_weights(cls, value: str | None) -> str | None:
        return None if value in (None, "") else expand_env(value)

    @model_validator(mode="before")
    @classmethod
    def _anchors_per_level(cls, data: Any) -> Any:
        # One list of sizes or aspect ratios applies to every pyramid level (detectron2's rule);
        # it is expanded here, before the model is built, so the resolved recipe holds one list
        # per level. Invalid sections are left alone: validation then reports them by key path.
        if not isinstance(data, dict):
            return data
        try:
            fpn = FPNConfig.model_validate(data.get("fpn", {}))
            anchors = AnchorsConfig.model_validate(data.get("anchors", {}))
        except ValidationError:
            return data
        levels = len(fpn.level_names)
        update = {
            key: [list(getattr(anchors, key)[0]) for _ in range(levels)]
            for key in ("sizes", "aspect_ratios")
            if len(getattr(anchors, key)) == 1 and levels > 1
        }
        return {**data, "anchors": anchors.model_copy(update=update)} if update else data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        missing = [f for f in self.fpn.in_features if f not in self.backbone.out_features]
        if missing:
            raise ValueError(
                f"fpn.in_features {missing} are not in backbone.out_features "
                f"{self.backbone.out_features}; add them there"
            )
        levels = len(self.fpn.level_names)
        for key in ("sizes", "aspect_ratios"):
            per_level = getattr(self.anchors, key)
            if len(per_level) != levels:
                raise ValueError(
                    f"anchors.{key} has {len(per_level)} levels but the pyramid has {levels} "
                    f"({', '.join(self.fpn.level_names)}); give one list per level or one for all"
                )
        counts = {
            len(s) * len(r)
            for s, r in zip(self.anchors.sizes, self.anchors.aspect_ratios, strict=True)
        }
        if len(counts) != 1:
            raise ValueError(
                "every level needs the same number of anchors (sizes x aspect ratios), since the "
                f"head is shared across levels; got {sorted(counts)}"
            )
        return self


# ----------------------------------------------------------------------------- data


class CocoDataset(Section):
    """A COCO-format detection json plus the folder its `file_name`s are relative to."""

    kind: Literal["coco"] = Field("coco", description="Selects a COCO json dataset.")
    annotations: str = Field(
        description="Path to the COCO json. ${VAR} and ${VAR:-default} are expanded."
    )
    images: str = Field(description="Folder the json's file_name entries are relative to.")

    @field_validator("annotations", "images")
    @classmethod
    def _expand(cls, value: str) -> str:
        return expand_env(value)


class ShapesDataset(Section):
    """The built-in synthetic dataset: shapes on textured backgrounds, made from a seed."""

    kind: Literal["shapes"] = Field("shapes", description="Selects the synthetic shapes dataset.")
    split: Literal["train", "test"] = Field(
        "train", description="Which split of the generator (they use different seeds)."
    )
    num_images: int = Field(256, ge=1, le=100_000, description="Images in this split (written to cache_dir).")
    image_size: list[int] = Field(
        default_factory=lambda: [192, 256],
        description="Smallest and largest image side in pixels [min, max], at most 4096.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Same seed, same images and boxes.")
    classes: list[Literal["circle", "square", "triangle", "diamond", "cross"]] = Field(
        default_factory=lambda: ["circle", "square", "triangle"],
        description="The shapes to draw, in class order (category id i + 1 is classes[i]).",
    )
    objects_per_image: list[int] = Field(
        default_factory=lambda: [0, 6],
        description="Fewest and most objects per image [min, max] (0 allows empty images; at most 1000).",
    )
    cache_dir: str = Field(
        "${RETINA_CACHE:-.cache/retinacli}/shapes",
        description="Where the generated images and COCO json are written once and reused.",
    )

    @field_validator("image_size")
    @classmethod
    def _size_range(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or value[0] < 32 or value[1] < value[0] or value[1] > 4096:
            raise ValueError("image_size must be [min, max] with 32 <= min <= max <= 4096")
        return value

    @field_validator("objects_per_image")
    @classmethod
    def _count_range(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or value[0] < 0 or value[1] < value[0] or value[1] > 1000:
            raise ValueError("objects_per_image must be [min, max] with 0 <= min <= max <= 1000")
        return value

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("classes must be distinct shape names")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _expand(cls, value: str) -> str:
        return expand_env(value)


Dataset = Annotated[CocoDataset | ShapesDataset, Field(discriminator="kind")]


class ResizeConfig(Section):
    """ResizeShortestEdge: the short side is set, the long side capped (detectron2 rounding)."""

    short_sizes: list[int] = Field(
        default_factory=lambda: [800],
        max_length=64,
        description="Short-side lengths in pixels (at most 10000): one is chosen per image "
        "('choice'), or [min, max] to sample from ('range').",
    )
    sampling: Literal["choice", "range"] = Field(
        "choice", description="How the short side is picked from short_sizes."
    )
    max_size: int = Field(1333, ge=1, le=MAX_IMAGE_SIDE, description="Cap on the long side in pixels.")

    @field_validator("short_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= s <= MAX_IMAGE_SIDE for s in value):
            raise ValueError(f"short_sizes must be a non-empty list of pixel counts in 1..{MAX_IMAGE_SIDE}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ResizeConfig:
        if self.sampling == "range" and (
            len(self.short_sizes) != 2 or self.short_sizes[0] > self.short_sizes[1]
        ):
            raise ValueError(
                f"sampling 'range' needs short_sizes [min, max], got {self.short_sizes}"
            )
        return self


class ColorAugmentConfig(Section):
    """Colour jitter (torchvision ColorJitter's factors); boxes do not move."""

    prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability per sample; 0 turns it off.")
    brightness: float = Field(
        0.3, ge=0.0, description="Brightness factor uniform in [max(0, 1 - x), 1 + x]; 0 leaves it."
    )
    contrast: float = Field(
        0.3, ge=0.0, description="Contrast factor uniform in [max(0, 1 - x), 1 + x]; 0 leaves it."
    )
    saturation: float = Field(
        0.3, ge=0.0, description="Saturation factor uniform in [max(0, 1 - x), 1 + x]; 0 leaves it."
    )
    hue: float = Field(
        0.02, ge=0.0, le=0.5, description="Hue shift uniform in [-x, x] turns of the colour wheel."
    )


class ExpandAugmentConfig(Section):
    """Zoom out (SSD's expand): the image on a larger canvas of `augment.fill`, before the resize."""

    prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability per image; 0 turns it off.")
    max_ratio: float = Field(
        2.0,
        ge=1.0,
        le=10.0,
        description="The canvas is r times the image's sides, r uniform in [1, max_ratio] (SSD uses 4).",
    )


class CropAugmentConfig(Section):
    """Zoom in: a random crop before the resize that keeps enough of at least one box."""

    prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability per image; 0 turns it off.")
    min_scale: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="Each side of the crop is uniform in [min_scale, 1] of the image's, the two "
        "fractions within a factor 2 of each other.",
    )
    min_box_overlap: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A crop is accepted when at least one box keeps at least this fraction of its "
        "area inside it (50 tries, then no crop); images without boxes take any crop.",
    )


class ScaleJitterAugmentConfig(Section):
    """Large-scale jitter after the resize: scale by a random factor, crop or pad back to the size
    the resize gave, so batch shapes do not change."""

    prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability per sample; 0 turns it off.")
    min_scale: float = Field(0.5, gt=0.0, le=10.0, description="Smallest scale factor.")
    max_scale: float = Field(
        1.5, gt=0.0, le=10.0, description="Largest scale factor (large-scale jitter uses 2.0)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ScaleJitterAugmentConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is above max_scale {self.max_scale}")
        return self


class AugmentConfig(Section):
    """Box-aware augmentations around the resize and flip (docs/data.md), all off by default so
    the detectron2 path stays bit for bit the same."""

    color: ColorAugmentConfig = Field(default_factory=lambda: ColorAugmentConfig())
    expand: ExpandAugmentConfig = Field(default_factory=lambda: ExpandAugmentConfig())
    crop: CropAugmentConfig = Field(default_factory=lambda: CropAugmentConfig())
    scale_jitter: ScaleJitterAugmentConfig = Field(default_factory=lambda: ScaleJitterAugmentConfig())
    vertical_flip: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability of a top-bottom flip, on top of data.train.flip (for aerial, "
        "microscope or other pictures without an up); 0 turns it off.",
    )
    mosaic: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability that a sample becomes a mosaic of four training images (itself "
        "and three drawn at random) on a canvas of its size; 0 turns it off.",
    )
    min_visible: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Drop rule: a box cut by crop, scale_jitter or mosaic is kept when at least "
        "this fraction of its area is still in the image; dropped boxes are counted in the "
        "training log (boxes_dropped).",
    )
    fill: int = Field(
        114, ge=0, le=255, description="Grey level of canvas no image covers (expand, scale_jitter, mosaic)."
    )


class TrainDataConfig(Section):
    """The training split and its augmentation."""

    dataset: Dataset | None = Field(None, description="The training dataset (coco or shapes).")
    resize: ResizeConfig = Field(
        default_factory=lambda: ResizeConfig(short_sizes=[640, 672, 704, 736, 768, 800])
    )
    flip: Literal["horizontal", "vertical", "none"] = Field(
        "horizontal", description="Random flip with probability 0.5."
    )
    images_per_batch: int = Field(
        16, ge=1, le=MAX_IMAGES_PER_BATCH, description="Images per iteration, summed over all processes."
    )
    aspect_ratio_grouping: bool = Field(
        True, description="Batch landscape and portrait images separately (less padding)."
    )
    filter_empty: bool = Field(
        True,
        description="Skip training images without any (non-crowd) annotation, as detectron2 "
        "does before bad boxes are dropped: an image whose only boxes are degenerate stays, as "
        "background.",
    )
    sampler: Literal["TrainingSampler", "RepeatFactorTrainingSampler"] = Field(
        "TrainingSampler",
        description="Every image once per pass, or images with rare classes repeated "
        "(LVIS-style repeat factors, detectron2's RepeatFactorTrainingSampler).",
    )
    repeat_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="RepeatFactorTrainingSampler: a class in a fraction f of the images below "
        "this is repeated max(1, sqrt(threshold / f)) times per pass (see repeat_sqrt).",
    )
    repeat_sqrt: bool = Field(
        True, description="RepeatFactorTrainingSampler: take the square root of threshold / f."
    )
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig())

    @model_validator(mode="after")
    def _one_vertical_flip(self) -> TrainDataConfig:
        if self.flip == "vertical" and self.augment.vertical_flip > 0:
            raise ValueError(
                "data.train.flip vertical and augment.vertical_flip both flip top-bottom; for both "
                "directions set flip: horizontal with augment.vertical_flip: 0.5, else set "
                "augment.vertical_flip: 0"
            )
        return self


class TestDataConfig(Section):
    """The evaluation split."""

    __test__ = False  # not a pytest class

    dataset: Dataset | None = Field(None, description="The evaluation dataset (coco or shapes).")
    resize: ResizeConfig = Field(
        default_factory=ResizeConfig,
        description="The test resize: exactly one short size (sampling choice), used by every "
        "evaluation, `retina predict` and `retina anchors`.",
    )
    images_per_batch: int = Field(
        1,
        ge=1,
        le=MAX_TEST_IMAGES_PER_BATCH,
        description="Images per inference batch. 1 is detectron2's choice: padding several "
        "images into one tensor changes features near their borders and so the detections.",
    )

    @field_validator("resize")
    @classmethod
    def _one_test_size(cls, value: ResizeConfig) -> ResizeConfig:
        # detectron2's MIN_SIZE_TEST is one size: inference resizes every image the same way.
        if len(value.short_sizes) != 1 or value.sampling != "choice":
            raise ValueError(
                f"the test resize takes one short size, got short_sizes {value.short_sizes} "
                f"(sampling {value.sampling}); set e.g. short_sizes: [{value.short_sizes[-1]}]"
            )
        return value


class DataConfig(Section):
    """Datasets, augmentation and loading."""

    train: TrainDataConfig = Field(default_factory=TrainDataConfig)
    val: TestDataConfig = Field(
        default_factory=TestDataConfig,
        description="The validation split: with a dataset, the periodic evaluations (eval_period) "
        "and model_best.pth use it, and data.test is evaluated once at the end. Its resize and "
        "images_per_batch default to data.test's.",
    )
    test: TestDataConfig = Field(default_factory=TestDataConfig)
    num_workers: int = Field(
        4, ge=0, le=MAX_WORKERS, description="Data-loading worker processes per process."
    )
    fix_bad_boxes: bool = Field(
        True,
        description="Clip boxes reaching outside their image and drop boxes of zero size, "
        "counting them in a summary; false makes them errors.",
    )

    @model_validator(mode="before")
    @classmethod
    def _val_like_test(cls, data: Any) -> Any:
        # data.val inherits the test resize and batch unless it sets its own.
        if not isinstance(data, dict) or not isinstance(data.get("val"), dict):
            return data
        test = data.get("test")
        if not isinstance(test, dict):
            return data
        val = dict(data["val"])
        for key in ("resize", "images_per_batch"):
            if key not in val and key in test:
                val[key] = test[key]
        return {**data, "val": val}


# ----------------------------------------------------------------------------- solver


class ClipGradientsConfig(Section):
    """Gradient clipping between backward and step (detectron2 `SOLVER.CLIP_GRADIENTS`)."""

    enabled: bool = Field(False, description="Clip gradients at all.")
    clip_type: Literal["value", "norm"] = Field(
        "value",
        description="Clip each element to [-clip_value, clip_value], or rescale to a norm "
        "(detectron2 CLIP_TYPE).",
    )
    clip_value: float = Field(
        1.0, gt=0.0, description="The clip value or maximum norm (detectron2 CLIP_VALUE)."
    )
    norm_type: float = Field(2.0, gt=0.0, description="p of the p-norm (clip_type norm).")
    scope: Literal["per_parameter", "full_model"] = Field(
        "per_parameter",
        description="Clip each parameter on its own, or the norm of all gradients together "
        "(clip_type norm only).",
    )

    @model_validator(mode="after")
    def _check(self) -> ClipGradientsConfig:
        if self.scope == "full_model" and self.clip_type != "norm":
            raise ValueError("scope full_model needs clip_type norm")
        return self


class EmaConfig(Section):
    """An exponential moving average of the weights (off by default, as in detectron2)."""

    enabled: bool = Field(
        False,
        description="Keep an EMA of the weights; evaluations, model_best.pth and model files use "
        "it, and checkpoints carry it.",
    )
    decay: float = Field(0.9999, gt=0.0, lt=1.0, description="The EMA's decay once warmed up.")
    tau: float = Field(
        2000.0,
        gt=0.0,
        description="Warm-up of the decay in optimizer steps: step n uses "
        "decay * (1 - exp(-n / tau)), so early weights fade fast.",
    )


class SolverConfig(Section):
    """Optimizer and learning-rate schedule (detectron2 `SOLVER`)."""

    optimizer: Literal["SGD", "AdamW"] = Field("SGD", description="The optimizer.")
    base_lr: float = Field(0.01, gt=0.0, description="Learning rate after warmup.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    nesterov: bool = Field(False, description="SGD Nesterov momentum.")
    betas: list[float] = Field(
        default_factory=lambda: [0.9, 0.999], description="AdamW (beta1, beta2)."
    )
    weight_decay: float = Field(0.0001, ge=0.0, description="L2 weight decay.")
    weight_decay_norm: float = Field(
        0.0, ge=0.0, description="Weight decay of normalisation-layer parameters."
    )
    weight_decay_bias: float | None = Field(
        None, ge=0.0, description="Weight decay of biases; null means weight_decay."
    )
    bias_lr_factor: float = Field(1.0, gt=0.0, description="Biases learn at base_lr times this.")
    clip_gradients: ClipGradientsConfig = Field(default_factory=ClipGradientsConfig)
    scheduler: Literal["WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR"] = Field(
        "WarmupMultiStepLR",
        description="Multiply by gamma at each of steps, cosine decay to base_lr_end, or "
        "num_decays equal steps of gamma (detectron2's SOLVER.LR_SCHEDULER_NAME).",
    )
    steps: list[int] = Field(
        default_factory=lambda: [60000, 80000],
        max_length=100,
        description="Iterations (at most 100 steps, each at most 10**8) at which WarmupMultiStepLR "
        "multiplies the rate by gamma; steps "
        "past max_iter are ignored with a note, as detectron2 does, and a step equal to max_iter "
        "is refused.",
    )
    gamma: float = Field(0.1, gt=0.0, description="WarmupMultiStepLR decay factor per step.")
    base_lr_end: float = Field(
        0.0, ge=0.0, description="WarmupCosineLR's learning rate at max_iter."
    )
    warmup_factor: float = Field(
        0.001, gt=0.0, le=1.0, description="The warmup starts at base_lr times this."
    )
    warmup_iters: int = Field(1000, ge=0, le=MAX_ITERATIONS, description="Iterations of warmup.")
    warmup_method: Literal["linear", "constant"] = Field(
        "linear",
        description="Ramp linearly to the schedule's value at the end of warmup, or hold the "
        "start value (base_lr * warmup_factor).",
    )
    num_decays: int = Field(
        3, ge=1, le=100, description="WarmupStepWithFixedGammaLR: how many equal steps of gamma."
    )
    rescale_interval: bool = Field(
        False,
        description="Run the schedule over the iterations after warmup instead of the whole run "
        "(detectron2's SOLVER.RESCALE_INTERVAL).",
    )
    max_iter: int = Field(
        90000, ge=1, le=MAX_ITERATIONS, description="Training iterations (at most 10**8)."
    )
    checkpoint_period: int = Field(
        5000,
        ge=1,
        le=MAX_ITERATIONS,
        description="Save a checkpoint every this many iterations (and at the end).",
    )
    keep_checkpoints: int = Field(
        3, ge=1, le=10_000, description="Periodic checkpoints kept on disk (the one last_checkpoint names, and model_final.pth, always stay)."
    )
    time_budget: float | None = Field(
        None,
        gt=0.0,
        le=MAX_TIME_BUDGET,
        description="Train for this long instead of max_iter: seconds, or text such as 90s, 30m, 2h, "
        "1h30m (`retina train --time`). The speed is measured on the real data first, and max_iter "
        "is set so that training, evaluations and checkpoints end within it, with steps, warmup, "
        "eval_period and checkpoint_period scaled by the same factor; the run's config.yaml keeps "
        "the chosen max_iter (and null here), so reruns and --resume are exact. null: max_iter.",
    )
    early_stop_patience: int | None = Field(
        None,
        ge=1,
        le=MAX_ITERATIONS,
        description="Stop when eval.best_metric has not improved for this many evaluations of "
        "data.val; null trains to max_iter.",
    )
    ema: EmaConfig = Field(default_factory=lambda: EmaConfig())

    @field_validator("steps")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(value[i] >= value[i + 1] for i in range(len(value) - 1)) or any(v < 1 for v in value):
            raise ValueError("steps must be positive and strictly increasing")
        if any(v > MAX_ITERATIONS for v in value):
            raise ValueError(f"steps must be at most {MAX_ITERATIONS} iterations")
        return value

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("betas")
    @classmethod
    def _two_betas(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or any(not 0.0 <= b < 1.0 for b in value):
            raise ValueError("betas must be two values in [0, 1)")
        return value

    @model_validator(mode="after")
    def _check(self) -> SolverConfig:
        if self.scheduler == "WarmupMultiStepLR" and self.max_iter in self.steps:
            raise ValueError(
                f"steps {self.steps}: a step at max_iter {self.max_iter} would only change the "
                "rate after the last iteration, and detectron2 refuses it; remove it or raise max_iter"
            )
        if self.scheduler == "WarmupCosineLR" and self.base_lr_end > self.base_lr:
            raise ValueError(
                f"base_lr_end {self.base_lr_end} is above base_lr {self.base_lr}; the cosine "
                "schedule decays from base_lr down to base_lr_end"
            )
        return self


# ----------------------------------------------------------------------------- recipe


class EvalConfig(Section):
    """What the periodic evaluations decide."""

    best_metric: Literal["AP", "AP50", "AP75", "APs", "APm", "APl"] = Field(
        "AP",
        description="The data.val metric (COCO box AP, percent; higher is better) whose best value "
        "gives model_best.pth and drives solver.early_stop_patience.",
    )


class MlflowConfig(Section):
    """Where `retina train` logs the run in MLflow (docs/training.md, "Experiment tracking")."""

    tracking_uri: str | None = Field(
        None,
        max_length=2000,
        description="The MLflow tracking server or store: http(s)://host:port, sqlite:///mlflow.db, "
        "file:///path; null uses MLflow's own default ($MLFLOW_TRACKING_URI).",
    )
    experiment: str = Field(
        "retinacli", min_length=1, max_length=500, description="The MLflow experiment, created when it does not exist."
    )
    run_name: str | None = Field(
        None, max_length=250, description="The MLflow run's name; null names it after the run folder."
    )


class TrackingConfig(Section):
    """Experiment trackers that receive what training logs, besides metrics.jsonl and TensorBoard."""

    mlflow: MlflowConfig | None = Field(
        None,
        description="Log the recipe (as parameters), every logged metric with its iteration, the "
        "evaluations and, at the end, the model files, results.png and report.html to MLflow "
        "(`pip install 'retinacli[mlflow]'`); `retina train --mlflow URI` sets its tracking_uri. "
        "null: no MLflow.",
    )


class Recipe(Section):
    """A complete training / evaluation recipe."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    eval_period: int = Field(
        0, ge=0, le=MAX_ITERATIONS, description="Evaluate every this many iterations; 0 evaluates only at the end."
    )
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig())
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig())
    log_period: int = Field(
        20, ge=1, le=MAX_ITERATIONS, description="Log metrics every this many iterations."
    )
    output_dir: str = Field(
        "output", description="Where checkpoints, metrics, TensorBoard files and evaluations go."
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seed of every random choice (initialisation, sampling, augmentation). "
        "detectron2 defaults to a random seed; a fixed one makes runs reproducible.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses CUDA when it is available."
    )
    amp: bool = Field(
        False, description="Mixed precision on CUDA (the focal loss stays in float32)."
    )
    on_nonfinite: Literal["stop", "rollback"] = Field(
        "stop",
        description="When a loss becomes infinite or NaN: stop with an error, or reload the last "
        "good checkpoint and go on with the learning rate lowered.",
    )
    max_rollbacks: int = Field(3, ge=0, le=1000, description="Rollbacks allowed before stopping.")
    rollback_lr_factor: float = Field(
        0.5, gt=0.0, lt=1.0, description="Each rollback multiplies the learning rate by this."
    )

    @field_validator("output_dir")
    @classmethod
    def _expand(cls, value: str) -> str:
        return expand_env(value)


# ----------------------------------------------------------------------------- helpers


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds of "5400", "90s", "30m", "2h", "1h30m", "1.5h" (units h, m, s; each once, in that
    order).

    Raises ValueError naming the accepted forms."""
    import re

    cleaned = text.strip().lower()
    match = re.fullmatch(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?", cleaned)
    if not cleaned or match is None or not any(match.group(u) for u in _DURATION_UNITS):
        raise ValueError(f"{text!r} is not a duration; write seconds (5400) or 90s, 30m, 2h, 1h30m")
    return sum(float(match.group(unit)) * factor for unit, factor in _DURATION_UNITS.items() if match.group(unit))


def expand_env(value: str) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; an unset variable without default is an error."""
    import os
    import re

    def replace(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        raise ValueError(
            f"environment variable {name} is not set; set it, or write ${{{name}:-default}}"
        )

    return re.sub(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(:-(?P<default>[^}]*))?\}", replace, value)


def _check_stage_order(stages: list[str], key: str) -> None:
    if not stages:
        raise ValueError(f"{key} needs at least one stage")
    if len(set(stages)) != len(stages) or stages != sorted(stages, key=STAGES.index):
        raise ValueError(f"{key} must list distinct stages in order res2..res5")


def _error_at(model: type[BaseModel], key: str, message: str, value: Any) -> ValidationError:
    """A validation error located at `key` of `model`, for checks that must run before the
    fields are validated (so errors still name the key path, e.g. model.anchors.sizes)."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", "{message}", {"message": message}), loc=(key,), input=value
    )
    return ValidationError.from_exception_data(model.__name__, [detail])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
