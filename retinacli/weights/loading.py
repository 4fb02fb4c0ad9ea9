"""Loading weights into an already built model.

- `init_from_weights` (a recipe's `model.weights`): copies what fits from a file of any supported
  format, whatever its names. Initialising is not resuming: only weights are taken, never an
  iteration, optimizer or RNG. Entries whose shape differs from the model's (fine-tuning to
  another class count) are skipped with their names reported; model parameters the file does not
  hold keep their fresh initialisation (the head, when the file is an ImageNet backbone) and are
  reported as such.
- `load_exactly`: every model entry must come from the state dict with its shape, or nothing is
  loaded (model files, `import-detectron2`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from retinacli.errors import CheckpointError
from retinacli.weights.names import (
    caffe2_resnet_to_detectron2,
    detectron2_to_retinacli,
    torchvision_resnet_to_retinacli,
)
from retinacli.weights.readers import WeightsKind, read_weights_file

# Entries that carry no learned value: left out of the reports.
_STEP_COUNTER = "num_batches_tracked"


@dataclass
class InitReport:
    """What `init_from_weights` did. All names are the model's, except `unused` (the file's)."""

    path: Path
    kind: str
    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the training log."""
        lines = [f"initialised {len(self.loaded)} tensors from {self.path} ({self.kind} weights)"]
        if self.skipped_shape:
            lines.append(
                "re-initialised, the file's shape differs (another class count or anchor layout): "
                + ", ".join(self.skipped_shape)
            )
        if self.not_in_file:
            groups = sorted({".".join(name.split(".")[:2]) for name in self.not_in_file})
            lines.append(
                f"kept their fresh initialisation ({len(self.not_in_file)} tensors): {', '.join(groups)}"
            )
        if self.unused:
            lines.append(f"unused entries of the file ({len(self.unused)}): {', '.join(self.unused[:8])}")
        return "\n".join(lines)


def to_model_names(state: Mapping[str, Tensor], kind: WeightsKind) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a file's entries (of `kind`, see `readers`) to retinacli's names; returns
    (renamed, file keys no rule knows)."""
    if kind == "retinacli":
        return dict(state), []
    if kind == "torchvision":
        conversion = torchvision_resnet_to_retinacli(state)
        return conversion.mapped, list(conversion.not_mapped)
    if kind == "caffe2":
        conversion = caffe2_resnet_to_detectron2(state)
        mapped, unmapped = detectron2_to_retinacli(conversion.mapped)
        return mapped, [*unmapped, *conversion.not_mapped]
    if not any(k.startswith("backbone.") for k in state):  # backbone-relative zoo names
        state = {f"backbone.bottom_up.{k}": v for k, v in state.items()}
    return detectron2_to_retinacli(state)


def init_from_weights(model: nn.Module, path: str | os.PathLike[str]) -> InitReport:
    """Copy what fits from the weights file at `path` into `model` (in place).

    Raises CheckpointError naming the file when it cannot be read or holds nothing this model
    can use.
    """
    target = Path(path)
    state, kind = read_weights_file(target)
    renamed, unused = to_model_names(state, kind)
    expected = model.state_dict()
    report = InitReport(path=target, kind=kind, unused=[k for k in unused if not k.endswith(_STEP_COUNTER)])
    usable: dict[str, Tensor] = {}
    for name, tensor in renamed.items():
        if name not in expected:
            if not name.endswith(_STEP_COUNTER):
                report.unused.append(name)
        elif tuple(tensor.shape) != tuple(expected[name].shape):
            report.skipped_shape.append(
                f"{name} {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}"
            )
        else:
            usable[name] = tensor.to(expected[name].dtype)
    if not usable:
        raise CheckpointError(
            f"{target} ({kind} weights) has nothing this model can use; check that it is a "
            "RetinaNet/ResNet file of the recipe's depth"
        )
    report.loaded = sorted(usable)
    report.not_in_file = [n for n in expected if n not in usable and not n.endswith(_STEP_COUNTER)]
    with torch.no_grad():
        model.load_state_dict(usable, strict=False)
    return report


def load_exactly(model: nn.Module, state: Mapping[str, Any], *, source: str, fix: str) -> None:
    """Load `state` into `model` when it has exactly the model's keys and shapes.

    Raises CheckpointError `<source>: the weights do not fit ... (<what differs>); <fix>`
    before anything is loaded.
    """
    mismatch = describe_state_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{source}: the weights do not fit the model ({mismatch}); {fix}")
    model.load_state_dict(dict(state), strict=True)


def describe_state_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Any]) -> str:
    """'' when `given` has exactly the keys and shapes of `expected`, else what differs."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and isinstance(given[k], Tensor) and given[k].shape != expected[k].shape
    ]
    mismatched += [k for k in expected if k in given and not isinstance(given[k], Tensor)]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape differs for {_few(mismatched)}")
    return "; ".join(problems)


def _few(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
