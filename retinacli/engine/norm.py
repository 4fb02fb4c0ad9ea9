"""Normalisation layers by name, and detectron2's conversion of BatchNorm to FrozenBatchNorm.

Names: "FrozenBN" (torchvision FrozenBatchNorm2d, eps 1e-5: fixed affine from stored statistics),
"BN" (BatchNorm2d), "SyncBN" (SyncBatchNorm), "GN" (GroupNorm with 32 groups), "none" (no layer).
"""

from __future__ import annotations

from typing import Literal

from torch import nn
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
