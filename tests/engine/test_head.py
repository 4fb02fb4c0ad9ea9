"""RetinaNetHead: output layout (y*W + x)*A + a, prior-probability init, shared modules, norms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from retinacli.engine.head import RetinaNetHead, flatten_level


def test_flatten_layout_matches_detectron2() -> None:
    # Channel c = a*K + k at (y, x) holds the code 1000*a + 100*k + 10*y + x.
    a_n, k_n, h, w = 2, 3, 2, 4
    x = torch.zeros(1, a_n * k_n, h, w)
    for a in range(a_n):
        for k in range(k_n):
            for yy in range(h):
                for xx in range(w):
                    x[0, a * k_n + k, yy, xx] = 1000 * a + 100 * k + 10 * yy + xx
    flat = flatten_level(x, k_n)
    assert flat.shape == (1, h * w * a_n, k_n)
    # y=1, x=3, a=1 -> row (1*4 + 3)*2 + 1 = 15; class 2 -> 1000 + 200 + 10 + 3.
    assert flat[0, 15, 2].item() == 1213.0


def test_shapes_and_sharing_across_levels() -> None:
    head = RetinaNetHead(in_channels=8, num_classes=3, num_anchors=9, num_convs=2)
    feats = [torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)]
    logits, deltas = head(feats)
    assert [tuple(x.shape) for x in logits] == [(2, 270, 3), (2, 81, 3)]
    assert [tuple(x.shape) for x in deltas] == [(2, 270, 4), (2, 81, 4)]
    raw_logits, _ = head.forward_raw(feats)
    assert_close(flatten_level(raw_logits[1], 3), logits[1], atol=0, rtol=0)


def test_init_prior_probability() -> None:
    torch.manual_seed(0)
    head = RetinaNetHead(in_channels=32, num_classes=4, num_anchors=2, num_convs=1, prior_prob=0.01)
    assert_close(head.cls_score.bias, torch.full((8,), -math.log(99.0)), atol=1e-6, rtol=0)
    assert bool((head.bbox_pred.bias == 0).all())
    assert abs(head.cls_subnet[0].weight.std().item() - 0.01) < 0.001
    logits, _ = head([torch.randn(1, 32, 4, 4)])
    assert_close(torch.sigmoid(logits[0]).mean(), torch.tensor(0.01), atol=2e-3, rtol=0)


def test_gn_sequential_indices_follow_detectron2() -> None:
    head = RetinaNetHead(in_channels=32, num_classes=2, num_anchors=1, num_convs=2, norm="GN")
    kinds = [type(m) for m in head.cls_subnet]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.Conv2d, nn.GroupNorm, nn.ReLU]
    assert "cls_subnet.1.weight" in head.state_dict() and "bbox_subnet.3.bias" in head.state_dict()


def test_bn_keeps_statistics_per_level_with_a_shared_affine_as_detectron2() -> None:
    torch.manual_seed(0)
    head = RetinaNetHead(in_channels=8, num_classes=2, num_anchors=1, num_convs=1, norm="BN", num_levels=3)
    # detectron2's CycleBatchNormList names: shared weight/bias, per-level statistics.
    keys = {k for k in head.state_dict() if k.startswith("cls_subnet.1.")}
    assert keys == {"cls_subnet.1.weight", "cls_subnet.1.bias"} | {
        f"cls_subnet.1.{level}.{stat}" for level in range(3)
        for stat in ("running_mean", "running_var", "num_batches_tracked")
    }
    with torch.no_grad():
        head.cls_subnet[1].weight.copy_(torch.linspace(0.5, 2.0, 8))
        head.cls_subnet[1].bias.copy_(torch.linspace(-1.0, 1.0, 8))
    feats = [torch.randn(2, 8, 4, 4) * (level + 1) + level for level in range(3)]
    head.train()
    logits, _ = head.forward_raw(feats)
    # Each level was normalised with its own batch statistics, then the shared affine.
    conv = head.cls_subnet[0]
    for level, feature in enumerate(feats):
        y = conv(feature)
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        normed = (y - mean) / torch.sqrt(var + 1e-5)
        affine = normed * head.cls_subnet[1].weight.reshape(1, -1, 1, 1) + head.cls_subnet[1].bias.reshape(1, -1, 1, 1)
        expected = head.cls_score(torch.relu(affine))
        assert_close(logits[level], expected, atol=1e-5, rtol=1e-5)
        stats = head.cls_subnet[1][level]
        assert_close(stats.running_mean, 0.1 * mean.flatten(), atol=1e-6, rtol=1e-5)
    # The levels' statistics differ (the features do), and eval mode uses each level's own.
    means = [head.cls_subnet[1][level].running_mean for level in range(3)]
    assert not torch.allclose(means[0], means[2])
    head.eval()
    with torch.no_grad():
        eval_logits, _ = head.forward_raw(feats)
        swapped, _ = head.forward_raw([feats[2], feats[1], feats[0]])
    assert not torch.allclose(eval_logits[0], swapped[2])  # level 2's statistics on level 0's input


def test_bn_head_needs_one_feature_map_per_level() -> None:
    head = RetinaNetHead(in_channels=8, num_classes=2, num_anchors=1, num_convs=1, norm="BN", num_levels=3)
    with pytest.raises(ValueError, match="2 feature maps, but its BatchNorm keeps statistics for 3 levels"):
        head([torch.randn(1, 8, 4, 4)] * 2)


def test_detectron2_bn_head_weights_load_by_name(tmp_path) -> None:
    # A detectron2 RetinaNet with RETINANET.NORM "BN" names its head norms as below; they map onto
    # the per-level head unchanged.
    from retinacli.weights.names import detectron2_to_retinacli

    head = RetinaNetHead(in_channels=8, num_classes=2, num_anchors=1, num_convs=2, norm="BN", num_levels=5)
    ours = {f"head.{k}": v for k, v in head.state_dict().items()}
    d2 = {"head.cls_subnet.1.weight": 1, "head.cls_subnet.1.4.running_var": 1, "head.bbox_subnet.4.0.num_batches_tracked": 1}
    mapped, unmapped = detectron2_to_retinacli({k: torch.zeros(1) for k in d2})
    assert unmapped == [] and set(mapped) <= set(ours)
