"""Normalisation layers by name, and detectron2's conversion of BatchNorm to FrozenBatchNorm.

Names: "FrozenBN" (torchvision FrozenBatchNorm2d, eps 1e-5: fixed affine from stored statistics),
"BN" (BatchNorm2d), "SyncBN" (SyncBatchNorm), "GN" (GroupNorm with 32 groups), "none" (no layer).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

NormKind = Literal["none", "FrozenBN", "BN", "SyncBN", "GN"]
NORM_KINDS: tuple[str, ...] = ("none", "FrozenBN", "BN", "SyncBN", "GN")

BN_EPS = 1e-5
GN_GROUPS = 32


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    """A normalisation layer over `channels` channels; nn.Identity for "none"."""
    if kind == "none":
        return nn.Identity()
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(channels, eps=BN_EPS)
    if kind == "BN":
        return nn.BatchNorm2d(channels, eps=BN_EPS)
    if kind == "SyncBN":
        return nn.SyncBatchNorm(channels, eps=BN_EPS)
    if kind == "GN":
        if channels % GN_GROUPS != 0:
            raise ValueError(
                f"make_norm: GN needs channels divisible by {GN_GROUPS}, got {channels}"
            )
        return nn.GroupNorm(GN_GROUPS, channels)
    raise ValueError(f"make_norm: unknown norm {kind!r}; choose one of {', '.join(NORM_KINDS)}")


class PerLevelBatchNorm(nn.ModuleList):
    """BatchNorm with running statistics per pyramid level and one affine transform shared by all
    levels: detectron2's `CycleBatchNormList`, which its RetinaNetHead uses for norm "BN" and
    "SyncBN" (the head runs on every level, whose statistics differ; see "Rethinking Batch in
    BatchNorm", Sec. 5.2).

    `forward(x, level)` normalises with the statistics of `level` (its own batch statistics in
    training), then applies `weight` and `bias`. detectron2 picks the level by cycling through the
    list at every call; naming it is the same for a head that runs the levels in order, and cannot
    drift. State dict: `weight`, `bias`, and `<level>.running_mean`, `.running_var`,
    `.num_batches_tracked`, as detectron2's.
    """

    def __init__(self, channels: int, *, num_levels: int, sync: bool = False) -> None:
        bn_class = nn.SyncBatchNorm if sync else nn.BatchNorm2d
        super().__init__([bn_class(channels, eps=BN_EPS, affine=False) for _ in range(num_levels)])
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, level: int) -> Tensor:  # type: ignore[override]
        return self[level](x) * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


def convert_to_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm inside `module` by a FrozenBatchNorm2d holding
    the same weight, bias, running statistics and eps. Returns the (possibly new) module.

    detectron2 does this to the stages frozen by `freeze_at`, so their statistics stop moving.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new_child = convert_to_frozen_bn(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module
