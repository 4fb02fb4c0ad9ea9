"""The iteration loop: data, forward, losses, backward, clip, step, schedule; checkpoints,
metrics and evaluation at their periods; the non-finite loss guard.

`Trainer` takes explicit, already built components (`commands/train.py` builds them from a
recipe). Iterations are 0-based; a checkpoint written after iteration i holds
`iteration = i` and a resumed run continues at i + 1 with the data stream at that position.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from retinacli.data.loader import Batch, is_worker_death
from retinacli.engine.detector import RetinaNet
from retinacli.errors import (
    CheckpointError,
    DatasetError,
    RetinaError,
    StorageError,
    TrainingError,
    TrainingInterrupted,
)
from retinacli.files import FORMAT_MARKER, FORMAT_VERSION
from retinacli.training.best import BestTracker
from retinacli.training.checkpoints import CheckpointManager, checkpoints_due
from retinacli.training.distributed import (
    all_gather_floats,
    any_process,
    broadcast_object,
    reduce_scalars,
)
from retinacli.training.ema import ModelEma
from retinacli.training.interrupts import StopRequests, exit_code_of, signal_name
from retinacli.training.metrics import MetricsWriter
from retinacli.training.rng import capture_rng_state, restore_rng_state
from retinacli.training.schedules import WarmupScheduler
from retinacli.training.solver import clip_gradients

LOSS_KEYS = ("loss_cls", "loss_box_reg")
# Logged scalars averaged over processes; the timings are the slowest process's.
MEAN_OVER_PROCESSES = (
    "loss_cls", "loss_box_reg", "total_loss", "num_pos_anchors", "boxes_dropped", "boxes_dropped_frac"
)
MAX_OVER_PROCESSES = ("time", "data_time")


class Reporter(Protocol):
    """Where the loop tells a person what happens (a Rich progress bar, plain lines, nothing)."""

    def start(self, *, first_iteration: int, max_iter: int) -> None: ...

    def update(self, iteration: int, scalars: Mapping[str, float]) -> None: ...

    def message(self, text: str) -> None: ...

    def evaluation(self, iteration: int, split: str, metrics: Mapping[str, Any]) -> None: ...

    def stop(self) -> None: ...


class SilentReporter:
    """A Reporter that shows nothing (non-zero ranks, tests)."""

    def start(self, *, first_iteration: int, max_iter: int) -> None:
        pass

    def update(self, iteration: int, scalars: Mapping[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def evaluation(self, iteration: int, split: str, metrics: Mapping[str, Any]) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class ClipSettings:
    """Gradient clipping (see `solver.clip_gradients`)."""

    clip_type: Literal["value", "norm"]
    clip_value: float
    norm_type: float
    scope: Literal["per_parameter", "full_model"]


@dataclass
class NonFinitePolicy:
    """What a non-finite loss does (`on_nonfinite`): "stop", or "rollback" to the last good state
    with the learning rate multiplied by `rollback_lr_factor`, at most `max_rollbacks` times."""

    on_nonfinite: Literal["stop", "rollback"] = "stop"
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5


@dataclass
class Trainer:
    """Runs iterations `start_iteration .. max_iter - 1` of one process.

    model: the detector (wrapped in DistributedDataParallel when `ddp_model` is given).
    make_data: `make_data(start_iteration)` returns an iterator of Batches whose first batch is
        the one of `start_iteration` (the sampler is positioned, so resume sees the same data).
    evaluate: `evaluate(iteration, model)` evaluates `model` (the EMA's when there is one) and
        returns its metrics on rank 0 ({} on the others); None disables evaluation.
    checkpoint_extra: plain data stored in every checkpoint (the resolved recipe, the classes).
    ema: the weights' moving average, updated after every step, evaluated instead of the model.
    best: tracks `best.metric` over the evaluations: each new best is written to
        `model_best.pth` (a model file of the evaluated weights), and `best.patience`
        evaluations without one stop training early.
    images_per_batch, epoch_size: images per iteration (all processes) and per pass over the
        training set, to report the epoch (0: not reported).
    resume_command: the command that continues this run, shown when training stops early on a
        signal, a data error or a full disk.
    handle_signals: the first SIGINT/SIGTERM stops after the current iteration with a checkpoint
        of it (TrainingInterrupted); a second one acts at once (see `interrupts`).
    stop_after_evaluation: `stop_after_evaluation(iteration, metrics)` is asked on rank 0 after
        each evaluation; True stops training there as an early stop does (a checkpoint and
        model_final.pth of that iteration) and sets `stopped_on_request` (a tuner's pruning).
    """

    model: RetinaNet
    optimizer: torch.optim.Optimizer
    scheduler: WarmupScheduler
    make_data: Callable[[int], Iterator[Batch]]
    max_iter: int
    device: torch.device
    checkpoints: CheckpointManager
    checkpoint_period: int
    metrics: MetricsWriter
    checkpoint_extra: dict[str, Any]
    is_main: bool = True
    ddp_model: nn.Module | None = None
    clip: ClipSettings | None = None
    amp: bool = False
    log_period: int = 20
    eval_period: int = 0
    evaluate: Callable[[int, nn.Module], Mapping[str, Any] | None] | None = None
    nonfinite: NonFinitePolicy = field(default_factory=NonFinitePolicy)
    reporter: Reporter = field(default_factory=SilentReporter)
    ema: ModelEma | None = None
    best: BestTracker | None = None
    images_per_batch: int = 0
    epoch_size: int = 0
    resume_command: str = ""
    handle_signals: bool = True
    stop_after_evaluation: Callable[[int, Mapping[str, Any]], bool] | None = None

    def __post_init__(self) -> None:
        self._scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self._rollbacks = 0
        self._last_good: dict[str, Any] = {}
        self._lr_used = 0.0
        self._start = 0  # the first iteration of this train() call
        self._iteration = 0  # the iteration under way
        self._saved_at: int | None = None  # the iteration of the newest checkpoint written
        self._data: Iterator[Batch] | None = None
        self.stopped_on_request = False

    # ------------------------------------------------------------------ state

    def state(self, iteration: int, normalizers: list[float] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs, as `torch.load(weights_only=True)`-readable data.

        `normalizers`: every process's loss normaliser, by rank (`_normalizers()`, a collective
        call); a resumed run with the same number of processes gives each its own back."""
        own = float(self.model.loss_normalizer)
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": iteration,
            "rng": capture_rng_state(),
            "loss_normalizer": own,
            "loss_normalizer_per_rank": list(normalizers) if normalizers is not None else [own],
            # The AMP loss scale and its growth counter (empty without AMP), as detectron2 saves
            # them: a resumed mixed-precision run continues with the same scale.
            "grad_scaler": self._scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "best": self.best.state_dict() if self.best is not None else {},
            **self.checkpoint_extra,
        }

    def model_file(self, iteration: int) -> dict[str, Any]:
        """A model file (`retina eval`/`predict` read it) of the weights evaluations use, with the
        best evaluation so far under "best"."""
        evaluated = self.ema.module if self.ema is not None else self.model
        return {
            "format": FORMAT_MARKER,
            "format_version": FORMAT_VERSION,
            "model": {k: v.detach().cpu() for k, v in evaluated.state_dict().items()},
            "loss_normalizer": float(self.model.loss_normalizer),
            "iteration": iteration,
            "best": {**(self.best.state_dict() if self.best is not None else {}), "ema": self.ema is not None},
            **self.checkpoint_extra,
        }

    def finish_model_file(self, start_iteration: int) -> Path | None:
        """For a run resumed at its end (`start_iteration` >= max_iter): write `model_final.pth`
        when the run was stopped after its last checkpoint but before that file (rank 0; the
        path, or None when there was nothing to write)."""
        if start_iteration < self.max_iter or not self.is_main or self.checkpoints.final_path.exists():
            return None
        return self.checkpoints.save_final(self.model_file(start_iteration - 1))

    def load_state(self, state: Mapping[str, Any]) -> int:
        """Restore a `state()`; returns the first iteration still to run."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.model.loss_normalizer = float(state["loss_normalizer"])
        per_rank = state.get("loss_normalizer_per_rank") or []
        rank, world_size = _rank_and_world()
        if len(per_rank) == world_size:
            self.model.loss_normalizer = float(per_rank[rank])
        if state.get("grad_scaler") and self._scaler.is_enabled():
            self._scaler.load_state_dict(state["grad_scaler"])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:  # a checkpoint of a run without EMA: the average starts from its weights
                self.ema.module.load_state_dict(self.model.state_dict())
        if self.best is not None and state.get("best"):
            self.best.load_state_dict(state["best"])
        restore_rng_state(state["rng"])
        return int(state["iteration"]) + 1

    def time_iterations(self, count: int, *, clock: Callable[[], float] = time.perf_counter) -> list[float]:
        """Seconds of each of `count` training iterations from iteration 0, data loading
        included, on this trainer's model and optimizer, without logging, evaluation or
        checkpoints: the speed measurement of a time budget. It trains: run it on a copy."""
        data = self.make_data(0)
        times = []
        for _ in range(count):
            start = clock()
            self._step(next(data).to(self.device))
            times.append(clock() - start)
        return times

    # ------------------------------------------------------------------ loop

    def train(self, start_iteration: int = 0) -> int:
        """Run to `max_iter`; returns the number of iterations run by this call.

        Raises TrainingInterrupted after a SIGINT/SIGTERM (a checkpoint of the last iteration
        written first), and DatasetError/TrainingError when the data cannot be loaded (after the
        same checkpoint, with one process)."""
        stops = StopRequests() if self.handle_signals else None
        with stops if stops is not None else nullcontext():
            return self._train(start_iteration, stops)

    def _train(self, start_iteration: int, stops: StopRequests | None) -> int:
        if self.nonfinite.on_nonfinite == "rollback":  # the state a first rollback returns to
            self._last_good = copy.deepcopy(self.state(start_iteration - 1, self._normalizers()))
        iteration = start_iteration
        self._start = start_iteration
        self._data = self.make_data(iteration)
        window: dict[str, list[float]] = {}
        self.reporter.start(first_iteration=start_iteration, max_iter=self.max_iter)
        try:
            self._loop(start_iteration, window, stops)
        except RuntimeError as exc:
            # torch raises a worker's death from its SIGCHLD handler, wherever this process is:
            # the step may be half done, so no checkpoint is written of it
            describe = getattr(self._data, "worker_died", None)
            if describe is None or not is_worker_death(exc):
                raise
            raise self._stopped_by_data(
                TrainingError(describe(exc)), self._iteration, consistent=False
            ) from None
        finally:
            self.reporter.stop()
        return self._iteration - start_iteration

    def _loop(self, iteration: int, window: dict[str, list[float]], stops: StopRequests | None) -> None:
        """Iterations from `iteration` to max_iter (or an early stop) on `self._data`; keeps
        `self._iteration` at the one under way."""
        self._iteration = iteration
        while iteration < self.max_iter:
            self._iteration = iteration
            fetch_start = time.perf_counter()
            try:
                batch = next(self._data).to(self.device)
            except (DatasetError, TrainingError) as exc:
                raise self._stopped_by_data(exc, iteration) from None
            data_time = time.perf_counter() - fetch_start
            losses = self._step(batch)
            step_time = time.perf_counter() - fetch_start
            if losses is None:  # non-finite: rolled back to the last good state
                iteration = int(self._last_good["iteration"]) + 1
                self._data = self.make_data(iteration)
                window.clear()
                continue
            for name, value in {**losses, "data_time": data_time, "time": step_time}.items():
                window.setdefault(name, []).append(value)
            if (iteration + 1) % self.log_period == 0 or iteration == self.max_iter - 1:
                scalars = reduce_scalars(
                    {name: sum(v) / len(v) for name, v in window.items()},
                    mean=MEAN_OVER_PROCESSES,
                    maximum=MAX_OVER_PROCESSES,
                )
                scalars["lr"] = self._lr_used
                if self.epoch_size > 0:
                    scalars["epoch"] = (iteration + 1) * self.images_per_batch / self.epoch_size
                self.metrics.write(iteration, scalars)
                self.reporter.update(iteration, scalars)
                window.clear()
            # Evaluate first, so that a checkpoint of this iteration holds its evaluation (the
            # best so far), and a resumed run does not lose it.
            if self.evaluate is not None and self._evaluation_due(iteration):
                evaluated = self.ema.module if self.ema is not None else self.model
                result = self.evaluate(iteration, evaluated)
                if self.best is not None and self._track_best(self.best, iteration, result or {}):
                    self._stop_early(self.best, iteration)
                    iteration += 1
                    break
                if self.stop_after_evaluation is not None and self._stop_requested(iteration, result or {}):
                    self._stop_on_request(iteration)
                    iteration += 1
                    break
            due = checkpoints_due(iteration, period=self.checkpoint_period, max_iter=self.max_iter)
            normalizers = self._normalizers() if due else None
            saved = self._save_due(iteration, normalizers) if self.is_main else []
            if self.nonfinite.on_nonfinite == "rollback" and (saved or self._checkpoint_due(iteration)):
                self._last_good = copy.deepcopy(self.state(iteration, normalizers))
            if stops is not None and any_process(stops.requested is not None) and iteration < self.max_iter - 1:
                self._interrupt(iteration, stops.requested, saved)
            iteration += 1
        self._iteration = iteration

    # ------------------------------------------------------------------ stopping early

    def _normalizers(self) -> list[float]:
        """Every process's loss normaliser by rank (collective: every rank must call it)."""
        return all_gather_floats(float(self.model.loss_normalizer))

    def _save_due(self, iteration: int, normalizers: list[float] | None) -> list[Path]:
        try:
            saved = self.checkpoints.step(
                iteration,
                period=self.checkpoint_period,
                max_iter=self.max_iter,
                make_payload=lambda: self.state(iteration, normalizers),
                make_model_file=lambda: self.model_file(iteration),
            )
            if saved:
                self._saved_at = iteration
            return saved
        except StorageError as exc:
            last = self._last_checkpoint()
            exc.args = (
                f"{exc}\n  Training stopped after iteration {iteration}"
                + (f"; last_checkpoint names {last.name}, which is whole" if last else "")
                + (f". Resume with: {self.resume_command}" if self.resume_command else "."),
            )
            raise

    def _last_checkpoint(self) -> Path | None:
        try:
            return self.checkpoints.find_last()
        except CheckpointError:  # a pointer naming a missing file: there is no whole one to name
            return None

    def _checkpoint_now(self, iteration: int, saved: list[Path] | None = None) -> Path | None:
        """A checkpoint holding iteration `iteration` (rank 0 writes it; None elsewhere, or when
        nothing was trained by this call and no checkpoint exists)."""
        normalizers = self._normalizers() if iteration >= self._start else None
        if not self.is_main:
            return None
        if saved:
            return saved[0]  # the checkpoint (a model_final.pth written beside it cannot resume)
        if iteration < self._start or self._saved_at == iteration:  # nothing new to write
            return self._last_checkpoint()
        path = self.checkpoints.save(self.state(iteration, normalizers))
        self._saved_at = iteration
        return path

    def _interrupt(self, iteration: int, number: int, saved: list[Path]) -> None:
        path = self._checkpoint_now(iteration, saved)
        raise TrainingInterrupted(
            f"interrupted by {signal_name(number)} after iteration {iteration} "
            f"({iteration + 1} of {self.max_iter} done): "
            + (f"checkpoint {path} written, last_checkpoint names it" if path else "this process wrote no checkpoint")
            + (f". Resume with:\n  {self.resume_command}" if self.resume_command else ""),
            exit_code=exit_code_of(number),
        )

    def _stopped_by_data(self, exc: RetinaError, iteration: int, *, consistent: bool = True) -> RetinaError:
        """`exc` (the batch of `iteration` could not be loaded) with what was kept and how to go
        on. With one process, and when the state is that after the previous iteration
        (`consistent`), that state is checkpointed first; with several, the others cannot be
        reached from here and the last periodic checkpoint stays."""
        rank, world_size = _rank_and_world()
        if world_size == 1 and consistent:
            path = self._checkpoint_now(iteration - 1)
            kept = f"the checkpoint {path} holds everything before it"
        else:
            path = self._last_checkpoint() if self.is_main else None
            kept = f"the last checkpoint, {path}, is whole (the iterations after it run again)"
        note = (
            f"Training stopped at iteration {iteration}; "
            + (kept if path else "no checkpoint was written yet")
            + (f"; after fixing this, resume with: {self.resume_command}" if self.resume_command and path else "")
        )
        exc.args = (f"{exc}\n  {note}",)
        return exc

    def _track_best(self, best: BestTracker, iteration: int, metrics: Mapping[str, Any]) -> bool:
        """Record an evaluation (rank 0 decides); True when training should stop early."""
        stop = False
        if self.is_main:
            value = metrics.get(best.metric)
            if best.update(iteration, value):
                path = self.checkpoints.save_best(self.model_file(iteration))
                self.reporter.message(f"new best {best.metric} {value:.3f} at iteration {iteration}: {path.name}")
            stop = best.should_stop
        return bool(broadcast_object(stop))

    def _stop_early(self, best: BestTracker, iteration: int) -> None:
        normalizers = self._normalizers()
        if self.is_main:
            self.checkpoints.save(self.state(iteration, normalizers))
            final = self.checkpoints.save_final(self.model_file(iteration))
            self.reporter.message(
                f"early stop after iteration {iteration}: {best.metric} did not improve for "
                f"{best.evaluations_since_best} evaluations (solver.early_stop_patience "
                f"{best.patience}); the best, {best.metric} {best.value:.3f} at iteration "
                f"{best.iteration}, is in {self.checkpoints.best_path}; the last state in {final}"
            )

    def _stop_requested(self, iteration: int, metrics: Mapping[str, Any]) -> bool:
        """Rank 0 asks `stop_after_evaluation`; every rank gets its answer."""
        stop = False
        if self.is_main and self.stop_after_evaluation is not None:
            stop = bool(self.stop_after_evaluation(iteration, metrics))
        return bool(broadcast_object(stop))

    def _stop_on_request(self, iteration: int) -> None:
        normalizers = self._normalizers()
        self.stopped_on_request = True
        if self.is_main:
            self.checkpoints.save(self.state(iteration, normalizers))
            final = self.checkpoints.save_final(self.model_file(iteration))
            self.reporter.message(f"stopped after iteration {iteration}, as asked after its evaluation; the last state in {final}")

    def _checkpoint_due(self, iteration: int) -> bool:
        return (iteration + 1) % self.checkpoint_period == 0

    def _evaluation_due(self, iteration: int) -> bool:
        if iteration == self.max_iter - 1:
            return True
        return self.eval_period > 0 and (iteration + 1) % self.eval_period == 0

    def _step(self, batch: Batch) -> dict[str, float] | None:
        """One optimisation step; None when the loss was not finite and the state rolled back."""
        network = self.ddp_model if self.ddp_model is not None else self.model
        network.train()
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if self.amp and self.device.type == "cuda"
            else nullcontext()
        )
        with autocast:
            outputs = network(batch.images, batch.targets)
        loss = sum(outputs[key] for key in LOSS_KEYS)
        values = {key: float(outputs[key].detach()) for key in LOSS_KEYS}
        if not _finite_everywhere(values, self.device):
            self._handle_nonfinite(values)
            return None
        values["total_loss"] = sum(values.values())
        self._lr_used = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self._scaler.scale(loss).backward()
        if self.clip is not None:
            self._scaler.unscale_(self.optimizer)
            clip_gradients(
                self.model.parameters(),
                clip_type=self.clip.clip_type,
                clip_value=self.clip.clip_value,
                norm_type=self.clip.norm_type,
                scope=self.clip.scope,
            )
        self._scaler.step(self.optimizer)
        self._scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        values["num_pos_anchors"] = float(outputs["num_pos_anchors"]) / max(len(batch), 1)
        if batch.boxes_in is not None:  # box-aware augmentation: what its drop rule removed
            values["boxes_dropped"] = float(batch.boxes_dropped or 0)
            values["boxes_dropped_frac"] = float(batch.boxes_dropped or 0) / max(batch.boxes_in, 1)
        return values

    def _handle_nonfinite(self, values: Mapping[str, float]) -> None:
        iteration = int(self.scheduler.last_epoch)
        shown = ", ".join(f"{k}: {v}" for k, v in values.items())
        if self.nonfinite.on_nonfinite == "rollback" and self._rollbacks < self.nonfinite.max_rollbacks:
            self._rollbacks += 1
            restart = self.load_state(self._last_good)
            self.scheduler.base_lrs = [lr * self.nonfinite.rollback_lr_factor for lr in self.scheduler.base_lrs]
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr(), strict=True):
                group["lr"] = lr
            self.reporter.message(
                f"Loss became infinite or NaN at iteration={iteration} ({shown}); rolled back to "
                f"iteration {restart} with the learning rate times {self.nonfinite.rollback_lr_factor} "
                f"(rollback {self._rollbacks} of {self.nonfinite.max_rollbacks})"
            )
            return
        last = self.checkpoints.find_last() if self.is_main else None
        kept = f"The last good checkpoint, {last}, is left in place." if last else "No checkpoint was written yet."
        raise TrainingError(
            f"Loss became infinite or NaN at iteration={iteration}!\n"
            f"  loss_dict = {{{shown}}}\n"
            "  Usual causes: a learning rate too high for the batch size (lower solver.base_lr or "
            "lengthen solver.warmup_iters), model.head.prior_prob far from 0.01, or bad boxes in "
            "the data (run `retina data check RECIPE`).\n"
            f"  {kept}"
            + (
                ""
                if self.nonfinite.on_nonfinite == "stop"
                else f"\n  Gave up after {self._rollbacks} rollbacks (max_rollbacks)."
            )
        )


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _finite_everywhere(values: Mapping[str, float], device: torch.device) -> bool:
    """True when every loss is finite on every process (so all ranks stop or roll back together)."""
    finite = all(math.isfinite(v) for v in values.values())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([1.0 if finite else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        finite = bool(flag.item() == 1.0)
    return finite
