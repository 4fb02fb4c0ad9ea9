"""`train`: `retina train` from Python."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from retinacli.api.detector import overrides_of
from retinacli.commands.train import TrainResult
from retinacli.commands.train import train as train_command
from retinacli.training.loop import Reporter


def train(
    recipe: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool | Literal["auto"] = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train as `retina train RECIPE [--set ...] [--output-dir DIR] [--resume]` does, in this
    process: `overrides` ({"solver.max_iter": 2000} or "key=value" strings) change the recipe's
    keys; `resume=True` continues the run's last checkpoint, "auto" only when there is one.

    Returns `TrainResult`: `.output_dir` (the run folder: model_final.pth,
    metrics.jsonl, log.txt, ...), `.last_metrics` (the last evaluation, or None), `.final_model`.
    Progress goes to the run's log.txt, and to `reporter` when given (a `retinacli.training.loop.Reporter`).

    Raises:
        RecipeError: the recipe or an override is invalid.
        UsageError: the output folder holds something that is not this run.
    """
    return train_command(
        Path(recipe),
        overrides_of(overrides, where="overrides"),
        output_dir=Path(output_dir) if output_dir is not None else None,
        resume=resume,
        reporter=reporter,
    )
