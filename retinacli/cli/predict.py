"""`retina predict`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import (
    DetectorArg,
    DeviceOption,
    SetOption,
    TrustCodeOption,
    app,
    console,
    error_console,
    output_dir_option,
    shown,
)
from retinacli.predict.formats import PREDICTION_FORMATS

# The choices of --format: predict.formats' one list (`PredictionFormat`), as an Enum because
# typer checks the values of a repeated option only for Enums (not list[Literal[...]]).
FormatChoice = Enum("FormatChoice", {name: name for name in PREDICTION_FORMATS}, type=str)  # type: ignore[misc]



@app.command("predict")
def predict_command(
    model: DetectorArg,
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
            "model's recipe, 0.05 for COCO evaluation; 0.5 suits pictures]. With an exported file it "
            "may raise the file's built-in threshold (applied exactly), never lower it.",
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
        list[FormatChoice] | None,
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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier `retina predict` output in --output-dir.")
    ] = False,
    trust_code: TrustCodeOption = False,
) -> None:
    """Detect objects in images, folders and videos with a model file or an exported file
    (.onnx, OpenVINO .xml, .ts):
    pictures (or an annotated video) and predictions. An input that cannot be read is skipped and
    named (exit 0 while any input succeeded; exit 2 when none did)."""
    from rich.table import Table

    from retinacli.cli.progress import progress_bar
    from retinacli.commands.predict import predict

    with progress_bar(error_console, "predicting") as progress:
        result = predict(
            model,
            inputs,
            output_dir=output_dir,
            score_thresh=score_thresh,
            overrides=set_ or [],
            device=device,
            images_per_batch=images_per_batch,
            formats=[choice.value for choice in formats or [FormatChoice.json]],
            annotations=annotations,
            overwrite=overwrite,
            trust_code=trust_code,
            progress=progress,
        )
    for video in result.videos:
        console.print(
            f"{shown(video.video)}: {video.frames} frames, {video.num_detections} detections; wrote "
            f"{shown(video.annotated)} and {shown(video.json_path)}",
            highlight=False,
            soft_wrap=True,
        )
    report = result.images
    if report is not None:
        table = Table("image", "detections", "best")
        for entry in report.images:
            dets = entry["detections"]
            best = max(dets, key=lambda d: d["score"]) if dets else None
            table.add_row(
                shown(entry["file"]), str(len(dets)), shown(f"{best['class_name']} {best['score']:.2f}") if best else "—"
            )
        console.print(table)
        files = " and ".join(shown(path) for path in report.written.values())
        console.print(
            f"{len(report.images)} images, {report.num_detections} detections above "
            f"{report.score_thresh:g}; wrote {shown(output_dir)}/ and {files}",
            highlight=False,
            soft_wrap=True,
        )
    skipped = result.skipped
    if skipped:
        error_console.print(
            f"[yellow]warning:[/] {len(skipped)} input(s) skipped, the others' results are written:",
            highlight=False,
        )
        for item in skipped:
            error_console.print(f"  [yellow]skipped[/] {shown(item['file'])}: {shown(item['reason'])}", highlight=False, soft_wrap=True)
