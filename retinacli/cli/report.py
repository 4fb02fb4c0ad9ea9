"""`retina report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import app, console, shown

ReportOverwriteOption = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace the report file (--out, or RUN_DIR/report.html) if it exists."),
]


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="The run folder (a recipe's output_dir).", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The HTML file to write \\[default: RUN_DIR/report.html].", show_default=False),
    ] = None,
    gallery: Annotated[
        int,
        typer.Option(
            "--gallery",
            min=0,
            help="Also draw N images of the dataset the run's config.yaml names, with predictions "
            "(read from outside the run folder: use it on runs you made).",
        ),
    ] = 0,
    overwrite: ReportOverwriteOption = False,
) -> None:
    """One self-contained HTML page of a training run: recipe, curves, evaluations, per-class AP,
    PR curves, confusion matrix, errors and a gallery; works while the run is still going."""
    from retinacli.commands.report import report

    result = report(run_dir, out=out, overwrite=overwrite, gallery=gallery)
    # Everything below can quote the run folder's files: all of it goes through `shown`.
    console.print(shown(result.status), highlight=False)
    console.print(f"{result.num_evaluations} evaluation(s)", highlight=False)
    for section, why in result.missing.items():
        console.print(f"[yellow]not shown[/] {shown(section)}: {shown(why, keep_newlines=True)}", highlight=False, soft_wrap=True)
    for what in result.left_out:
        console.print(f"[yellow]left out[/] {shown(what)}", highlight=False, soft_wrap=True)
    if result.gallery_source is not None:
        console.print(f"gallery drawn from {shown(result.gallery_source)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {shown(result.path)}", highlight=False, soft_wrap=True)
