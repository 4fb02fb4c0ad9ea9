"""RetinaNetHead: output layout (y*W + x)*A + a, prior-probability init, shared modules, norms."""

from __future__ import annotations

import math

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
