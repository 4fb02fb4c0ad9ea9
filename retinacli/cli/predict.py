"""`retina predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import (
    DeviceOption,
    ModelArg,
    OverwriteOption,
    SetOption,
    app,
    console,
    error_console,
    output_dir_option,
)


@app.command("predict")
def predict_command(
    model: ModelArg,
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Image files or folders (walked recursively, sorted).", show_default=False),
    ],
    output_dir: Annotated[
        Path, output_dir_option("Folder for the drawn pictures and predictions.json.")
    ] = Path("predictions"),
    score_thresh: Annotated[
        float | None,
        typer.Option(
            "--score-thresh",
            help="Keep detections scoring above this (model.test.score_thresh) \\[default: the "
            "model's recipe, 0.05 for COCO evaluation; 0.5 suits pictures].",
            show_default=False,
        ),
    ] = None,
    set_: SetOption = None,
    device: DeviceOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Detect objects in images: pictures with boxes drawn, and predictions.json."""
    from rich.markup import escape
    from rich.table import Table

    from retinacli.cli.progress import progress_bar
    from retinacli.commands.predict import predict

    with progress_bar(error_console, "predicting") as progress:
        report = predict(
            model,
            inputs,
            output_dir=output_dir,
            score_thresh=score_thresh,
            overrides=set_ or [],
            device=device,
            overwrite=overwrite,
            progress=progress,
        )
    table = Table("image", "detections", "best")
    for entry in report.images:
        dets = entry["detections"]
        best = max(dets, key=lambda d: d["score"]) if dets else None
        table.add_row(
            escape(entry["file"]), str(len(dets)), escape(f"{best['class_name']} {best['score']:.2f}") if best else "—"
        )
    console.print(table)
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(skipped['file'])}: {escape(skipped['reason'])}", highlight=False)
    console.print(
        f"{len(report.images)} images, {report.num_detections} detections above "
        f"{report.score_thresh:g}; wrote {escape(str(output_dir))}/ and {escape(str(report.json_path))}",
        highlight=False,
    )
