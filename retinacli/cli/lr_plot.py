"""`retina lr-plot`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import OverwriteFileOption, RecipeArg, SetOption, app, console


@app.command("lr-plot")
def lr_plot(
    recipe: RecipeArg,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also save the curve as a PNG file here.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print [{"iteration": i, "lr": x}, ...] for every iteration (over 300000 iterations: an even sample, every key point included).')
    ] = False,
    overwrite: OverwriteFileOption = False,
) -> None:
    """Show the recipe's learning-rate curve: warmup, steps or cosine (no dataset needed)."""
    from rich.table import Table

    from retinacli.commands.lr_plot import plot_learning_rate
    from retinacli.training import lr_plot as chart

    result = plot_learning_rate(recipe, set_ or [], out=out, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(chart.curve_json(result.curve)))
        return
    schedule = result.schedule
    width = max(20, min(100, console.width - 14))
    console.print(
        f"[bold]{schedule.scheduler}[/], base_lr {schedule.base_lr:g}, {schedule.max_iter} iterations",
        highlight=False,
    )
    console.print(
        chart.render_terminal_chart(result.curve, width=width, height=10, marks=result.marks), highlight=False
    )
    table = Table("point", "iteration", "lr")
    for point in result.points:
        table.add_row(point.label, str(point.iteration), f"{point.lr:.6g}")
    console.print(table)
    from retinacli.training.schedules import ignored_steps_note

    if note := ignored_steps_note(schedule):
        console.print(f"[yellow]{note}[/]", highlight=False)
    if result.saved is not None:
        console.print(f"saved {result.saved}", highlight=False)
