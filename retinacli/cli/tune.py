"""`retina tune`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from retinacli.cli.app import JsonOption, RecipeArg, SetOption, app, console, shown


@app.command("tune")
def tune_command(
    recipe: RecipeArg,
    space: Annotated[
        Path,
        typer.Option("--space", help="YAML mapping dotted recipe keys to {type: float|int|categorical, low, high, log, step, choices}.", show_default=False),
    ],
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", help="The study's folder: trials/, trials.csv, best.yaml, pictures, and the sqlite study (a rerun continues it).", show_default=False),
    ],
    budget: Annotated[
        str | None,
        typer.Option("--budget", metavar="DURATION", help="How long to tune (90m, 2h): no trial starts that would end after it.", show_default=False),
    ] = None,
    trial_time: Annotated[
        str | None,
        typer.Option("--trial-time", metavar="DURATION", help="Train each trial for this long (`retina train --time`) \\[default: the recipe's max_iter].", show_default=False),
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="Run at most this many trials.", show_default=False)] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", metavar="URL", help="Optuna storage shared by workers: an RDB URL (sqlite:///f.db, postgresql://...) or journal:///path/file.log \\[default: sqlite in --output-dir].", show_default=False),
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="The study's name in the storage \\[default: retinacli-tune].", show_default=False)] = None,
    pruner: Annotated[
        Literal["median", "halving", "none"],
        typer.Option("--pruner", help="median (below the median of earlier trials at an evaluation), halving (successive halving) or none."),
    ] = "median",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler (TPE).")] = 0,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search recipe settings with Optuna: each trial a training run judged on data.val,
    pruned when it falls behind; writes best.yaml, a recipe of the best trial."""
    from retinacli.cli.progress import ConsoleReporter
    from retinacli.commands.tune import tune

    result = tune(
        recipe,
        space,
        output_dir=output_dir,
        overrides=set_ or [],
        budget=budget,
        trial_time=trial_time,
        trials=trials,
        storage=storage,
        study=study,
        pruner=pruner,
        seed=seed,
        reporter=None if as_json else ConsoleReporter(console),
    )
    if as_json:
        typer.echo(json.dumps({"trials": result.trials, "best": result.best, "best_yaml": str(result.best_yaml) if result.best_yaml else None}, indent=1))
        return
    from rich.table import Table

    table = Table("trial", "state", "value", "seconds", "values", title=f"study {result.study}: {len(result.trials)} trials")
    for row in result.trials:
        value = "—" if row["value"] is None else f"{row['value']:.2f}"
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        table.add_row(str(row["number"]), row["state"], value, str(row["seconds"] or "—"), shown(params))
    console.print(table)
    how = {"budget": "the budget is spent", "trials": "--trials reached"}.get(result.stopped_by, result.stopped_by)
    console.print(f"{result.ran} trials run by this command ({how})", highlight=False)
    if result.best_yaml is not None:
        console.print(f"best: trial {result.best['number']}, {result.best['value']:.2f}; recipe {shown(result.best_yaml)}", highlight=False)
