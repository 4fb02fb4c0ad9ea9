"""Initialising a model from a weights file (`model.weights`): any supported format, any names.

Initialising is not resuming: only weights are taken, never an iteration, optimizer or RNG.
Entries whose shape differs from the model's (fine-tuning to another class count) are skipped
with their names reported; model parameters the file does not hold keep their fresh
initialisation (the head, when the file is an ImageNet backbone) and are reported as such.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from retinacli.engine.d2_names import detectron2_to_retinacli
from retinacli.errors import CheckpointError
from retinacli.weights import (
    caffe2_resnet_to_detectron2,
    read_weights_file,
    torchvision_resnet_to_detectron2,
)

_BACKBONE_PREFIX = "backbone.body."


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
            lines.append(f"skipped (shape differs): {', '.join(self.skipped_shape)}")
        if self.not_in_file:
            groups = sorted({name.split(".")[0] + "." + name.split(".")[1] for name in self.not_in_file})
            lines.append(f"kept their fresh initialisation ({len(self.not_in_file)} tensors): {', '.join(groups)}")
        if self.unused:
            lines.append(f"unused entries of the file ({len(self.unused)}): {', '.join(self.unused[:8])}")
        return "\n".join(lines)


def init_from_weights(model: nn.Module, path: str | os.PathLike[str]) -> InitReport:
    """Copy what fits from the weights file at `path` into `model` (in place)."""
    target = Path(path)
    if not target.exists():
        raise CheckpointError(
            f"model.weights: {target} not found; download it (e.g. detectron2's ImageNet "
            "R-50.pkl or a torchvision resnet50-*.pth) and put it there, or set "
            "--set model.weights=PATH (null trains from scratch)"
        )
    state, kind = read_weights_file(target)
    renamed, unused = _to_model_names(state, kind)
    expected = model.state_dict()
    report = InitReport(
        path=target, kind=kind, unused=[k for k in unused if not k.endswith("num_batches_tracked")]
    )
    usable: dict[str, Tensor] = {}
    for name, tensor in renamed.items():
        if name not in expected:
            report.unused.append(name)
        elif tuple(tensor.shape) != tuple(expected[name].shape):
            report.skipped_shape.append(
                f"{name} {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}"
            )
        else:
            usable[name] = tensor.to(expected[name].dtype)
    if not usable:
        raise CheckpointError(
            f"model.weights: {target} ({kind} weights) has nothing this model can use; check that "
            "it is a RetinaNet/ResNet file of the recipe's depth"
        )
    report.loaded = sorted(usable)
    report.not_in_file = [
        n for n in expected if n not in usable and not n.endswith("num_batches_tracked")
    ]
    with torch.no_grad():
        model.load_state_dict(usable, strict=False)
    return report


def _to_model_names(state: dict[str, Tensor], kind: str) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a file's entries to the model's names; returns (renamed, unusable file keys)."""
    if kind == "retinacli":
        return dict(state), []
    if kind in ("detectron2", "detectron2_zoo"):
        if not any(k.startswith("backbone.") for k in state):  # backbone-relative zoo names
            state = {f"backbone.bottom_up.{k}": v for k, v in state.items()}
        mapped, unmapped = detectron2_to_retinacli(state)
        return mapped, unmapped
    conversion = (
        caffe2_resnet_to_detectron2(state) if kind == "caffe2" else torchvision_resnet_to_detectron2(state)
    )
    mapped, unmapped = detectron2_to_retinacli(conversion.mapped)
    return mapped, [*unmapped, *conversion.not_mapped]
