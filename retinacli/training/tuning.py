"""The study loop of `retina tune` on Optuna: open or continue a study, ask for trials, hand each
to a trial runner, report its evaluations to the pruner, tell the outcome; a budget, a trial
count and Ctrl-C end it. Nothing here reads a recipe or trains: the command passes the runner.

- Storage: an Optuna storage URL (RDB: sqlite, postgresql, mysql) or `journal:///path` for
  Optuna's journal file on a shared file system; workers sharing one study run this same loop.
- Pruning: each trial reports its k-th evaluation as step k; `median` prunes below the median
  of earlier trials at that step (after 2 complete trials, from the second evaluation),
  `halving` is Optuna's successive halving.
- Ctrl-C during a trial: the trial is told FAIL and its values are queued again, so the next
  run of the loop on the study tries them first.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from retinacli.errors import TrainingInterrupted, UsageError
from retinacli.files import atomic_write

PRUNERS = ("median", "halving", "none")
TUNE_COMMAND = "tune"  # the output marker's command of a study folder
TRIALS_JSON = "trials.json"  # the study folder's files that `retina report` shows
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"


@dataclass
class TrialRun:
    """What a trial runner reports: the value of each evaluation, whether it stopped because
    the pruner said so, its time and iterations; `failed` names why it could not train."""

    evaluations: list[float] = field(default_factory=list)
    pruned: bool = False
    seconds: float = 0.0
    iterations: int = 0
    failed: str | None = None


# runner(trial number, values, trial time or None, report) -> TrialRun; `report(value)` hands an
# evaluation to the pruner and says whether to stop the trial
TrialRunner = Callable[[int, dict[str, Any], float | None, Callable[[float], bool]], TrialRun]


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError("retina tune needs Optuna: pip install 'retinacli[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(storage: str, name: str, *, pruner: str, seed: int) -> Any:
    """The study `name` in `storage` (created when missing), maximising."""
    optuna = import_optuna()
    if pruner not in PRUNERS:
        raise UsageError(f"--pruner {pruner}: one of {', '.join(PRUNERS)}")
    if storage.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        backend: Any = optuna.storages.JournalStorage(JournalFileBackend(storage[len("journal://") :]))
    else:
        backend = storage
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
        "none": optuna.pruners.NopPruner,
    }
    try:
        return optuna.create_study(
            storage=backend,
            study_name=name,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruners[pruner](),
            load_if_exists=True,
        )
    except (ValueError, ImportError, RuntimeError) as exc:  # a URL Optuna or SQLAlchemy cannot open
        raise UsageError(f"--storage {storage}: Optuna cannot open it ({str(exc).splitlines()[0]})") from None


def start_with(study: Any, values: Mapping[str, Any]) -> bool:
    """Queue `values` as the first trial of a study that has none; True when queued."""
    if study.trials or not values:
        return False
    study.enqueue_trial(dict(values), user_attrs={"recipe_values": True})
    return True


@dataclass
class LoopResult:
    ran: int
    stopped_by: Literal["budget", "trials"]


def run_study(
    study: Any,
    *,
    suggest: Callable[[Any], dict[str, Any]],
    run_trial: TrialRunner,
    budget: float | None,
    trial_time: float | None,
    trials: int | None,
    after_trial: Callable[[], None],
    message: Callable[[str], None],
    folder_of: Callable[[int], str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LoopResult:
    """Ask, run and tell trials until `budget` seconds (no trial starts that its trial time
    would carry past it; the last gets what is left) or `trials` trials. `folder_of(number)`
    is recorded with each trial as its "folder"; `after_trial` runs after each (the outputs);
    Ctrl-C re-raises after marking the trial failed and queueing its
    values again."""
    optuna = import_optuna()
    started = clock()
    ran = 0
    while trials is None or ran < trials:
        left = None if budget is None else budget - (clock() - started)
        if left is not None and left < (trial_time or 0) * 0.5 + 1:
            return LoopResult(ran, "budget")
        trial = study.ask()
        if folder_of is not None:
            trial.set_user_attr("folder", folder_of(trial.number))
        values = suggest(trial)
        this_time = trial_time if left is None or trial_time is None else min(trial_time, left)
        steps: list[float] = []

        def report(value: float, trial: Any = trial, steps: list[float] = steps) -> bool:
            trial.report(value, step=len(steps))
            steps.append(value)
            return bool(trial.should_prune())

        try:
            outcome = run_trial(trial.number, values, this_time, report)
        except (TrainingInterrupted, KeyboardInterrupt):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            after_trial()
            message(
                f"stopped during trial {trial.number}: it is marked failed and its values are tried again first "
                "when the same command runs again (the study is kept in its storage)"
            )
            raise
        _tell(optuna, study, trial, outcome, message)
        ran += 1
        after_trial()
        if budget is not None and clock() - started >= budget:
            return LoopResult(ran, "budget")
    return LoopResult(ran, "trials")


def _tell(optuna: Any, study: Any, trial: Any, outcome: TrialRun, message: Callable[[str], None]) -> None:
    trial.set_user_attr("seconds", round(outcome.seconds, 1))
    trial.set_user_attr("iterations", outcome.iterations)
    trial.set_user_attr("evaluations", list(outcome.evaluations))
    shown = ", ".join(f"{v:.2f}" for v in outcome.evaluations)
    if outcome.failed is not None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        message(f"trial {trial.number} failed: {outcome.failed}")
    elif outcome.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        message(f"trial {trial.number}: pruned after {len(outcome.evaluations)} evaluations ({shown})")
    else:
        value = max(outcome.evaluations) if outcome.evaluations else 0.0
        study.tell(trial, value)
        message(f"trial {trial.number}: {value:.2f}, the best of its evaluations ({shown})")


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Every trial of the study as plain data (trials.json)."""
    return [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": dict(t.params),
            "seconds": t.user_attrs.get("seconds"),
            "iterations": t.user_attrs.get("iterations"),
            "evaluations": t.user_attrs.get("evaluations", []),
            "folder": t.user_attrs.get("folder"),
            "recipe_values": bool(t.user_attrs.get("recipe_values")),
        }
        for t in study.trials
    ]


def write_pictures(study: Any, out: Path, *, objective: str) -> list[Path]:
    """Optuna's matplotlib pictures into `out`: the optimisation history (from one complete
    trial) and the parameter importances (from two). Returns the files written."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    drawings = [(HISTORY_PNG, plots.plot_optimization_history)]
    if len(complete) >= 2:
        drawings.append((IMPORTANCE_PNG, plots.plot_param_importances))
    written = []
    for name, draw in drawings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for its matplotlib plots
            try:
                axes = draw(study)
            except (ValueError, RuntimeError):  # e.g. importances when no parameter varied
                continue
        if name == HISTORY_PNG:
            axes.set_ylabel(objective)
        figure = axes.figure
        figure.set_size_inches(7, 4.5)
        with atomic_write(out / name) as handle:
            figure.savefig(handle, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(out / name)
    return written
