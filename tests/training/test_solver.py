"""Parameter groups, optimizers and gradient clipping (detectron2's rules)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from retinacli.training.solver import build_optimizer, clip_gradients, default_param_groups


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.frozen = FrozenBatchNorm2d(4)  # buffers only: no parameter
        self.fc = nn.Linear(4, 2)
        self.fc_again = self.fc  # shared module: its parameters must appear once
        self.tied = nn.Linear(4, 2, bias=False)
        self.tied.weight = self.fc.weight  # one parameter owned by two modules: counted once
        self.fixed = nn.Linear(2, 2)
        self.fixed.requires_grad_(False)


def _groups_by_name(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}  # first name of shared params
    return [(g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in groups]


def test_default_groups_norm_decay_and_skips():
    model = Toy()
    groups = default_param_groups(
        model,
        base_lr=0.01,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        weight_decay_bias=None,
        bias_lr_factor=1.0,
    )
    assert _groups_by_name(model, groups) == [
        (0.01, 1e-4, ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]),
        (0.01, 0.0, ["bn.weight", "bn.bias", "gn.weight", "gn.bias", "ln.weight", "ln.bias"]),
    ]


def test_bias_overrides_apply_after_norm_rule():
    model = Toy()
    groups = default_param_groups(
        model,
        base_lr=0.01,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        weight_decay_bias=0.5,
        bias_lr_factor=2.0,
    )
    # Biases (norm biases too) get lr 0.01 * 2 = 0.02 and weight decay 0.5, as detectron2's
    # per-name override is applied after the norm rule.
    assert _groups_by_name(model, groups) == [
        (0.01, 1e-4, ["conv.weight", "fc.weight"]),
        (0.02, 0.5, ["conv.bias", "bn.bias", "gn.bias", "ln.bias", "fc.bias"]),
        (0.01, 0.0, ["bn.weight", "gn.weight", "ln.weight"]),
    ]


def test_none_norm_decay_means_weight_decay():
    model = Toy()
    groups = default_param_groups(
        model,
        base_lr=0.01,
        weight_decay=1e-4,
        weight_decay_norm=None,
        weight_decay_bias=None,
        bias_lr_factor=1.0,
    )
    assert len(groups) == 1
    assert groups[0]["weight_decay"] == 1e-4
    assert len(groups[0]["params"]) == 10  # conv 2 + bn 2 + gn 2 + ln 2 + fc 2; fixed skipped


def test_no_trainable_parameter_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="model: has no trainable parameter"):
        default_param_groups(
            model,
            base_lr=0.01,
            weight_decay=0.0,
            weight_decay_norm=None,
            weight_decay_bias=None,
            bias_lr_factor=1.0,
        )


SOLVER = dict(
    base_lr=0.01,
    momentum=0.9,
    nesterov=False,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
    weight_decay_norm=0.0,
    weight_decay_bias=None,
    bias_lr_factor=1.0,
)


def test_sgd_step_decays_only_non_norm_parameters():
    torch.manual_seed(0)
    model = Toy()
    optimizer = build_optimizer(model, optimizer="SGD", **SOLVER)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"] is False
    conv_before = model.conv.weight.detach().clone()
    bn_before = model.bn.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    # zero gradient: SGD moves w by -lr * wd * w = w * (1 - 0.01 * 1e-4); norm weights stay.
    torch.testing.assert_close(model.conv.weight.detach(), conv_before * (1 - 0.01 * 1e-4))
    torch.testing.assert_close(model.bn.weight.detach(), bn_before, rtol=0, atol=0)


def test_adamw_uses_betas_and_groups():
    optimizer = build_optimizer(Toy(), optimizer="AdamW", **dict(SOLVER, betas=[0.8, 0.99]))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.8, 0.99)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("Adam", {}, "optimizer: unknown optimizer 'Adam'"),
        ("SGD", {"base_lr": -1.0}, "base_lr: must be a positive number"),
        ("SGD", {"weight_decay_bias": -0.1}, "weight_decay_bias: must be a number >= 0"),
        ("SGD", {"momentum": 1.0}, r"momentum: must lie in \[0, 1\)"),
        ("SGD", {"momentum": 0.0, "nesterov": True}, "nesterov: needs momentum > 0"),
        ("AdamW", {"betas": [0.9]}, r"betas: must be two numbers in \[0, 1\)"),
    ],
)
def test_build_optimizer_rejects_bad_values(name, change, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(Toy(), optimizer=name, **dict(SOLVER, **change))


def _params_with_grads(*grads):
    params = []
    for grad in grads:
        p = nn.Parameter(torch.zeros(len(grad)))
        p.grad = torch.tensor(grad)
        params.append(p)
    return params


def test_clip_by_value_per_parameter():
    (p,) = _params_with_grads([3.0, -0.5, -2.0])
    assert (
        clip_gradients([p], clip_type="value", clip_value=1.0, norm_type=2.0, scope="per_parameter")
        is None
    )
    torch.testing.assert_close(p.grad, torch.tensor([1.0, -0.5, -1.0]), rtol=0, atol=0)


def test_clip_by_norm_per_parameter():
    p, q = _params_with_grads([3.0, 4.0], [0.6, 0.8])
    clip_gradients([p, q], clip_type="norm", clip_value=2.0, norm_type=2.0, scope="per_parameter")
    # p: norm 5 > 2 -> scaled by 2/5: [1.2, 1.6]; q: norm 1 <= 2 -> unchanged.
    torch.testing.assert_close(p.grad, torch.tensor([1.2, 1.6]))
    torch.testing.assert_close(q.grad, torch.tensor([0.6, 0.8]), rtol=0, atol=0)


def test_clip_by_inf_norm_per_parameter():
    (p,) = _params_with_grads([3.0, -4.0])
    clip_gradients([p], clip_type="norm", clip_value=2.0, norm_type=math.inf, scope="per_parameter")
    torch.testing.assert_close(p.grad, torch.tensor([1.5, -2.0]))  # max |g| 4 -> scale 1/2


def test_clip_full_model_norm_scales_all_together_and_returns_norm():
    p, q = _params_with_grads([3.0, 4.0], [0.6, 0.8])
    without = nn.Parameter(torch.zeros(2))  # no grad: skipped
    total = clip_gradients(
        [p, q, without], clip_type="norm", clip_value=2.0, norm_type=2.0, scope="full_model"
    )
    # joint norm sqrt(25 + 1) = 5.0990195; every gradient scaled by 2 / 5.0990195.
    assert total == pytest.approx(math.sqrt(26.0), rel=1e-6)
    scale = 2.0 / math.sqrt(26.0)
    torch.testing.assert_close(p.grad, torch.tensor([3.0, 4.0]) * scale)
    torch.testing.assert_close(q.grad, torch.tensor([0.6, 0.8]) * scale)
    assert without.grad is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_type": "value", "scope": "full_model"}, "full_model clipping needs clip_type norm"),
        ({"clip_type": "abs"}, "clip_type: unknown type 'abs'"),
        ({"scope": "global"}, "scope: unknown scope 'global'"),
        ({"clip_value": 0.0}, "clip_value: must be a positive number"),
        ({"norm_type": 0.0}, "norm_type: must be > 0"),
    ],
)
def test_clip_rejects_bad_arguments(kwargs, message):
    args = dict(clip_type="norm", clip_value=1.0, norm_type=2.0, scope="per_parameter")
    with pytest.raises(ValueError, match=message):
        clip_gradients(_params_with_grads([1.0]), **dict(args, **kwargs))
