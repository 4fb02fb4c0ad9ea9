"""ResNet bottom-up feature extractor (He et al., 2016) with detectron2's options and init.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, blocks
with ``conv1/bn1/conv2/bn2[/conv3/bn3]`` and ``downsample.0`` (1x1 conv) / ``downsample.1``
(norm)), so torchvision ImageNet weights load directly. The ``bn*`` modules are whatever `norm`
asks for (FrozenBN, BN, SyncBN or GN). detectron2's stage names map as stem -> conv1/bn1,
res2 -> layer1, ..., res5 -> layer4 (see `retinacli.weights.names`).

Stem: conv 7x7 stride 2 -> norm -> ReLU -> max-pool 3x3 stride 2 (stride 4 in all).
BasicBlock (depth 18, 34): 3x3 (stride here) -> norm -> ReLU -> 3x3 -> norm, + shortcut, ReLU.
Bottleneck (depth 50, 101): 1x1 -> norm -> ReLU -> 3x3 -> norm -> ReLU -> 1x1 -> norm,
+ shortcut, ReLU; the stride sits on the first 1x1 when `stride_in_1x1` (MSRA/detectron2 weights)
or on the 3x3 (torchvision weights). The shortcut is a strided 1x1 conv + norm when the channel
count or the resolution changes, identity otherwise. Convs have no bias and use detectron2's
c2_msra_fill (kaiming normal, fan_out, ReLU gain).

`freeze_at` as detectron2: 0 freezes nothing, 1 the stem, 2 the stem and res2 (layer1), and so
on up to 5. Frozen parameters get ``requires_grad = False`` and their BatchNorms become
FrozenBatchNorm2d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from retinacli.engine.norm import NormKind, convert_to_frozen_bn, make_norm
from retinacli.levels import STAGES as STAGE_NAMES

FEATURE_NAMES = ("stem", *STAGE_NAMES)
BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BOTTLENECK_EXPANSION = 4
STEM_STRIDE = 4


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: NormKind) -> nn.Module | None:
    if in_channels == out_channels and stride == 1:
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), make_norm(norm, out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int, norm: NormKind) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 3, stride)
        self.bn1 = make_norm(norm, out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3)
        self.bn2 = make_norm(norm, out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        # In-place ReLU/add on fresh norm outputs: no backward here needs them (fewer allocations).
        out = self.bn1(self.conv1(x)).relu_()
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out.add_(shortcut).relu_()


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs with a residual connection; (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(
        self,
        *,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        stride: int,
        stride_in_1x1: bool,
        norm: NormKind,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, stride_1x1)
        self.bn1 = make_norm(norm, bottleneck_channels)
        self.conv2 = _conv(bottleneck_channels, bottleneck_channels, 3, stride_3x3)
        self.bn2 = make_norm(norm, bottleneck_channels)
        self.conv3 = _conv(bottleneck_channels, out_channels, 1)
        self.bn3 = make_norm(norm, out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu_()
        out = self.bn2(self.conv2(out)).relu_()
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out.add_(shortcut).relu_()


class ResNet(nn.Module):
    """ResNet-{18,34,50,101} returning the feature maps named in `out_features`.

    Args (keyword-only):
        depth: 18, 34 (BasicBlock) or 50, 101 (Bottleneck).
        norm: "FrozenBN", "BN", "SyncBN" or "GN".
        freeze_at: 0..5, see the module docstring.
        stride_in_1x1: bottlenecks put the stride on the first 1x1 conv (detectron2/MSRA) rather
            than on the 3x3 (torchvision). Ignored for depth 18/34.
        stem_out_channels: channels after the stem (64 in standard ResNets).
        res2_out_channels: channels out of res2, doubled at each later stage (64 for depth
            18/34, 256 for 50/101); bottlenecks are a quarter of that wide.
        out_features: a subset of "stem", "res2".."res5"; only stages up to the last one are built.

    forward(x (B, 3, H, W)) -> dict name -> (B, C_name, H / stride_name, W / stride_name).
    """

    def __init__(
        self,
        *,
        depth: int,
        norm: NormKind = "FrozenBN",
        freeze_at: int = 2,
        stride_in_1x1: bool = True,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
    ) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(
                f"ResNet: depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}"
            )
        if norm == "none":
            raise ValueError("ResNet: norm 'none' is not supported; use FrozenBN, BN, SyncBN or GN")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"ResNet: freeze_at must be in 0..5, got {freeze_at}")
        unknown = [f for f in out_features if f not in FEATURE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"ResNet: out_features must be a non-empty subset of {FEATURE_NAMES}, got {list(out_features)}"
            )
        basic = depth in (18, 34)
        if basic and res2_out_channels != 64:
            raise ValueError(
                f"ResNet: depth {depth} needs res2_out_channels 64, got {res2_out_channels}"
            )

        self.depth = depth
        self.out_features = tuple(f for f in FEATURE_NAMES if f in out_features)
        self.conv1 = _conv(3, stem_out_channels, 7, 2)
        self.bn1 = make_norm(norm, stem_out_channels)

        self.feature_strides = {"stem": STEM_STRIDE}
        self.feature_channels = {"stem": stem_out_channels}
        num_stages = max(FEATURE_NAMES.index(f) for f in self.out_features)
        in_channels = stem_out_channels
        out_channels = res2_out_channels
        stride = STEM_STRIDE
        for stage in range(num_stages):
            first_stride = 1 if stage == 0 else 2
            stride *= first_stride
            blocks = []
            for i in range(BLOCKS_PER_STAGE[depth][stage]):
                block_stride = first_stride if i == 0 else 1
                if basic:
                    block: nn.Module = BasicBlock(
                        in_channels=in_channels,
                        out_channels=out_channels,
                        stride=block_stride,
                        norm=norm,
                    )
                else:
                    block = Bottleneck(
                        in_channels=in_channels,
                        bottleneck_channels=out_channels // BOTTLENECK_EXPANSION,
                        out_channels=out_channels,
                        stride=block_stride,
                        stride_in_1x1=stride_in_1x1,
                        norm=norm,
                    )
                blocks.append(block)
                in_channels = out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
            self.feature_strides[STAGE_NAMES[stage]] = stride
            self.feature_channels[STAGE_NAMES[stage]] = out_channels
            out_channels *= 2
        self.freeze(freeze_at)

    @property
    def stages(self) -> list[nn.Module]:
        """The built stages, res2 first (torchvision's layer1, layer2, ...)."""
        return [m for name, m in self.named_children() if name.startswith("layer")]

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem (freeze_at >= 1) and res2..res{freeze_at} as detectron2 does."""
        frozen: list[nn.Module] = []
        if freeze_at >= 1:
            frozen += [self.conv1, self.bn1]
        frozen += self.stages[: max(freeze_at - 1, 0)]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        if freeze_at >= 1:
            self.bn1 = convert_to_frozen_bn(self.bn1)
        for stage in range(1, min(freeze_at, 1 + len(self.stages))):
            convert_to_frozen_bn(getattr(self, f"layer{stage}"))
        self.freeze_at = freeze_at

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        x = self.bn1(self.conv1(x)).relu_()
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        if "stem" in self.out_features:
            outputs["stem"] = x
        for name, stage in zip(STAGE_NAMES, self.stages, strict=False):
            x = stage(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs
