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
    images_per_batch: Annotated[
        int | None,
        typer.Option(
            "--images-per-batch",
            min=1,
            help="Images per batch (data.test.images_per_batch) \\[default: the recipe's, 1]; images are read by "
            "data.num_workers processes. More is faster but changes detections near image borders.",
            show_default=False,
        ),
    ] = None,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="json (predictions.json), coco (predictions_coco.json, with --annotations) or yolo "
            "(labels/*.txt); repeat for several \\[default: json].",
            show_default=False,
        ),
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option("--annotations", help="COCO json whose image ids --format coco uses.", show_default=False),
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Detect objects in images, folders and videos with a model file or an exported .onnx/.ts file:
    pictures (or an annotated video) and predictions."""
    from rich.markup import escape
    from rich.table import Table

    from retinacli.cli.progress import progress_bar
    from retinacli.commands.predict import predict
    from retinacli.errors import UsageError
    from retinacli.evaluation.prediction_formats import PREDICTION_FORMATS

    chosen = formats or ["json"]
    unknown = [f for f in chosen if f not in PREDICTION_FORMATS]
    if unknown:
        raise UsageError(f"--format {unknown[0]}: not a prediction format; use one of {', '.join(PREDICTION_FORMATS)}")
    with progress_bar(error_console, "predicting") as progress:
        result = predict(
            model,
            inputs,
            output_dir=output_dir,
            score_thresh=score_thresh,
            overrides=set_ or [],
            device=device,
            images_per_batch=images_per_batch,
            formats=chosen,  # type: ignore[arg-type]
            annotations=annotations,
            overwrite=overwrite,
            progress=progress,
        )
    for video in result.videos:
        console.print(
            f"{escape(str(video.video))}: {video.frames} frames, {video.num_detections} detections; wrote "
            f"{escape(str(video.annotated))} and {escape(str(video.json_path))}",
            highlight=False,
            soft_wrap=True,
        )
    report = result.images
    if report is None:
        return
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
    files = " and ".join(escape(str(path)) for path in report.written.values())
    console.print(
        f"{len(report.images)} images, {report.num_detections} detections above "
        f"{report.score_thresh:g}; wrote {escape(str(output_dir))}/ and {files}",
        highlight=False,
    )
