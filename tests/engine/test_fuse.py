"""BatchNorm folding and channels-last: the same network outputs, fewer layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retinacli.engine.fuse import fold_batch_norms, prepare_for_inference
from tests.engine.builders import build_retinanet


def _randomise_norms(model: nn.Module) -> None:
    """Statistics and affine parameters far from the identity, so that folding matters."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            c = module.running_mean.shape[0]
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


@pytest.mark.parametrize(("norm", "depth", "pairs"), [("FrozenBN", 18, 20), ("BN", 18, 20), ("BN", 50, 53)])
def test_folded_network_computes_the_same_outputs(norm, depth, pairs):
    torch.manual_seed(0)
    model = build_retinanet(norm=norm, depth=depth, freeze_at=0).eval()
    _randomise_norms(model)
    folded = copy.deepcopy(model)
    assert fold_batch_norms(folded) == pairs  # stem + every block's convs + the shortcuts
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in folded.backbone.modules())
    image = torch.randint(0, 256, (3, 160, 224), dtype=torch.uint8)
    with torch.no_grad():
        ours, theirs = model.run_network([image]), prepare_for_inference(folded).run_network([image])
    for a, b in zip(ours.logits + ours.deltas, theirs.logits + theirs.deltas, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_group_norm_and_per_level_head_norms_are_left_alone():
    model = build_retinanet(norm="GN", freeze_at=0, head_norm="BN").eval()
    assert fold_batch_norms(model) == 0
    assert any(isinstance(m, nn.GroupNorm) for m in model.backbone.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.head.modules())


def test_a_training_model_is_refused():
    with pytest.raises(ValueError, match="training mode"):
        fold_batch_norms(build_retinanet(norm="BN", freeze_at=0).train())
