"""FPN: top-down arithmetic by hand, P6/P7 input and sizes, norms and bias, init, checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from retinacli.engine.fpn import FPN


def identity_fpn(fuse_type: str = "sum", top_block_input: str = "res5") -> FPN:
    """One channel everywhere; laterals multiply by 1, output convs pass the centre tap."""
    fpn = FPN(
        in_channels=[1, 1, 1],
        in_strides=[8, 16, 32],
        out_channels=1,
        fuse_type=fuse_type,
        top_block_input=top_block_input,
    )
    with torch.no_grad():
        for conv in fpn.lateral_convs.values():
            conv.weight.fill_(1.0)
        for conv in fpn.output_convs.values():
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
    return fpn


def up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def test_top_down_adds_the_pre_output_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    c3, c4, c5 = (torch.randn(1, 1, s, s, generator=gen) for s in (8, 4, 2))
    p3, p4, p5, p6, p7 = identity_fpn()([c3, c4, c5])
    # p5 = c5; p4 = c4 + up(c5); p3 = c3 + up(c4 + up(c5)).
    assert_close(p5, c5, atol=0, rtol=0)
    assert_close(p4, c4 + up(c5), atol=1e-6, rtol=0)
    assert_close(p3, c3 + up(c4 + up(c5)), atol=1e-6, rtol=0)
    avg = identity_fpn("avg")([c3, c4, c5])
    assert_close(avg[1], (c4 + up(c5)) / 2, atol=1e-6, rtol=0)


def test_p6_p7_input_and_ceil_sizes() -> None:
    # res5 of 5x7 -> p6 ceil: 3x4 -> p7 2x2.
    feats = [torch.randn(1, 16, 20, 28), torch.randn(1, 32, 10, 14), torch.randn(1, 64, 5, 7)]
    fpn = FPN(in_channels=[16, 32, 64], in_strides=[8, 16, 32], out_channels=8)
    outs = fpn(feats)
    assert [tuple(o.shape[-2:]) for o in outs] == [(20, 28), (10, 14), (5, 7), (3, 4), (2, 2)]
    assert fpn.top_block.p6.in_channels == 64  # detectron2: from res5
    assert fpn.out_strides == [8, 16, 32, 64, 128] and fpn.size_divisibility == 32
    with torch.no_grad():
        p6 = fpn.top_block.p6(feats[-1])
        assert_close(outs[3], p6, atol=0, rtol=0)  # returned before the ReLU
        assert_close(outs[4], fpn.top_block.p7(F.relu(p6)), atol=0, rtol=0)
    tv = FPN(in_channels=[16, 32, 64], in_strides=[8, 16, 32], out_channels=8, top_block_input="p5")
    assert tv.top_block.p6.in_channels == 8  # torchvision: from p5
    assert tv(feats)[3].shape == (1, 8, 3, 4)


def test_norm_removes_bias_and_adds_norm_modules() -> None:
    plain = FPN(in_channels=[32, 64], in_strides=[16, 32], out_channels=32)
    assert plain.lateral_convs["p4"].bias is not None and len(plain.lateral_norms) == 0
    assert all(bool((c.bias == 0).all()) for c in plain.output_convs.values())
    gn = FPN(in_channels=[32, 64], in_strides=[16, 32], out_channels=32, norm="GN")
    assert gn.lateral_convs["p4"].bias is None and isinstance(gn.output_norms["p5"], nn.GroupNorm)
    assert len(gn([torch.randn(1, 32, 4, 4), torch.randn(1, 64, 2, 2)])) == 4


def test_unpadded_input_is_rejected() -> None:
    fpn = FPN(in_channels=[1, 1, 1], in_strides=[8, 16, 32], out_channels=1)
    with pytest.raises(ValueError, match="multiple of 32"):
        fpn([torch.zeros(1, 1, 9, 8), torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 3, 2)])
    with pytest.raises(ValueError, match="consecutive powers of two"):
        FPN(in_channels=[1, 1], in_strides=[8, 32], out_channels=1)
