"""State-dict names: detectron2 <-> retinacli (one table, both directions), and the ImageNet
backbone formats (Caffe2 -> detectron2, torchvision -> retinacli).

Renaming is pure: tensors pass through untouched (same objects, shapes and layout), and every key
no rule knows is returned, never silently dropped; the caller decides whether that is an error.

The table (`NAME_TABLE`), one row per kind of key; `<stage>` is res2..res5 in detectron2 and
layer1..layer4 in retinacli (res2 is torchvision's layer1); every other placeholder is copied:

| detectron2 | retinacli |
| --- | --- |
| `backbone.bottom_up.stem.conv1.weight` | `backbone.body.conv1.weight` |
| `backbone.bottom_up.stem.conv1.norm.<p>` | `backbone.body.bn1.<p>` |
| `backbone.bottom_up.<stage>.<b>.conv<j>.weight` | `backbone.body.<stage>.<b>.conv<j>.weight` |
| `backbone.bottom_up.<stage>.<b>.conv<j>.norm.<p>` | `backbone.body.<stage>.<b>.bn<j>.<p>` |
| `backbone.bottom_up.<stage>.<b>.shortcut.weight` | `backbone.body.<stage>.<b>.downsample.0.weight` |
| `backbone.bottom_up.<stage>.<b>.shortcut.norm.<p>` | `backbone.body.<stage>.<b>.downsample.1.<p>` |
| `backbone.fpn_<role><n>.<wb>` | `backbone.fpn.<role>_convs.p<n>.<wb>` |
| `backbone.fpn_<role><n>.norm.<p>` | `backbone.fpn.<role>_norms.p<n>.<p>` |
| `backbone.top_block.<top>.<wb>` | `backbone.fpn.top_block.<top>.<wb>` |
| `head.<subnet>.<rest>` | `head.<subnet>.<rest>` |
| `head.<predictor>.<wb>` | `head.<predictor>.<wb>` |

<b> is a block index, <j> 1..3, <n> the level (fpn_lateral3 works on res3 and feeds p3), <role>
lateral or output, <p> a norm entry (weight, bias, running_mean, running_var,
num_batches_tracked), <wb> weight or bias, <top> p6 or p7, <subnet> cls_subnet or bbox_subnet
(their Sequential indices agree, GN included), <predictor> cls_score or bbox_pred. The body's
names are torchvision's, so a torchvision ResNet state dict loads into `backbone.body` as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from retinacli.errors import CheckpointError

Side = Literal["detectron2", "retinacli"]

DETECTRON2_BACKBONE_PREFIX = "backbone.bottom_up."
RETINACLI_BACKBONE_PREFIX = "backbone.body."
FROZEN_BN_EPS = 1e-5

NAME_TABLE: tuple[tuple[str, str], ...] = (
    ("backbone.bottom_up.stem.conv1.weight", "backbone.body.conv1.weight"),
    ("backbone.bottom_up.stem.conv1.norm.<p>", "backbone.body.bn1.<p>"),
    ("backbone.bottom_up.<stage>.<b>.conv<j>.weight", "backbone.body.<stage>.<b>.conv<j>.weight"),
    ("backbone.bottom_up.<stage>.<b>.conv<j>.norm.<p>", "backbone.body.<stage>.<b>.bn<j>.<p>"),
    (
        "backbone.bottom_up.<stage>.<b>.shortcut.weight",
        "backbone.body.<stage>.<b>.downsample.0.weight",
    ),
    (
        "backbone.bottom_up.<stage>.<b>.shortcut.norm.<p>",
        "backbone.body.<stage>.<b>.downsample.1.<p>",
    ),
    ("backbone.fpn_<role><n>.<wb>", "backbone.fpn.<role>_convs.p<n>.<wb>"),
    ("backbone.fpn_<role><n>.norm.<p>", "backbone.fpn.<role>_norms.p<n>.<p>"),
    ("backbone.top_block.<top>.<wb>", "backbone.fpn.top_block.<top>.<wb>"),
    ("head.<subnet>.<rest>", "head.<subnet>.<rest>"),
    ("head.<predictor>.<wb>", "head.<predictor>.<wb>"),
)

# What each placeholder matches; `stage` is spelt differently on the two sides.
_PLACEHOLDERS: dict[str, str] = {
    "p": r"\w+",
    "b": r"\d+",
    "j": r"[1-3]",
    "n": r"\d+",
    "role": r"lateral|output",
    "wb": r"weight|bias",
    "top": r"p6|p7",
    "subnet": r"cls_subnet|bbox_subnet",
    "predictor": r"cls_score|bbox_pred",
    "rest": r"\d+(?:\.\w+)+",
}
_STAGES: dict[Side, tuple[str, ...]] = {
    "detectron2": ("res2", "res3", "res4", "res5"),
    "retinacli": ("layer1", "layer2", "layer3", "layer4"),
}
_TOKEN = re.compile(r"<(\w+)>")


def _pattern(template: str, side: Side) -> re.Pattern[str]:
    parts, last = [], 0
    for match in _TOKEN.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        name = match[1]
        body = "|".join(_STAGES[side]) if name == "stage" else _PLACEHOLDERS[name]
        parts.append(f"(?P<{name}>{body})")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class _Row:
    patterns: dict[Side, re.Pattern[str]]
    templates: dict[Side, str]


_ROWS = tuple(
    _Row(
        patterns={"detectron2": _pattern(d2, "detectron2"), "retinacli": _pattern(ours, "retinacli")},
        templates={"detectron2": d2, "retinacli": ours},
    )
    for d2, ours in NAME_TABLE
)


def translate_name(key: str, *, source: Side, target: Side) -> str | None:
    """`key` (a `source`-side name) as the `target` side names it, or None if no row matches."""
    for row in _ROWS:
        match = row.patterns[source].fullmatch(key)
        if match is None:
            continue
        values = match.groupdict()
        if "stage" in values:
            values["stage"] = _STAGES[target][_STAGES[source].index(values["stage"])]
        return _TOKEN.sub(lambda m, found=values: found[m[1]], row.templates[target])
    return None


def _rename(
    state_dict: Mapping[str, Tensor], source: Side, target: Side
) -> tuple[dict[str, Tensor], list[str]]:
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        name = translate_name(key, source=source, target=target)
        if name is None:
            unmapped.append(key)
        else:
            mapped[name] = value
    return mapped, unmapped


def detectron2_to_retinacli(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a detectron2 RetinaNet state dict to retinacli names.

    Returns (mapped, unmapped_keys): the renamed entries (same tensors) and, in input order, the
    keys no row of the table knows.
    """
    return _rename(state_dict, "detectron2", "retinacli")


def retinacli_to_detectron2(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The same table read the other way: (mapped to detectron2 names, unmapped_keys)."""
    return _rename(state_dict, "retinacli", "detectron2")


# ----------------------------------------------------------------------------- ImageNet backbones


@dataclass
class BackboneConversion:
    """ImageNet backbone weights renamed for a detector.

    mapped: new name -> tensor (the input tensors, not copies, plus `filled` ones).
    not_mapped: source name -> why it was left out (classifier, step counters, unknown names).
    filled: names of running statistics created because the file has none.
    """

    mapped: dict[str, Tensor] = field(default_factory=dict)
    not_mapped: dict[str, str] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)

    def put(self, name: str, tensor: Tensor, source: str) -> None:
        if name in self.mapped:
            raise CheckpointError(
                f"weights: {source} maps to {name}, which another key already filled; the file "
                "holds duplicate backbone weights and cannot be converted"
            )
        self.mapped[name] = tensor


_C2_PARAM = {"w": "weight", "b": "bias"}
_C2_NORM = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_C2_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_STEM_CONV = re.compile(r"^conv1_(?P<p>w|b)$")
_C2_STEM_NORM = re.compile(r"^res_conv1_(?P<n>bn|gn)_(?P<p>s|b|rm|riv)$")
_C2_BLOCK_CONV = re.compile(r"^res(?P<s>[2-5])_(?P<i>\d+)_branch(?P<br>1|2a|2b|2c)_(?P<p>w|b)$")
_C2_BLOCK_NORM = re.compile(
    r"^res(?P<s>[2-5])_(?P<i>\d+)_branch(?P<br>1|2a|2b|2c)_(?P<n>bn|gn)_(?P<p>s|b|rm|riv)$"
)
_C2_CLASSIFIER = re.compile(r"^(fc1000|pred)_(w|b)$")


def caffe2_resnet_to_detectron2(
    state_dict: Mapping[str, Tensor],
    *,
    prefix: str = DETECTRON2_BACKBONE_PREFIX,
    frozen_bn_eps: float = FROZEN_BN_EPS,
) -> BackboneConversion:
    """Rename MSRA/Caffe2 ResNet weights (e.g. detectron2's ImageNet `R-50.pkl`) to detectron2
    backbone names under `prefix`, following detectron2's `convert_basic_c2_names`:

    | Caffe2 | detectron2 (after `prefix`) |
    | --- | --- |
    | `conv1_w` | `stem.conv1.weight` |
    | `res_conv1_bn_{s,b,rm,riv}` | `stem.conv1.norm.{weight,bias,running_mean,running_var}` |
    | `res{S}_{I}_branch{1,2a,2b,2c}_{w,b}` | `res{S}.{I}.{shortcut,conv1,conv2,conv3}.{weight,bias}` |
    | `res{S}_{I}_branch..._bn_{s,b,rm,riv}` | `res{S}.{I}.<conv>.norm.{...}` (`_gn_` likewise) |
    | `fc1000_{w,b}`, `pred_{w,b}` | not mapped: ImageNet classifier |
    | `*_momentum` | not mapped: optimizer state |

    MSRA files keep only each BatchNorm's scale and bias (the statistics were folded in). For
    every BN with a weight but no running statistics we add `running_mean = 0` and
    `running_var = 1 - frozen_bn_eps`: the values a fresh detectron2 FrozenBatchNorm2d holds and
    keeps when such a file is loaded, which make the layer exactly `x * weight + bias`.
    """
    result = BackboneConversion()
    bn_modules: dict[str, Tensor] = {}  # norm module name -> its weight
    for key, tensor in state_dict.items():
        if key.endswith("_momentum"):
            result.not_mapped[key] = "optimizer momentum buffer, not a weight"
            continue
        if _C2_CLASSIFIER.match(key):
            result.not_mapped[key] = "ImageNet classifier, not part of the detection backbone"
            continue
        name = None
        if match := _C2_STEM_CONV.match(key):
            name = f"stem.conv1.{_C2_PARAM[match['p']]}"
        elif match := _C2_STEM_NORM.match(key):
            module = "stem.conv1.norm"
            name = f"{module}.{_C2_NORM[match['p']]}"
            if match["n"] == "bn" and match["p"] == "s":
                bn_modules[module] = tensor
        elif match := _C2_BLOCK_CONV.match(key):
            conv = _C2_BRANCH[match["br"]]
            name = f"res{match['s']}.{int(match['i'])}.{conv}.{_C2_PARAM[match['p']]}"
        elif match := _C2_BLOCK_NORM.match(key):
            conv = _C2_BRANCH[match["br"]]
            module = f"res{match['s']}.{int(match['i'])}.{conv}.norm"
            name = f"{module}.{_C2_NORM[match['p']]}"
            if match["n"] == "bn" and match["p"] == "s":
                bn_modules[module] = tensor
        if name is None:
            result.not_mapped[key] = "not a Caffe2 ResNet backbone name this converter knows"
            continue
        result.put(prefix + name, tensor, key)
    for module, weight in bn_modules.items():
        stats: dict[str, Callable[[], Tensor]] = {
            "running_mean": lambda w=weight: torch.zeros_like(w),
            "running_var": lambda w=weight: torch.ones_like(w) - frozen_bn_eps,
        }
        for stat, make in stats.items():
            name = f"{prefix}{module}.{stat}"
            if name not in result.mapped:
                result.mapped[name] = make()
                result.filled.append(name)
    return result


_TORCHVISION_RESNET = re.compile(
    r"^(?:conv1\.weight|bn1\.\w+"
    r"|layer[1-4]\.\d+\.(?:conv[1-3]\.weight|bn[1-3]\.\w+|downsample\.[01]\.\w+))$"
)


def torchvision_resnet_to_retinacli(
    state_dict: Mapping[str, Tensor], *, prefix: str = RETINACLI_BACKBONE_PREFIX
) -> BackboneConversion:
    """Put torchvision ResNet weights (`resnet50-*.pth`, resnet18 ...) under `prefix`: the body
    of retinacli's backbone has torchvision's names, so nothing else changes. `fc.*` (the
    ImageNet classifier) and names that are not part of a torchvision ResNet are not mapped.
    torchvision BatchNorms carry real running statistics, so nothing is filled.
    """
    result = BackboneConversion()
    for key, tensor in state_dict.items():
        if key.startswith("fc."):
            result.not_mapped[key] = "ImageNet classifier, not part of the detection backbone"
        elif _TORCHVISION_RESNET.match(key):
            result.put(prefix + key, tensor, key)
        else:
            result.not_mapped[key] = "not a torchvision ResNet backbone name this converter knows"
    return result
