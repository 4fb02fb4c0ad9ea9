"""ResNet: shapes and strides, freezing as detectron2, stride_in_1x1, norms, torchvision names."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close
from torchvision.ops import FrozenBatchNorm2d

from retinacli.engine.backbone import ResNet

ALL = ["stem", "res2", "res3", "res4", "res5"]


def test_feature_shapes_strides_and_channels_r18() -> None:
    body = ResNet(depth=18, norm="FrozenBN", res2_out_channels=64, out_features=ALL)
    out = body(torch.zeros(1, 3, 64, 96))
    strides = {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": 32}
    channels = {"stem": 64, "res2": 64, "res3": 128, "res4": 256, "res5": 512}
    assert body.feature_strides == strides and body.feature_channels == channels
    for name, x in out.items():
        assert x.shape == (1, channels[name], 64 // strides[name], 96 // strides[name])


def test_only_needed_stages_are_built() -> None:
    body = ResNet(depth=18, res2_out_channels=64, out_features=["res3"])
    assert [n for n, _ in body.named_children() if n.startswith("layer")] == ["layer1", "layer2"]
    assert list(body(torch.zeros(1, 3, 32, 32))) == ["res3"]


@pytest.mark.parametrize(("stride_in_1x1", "strided"), [(True, "conv1"), (False, "conv2")])
def test_bottleneck_stride_placement(stride_in_1x1: bool, strided: str) -> None:
    body = ResNet(depth=50, norm="FrozenBN", stride_in_1x1=stride_in_1x1, out_features=["res3"])
    block = body.layer2[0]
    assert getattr(block, strided).stride == (2, 2)
    other = "conv2" if strided == "conv1" else "conv1"
    assert getattr(block, other).stride == (1, 1)
    # res2's first bottleneck widens 64 -> 256 at stride 1: a 1x1 shortcut conv is present.
    assert body.layer1[0].downsample is not None and body.layer1[0].downsample[0].stride == (1, 1)
    assert body(torch.zeros(1, 3, 32, 32))["res3"].shape == (1, 512, 4, 4)


def test_freeze_at_follows_detectron2() -> None:
    # freeze_at 2: stem and res2 (layer1) frozen, their BN turned into FrozenBN; res3 trainable BN.
    body = ResNet(depth=18, norm="BN", freeze_at=2, res2_out_channels=64)
    assert not body.conv1.weight.requires_grad
    assert isinstance(body.bn1, FrozenBatchNorm2d) and isinstance(
        body.layer1[0].bn1, FrozenBatchNorm2d
    )
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert isinstance(body.layer2[0].bn1, nn.BatchNorm2d)
    assert all(p.requires_grad for p in body.layer2.parameters())
    nothing = ResNet(depth=18, norm="BN", freeze_at=0, res2_out_channels=64)
    assert all(p.requires_grad for p in nothing.parameters())
    assert isinstance(nothing.bn1, nn.BatchNorm2d)
    gn = ResNet(depth=18, norm="GN", freeze_at=1, res2_out_channels=64)
    assert isinstance(gn.bn1, nn.GroupNorm) and not gn.bn1.weight.requires_grad
    assert gn.layer1[0].bn1.weight.requires_grad


def test_conv_init_is_msra_fan_out() -> None:
    torch.manual_seed(0)
    body = ResNet(depth=18, res2_out_channels=64, out_features=["res5"])
    w = body.layer4[0].conv2.weight  # 512 x 512 x 3 x 3, fan_out = 512 * 9
    assert abs(w.std().item() - math.sqrt(2.0 / (512 * 9))) < 0.01 * math.sqrt(2.0 / (512 * 9))
    assert body.conv1.bias is None


def test_torchvision_resnet18_weights_load_and_give_the_same_features() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    body = ResNet(
        depth=18, norm="BN", freeze_at=0, res2_out_channels=64, out_features=["res5"]
    ).eval()
    body.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = reference.layer4(
            reference.layer3(
                reference.layer2(
                    reference.layer1(
                        reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
                    )
                )
            )
        )
        assert_close(body(x)["res5"], ref, atol=1e-5, rtol=1e-5)
    frozen = ResNet(depth=18, norm="FrozenBN", res2_out_channels=64, out_features=["res5"])
    frozen.load_state_dict(state, strict=True)  # num_batches_tracked is dropped by FrozenBN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 20},
        {"depth": 18, "res2_out_channels": 256},
        {"depth": 18, "res2_out_channels": 64, "freeze_at": 6},
        {"depth": 18, "res2_out_channels": 64, "out_features": ["res6"]},
        {"depth": 18, "res2_out_channels": 64, "norm": "none"},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="ResNet"):
        ResNet(**kwargs)


def test_training_mode_gradients_match_torchvision() -> None:
    # The blocks use in-place ReLU/add; autograd must still give torchvision's gradients.
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).train()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    body = ResNet(depth=18, norm="BN", freeze_at=0, res2_out_channels=64, out_features=["res5"])
    body.load_state_dict(state, strict=True)
    body.train()
    x = torch.randn(2, 3, 32, 32)
    stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
    ref = reference.layer4(reference.layer3(reference.layer2(reference.layer1(stem))))
    ref.square().sum().backward()
    body(x)["res5"].square().sum().backward()
    assert_close(body.conv1.weight.grad, reference.conv1.weight.grad, atol=1e-4, rtol=1e-4)
    assert_close(
        body.layer3[0].conv2.weight.grad,
        reference.layer3[0].conv2.weight.grad,
        atol=1e-4,
        rtol=1e-4,
    )
