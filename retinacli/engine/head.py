"""RetinaNet classification and box-regression subnets (Lin et al., 2017, Sec. 4), shared by all
pyramid levels, as detectron2's RetinaNetHead.

Shape legend: B images, C input channels, A anchors per location, K classes, H_l x W_l level l.

Each subnet is ``num_convs`` x [conv 3x3 (with bias) -> optional norm -> ReLU] (Sequential
indices 0 conv, 1 ReLU, ... without norm; 0 conv, 1 norm, 2 ReLU, ... with it), then `cls_score`
(A*K channels) or `bbox_pred` (A*4 channels). The same modules run on every level; GN is shared
too, while "BN" and "SyncBN" keep running statistics per level with a shared affine transform
(`norm.PerLevelBatchNorm`, detectron2's CycleBatchNormList).
Convs are initialised normal(std 0.01) with bias 0, and `cls_score`'s bias is
``-log((1 - prior_prob) / prior_prob)`` so every anchor starts at probability prior_prob (Sec. 4.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from retinacli.engine.norm import NormKind, PerLevelBatchNorm, make_norm

_INIT_STD = 0.01


def _subnet(channels: int, num_convs: int, norm: NormKind, num_levels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        if norm in ("BN", "SyncBN"):
            layers.append(PerLevelBatchNorm(channels, num_levels=num_levels, sync=norm == "SyncBN"))
        elif norm != "none":
            layers.append(make_norm(norm, channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _run_subnet(subnet: nn.Sequential, x: Tensor, level: int) -> Tensor:
    for layer in subnet:
        x = layer(x, level) if isinstance(layer, PerLevelBatchNorm) else layer(x)
    return x


def flatten_level(x: Tensor, last_dim: int) -> Tensor:
    """(B, A*last_dim, H, W) -> (B, H*W*A, last_dim); anchor (y*W + x)*A + a, as detectron2."""
    b, _, h, w = x.shape
    x = x.view(b, -1, last_dim, h, w)  # (B, A, last_dim, H, W)
    return x.permute(0, 3, 4, 1, 2).reshape(b, -1, last_dim)  # (B, H*W*A, last_dim)


class RetinaNetHead(nn.Module):
    """Per-anchor class logits and box deltas for every pyramid level.

    Args (keyword-only):
        in_channels: C, channels of every input level (the FPN's out_channels).
        num_classes: K, without background.
        num_anchors: A, anchors per location (the same on every level).
        num_convs: convs in each subnet before the predictor (4 in the paper).
        norm: "none", "GN", "BN" or "SyncBN", applied after each subnet conv.
        prior_prob: initial foreground probability of every anchor and class.
        num_levels: L, the pyramid levels the head runs on (BN and SyncBN keep statistics per
            level); forward takes exactly that many feature maps when norm is BN or SyncBN.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_anchors: int,
        num_convs: int = 4,
        norm: NormKind = "none",
        prior_prob: float = 0.01,
        num_levels: int = 5,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_anchors < 1 or num_convs < 0:
            raise ValueError(
                f"RetinaNetHead: need num_classes >= 1, num_anchors >= 1 and num_convs >= 0, got "
                f"{num_classes}, {num_anchors}, {num_convs}"
            )
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"RetinaNetHead: prior_prob must be in (0, 1), got {prior_prob}")
        if num_levels < 1:
            raise ValueError(f"RetinaNetHead: num_levels must be >= 1, got {num_levels}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.num_levels = num_levels
        self.per_level_norm = norm in ("BN", "SyncBN") and num_convs > 0
        self.cls_subnet = _subnet(in_channels, num_convs, norm, num_levels)
        self.bbox_subnet = _subnet(in_channels, num_convs, norm, num_levels)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for module in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0.0, std=_INIT_STD)
                    nn.init.zeros_(layer.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward_raw(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level, logits (B, A*K, H_l, W_l) and deltas (B, A*4, H_l, W_l), the conv layout."""
        if not self.per_level_norm:
            logits = [self.cls_score(self.cls_subnet(f)) for f in features]
            deltas = [self.bbox_pred(self.bbox_subnet(f)) for f in features]
            return logits, deltas
        if len(features) != self.num_levels:
            raise ValueError(
                f"RetinaNetHead: {len(features)} feature maps, but its BatchNorm keeps statistics "
                f"for {self.num_levels} levels"
            )
        logits = [self.cls_score(_run_subnet(self.cls_subnet, f, i)) for i, f in enumerate(features)]
        deltas = [self.bbox_pred(_run_subnet(self.bbox_subnet, f, i)) for i, f in enumerate(features)]
        return logits, deltas

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level, logits (B, H_l*W_l*A, K) and deltas (B, H_l*W_l*A, 4)."""
        logits, deltas = self.forward_raw(features)
        return (
            [flatten_level(x, self.num_classes) for x in logits],
            [flatten_level(x, 4) for x in deltas],
        )
