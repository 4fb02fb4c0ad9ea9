"""Inference-only rewrites of a detector: BatchNorm folded into convolutions, channels-last.

`fold_batch_norms` rewrites every (Conv2d, norm) pair of the backbone whose norm is an
inference-time affine map (torchvision's `FrozenBatchNorm2d`, or `BatchNorm2d` in eval mode):
``y = (conv(x) - mean) * gamma / sqrt(var + eps) + beta`` becomes one convolution with weights
``w * s`` and bias ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, computed in float64
and stored in the convolution's dtype; the norm becomes `nn.Identity`. The pairs are the
ResNet's (stem ``conv1``/``bn1``, blocks ``conv<i>``/``bn<i>``, shortcuts ``Sequential(conv,
norm)``). GroupNorm and the head's per-level BatchNorm (statistics per pyramid level, so no
single convolution can absorb them) stay as they are. Results differ from the unfolded model
only by float32 rounding (the golden detectron2 comparisons hold with it: `retina eval` and
`retina predict` fold).

Never fold a model that will train again: the norms are gone.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def fold_batch_norms(model: nn.Module) -> int:
    """Fold the (conv, norm) pairs of `model` in place (module docstring); returns how many.

    Raises:
        ValueError: `model` is in training mode (its BatchNorm statistics would be wrong).
    """
    if model.training:
        raise ValueError("fold_batch_norms: the model is in training mode; call model.eval() first")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (_, conv), (norm_name, norm) in zip(children, children[1:], strict=False):
                if isinstance(conv, nn.Conv2d) and _foldable(norm):
                    _fold(conv, norm)
                    setattr(module, norm_name, nn.Identity())
                    folded += 1
            continue
        for name, conv in list(module.named_children()):
            if not (isinstance(conv, nn.Conv2d) and name.startswith("conv")):
                continue
            norm_name = "bn" + name[len("conv") :]
            norm = getattr(module, norm_name, None)
            if _foldable(norm):
                _fold(conv, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


def to_channels_last(model: nn.Module) -> nn.Module:
    """The model's 4-d parameters in channels-last memory order (inputs follow on their own:
    a convolution's output takes its weight's layout)."""
    return model.to(memory_format=torch.channels_last)


def _foldable(norm: object) -> bool:
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.track_running_stats and norm.running_var is not None


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    mean = norm.running_mean.double()
    var = norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)  # (C_out,)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    dtype = conv.weight.dtype
    conv.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(dtype))
    new_bias = ((bias - mean) * scale + beta).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Eval mode, BatchNorm folded (`fold_batch_norms`) and channels-last weights: what `retina
    eval` and `retina predict` run (about a third faster on a CPU than the model as trained;
    benchmarks/inference_vs_torchvision.py). In place; returns `model`."""
    model.eval()
    fold_batch_norms(model)
    return to_channels_last(model)
