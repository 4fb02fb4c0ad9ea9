"""Optimizer construction and gradient clipping, as detectron2's solver builds them.

Parameter groups follow detectron2's `get_default_optimizer_params` + `reduce_param_groups`:
every trainable parameter gets a learning rate and a weight decay,

- default: `lr = base_lr`, `weight_decay = weight_decay`;
- parameters owned directly by a normalization layer (BatchNorm1d/2d/3d and subclasses,
  SyncBatchNorm, GroupNorm, InstanceNorm1d/2d/3d, LayerNorm, LocalResponseNorm):
  `weight_decay = weight_decay_norm` (when not None);
- parameters named `bias` (in any module, normalization layers included, applied after the
  rule above): `lr = base_lr * bias_lr_factor` when the factor is not 1, and
  `weight_decay = weight_decay_bias` when it is not None;

then parameters with identical (lr, weight_decay) are merged into one group, groups ordered by
first appearance in `model.modules()` order. Parameters with `requires_grad=False` are skipped and a
parameter shared by several modules is counted once (first owner wins). torchvision's
FrozenBatchNorm2d holds buffers only, so it contributes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

OptimizerName = Literal["SGD", "AdamW"]
ClipType = Literal["value", "norm"]
ClipScope = Literal["per_parameter", "full_model"]

NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,  # InstanceNorm1d/2d/3d
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def default_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float | None,
    weight_decay_bias: float | None,
    bias_lr_factor: float,
) -> list[dict[str, Any]]:
    """Parameter groups `[{"params": [...], "lr": float, "weight_decay": float}, ...]`.

    See the module docstring for the rules. Raises ValueError when the model has no trainable
    parameter.
    """
    bias_lr = base_lr * bias_lr_factor if bias_lr_factor != 1.0 else base_lr
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_MODULE_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr, decay = base_lr, weight_decay
            if is_norm and weight_decay_norm is not None:
                decay = weight_decay_norm
            if name == "bias":
                lr = bias_lr
                if weight_decay_bias is not None:
                    decay = weight_decay_bias
            groups.setdefault((lr, decay), []).append(param)
    if not groups:
        raise ValueError(
            "model: has no trainable parameter (every requires_grad is False); "
            "unfreeze some layers before building an optimizer"
        )
    return [
        {"params": params, "lr": lr, "weight_decay": decay}
        for (lr, decay), params in groups.items()
    ]


def build_optimizer(
    model: nn.Module,
    *,
    optimizer: OptimizerName,
    base_lr: float,
    momentum: float,
    nesterov: bool,
    betas: Sequence[float],
    weight_decay: float,
    weight_decay_norm: float | None,
    weight_decay_bias: float | None,
    bias_lr_factor: float,
) -> torch.optim.Optimizer:
    """An SGD or AdamW optimizer over `default_param_groups(model, ...)`.

    SGD uses `momentum` and `nesterov` (dampening 0, as detectron2); AdamW uses `betas` and
    torch's default eps 1e-8. The arguments the other optimizer uses are ignored. Each group's
    "lr" is its base rate: a `WarmupScheduler` built afterwards scales it per iteration.
    Raises ValueError naming the argument for out-of-range values.
    """
    if optimizer not in ("SGD", "AdamW"):
        raise ValueError(f"optimizer: unknown optimizer {optimizer!r}; use SGD or AdamW")
    for label, value in (("base_lr", base_lr), ("bias_lr_factor", bias_lr_factor)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{label}: must be a positive number, got {value!r}")
    for label, maybe in (
        ("weight_decay", weight_decay),
        ("weight_decay_norm", weight_decay_norm),
        ("weight_decay_bias", weight_decay_bias),
    ):
        if maybe is not None and not (math.isfinite(maybe) and maybe >= 0):
            raise ValueError(f"{label}: must be a number >= 0, got {maybe!r}")
    groups = default_param_groups(
        model,
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        weight_decay_bias=weight_decay_bias,
        bias_lr_factor=bias_lr_factor,
    )
    if optimizer == "SGD":
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: must lie in [0, 1), got {momentum!r}; detectron2 uses 0.9")
        if nesterov and momentum == 0.0:
            raise ValueError(
                "nesterov: needs momentum > 0; set momentum (e.g. 0.9) or nesterov false"
            )
        return torch.optim.SGD(
            groups, lr=base_lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    beta_list = [float(b) for b in betas]
    if len(beta_list) != 2 or not all(0.0 <= b < 1.0 for b in beta_list):
        raise ValueError(f"betas: must be two numbers in [0, 1), got {list(betas)}")
    return torch.optim.AdamW(
        groups, lr=base_lr, betas=(beta_list[0], beta_list[1]), weight_decay=weight_decay
    )


def clip_gradients(
    parameters: Iterable[torch.Tensor],
    *,
    clip_type: ClipType,
    clip_value: float,
    norm_type: float,
    scope: ClipScope,
) -> float | None:
    """Clip gradients in place; call between `loss.backward()` and `optimizer.step()`.

    - `clip_type="value"`, `scope="per_parameter"`: every gradient element is clamped to
      [-clip_value, clip_value] (detectron2 `CLIP_TYPE: value`).
    - `clip_type="norm"`, `scope="per_parameter"`: each parameter's gradient is rescaled on its own
      so that its `norm_type`-norm is at most `clip_value` (detectron2 `CLIP_TYPE: norm`).
    - `clip_type="norm"`, `scope="full_model"`: the gradients of all parameters together are
      rescaled so that their joint norm is at most `clip_value` (the full-model clipping of
      detectron2's DETR project). Value clipping has no full-model form.

    Parameters without a gradient are skipped. Returns the joint gradient norm before clipping
    for full_model scope (a float, for logging), otherwise None.
    """
    if clip_type not in ("value", "norm"):
        raise ValueError(f"clip_type: unknown type {clip_type!r}; use value or norm")
    if scope not in ("per_parameter", "full_model"):
        raise ValueError(f"scope: unknown scope {scope!r}; use per_parameter or full_model")
    if not (math.isfinite(clip_value) and clip_value > 0):
        raise ValueError(f"clip_value: must be a positive number, got {clip_value!r}")
    if not (norm_type > 0):
        raise ValueError(f"norm_type: must be > 0 (inf allowed), got {norm_type!r}")
    if scope == "full_model" and clip_type != "norm":
        raise ValueError(
            "scope: full_model clipping needs clip_type norm; use norm, or scope per_parameter"
        )
    with_grad = [p for p in parameters if p.grad is not None]
    if scope == "full_model":
        total = torch.nn.utils.clip_grad_norm_(with_grad, clip_value, norm_type)
        return float(total)
    for param in with_grad:
        if clip_type == "value":
            torch.nn.utils.clip_grad_value_(param, clip_value)
        else:
            torch.nn.utils.clip_grad_norm_(param, clip_value, norm_type)
    return None
