"""The run folder of `retina train`: its layout, and whether a run may start, resume or not.

    OUTPUT_DIR/
      .retinacli-output.json   the marker: this folder is a `retina train` run (files.OUTPUT_MARKER)
      .retina-train.lock       one run at a time (training/run_lock.py)
      config.yaml              the resolved recipe
      log.txt                  everything the run showed
      metrics.jsonl            one JSON line per logged iteration and evaluation
      results.png              the curves of metrics.jsonl
      last_checkpoint          the name of the newest checkpoint
      model_NNNNNNN.pth        checkpoints for --resume (the newest `solver.keep_checkpoints`, and the last)
      model_final.pth          a model file of the last weights; model_best.pth of the best by data.val
      eval/<iteration>/        each periodic evaluation (metrics.json, coco_results.json, ...)
      eval_test/               the final test-set evaluation when data.val is set
      report.html              `retina report`'s page, by default
      mlflow_run.json          the MLflow run this run logs to (with tracking.mlflow)

A folder holds a run when it carries the marker with the command `train`, or (runs written
before the marker existed) a `last_checkpoint`. `retina train` writes only into a folder that
does not exist, is empty, or holds a run; anything else (the user's own files, another command's
output, a file) is refused before anything is written, so nothing of the user's is replaced.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from retinacli.errors import UsageError
from retinacli.files import FORMAT_MARKER, OUTPUT_MARKER, output_owner, write_json
from retinacli.training.checkpoints import BEST_NAME, FINAL_NAME, POINTER_NAME, CheckpointManager
from retinacli.training.metrics import METRICS_FILE
from retinacli.training.run_lock import LOCK_NAME

COMMAND = "train"
CONFIG_NAME = "config.yaml"
LOG_NAME = "log.txt"
RESULTS_PNG = "results.png"
REPORT_NAME = "report.html"
EVAL_DIR = "eval"
TEST_EVAL_DIR = "eval_test"
STARTED_FILES = (CONFIG_NAME, METRICS_FILE)
"""Files a run writes once its model is built, before its first checkpoint: a run folder holding
one (and no checkpoint) holds a run that stopped early."""
BOOKKEEPING = frozenset({OUTPUT_MARKER, LOCK_NAME})
"""Files that say nothing about the run's progress."""

Resume = bool | Literal["auto"]
"""False: refuse a folder holding a run; True (`--resume`): continue it (or start, when the folder
holds no run yet); "auto" (`--auto-resume`): continue a run of the same recipe, start when there is
none, refuse another recipe's (for launchers that restart the same command: torchrun
--max-restarts, a requeued job)."""


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder (see the module docstring)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def log(self) -> Path:
        return self.path / LOG_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def results_png(self) -> Path:
        return self.path / RESULTS_PNG

    @property
    def pointer(self) -> Path:
        return self.path / POINTER_NAME

    @property
    def final_model(self) -> Path:
        return self.path / FINAL_NAME

    @property
    def best_model(self) -> Path:
        return self.path / BEST_NAME

    @property
    def test_eval_dir(self) -> Path:
        return self.path / TEST_EVAL_DIR

    def eval_dir(self, iteration: int) -> Path:
        return self.path / EVAL_DIR / str(iteration)

    def is_run(self) -> bool:
        """True when the folder holds a `retina train` run (marker, or an older run's pointer)."""
        return output_owner(self.path) == COMMAND or (self.pointer.is_file() and not (self.path / OUTPUT_MARKER).exists())

    def check_writable(self, *, resume: Resume) -> None:
        """Refuse, before anything is written, a folder training must not write into: a file, a
        folder holding the user's own files or another command's output. Raises UsageError."""
        folder = self.path
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder}: is a file, not a folder; --output-dir names the run's folder: choose another")
        if not folder.is_dir() or self.is_run():
            return
        others = sorted(p.name for p in folder.iterdir() if p.name not in BOOKKEEPING)
        if not others:
            return
        owner = output_owner(folder)
        listing = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        if owner is not None:
            raise UsageError(
                f"{folder}: holds the output of `retina {owner}`, not a training run; choose another --output-dir"
            )
        what = "--resume: it was never a `retina train` run" if resume else "retina train writes only into an empty folder or its own run"
        raise UsageError(
            f"{folder}: the folder holds files retinacli did not write ({listing}); {what}, and "
            "nothing in it was touched; choose another --output-dir"
        )

    def mark(self) -> None:
        """Write the marker that makes the folder a run (idempotent)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if output_owner(self.path) != COMMAND:
            write_json(self.path / OUTPUT_MARKER, {"format": FORMAT_MARKER, "command": COMMAND})


@dataclass
class RunPlan:
    """What the run folder holds and what training does with it: the checkpoint to resume (None:
    start at iteration 0) and what to tell the user about it."""

    last: Path | None
    notes: list[str] = field(default_factory=list)


def plan_run(
    run: RunFolder,
    manager: CheckpointManager,
    resume: Resume,
    *,
    differing_keys: Callable[[Path], list[str]],
) -> RunPlan:
    """Resume, start, or refuse, from what the run folder holds (see `Resume`).

    `differing_keys(config)` lists the recipe keys where the run's stored `config.yaml` differs
    from the recipe given (for --auto-resume). Call after `check_writable`.
    """
    out = run.path
    has_pointer = run.pointer.is_file()
    started = [name for name in STARTED_FILES if (out / name).is_file()]
    notes = []
    if resume == "auto":
        if not has_pointer and not started:
            return RunPlan(None, [f"--auto-resume: {out} holds no run yet: starting a new one"])
        differing = differing_keys(run.config) if run.config.is_file() else []
        if differing:
            raise UsageError(
                f"{out}: holds a run of another recipe ({run.config} differs at "
                f"{', '.join(differing)}); --auto-resume continues only the same recipe: pass "
                "--resume to continue that run with this recipe, or choose another --output-dir"
            )
        notes.append(f"--auto-resume: {out} holds a run of this recipe: continuing it")
    if not resume:
        if has_pointer:
            last = manager.find_last()
            raise UsageError(
                f"{out} already holds a run (last checkpoint {last.name if last else '?'}); pass "
                "--resume to continue it, or --output-dir to start a new run elsewhere"
            )
        if started:
            raise UsageError(
                f"{out}: holds a run that stopped before its first checkpoint "
                f"({', '.join(started)}); pass --resume to start it again from iteration 0 "
                f"(its {METRICS_FILE} is kept under another name, {LOG_NAME} goes on), or "
                "choose another --output-dir"
            )
        if run.log.is_file():
            notes.append(f"{out} holds the log of a run that failed before training began: starting a new run")
        return RunPlan(None, notes)
    found = manager.load_newest_valid()
    if found is None:
        if started:
            kept = set_aside_metrics(out)
            notes.append(
                f"{out} holds a run that stopped before its first checkpoint "
                f"({', '.join(started)}): starting it again from iteration 0"
                + (f"; its metrics are kept in {kept.name}" if kept else "")
            )
        elif resume is True:
            notes.append(f"no checkpoint in {out}: starting a new run")
        return RunPlan(None, notes)
    path, _, skipped = found
    if skipped:
        notes += [f"cannot resume from {line}: skipped" for line in skipped]
        notes.append(f"resuming from the newest valid checkpoint instead, {path.name}")
    return RunPlan(path, notes)


def set_aside_metrics(out: Path) -> Path | None:
    """Rename the metrics of a run that is started again to `metrics.interrupted-N.jsonl` (the
    first free N), so that its lines do not mix with the new run's."""
    metrics = out / METRICS_FILE
    if not metrics.is_file():
        return None
    for number in range(1, 10_000):
        target = out / f"metrics.interrupted-{number}.jsonl"
        if not target.exists():
            os.replace(metrics, target)
            return target
    return None


def resume_command(out: Path, *, world_size: int = 1) -> str:
    """The command that continues the run in `out` (its config.yaml is the resolved recipe)."""
    args = f"train {shlex.quote(str(out / CONFIG_NAME))} --output-dir {shlex.quote(str(out))} --resume"
    if world_size == 1:
        return f"retina {args}"
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun <the same options> -m retinacli {args}"
    return f"retina {args} --num-processes {world_size}"
