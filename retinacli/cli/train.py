"""`retina train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import RecipeArg, SetOption, app, console, output_dir_option


@app.command("train")
def train(
    recipe: RecipeArg,
    set_: SetOption = None,
    output_dir: Annotated[
        Path | None, output_dir_option("Where the run goes (the recipe key output_dir).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in the output folder from its last checkpoint.")
    ] = False,
    num_processes: Annotated[
        int, typer.Option("--num-processes", min=1, help="Start this many local training processes (torch.distributed).")
    ] = 1,
) -> None:
    """Train a detector from a recipe: progress, TensorBoard, checkpoints, resume, COCO eval."""
    from retinacli.cli.progress import ConsoleReporter
    from retinacli.commands import train as command

    if num_processes > 1:
        code = command.train_in_processes(
            recipe, set_ or [], num_processes=num_processes, output_dir=output_dir, resume=resume
        )
        raise typer.Exit(code)
    result = command.train(
        recipe,
        set_ or [],
        output_dir=output_dir,
        resume=resume,
        reporter=ConsoleReporter(console),
    )
    console.print(
        f"done: {result.iterations_run} iterations in this run; outputs in {result.output_dir}"
        + (f"; final model {result.final_checkpoint}" if result.final_checkpoint else ""),
        highlight=False,
    )
