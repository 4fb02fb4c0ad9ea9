"""`model.weights`: initialising from ImageNet backbones (torchvision, MSRA Caffe2) and detectors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision

from retinacli.build import build_model
from retinacli.errors import CheckpointError
from retinacli.recipe import load_recipe
from retinacli.weights.loading import init_from_weights

R18 = ["model.backbone.depth=18", "model.backbone.res2_out_channels=64", "model.fpn.out_channels=32",
       "model.head.num_classes=2", "model.head.num_convs=1"]


def fresh(*extra: str):
    torch.manual_seed(0)
    return build_model(load_recipe(None, [*R18, *extra]).model)


def test_torchvision_backbone_loads_every_key_and_leaves_the_head(tmp_path):
    torchvision_model = torchvision.models.resnet18()
    path = tmp_path / "resnet18-test.pth"
    torch.save(torchvision_model.state_dict(), path)
    model = fresh()
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    report = init_from_weights(model, path)
    assert report.kind == "torchvision" and report.skipped_shape == []
    body = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.body.")}
    reference = torchvision_model.state_dict()
    for key, value in body.items():
        torch.testing.assert_close(value, reference[key.removeprefix("backbone.body.")], rtol=0, atol=0, msg=key)
    assert set(report.loaded) == set(body)
    assert not any(k.startswith("backbone.body.") for k in report.not_in_file)
    assert {"fc.weight", "fc.bias"} <= set(report.unused)
    for key, value in head_before.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def caffe2_r18_names() -> dict[str, tuple[int, ...]]:
    """The MSRA/Caffe2 blob names of a ResNet-18, with their shapes."""
    names = {"conv1_w": (64, 3, 7, 7), "res_conv1_bn_s": (64,), "res_conv1_bn_b": (64,)}
    channels = {2: 64, 3: 128, 4: 256, 5: 512}
    for stage, out in channels.items():
        for block in range(2):
            cin = out if block or stage == 2 else out // 2
            prefix = f"res{stage}_{block}_"
            names[prefix + "branch2a_w"] = (out, cin, 3, 3)
            names[prefix + "branch2b_w"] = (out, out, 3, 3)
            for branch in ("branch2a", "branch2b"):
                names[prefix + f"{branch}_bn_s"] = (out,)
                names[prefix + f"{branch}_bn_b"] = (out,)
            if block == 0 and stage > 2:
                names[prefix + "branch1_w"] = (out, cin, 1, 1)
                names[prefix + "branch1_bn_s"] = (out,)
                names[prefix + "branch1_bn_b"] = (out,)
    names["fc1000_w"] = (1000, 512)
    names["fc1000_b"] = (1000,)
    return names


def test_msra_caffe2_pickle_loads_every_backbone_weight(tmp_path):
    rng = np.random.default_rng(0)
    blobs = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in caffe2_r18_names().items()}
    path = tmp_path / "R-18.pkl"
    path.write_bytes(pickle.dumps(blobs, protocol=2))
    model = fresh("model.backbone.norm=FrozenBN")
    report = init_from_weights(model, path)
    assert report.kind == "caffe2"
    state = model.state_dict()
    torch.testing.assert_close(state["backbone.body.conv1.weight"], torch.from_numpy(blobs["conv1_w"]))
    torch.testing.assert_close(state["backbone.body.layer1.0.bn2.weight"], torch.from_numpy(blobs["res2_0_branch2b_bn_s"]))
    torch.testing.assert_close(
        state["backbone.body.layer2.0.downsample.0.weight"], torch.from_numpy(blobs["res3_0_branch1_w"])
    )
    assert not any(k.startswith("backbone.body.") for k in report.not_in_file)  # every backbone key accounted for
    assert {"fc1000_w", "fc1000_b"} <= set(report.unused)


def test_detector_weights_with_another_class_count_skip_the_classifier(tmp_path):
    source = fresh("model.head.num_classes=5")
    path = tmp_path / "detector.pth"
    torch.save({"model": {f"{k}": v for k, v in source.state_dict().items()}, "format": "retinacli-checkpoint"}, path)
    model = fresh()
    report = init_from_weights(model, path)
    assert any(s.startswith("head.cls_score.weight") for s in report.skipped_shape)
    torch.testing.assert_close(model.state_dict()["head.bbox_pred.weight"], source.state_dict()["head.bbox_pred.weight"])


def test_weights_of_nothing_usable_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"backbone.something.else": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="nothing this model can use"):
        init_from_weights(fresh(), path)
