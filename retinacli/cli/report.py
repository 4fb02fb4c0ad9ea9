"""`retina report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import OverwriteOption, app, console


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="The run folder (a recipe's output_dir).", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The HTML file to write \\[default: RUN_DIR/report.html].", show_default=False),
    ] = None,
    gallery: Annotated[int, typer.Option("--gallery", min=0, help="How many evaluation images to draw.")] = 8,
    overwrite: OverwriteOption = False,
) -> None:
    """One self-contained HTML page of a training run: recipe, curves, evaluations, per-class AP,
    PR curves, confusion matrix, errors and a gallery; works while the run is still going."""
    from retinacli.commands.report import report

    result = report(run_dir, out=out, overwrite=overwrite, gallery=gallery)
    console.print(result.status, highlight=False)
    console.print(f"{result.num_evaluations} evaluation(s)", highlight=False)
    for section, why in result.missing.items():
        console.print(f"[yellow]not shown[/] {section}: {why}", highlight=False, soft_wrap=True)
    console.print(f"wrote {result.path}", highlight=False, soft_wrap=True)
