"""State-dict key mapping between detectron2's RetinaNet and retinacli's `RetinaNet`.

Pure functions on key names; tensors pass through untouched (same shapes, same layout).

==============================================  ==============================================
detectron2 key                                  retinacli key
==============================================  ==============================================
backbone.bottom_up.stem.conv1.weight            backbone.body.conv1.weight
backbone.bottom_up.stem.conv1.norm.<p>          backbone.body.bn1.<p>
backbone.bottom_up.res<s>.<b>.conv<j>.weight    backbone.body.layer<s-1>.<b>.conv<j>.weight
backbone.bottom_up.res<s>.<b>.conv<j>.norm.<p>  backbone.body.layer<s-1>.<b>.bn<j>.<p>
backbone.bottom_up.res<s>.<b>.shortcut.weight   backbone.body.layer<s-1>.<b>.downsample.0.weight
backbone.bottom_up.res<s>.<b>.shortcut.norm.<p> backbone.body.layer<s-1>.<b>.downsample.1.<p>
backbone.fpn_lateral<n>.weight / .bias          backbone.fpn.lateral_convs.p<n>.weight / .bias
backbone.fpn_lateral<n>.norm.<p>                backbone.fpn.lateral_norms.p<n>.<p>
backbone.fpn_output<n>.weight / .bias           backbone.fpn.output_convs.p<n>.weight / .bias
backbone.fpn_output<n>.norm.<p>                 backbone.fpn.output_norms.p<n>.<p>
backbone.top_block.p6.* / p7.*                  backbone.fpn.top_block.p6.* / p7.*
head.cls_subnet.<i>.* / head.bbox_subnet.<i>.*  same (Sequential indices agree, GN included)
head.cls_score.* / head.bbox_pred.*             same
==============================================  ==============================================

<s> is the detectron2 stage 2..5 (res2 = torchvision's layer1), <b> the block, <j> 1..3, <n> the
level (fpn_lateral3 works on res3 and feeds p3), <p> a norm entry: weight, bias, running_mean,
running_var, num_batches_tracked (BN), all passed through. The body's names are torchvision's, so a
torchvision ResNet state dict loads into ``backbone.body`` as is. Any other key (detectron2's
non-persistent ``pixel_mean``/``pixel_std`` if present, deformable-conv offsets, another
architecture's modules) is returned in `unmapped_keys`, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from torch import Tensor

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]

_D2_TO_OURS: list[_Rule] = [
    (
        re.compile(r"backbone\.bottom_up\.stem\.conv1\.weight"),
        lambda m: "backbone.body.conv1.weight",
    ),
    (
        re.compile(r"backbone\.bottom_up\.stem\.conv1\.norm\.(\w+)"),
        lambda m: f"backbone.body.bn1.{m[1]}",
    ),
    (
        re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.weight"),
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.norm\.(\w+)"),
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}",
    ),
    (
        re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.weight"),
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight",
    ),
    (
        re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.norm\.(\w+)"),
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}",
    ),
    (
        re.compile(r"backbone\.fpn_(lateral|output)(\d+)\.(weight|bias)"),
        lambda m: f"backbone.fpn.{m[1]}_convs.p{m[2]}.{m[3]}",
    ),
    (
        re.compile(r"backbone\.fpn_(lateral|output)(\d+)\.norm\.(\w+)"),
        lambda m: f"backbone.fpn.{m[1]}_norms.p{m[2]}.{m[3]}",
    ),
    (re.compile(r"backbone\.top_block\.(p[67]\.\w+)"), lambda m: f"backbone.fpn.top_block.{m[1]}"),
    (re.compile(r"head\.((?:cls|bbox)_subnet\.\d+\.\w+)"), lambda m: f"head.{m[1]}"),
    (re.compile(r"head\.((?:cls_score|bbox_pred)\.(?:weight|bias))"), lambda m: f"head.{m[1]}"),
]

_OURS_TO_D2: list[_Rule] = [
    (
        re.compile(r"backbone\.body\.conv1\.weight"),
        lambda m: "backbone.bottom_up.stem.conv1.weight",
    ),
    (
        re.compile(r"backbone\.body\.bn1\.(\w+)"),
        lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}",
    ),
    (
        re.compile(r"backbone\.body\.layer([1-4])\.(\d+)\.conv([1-3])\.weight"),
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        re.compile(r"backbone\.body\.layer([1-4])\.(\d+)\.bn([1-3])\.(\w+)"),
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (
        re.compile(r"backbone\.body\.layer([1-4])\.(\d+)\.downsample\.0\.weight"),
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    (
        re.compile(r"backbone\.body\.layer([1-4])\.(\d+)\.downsample\.1\.(\w+)"),
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (
        re.compile(r"backbone\.fpn\.(lateral|output)_convs\.p(\d+)\.(weight|bias)"),
        lambda m: f"backbone.fpn_{m[1]}{m[2]}.{m[3]}",
    ),
    (
        re.compile(r"backbone\.fpn\.(lateral|output)_norms\.p(\d+)\.(\w+)"),
        lambda m: f"backbone.fpn_{m[1]}{m[2]}.norm.{m[3]}",
    ),
    (re.compile(r"backbone\.fpn\.top_block\.(p[67]\.\w+)"), lambda m: f"backbone.top_block.{m[1]}"),
    (re.compile(r"head\.((?:cls|bbox)_subnet\.\d+\.\w+)"), lambda m: f"head.{m[1]}"),
    (re.compile(r"head\.((?:cls_score|bbox_pred)\.(?:weight|bias))"), lambda m: f"head.{m[1]}"),
]


def _rename(
    state_dict: Mapping[str, Tensor], rules: list[_Rule]
) -> tuple[dict[str, Tensor], list[str]]:
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        for pattern, target in rules:
            match = pattern.fullmatch(key)
            if match is not None:
                mapped[target(match)] = value
                break
        else:
            unmapped.append(key)
    return mapped, unmapped


def detectron2_to_retinacli(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a detectron2 RetinaNet state dict to retinacli names.

    Returns (mapped, unmapped_keys): the renamed entries (same tensors) and, in input order, the
    keys no rule recognised. The caller decides whether unmapped keys are an error.
    """
    return _rename(state_dict, _D2_TO_OURS)


def retinacli_to_detectron2(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """The inverse of `detectron2_to_retinacli`: (mapped to detectron2 names, unmapped_keys)."""
    return _rename(state_dict, _OURS_TO_D2)
