"""BestTracker (best evaluation, early stopping) and ModelEma (the weights' moving average)."""

from __future__ import annotations

import math

import pytest
import torch

from retinacli.training.best import BestTracker
from retinacli.training.ema import ModelEma


def test_best_tracker_keeps_the_best_and_counts_evaluations_since():
    best = BestTracker("AP", patience=2)
    assert [best.update(i, v) for i, v in [(9, 10.0), (19, 30.0), (29, 20.0), (39, None)]] == [True, True, False, False]
    assert (best.value, best.iteration, best.evaluations_since_best, best.should_stop) == (30.0, 19, 2, True)
    again = BestTracker("AP", patience=2)
    again.load_state_dict(best.state_dict())
    assert again == best
    assert not BestTracker("AP").should_stop  # no patience: never stops


def test_equal_is_not_better_and_losses_go_down():
    best = BestTracker("AP")
    assert best.update(0, 5.0) and not best.update(1, 5.0)
    loss = BestTracker("val_loss")
    assert not loss.higher_is_better
    assert loss.update(0, 2.0) and loss.update(1, 1.5) and not loss.update(2, 1.7)


def test_ema_warm_up_and_update_formula():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.9, tau=2.0)
    # step n uses 0.9 * (1 - exp(-n / 2)): 0.9 * 0.39347 = 0.35412 for n = 1
    assert ema.decay_at(1) == pytest.approx(0.9 * (1 - math.exp(-0.5)), rel=1e-15)
    start = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = ema.decay_at(1)
    torch.testing.assert_close(ema.module.weight, d * start + (1 - d) * model.weight, rtol=0, atol=1e-7)
    assert not ema.module.weight.requires_grad and not ema.module.training


def test_ema_copies_integer_buffers_and_resumes_exactly():
    model = torch.nn.BatchNorm1d(3)
    ema = ModelEma(model, decay=0.99, tau=10.0)
    for _ in range(3):
        model.train()(torch.randn(4, 3))
        ema.update(model)
    assert int(ema.module.num_batches_tracked) == 3
    resumed = ModelEma(torch.nn.BatchNorm1d(3), decay=0.99, tau=10.0)
    resumed.load_state_dict(ema.state_dict())
    model.train()(torch.randn(4, 3))
    ema.update(model)
    resumed.update(model)
    for a, b in zip(ema.module.state_dict().values(), resumed.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_ema_settings_are_refused():
    with pytest.raises(ValueError, match="decay"):
        ModelEma(torch.nn.Linear(1, 1), decay=1.0, tau=1.0)
