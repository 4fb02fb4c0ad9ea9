"""`retina train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import RecipeArg, SetOption, app, console, output_dir_option, shown


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
    auto_resume: Annotated[
        bool,
        typer.Option(
            "--auto-resume",
            help="Continue the run in the output folder when it is of this recipe, start one when "
            "there is none, refuse another recipe's (for torchrun --max-restarts and job requeues).",
        ),
    ] = False,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            metavar="URI",
            help="Log the run to this MLflow tracking URI (the recipe key tracking.mlflow.tracking_uri; "
            "needs the mlflow extra).",
        ),
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            "--time",
            metavar="DURATION",
            help="Train for this long (90s, 30m, 2h; the recipe key solver.time_budget): the speed is "
            "measured first and max_iter set to fit, evaluations and checkpoints counted.",
        ),
    ] = None,
    num_processes: Annotated[
        int, typer.Option("--num-processes", min=1, help="Start this many local training processes (torch.distributed).")
    ] = 1,
) -> None:
    """Train a detector from a recipe: progress, TensorBoard, checkpoints, resume, COCO eval.

    Ctrl-C (or SIGTERM) writes a checkpoint of the current iteration, prints the command that
    resumes it and exits with 130 (143); a second Ctrl-C exits at once."""
    from retinacli.cli.progress import ConsoleReporter
    from retinacli.commands import train as command
    from retinacli.errors import TrainingInterrupted

    how: command.Resume = "auto" if auto_resume else resume
    if num_processes > 1:
        code = command.train_in_processes(
            recipe, set_ or [], num_processes=num_processes, output_dir=output_dir, mlflow=mlflow, time_budget=time_budget,
            resume=how, message=lambda text: console.print(shown(text), highlight=False, soft_wrap=True),
        )
        raise typer.Exit(code)
    try:
        result = command.train(
            recipe,
            set_ or [],
            output_dir=output_dir,
            mlflow=mlflow,
            time_budget=time_budget,
            resume=how,
            reporter=ConsoleReporter(console),
        )
    except TrainingInterrupted as stopped:  # the run's reporter has shown what to do
        raise typer.Exit(stopped.exit_code) from None
    console.print(
        f"done: {result.iterations_run} iterations in this run; outputs in {shown(result.output_dir)}"
        + (f"; final model {shown(result.final_model)}" if result.final_model else ""),
        highlight=False,
    )
