"""An exponential moving average (EMA) of a model's weights, updated after every optimizer step.

Step n (1-based) uses the decay ``decay * (1 - exp(-n / tau))``, so the average follows the early,
fast-changing weights closely and settles to `decay` later (the warm-up ultralytics uses). Every
floating-point entry of the state dict (parameters and BatchNorm statistics) is averaged as
``ema = d * ema + (1 - d) * current``; integer entries (BatchNorm step counters) are copied. The
update is deterministic, so a resumed run (`state_dict` / `load_state_dict`) continues the same
average bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ModelEma:
    """`module` holds the averaged weights: a copy of the model, in eval mode, without gradients.

    Args (keyword-only): decay in (0, 1); tau > 0, the warm-up in steps.
    """

    def __init__(self, model: nn.Module, *, decay: float, tau: float) -> None:
        if not 0.0 < decay < 1.0 or tau <= 0:
            raise ValueError(f"ModelEma: need 0 < decay < 1 and tau > 0, got {decay} and {tau}")
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The decay of step `updates` (1-based)."""
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in the current weights of `model` (same architecture as `module`)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        ours = self.module.state_dict()
        floats, currents = [], []
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                floats.append(ours[name])
                currents.append(value.detach())
            else:
                ours[name].copy_(value)
        if floats:
            torch._foreach_mul_(floats, d)
            torch._foreach_add_(floats, currents, alpha=1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        """{"updates": int, "model": the averaged state dict on the CPU}."""
        return {
            "updates": self.updates,
            "model": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
