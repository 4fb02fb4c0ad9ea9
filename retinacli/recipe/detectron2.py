"""Read a detectron2 RetinaNet config (YAML) and translate it into an equivalent recipe.

detectron2 configs are YAML with `_BASE_` chains, tuples written as strings ("(640, 672)") and
anchor sizes as `!!python/object/apply:eval ["<python>"]`, which detectron2 loads with
`yaml.unsafe_load`. Here the file is read with a safe loader that understands exactly one
Python tag, `apply:eval`, and computes its expression with `recipe.safe_expr` (arithmetic
on literal lists only); tuple strings are parsed with `ast.literal_eval`. Nothing runs.

Keys that are not written keep detectron2's `defaults.py` values (`D2_DEFAULTS`), as
detectron2 itself does. Keys that RetinaNet does not read are listed as ignored; values that
retinacli cannot reproduce (deformable convolutions, ResNeXt groups, dilation, crops...) are
errors naming the key.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retinacli.errors import RecipeError
from retinacli.levels import pyramid_levels
from retinacli.recipe.loading import RecipeLoader, read_with_bases, read_yaml_file
from retinacli.recipe.safe_expr import UnsafeExpressionError, evaluate

# detectron2 defaults.py values of every key the translation reads (facts, not code).
D2_DEFAULTS: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.DEVICE": "cuda",
    "MODEL.WEIGHTS": "",
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.OUT_FEATURES": ["res4"],
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.FPN.IN_FEATURES": [],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RETINANET.NUM_CLASSES": 80,
    "MODEL.RETINANET.IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"],
    "MODEL.RETINANET.NUM_CONVS": 4,
    "MODEL.RETINANET.IOU_THRESHOLDS": [0.4, 0.5],
    "MODEL.RETINANET.IOU_LABELS": [0, -1, 1],
    "MODEL.RETINANET.PRIOR_PROB": 0.01,
    "MODEL.RETINANET.SCORE_THRESH_TEST": 0.05,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 1000,
    "MODEL.RETINANET.NMS_THRESH_TEST": 0.5,
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": 2.0,
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": 0.25,
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.1,
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RETINANET.NORM": "",
    "INPUT.FORMAT": "BGR",
    "INPUT.MIN_SIZE_TRAIN": [800],
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.CROP.ENABLED": False,
    "DATALOADER.NUM_WORKERS": 4,
    "DATALOADER.ASPECT_RATIO_GROUPING": True,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
    "DATALOADER.REPEAT_THRESHOLD": 0.0,
    "DATALOADER.REPEAT_SQRT": True,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
    "SOLVER.MAX_ITER": 40000,
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.BASE_LR_END": 0.0,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.NESTEROV": False,
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.GAMMA": 0.1,
    "SOLVER.STEPS": [30000],
    "SOLVER.NUM_DECAYS": 3,
    "SOLVER.RESCALE_INTERVAL": False,
    "SOLVER.REFERENCE_WORLD_SIZE": 0,
    "SOLVER.WARMUP_FACTOR": 1.0 / 1000,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.CHECKPOINT_PERIOD": 5000,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.WEIGHT_DECAY_BIAS": None,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "value",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    "SOLVER.AMP.ENABLED": False,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "TEST.AUG.ENABLED": False,
    "TEST.PRECISE_BN.ENABLED": False,
    "TEST.EVAL_PERIOD": 0,
    "OUTPUT_DIR": "./output",
    "SEED": -1,
}

# Keys whose value retinacli cannot reproduce unless it equals this one.
_MUST_EQUAL = {
    "MODEL.META_ARCHITECTURE": "RetinaNet",
    "MODEL.BACKBONE.NAME": "build_retinanet_resnet_fpn_backbone",
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator",
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "INPUT.CROP.ENABLED": False,
    "SOLVER.REFERENCE_WORLD_SIZE": 0,
    "TEST.AUG.ENABLED": False,
    "TEST.PRECISE_BN.ENABLED": False,
}
# Why each of those cannot be carried over, for the error message.
_WHY_NOT = {
    "SOLVER.REFERENCE_WORLD_SIZE": "retinacli does not rescale the batch size and learning rate "
    "by the number of processes; set the values of your run (data.train.images_per_batch, "
    "solver.base_lr, solver.steps, solver.max_iter) and REFERENCE_WORLD_SIZE: 0",
    "TEST.AUG.ENABLED": "test-time augmentation is not implemented; evaluate without it",
    "TEST.PRECISE_BN.ENABLED": "precise BN (re-estimating BatchNorm statistics before each "
    "evaluation) is not implemented; with FrozenBN or GN it changes nothing",
}
_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler")

# Keys that exist in detectron2 configs but do not change RetinaNet's model, data or training.
_IGNORED_PREFIXES = (
    "VERSION",
    "CUDNN_BENCHMARK",
    "VIS_PERIOD",
    "GLOBAL",
    "DATASETS.",
    "MODEL.KEYPOINT_ON",
    "MODEL.MASK_ON",
    "MODEL.LOAD_PROPOSALS",
    "MODEL.PROPOSAL_GENERATOR",
    "MODEL.RPN.",
    "MODEL.ROI_",
    "MODEL.SEM_SEG_HEAD",
    "MODEL.PANOPTIC_FPN",
    "MODEL.RESNETS.DEFORM_MODULATED",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS",
    "MODEL.RESNETS.RES5_MULTI_GRID",
    "MODEL.ANCHOR_GENERATOR.ANGLES",
    "MODEL.RETINANET.IN_FEATURES",
    "INPUT.CROP.",
    "INPUT.MASK_FORMAT",
    "SOLVER.AMP.",
    "TEST.EXPECTED_RESULTS",
    "TEST.AUG.",  # MIN_SIZES, MAX_SIZE, FLIP: read only when TEST.AUG.ENABLED, which is refused
    "TEST.PRECISE_BN.NUM_ITER",  # read only when TEST.PRECISE_BN.ENABLED, which is refused
    "TEST.KEYPOINT_OKS_SIGMAS",
)


@dataclass
class Translation:
    """The recipe (a plain dict for `validate_recipe`) and what could not be carried over."""

    recipe: dict[str, Any]
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_detectron2_config(path: str | Path) -> dict[str, Any]:
    """Load a detectron2 YAML config with its `_BASE_` chain into one flat `{"A.B.C": value}`."""
    return _flatten(read_with_bases(Path(path), base_key="_BASE_", read_file=_read_detectron2_yaml))


def translate(flat: dict[str, Any], *, source: str = "config") -> Translation:
    """Translate flat detectron2 keys (see `read_detectron2_config`) into a recipe dict."""
    values = {**D2_DEFAULTS, **flat}
    unsupported = []
    for key, required in _MUST_EQUAL.items():
        if _normalise(values[key]) != _normalise(required):
            why = _WHY_NOT.get(key, f"retinacli supports {required!r}")
            unsupported.append(f"{key} = {values[key]!r} ({why})")
    if values["DATALOADER.SAMPLER_TRAIN"] not in _SAMPLERS:
        unsupported.append(
            f"DATALOADER.SAMPLER_TRAIN = {values['DATALOADER.SAMPLER_TRAIN']!r} (retinacli "
            f"supports {' and '.join(_SAMPLERS)})"
        )
    if unsupported:
        raise RecipeError(
            f"{source}: this detectron2 config uses what retinacli does not implement:\n  "
            + "\n  ".join(unsupported)
        )
    v = values
    notes: list[str] = []
    weights = v["MODEL.WEIGHTS"] or None
    if weights and "://" in weights:
        notes.append(
            f"MODEL.WEIGHTS {weights!r} is a URL; retinacli never downloads. Pass the file with "
            "--weights or set model.weights to a local path."
        )
        weights = None
    seed = v["SEED"]
    if seed < 0:
        notes.append("SEED -1 (random) became seed 0, so runs are reproducible.")
        seed = 0
    clip_type = v["SOLVER.CLIP_GRADIENTS.CLIP_TYPE"]
    min_train = _as_list(v["INPUT.MIN_SIZE_TRAIN"])
    min_test = _as_list(v["INPUT.MIN_SIZE_TEST"])
    if len(set(min_test)) != 1:
        raise RecipeError(f"{source}: INPUT.MIN_SIZE_TEST {min_test} must be one size")
    fpn_in = _as_list(v["MODEL.FPN.IN_FEATURES"])
    if not fpn_in:
        raise RecipeError(f"{source}: MODEL.FPN.IN_FEATURES is empty; RetinaNet needs res3..res5")
    recipe: dict[str, Any] = {
        "model": {
            "input_format": v["INPUT.FORMAT"],
            "pixel_mean": _as_list(v["MODEL.PIXEL_MEAN"]),
            "pixel_std": _as_list(v["MODEL.PIXEL_STD"]),
            "weights": weights,
            "backbone": {
                "depth": v["MODEL.RESNETS.DEPTH"],
                "norm": v["MODEL.RESNETS.NORM"] or "none",
                "freeze_at": v["MODEL.BACKBONE.FREEZE_AT"],
                "stride_in_1x1": v["MODEL.RESNETS.STRIDE_IN_1X1"],
                "stem_out_channels": v["MODEL.RESNETS.STEM_OUT_CHANNELS"],
                "res2_out_channels": v["MODEL.RESNETS.RES2_OUT_CHANNELS"],
                "out_features": _as_list(v["MODEL.RESNETS.OUT_FEATURES"]),
            },
            "fpn": {
                "in_features": fpn_in,
                "out_channels": v["MODEL.FPN.OUT_CHANNELS"],
                "norm": v["MODEL.FPN.NORM"] or "none",
                "fuse_type": v["MODEL.FPN.FUSE_TYPE"],
                "top_block_input": "res5",
            },
            "anchors": {
                "sizes": _nested(v["MODEL.ANCHOR_GENERATOR.SIZES"]),
                "aspect_ratios": _nested(v["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"]),
                "offset": v["MODEL.ANCHOR_GENERATOR.OFFSET"],
            },
            "head": {
                "num_classes": v["MODEL.RETINANET.NUM_CLASSES"],
                "num_convs": v["MODEL.RETINANET.NUM_CONVS"],
                "norm": v["MODEL.RETINANET.NORM"] or "none",
                "prior_prob": v["MODEL.RETINANET.PRIOR_PROB"],
            },
            "matcher": {
                "iou_thresholds": _as_list(v["MODEL.RETINANET.IOU_THRESHOLDS"]),
                "iou_labels": _as_list(v["MODEL.RETINANET.IOU_LABELS"]),
                "allow_low_quality_matches": True,
            },
            "box_coder": {"weights": _as_list(v["MODEL.RETINANET.BBOX_REG_WEIGHTS"])},
            "loss": {
                "focal_alpha": v["MODEL.RETINANET.FOCAL_LOSS_ALPHA"],
                "focal_gamma": v["MODEL.RETINANET.FOCAL_LOSS_GAMMA"],
                "box_loss": v["MODEL.RETINANET.BBOX_REG_LOSS_TYPE"],
                "smooth_l1_beta": v["MODEL.RETINANET.SMOOTH_L1_LOSS_BETA"],
            },
            "test": {
                "score_thresh": v["MODEL.RETINANET.SCORE_THRESH_TEST"],
                "topk_candidates": v["MODEL.RETINANET.TOPK_CANDIDATES_TEST"],
                "nms_thresh": v["MODEL.RETINANET.NMS_THRESH_TEST"],
                "detections_per_image": v["TEST.DETECTIONS_PER_IMAGE"],
            },
        },
        "data": {
            "train": {
                "resize": {
                    "short_sizes": min_train,
                    "sampling": v["INPUT.MIN_SIZE_TRAIN_SAMPLING"],
                    "max_size": v["INPUT.MAX_SIZE_TRAIN"],
                },
                "flip": v["INPUT.RANDOM_FLIP"],
                "images_per_batch": v["SOLVER.IMS_PER_BATCH"],
                "aspect_ratio_grouping": v["DATALOADER.ASPECT_RATIO_GROUPING"],
                "filter_empty": v["DATALOADER.FILTER_EMPTY_ANNOTATIONS"],
                "sampler": v["DATALOADER.SAMPLER_TRAIN"],
                "repeat_threshold": v["DATALOADER.REPEAT_THRESHOLD"],
                "repeat_sqrt": v["DATALOADER.REPEAT_SQRT"],
            },
            "test": {"resize": {"short_sizes": min_test[:1], "max_size": v["INPUT.MAX_SIZE_TEST"]}},
            "num_workers": v["DATALOADER.NUM_WORKERS"],
        },
        "solver": {
            "optimizer": "SGD",
            "base_lr": v["SOLVER.BASE_LR"],
            "momentum": v["SOLVER.MOMENTUM"],
            "nesterov": v["SOLVER.NESTEROV"],
            "weight_decay": v["SOLVER.WEIGHT_DECAY"],
            "weight_decay_norm": v["SOLVER.WEIGHT_DECAY_NORM"],
            "weight_decay_bias": v["SOLVER.WEIGHT_DECAY_BIAS"],
            "bias_lr_factor": v["SOLVER.BIAS_LR_FACTOR"],
            "clip_gradients": {
                "enabled": v["SOLVER.CLIP_GRADIENTS.ENABLED"],
                "clip_type": "norm" if clip_type in ("norm", "full_model") else "value",
                "clip_value": v["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"],
                "norm_type": v["SOLVER.CLIP_GRADIENTS.NORM_TYPE"],
                "scope": "full_model" if clip_type == "full_model" else "per_parameter",
            },
            "scheduler": v["SOLVER.LR_SCHEDULER_NAME"],
            "steps": _as_list(v["SOLVER.STEPS"]),
            "gamma": v["SOLVER.GAMMA"],
            "base_lr_end": v["SOLVER.BASE_LR_END"],
            "warmup_factor": v["SOLVER.WARMUP_FACTOR"],
            "warmup_iters": v["SOLVER.WARMUP_ITERS"],
            "warmup_method": v["SOLVER.WARMUP_METHOD"],
            "num_decays": v["SOLVER.NUM_DECAYS"],
            "rescale_interval": v["SOLVER.RESCALE_INTERVAL"],
            "max_iter": v["SOLVER.MAX_ITER"],
            "checkpoint_period": v["SOLVER.CHECKPOINT_PERIOD"],
        },
        "eval_period": v["TEST.EVAL_PERIOD"],
        "output_dir": v["OUTPUT_DIR"],
        "seed": seed,
        "device": {"cuda": "cuda", "cpu": "cpu"}.get(str(v["MODEL.DEVICE"]), "auto"),
        "amp": v["SOLVER.AMP.ENABLED"],
    }
    level_names = pyramid_levels(fpn_in)
    if _as_list(v["MODEL.RETINANET.IN_FEATURES"]) != level_names:
        raise RecipeError(
            f"{source}: MODEL.RETINANET.IN_FEATURES {v['MODEL.RETINANET.IN_FEATURES']} must be "
            f"the pyramid levels {level_names} that MODEL.FPN.IN_FEATURES {fpn_in} gives"
        )
    known = set(D2_DEFAULTS)
    ignored = sorted(k for k in flat if k not in known and not k.startswith(_IGNORED_PREFIXES))
    ignored += sorted(k for k in flat if k.startswith("DATASETS.") and flat[k])
    if any(k.startswith("DATASETS.") and flat[k] for k in flat):
        notes.append(
            "DATASETS names detectron2's registered datasets; set data.train.dataset and "
            "data.test.dataset in the recipe (or with --set) to COCO json files."
        )
    return Translation(recipe=recipe, ignored_keys=ignored, notes=notes)


# ----------------------------------------------------------------------------- reading


class _Detectron2Loader(RecipeLoader):
    """Safe, bounded loading (`RecipeLoader`: file kind and size, values, nesting) plus
    detectron2's one Python tag, computed by the restricted evaluator (bounded work too)."""


def _construct_eval(loader: _Detectron2Loader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else []
    if len(args) != 1 or not isinstance(args[0], str):
        raise yaml.constructor.ConstructorError(
            None, None, "apply:eval needs one expression string", node.start_mark
        )
    try:
        return evaluate(args[0])
    except UnsafeExpressionError as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"apply:eval expression refused: {exc}", node.start_mark
        ) from None


_Detectron2Loader.add_constructor("tag:yaml.org,2002:python/object/apply:eval", _construct_eval)


def _read_detectron2_yaml(path: Path) -> Any:
    return read_yaml_file(path, loader=_Detectron2Loader)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = _literal(value)
    return flat


def _literal(value: Any) -> Any:
    """detectron2 writes tuples as strings such as "(640, 672)"; parse those literally."""
    if isinstance(value, str) and value.strip().startswith(("(", "[")):
        try:
            return _normalise(ast.literal_eval(value.strip()))
        except (ValueError, SyntaxError):
            return value
    return _normalise(value)


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normalise(v) for v in value]
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _nested(value: Any) -> list[list[float]]:
    """detectron2 broadcasts a flat list to every level: [32, 64] means [[32, 64]]."""
    value = _as_list(value)
    if value and not isinstance(value[0], list | tuple):
        return [[float(v) for v in value]]
    return [[float(x) for x in level] for level in value]
