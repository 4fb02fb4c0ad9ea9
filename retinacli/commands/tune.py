"""`retina tune RECIPE --space SPACE.yaml`: an Optuna study over recipe keys, each trial a
training run judged on the validation set.

Composed here: the search space (`recipe.search_space`, checked against the schema before
anything runs), the study loop (`training.tuning`), and the trial runner: the recipe with the
trial's values trained by `train_from_recipe` in `DIR/trials/trial_NNNN` for `--trial-time` (a
time budget, as `retina train --time`) or the recipe's max_iter, its periodic evaluations on
`data.val` (required: choosing by the test set would leak it; trials do not evaluate on the test
set at all) reported to the pruner. A trial's value is its best `eval.best_metric` on data.val.
Trial 0 of a new study is the recipe as it is.

The folder holds the study's sqlite storage (unless `--storage`), so Ctrl-C and a rerun of the
same command continue; after every trial it gets trials.json and trials.csv, best.yaml (a
recipe: `_base_` the tuned recipe, the `--set` keys and the best trial's values, the trial's
figures as comments) and Optuna's pictures, which `retina report DIR` shows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retinacli.commands.train import train_from_recipe
from retinacli.errors import RetinaError, TrainingInterrupted, UsageError
from retinacli.files import (
    check_output_dir,
    output_owner,
    prepare_output_dir,
    write_json,
    write_text,
)
from retinacli.recipe import Override, Recipe, load_recipe
from retinacli.recipe.schema import parse_duration
from retinacli.recipe.search_space import Dimension, read_space, recipe_values, unplain_choice
from retinacli.training.loop import Reporter, SilentReporter
from retinacli.training.tuning import (
    TRIALS_JSON,
    TUNE_COMMAND,
    TrialRun,
    open_study,
    run_study,
    start_with,
    trial_rows,
    write_pictures,
)

PLAN_FILE = "tune_plan.json"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
TRIALS_DIR = "trials"
DEFAULT_EVALUATIONS = 5  # periodic evaluations of a trial whose recipe has none (eval_period 0)
DEFAULT_STUDY = "retinacli-tune"


@dataclass
class TuneResult:
    """The study after this command: every trial of it (this worker's and others'), the best."""

    output_dir: Path
    study: str
    storage: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_yaml: Path | None
    ran: int  # trials this command ran
    stopped_by: str  # "budget" or "trials"
    notes: list[str] = field(default_factory=list)


def tune(
    recipe_path: Path,
    space_path: Path,
    *,
    output_dir: Path,
    overrides: Sequence[str | Override] = (),
    budget: str | None = None,
    trial_time: str | None = None,
    trials: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    pruner: str = "median",
    seed: int = 0,
    reporter: Reporter | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TuneResult:
    """Run trials of the study until `budget` (a duration) or `trials` trials of this command.

    Raises UsageError (exit 2) for a bad space, recipe, duration, storage or folder before any
    trial runs; KeyboardInterrupt/TrainingInterrupted after Ctrl-C (the trial under way marked
    failed and queued again, the study kept)."""
    shown = reporter or SilentReporter()
    budget_s = _duration("--budget", budget)
    trial_s = _duration("--trial-time", trial_time)
    if budget_s is None and trials is None:
        raise UsageError("give --budget DURATION (e.g. 2h) or --trials N: how long, or how many trials, to tune")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials {trials}: at least 1")
    recipe = load_recipe(recipe_path, overrides)
    if recipe.data.val.dataset is None:
        raise UsageError(
            f"{recipe_path}: has no data.val.dataset; a study chooses by the validation set, never the test set "
            "(that would leak it into the choice): carve one from the training data with `retina data split` "
            "and set data.val.dataset"
        )
    space = read_space(space_path, recipe_path, overrides)
    out = Path(output_dir)
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    plan = {
        "recipe": str(recipe_path.resolve()),
        "overrides": [o if isinstance(o, str) else f"{'.'.join(o.key_path)}={o.value!r}" for o in overrides],
        "space": {d.key: d.to_dict() for d in space},
        "trial_time": trial_s,
        "study": study or DEFAULT_STUDY,
        "objective": f"data.val {recipe.eval.best_metric}",
    }
    _prepare_folder(out, plan)
    the_study = open_study(storage_url, plan["study"], pruner=pruner, seed=seed)
    if start_with(the_study, recipe_values(recipe, space)):
        outside = [d.key for d in space if d.key not in recipe_values(recipe, space)]
        notes = ["trial 0 trains the recipe as it is" + (f" (its {', '.join(outside)} are outside the space: sampled)" if outside else "")]
    else:
        finished = sum(t.state.is_finished() for t in the_study.trials)
        notes = [f"continuing study {plan['study']!r}: {len(the_study.trials)} trials so far ({finished} finished)"]
    for note in notes:
        shown.message(note)

    def run_trial(number: int, values: dict[str, Any], seconds: float | None, report: Callable[[float], bool]) -> TrialRun:
        return _run_trial(number, values, seconds, report, recipe, recipe_path, overrides, out, shown)

    def after_trial() -> None:
        _write_outputs(the_study, out, recipe_path, plan)

    loop = run_study(
        the_study,
        suggest=lambda trial: {d.key: d.suggest(trial) for d in space},
        run_trial=run_trial,
        budget=budget_s,
        trial_time=trial_s,
        trials=trials,
        after_trial=after_trial,
        message=shown.message,
        folder_of=lambda number: str(_trial_folder(out, number)),
        clock=clock,
    )
    written = _write_outputs(the_study, out, recipe_path, plan)
    return TuneResult(
        output_dir=out,
        study=plan["study"],
        storage=storage_url,
        trials=written["trials"],
        best=written["best"],
        best_yaml=out / BEST_YAML if written["best"] is not None else None,
        ran=loop.ran,
        stopped_by=loop.stopped_by,
        notes=notes,
    )


def _duration(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"{flag} {text}: must be longer than 0")
    return seconds


def _prepare_folder(out: Path, plan: Mapping[str, Any]) -> None:
    """A new or empty folder becomes the study's; an earlier `retina tune` folder continues
    when it is of the same recipe, --set, space, trial time and study, and is refused otherwise
    (nothing in it touched)."""
    if out.is_dir() and output_owner(out) == TUNE_COMMAND and (out / PLAN_FILE).is_file():
        try:
            stored = json.loads((out / PLAN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        given = json.loads(json.dumps(plan))
        if stored != given:
            differ = [k for k in given if not isinstance(stored, dict) or stored.get(k) != given[k]]
            raise UsageError(
                f"{out}: holds a study of another {', '.join(differ) or 'plan'} ({PLAN_FILE}); a rerun continues a "
                "study only with the same recipe, --set, space, --trial-time and --study: choose another --output-dir"
            )
        return
    check_output_dir(out, command=TUNE_COMMAND)
    prepare_output_dir(out, command=TUNE_COMMAND)
    write_json(out / PLAN_FILE, plan)


def _run_trial(
    number: int,
    values: Mapping[str, Any],
    trial_time: float | None,
    report: Callable[[float], bool],
    base: Recipe,
    recipe_path: Path,
    overrides: Sequence[str | Override],
    out: Path,
    shown: Reporter,
) -> TrialRun:
    """Train the recipe (`base`, as read from `recipe_path` with `overrides`) with the trial's
    `values` in its own folder, each evaluation on data.val reported; the outcome for the loop."""
    folder = _trial_folder(out, number)
    origin = f"trial {number}"
    extra: list[str | Override] = [Override(tuple(k.split(".")), v, f"{origin}: {k}") for k, v in values.items()]
    extra += [
        Override(("output_dir",), str(folder), origin),
        # the study never looks at the test set: a trial does not evaluate on it (nor spend its time there)
        Override(("data", "test", "dataset"), None, origin),
    ]
    if trial_time is not None:
        extra.append(Override(("solver", "time_budget"), trial_time, f"--trial-time for {origin}"))
    if base.eval_period == 0:  # the pruner needs evaluations along the way
        every = max(1, base.solver.max_iter // DEFAULT_EVALUATIONS)
        extra.append(Override(("eval_period",), every, f"{origin}: {DEFAULT_EVALUATIONS} evaluations for the pruner"))
    shown.message(f"trial {number}: {', '.join(f'{k}={v!r}' for k, v in values.items())} in {folder}")
    metric = base.eval.best_metric
    evaluations: list[float] = []

    def on_evaluation(iteration: int, metrics: Mapping[str, Any]) -> bool:
        value = metrics.get(metric)
        value = float(value) if isinstance(value, int | float) and value == value else 0.0
        evaluations.append(value)
        return report(value)

    started = time.monotonic()
    try:
        result = train_from_recipe(load_recipe(recipe_path, [*overrides, *extra]), on_evaluation=on_evaluation, reporter=shown)
    except TrainingInterrupted:
        raise
    except RetinaError as exc:
        return TrialRun(evaluations, seconds=time.monotonic() - started, failed=str(exc))
    return TrialRun(
        evaluations,
        pruned=result.stopped_by_callback,
        seconds=time.monotonic() - started,
        iterations=result.iterations_run,
    )


def _trial_folder(out: Path, number: int) -> Path:
    return out / TRIALS_DIR / f"trial_{number:04d}"


def _write_outputs(study: Any, out: Path, recipe_path: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
    rows = trial_rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    write_json(out / TRIALS_JSON, {"study": plan["study"], "objective": plan["objective"], "trials": rows, "best": best})
    write_text(out / TRIALS_CSV, _csv(rows))
    if best is not None:
        write_text(out / BEST_YAML, _best_yaml(best, rows, recipe_path, out, plan))
    write_pictures(study, out, objective=plan["objective"])
    return {"trials": rows, "best": best}


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "state", "value", *keys, "seconds", "iterations", "folder"])
    for r in rows:
        writer.writerow([r["number"], r["state"], r["value"], *(r["params"].get(k) for k in keys), r["seconds"], r["iterations"], r["folder"]])
    return buffer.getvalue()


def _best_yaml(best: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], recipe_path: Path, out: Path, plan: Mapping[str, Any]) -> str:
    """A recipe: `_base_` the tuned recipe (relative to DIR where it can be), the --set keys and
    the best trial's values, and as comments what the trial measured."""
    import yaml

    try:
        base = os.path.relpath(recipe_path.resolve(), out.resolve())
    except ValueError:  # another drive
        base = str(recipe_path.resolve())
    space = plan["space"]
    tree: dict[str, Any] = {}
    for text in plan["overrides"]:
        key, _, value = text.partition("=")
        _set(tree, key, yaml.safe_load(value))
    for key, value in best["params"].items():
        choices = space[key].get("choices")
        _set(tree, key, unplain_choice(value, choices) if choices else value)
    if plan["trial_time"] is not None:
        _set(tree, "solver.time_budget", plan["trial_time"])
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")}
    header = [
        f"# retina tune: the best of {len(rows)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed) of study {plan['study']!r}",
        f"# trial {best['number']}: {plan['objective']} {best['value']:.2f} (best of its evaluations: "
        + ", ".join(f"{v:.2f}" for v in best["evaluations"])
        + f"), {best['iterations']} iterations in {best['seconds']} s, run folder {best['folder']}",
    ]
    if plan["trial_time"] is not None:
        header.append("# solver.time_budget: trained for the trial time of the study, as the trial was")
    body = yaml.safe_dump({"_base_": base, **tree}, sort_keys=False, default_flow_style=None)
    return "\n".join(header) + "\n" + body


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


__all__ = ["BEST_YAML", "TRIALS_CSV", "Dimension", "TuneResult", "tune"]
