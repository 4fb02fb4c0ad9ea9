"""detectron2 <-> retinacli state-dict names: the golden keys, norms, unknown keys, round trip."""

from __future__ import annotations

from pathlib import Path

import torch

from retinacli.weights.names import detectron2_to_retinacli, retinacli_to_detectron2
from tests.engine.builders import build_retinanet


def test_examples_from_the_docstring() -> None:
    keys = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.body.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.running_mean": "backbone.body.bn1.running_mean",
        "backbone.bottom_up.res2.0.conv1.norm.weight": "backbone.body.layer1.0.bn1.weight",
        "backbone.bottom_up.res5.2.conv3.weight": "backbone.body.layer4.2.conv3.weight",
        "backbone.bottom_up.res3.0.shortcut.weight": "backbone.body.layer2.0.downsample.0.weight",
        "backbone.bottom_up.res3.0.shortcut.norm.num_batches_tracked": "backbone.body.layer2.0.downsample.1.num_batches_tracked",
        "backbone.fpn_lateral3.weight": "backbone.fpn.lateral_convs.p3.weight",
        "backbone.fpn_output3.bias": "backbone.fpn.output_convs.p3.bias",
        "backbone.fpn_lateral4.norm.weight": "backbone.fpn.lateral_norms.p4.weight",
        "backbone.top_block.p6.weight": "backbone.fpn.top_block.p6.weight",
        "head.cls_subnet.0.weight": "head.cls_subnet.0.weight",
        "head.cls_subnet.1.bias": "head.cls_subnet.1.bias",
        "head.cls_score.bias": "head.cls_score.bias",
        "head.bbox_pred.weight": "head.bbox_pred.weight",
    }
    state = {k: torch.zeros(1) for k in keys}
    mapped, unmapped = detectron2_to_retinacli(state)
    assert unmapped == []
    assert sorted(mapped) == sorted(keys.values())
    back, unmapped_back = retinacli_to_detectron2(mapped)
    assert unmapped_back == [] and sorted(back) == sorted(keys)


def test_unknown_keys_are_reported_not_dropped() -> None:
    state = {
        "pixel_mean": torch.zeros(3),
        "roi_heads.box_predictor.cls_score.weight": torch.zeros(1),
        "backbone.bottom_up.res5.0.conv2_offset.weight": torch.zeros(1),
    }
    mapped, unmapped = detectron2_to_retinacli(state)
    assert mapped == {} and unmapped == list(state)


def test_golden_checkpoint_maps_onto_the_model_exactly(golden_dir: Path) -> None:
    state = torch.load(golden_dir / "model_final.pth", weights_only=True)["model"]
    mapped, unmapped = detectron2_to_retinacli(state)
    assert unmapped == []
    assert set(mapped) == set(build_retinanet().state_dict())
    back, _ = retinacli_to_detectron2(mapped)
    assert set(back) == set(state) and all(back[k] is state[k] for k in state)


def test_model_with_norms_round_trips() -> None:
    model = build_retinanet(
        depth=50,
        norm="BN",
        freeze_at=0,
        fpn_channels=32,
        fpn_norm="GN",
        head_norm="GN",
        head_convs=1,
    )
    ours = model.state_dict()
    d2, unmapped = retinacli_to_detectron2(ours)
    assert unmapped == []
    assert "backbone.bottom_up.res2.0.conv3.norm.num_batches_tracked" in d2
    assert "backbone.fpn_output5.norm.bias" in d2
    again, unmapped_again = detectron2_to_retinacli(d2)
    assert unmapped_again == [] and set(again) == set(ours)
