"""`retina eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import (
    DetectorArg,
    DeviceOption,
    JsonOption,
    SetOption,
    TrustCodeOption,
    app,
    console,
    error_console,
    output_dir_option,
    shown,
)


@app.command("eval")
def eval_command(
    model: DetectorArg,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="COCO json to evaluate on instead of the recipe's data.test.dataset (with --images).",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder the --dataset json's file_names are relative to.", show_default=False),
    ] = None,
    set_: SetOption = None,
    output_dir: Annotated[
        Path | None,
        output_dir_option(
            "Folder for coco_results.json and metrics.json: a new or empty folder, or an earlier "
            "`retina eval` output with --overwrite \\[default: <model dir>/eval_<model stem>]."
        ),
    ] = None,
    images_per_batch: Annotated[
        int | None,
        typer.Option(
            "--images-per-batch",
            help="Images per inference batch (data.test.images_per_batch) \\[default: the recipe's, 1]. "
            "More is faster but changes detections near image borders.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = None,
    diagnostics: Annotated[
        bool,
        typer.Option(
            "--diagnostics",
            help="Also write PR curves, the confusion matrix, an error breakdown and pictures of the "
            "images with the most errors beside metrics.json.",
        ),
    ] = False,
    diagnostics_thresh: Annotated[
        float | None,
        typer.Option(
            "--diagnostics-thresh",
            min=0.0,
            max=1.0,
            help="Score threshold for the confusion matrix, precision/recall and error counts "
            "\\[default: each class's F1-optimal score].",
            show_default=False,
        ),
    ] = None,
    worst: Annotated[
        int | None,
        typer.Option("--worst", min=0, help="How many of the images with the most errors to draw \\[default: 12].", show_default=False),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier `retina eval` output in --output-dir.")
    ] = False,
    trust_code: TrustCodeOption = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help=r"CPU threads of an exported file's runtime \[default: the runtime's].", show_default=False
        ),
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Resample the images this many times (1000 is usual) for 95% intervals of AP and AP50, "
            "written as AP_ci and AP50_ci \\[default: 0, none].",
            show_default=False,
        ),
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """COCO box AP of a model file on its recipe's test set (or --dataset/--images), or of an
    exported file (.onnx, OpenVINO .xml) on --dataset/--images."""
    from retinacli.cli.progress import progress_bar
    from retinacli.cli.render import diagnostics_summary, interval_line, metrics_table
    from retinacli.commands.evaluate import evaluate
    from retinacli.errors import UsageError
    from retinacli.evaluation.diagnostics import DiagnosticsOptions

    if not diagnostics and (diagnostics_thresh is not None or worst is not None):
        raise UsageError("--diagnostics-thresh and --worst go with --diagnostics")
    options = (
        DiagnosticsOptions(threshold=diagnostics_thresh, worst_images=12 if worst is None else worst)
        if diagnostics
        else None
    )

    with progress_bar(error_console, "evaluating", disable=as_json) as progress:
        result = evaluate(
            model,
            dataset=dataset,
            images=images,
            overrides=set_ or [],
            output_dir=output_dir,
            images_per_batch=images_per_batch,
            device=device,
            overwrite=overwrite,
            progress=progress,
            diagnostics=options,
            trust_code=trust_code,
            threads=threads,
            bootstrap=bootstrap,
        )
    metrics = result.metrics
    if as_json:
        typer.echo(json.dumps(metrics, indent=1))
        return
    if result.class_note:
        console.print(f"[cyan]note[/] {shown(result.class_note)}", highlight=False)
    console.print(metrics_table(metrics, title=f"COCO box AP, {metrics['num_images']} images"))
    if bootstrap:
        console.print(interval_line(metrics), highlight=False)
    for note in metrics["notes"]:
        console.print(f"[yellow]note[/] {shown(note)}", highlight=False)
    console.print(
        f"{metrics['num_detections']} detections, {metrics['images_per_second']:.2f} images/s\n"
        f"wrote {shown(result.results_path)}\nwrote {shown(result.metrics_path)}",
        highlight=False,
        soft_wrap=True,
    )
    if diagnostics:
        console.print(diagnostics_summary(metrics["diagnostics"]))
        console.print(f"wrote diagnostics (PNG and JSON) to {shown(result.output_dir)}", highlight=False, soft_wrap=True)
