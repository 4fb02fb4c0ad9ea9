"""Feature Pyramid Network (Lin et al., 2017) with RetinaNet's P6/P7, as detectron2 builds it.

Shape legend: B images, C FPN channels, levels named pN for stride 2**N.

For each input feature (finest first, e.g. res3, res4, res5 -> p3, p4, p5) a lateral 1x1 conv
and an output 3x3 conv (both with bias when `norm` is "none", else bias-free and followed by the
norm). Top-down from the coarsest: ``prev = lateral(c5)``; for each finer level
``prev = lateral(c) + upsample_nearest_2x(prev)`` (halved for fuse_type "avg"), and
``p = output(prev)``: the upsampled term is the sum *before* the output conv. Then
``p6 = conv3x3_s2(top_in)`` and ``p7 = conv3x3_s2(relu(p6))`` where top_in is res5 (detectron2,
RetinaNet paper) or p5 (torchvision); the returned p6 is taken before the ReLU. P6/P7 sizes are
``ceil(n / 2)``. Convs use detectron2's c2_xavier_fill (kaiming uniform, a=1; bias 0).

Inputs must be a multiple of `size_divisibility` = the stride of the last input feature (32 for
res5), not of the P7 stride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from retinacli.engine.backbone import ResNet
from retinacli.engine.norm import NormKind, make_norm
from retinacli.levels import NUM_TOP_LEVELS

FuseType = Literal["sum", "avg"]
TopBlockInput = Literal["res5", "p5"]


def _c2_xavier_conv(
    in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool
) -> nn.Conv2d:
    conv = nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=bias
    )
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class LastLevelP6P7(nn.Module):
    """RetinaNet's extra levels: (B, C_in, H, W) -> p6 (B, C, ceil(H/2), ceil(W/2)), p7 (ceil again)."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = _c2_xavier_conv(in_channels, out_channels, 3, 2, bias=True)
        self.p7 = _c2_xavier_conv(out_channels, out_channels, 3, 2, bias=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """Top-down pyramid over bottom-up features, plus P6/P7.

    Args (keyword-only):
        in_channels: channels of each input feature, finest first (e.g. [128, 256, 512]).
        in_strides: stride of each input feature, consecutive powers of two (e.g. [8, 16, 32]).
        out_channels: C, the channels of every output level.
        norm: "none" (convs with bias) or a norm name for the lateral and output convs.
        fuse_type: "sum" or "avg" of the lateral and the upsampled coarser level.
        top_block_input: "res5" (the last input feature; detectron2) or "p5" (torchvision).

    forward(features: list of (B, C_in_i, H_i, W_i), finest first) -> [p3, ..., p7] for inputs
    at strides 8, 16, 32, each (B, C, H_l, W_l).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_channels: int,
        norm: NormKind = "none",
        fuse_type: FuseType = "sum",
        top_block_input: TopBlockInput = "res5",
    ) -> None:
        super().__init__()
        if len(in_channels) == 0 or len(in_channels) != len(in_strides):
            raise ValueError(
                f"FPN: in_channels {list(in_channels)} and in_strides {list(in_strides)} must be "
                f"non-empty and of equal length"
            )
        levels = [int(math.log2(s)) for s in in_strides]
        if any(2**lv != s for lv, s in zip(levels, in_strides, strict=True)) or levels != list(
            range(levels[0], levels[0] + len(levels))
        ):
            raise ValueError(
                f"FPN: in_strides must be consecutive powers of two, got {list(in_strides)}"
            )
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FPN: fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        if top_block_input not in ("res5", "p5"):
            raise ValueError(
                f"FPN: top_block_input must be 'res5' or 'p5', got {top_block_input!r}"
            )
        use_bias = norm == "none"
        self.in_level_names = [f"p{lv}" for lv in levels]
        self.lateral_convs = nn.ModuleDict()
        self.lateral_norms = nn.ModuleDict()
        self.output_convs = nn.ModuleDict()
        self.output_norms = nn.ModuleDict()
        for name, channels in zip(self.in_level_names, in_channels, strict=True):
            self.lateral_convs[name] = _c2_xavier_conv(channels, out_channels, 1, 1, bias=use_bias)
            self.output_convs[name] = _c2_xavier_conv(
                out_channels, out_channels, 3, 1, bias=use_bias
            )
            if not use_bias:
                self.lateral_norms[name] = make_norm(norm, out_channels)
                self.output_norms[name] = make_norm(norm, out_channels)
        top_in = in_channels[-1] if top_block_input == "res5" else out_channels
        self.top_block = LastLevelP6P7(in_channels=top_in, out_channels=out_channels)
        self.fuse_type = fuse_type
        self.top_block_input = top_block_input
        self.out_channels = out_channels
        self.out_strides = [2**lv for lv in range(levels[0], levels[-1] + 1 + NUM_TOP_LEVELS)]
        self.out_level_names = [
            f"p{lv}" for lv in range(levels[0], levels[-1] + 1 + NUM_TOP_LEVELS)
        ]
        # Stride of the last *input* feature: what detectron2 pads inputs to (32, not 128).
        self.size_divisibility = int(in_strides[-1])

    def _lateral(self, name: str, x: Tensor) -> Tensor:
        x = self.lateral_convs[name](x)
        return self.lateral_norms[name](x) if name in self.lateral_norms else x

    def _output(self, name: str, x: Tensor) -> Tensor:
        x = self.output_convs[name](x)
        return self.output_norms[name](x) if name in self.output_norms else x

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.in_level_names):
            raise ValueError(
                f"FPN: expected {len(self.in_level_names)} input features, got {len(features)}"
            )
        names = self.in_level_names
        prev = self._lateral(names[-1], features[-1])
        outputs = [self._output(names[-1], prev)]
        for name, feature in zip(reversed(names[:-1]), reversed(features[:-1]), strict=True):
            lateral = self._lateral(name, feature)
            if lateral.shape[-2:] != (2 * prev.shape[-2], 2 * prev.shape[-1]):
                raise ValueError(
                    f"FPN: level {name} is {tuple(lateral.shape[-2:])} but the coarser level is "
                    f"{tuple(prev.shape[-2:])}; pad inputs to a multiple of {self.size_divisibility}"
                )
            prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            if self.fuse_type == "avg":
                prev = prev / 2
            outputs.insert(0, self._output(name, prev))
        top_in = features[-1] if self.top_block_input == "res5" else outputs[-1]
        outputs.extend(self.top_block(top_in))
        return outputs


class ResNetFPN(nn.Module):
    """A ResNet bottom-up (`body`) and an FPN (`fpn`) on top of its `in_features`.

    forward(x (B, 3, H, W)) -> [p3, ..., p7] (B, C, H_l, W_l); H and W must be multiples of
    `size_divisibility`.
    """

    def __init__(self, *, body: ResNet, fpn: FPN, in_features: Sequence[str]) -> None:
        super().__init__()
        missing = [f for f in in_features if f not in body.out_features]
        if missing:
            raise ValueError(
                f"ResNetFPN: in_features {missing} are not among the body's out_features {list(body.out_features)}"
            )
        strides = [body.feature_strides[f] for f in in_features]
        if strides != fpn.out_strides[: len(strides)]:
            raise ValueError(
                f"ResNetFPN: in_features {list(in_features)} have strides {strides} but the FPN was "
                f"built for {fpn.out_strides[: len(in_features)]}"
            )
        self.body = body
        self.fpn = fpn
        self.in_features = list(in_features)

    @property
    def size_divisibility(self) -> int:
        return self.fpn.size_divisibility

    @property
    def out_strides(self) -> list[int]:
        return self.fpn.out_strides

    @property
    def out_channels(self) -> int:
        return self.fpn.out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.body(x)
        return self.fpn([features[f] for f in self.in_features])
