"""`retina export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from retinacli.cli.app import ModelArg, OverwriteFileOption, SetOption, app, console, shown


@app.command("export")
def export_command(
    model: ModelArg,
    export_format: Annotated[
        Literal["onnx", "torchscript"],
        typer.Option("--format", help="onnx (runs with onnxruntime alone) or torchscript (torch + torchvision)."),
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The file to write \\[default: beside MODEL, .onnx or .ts]; an existing file is replaced only with --overwrite.",
            show_default=False,
        ),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18 or newer).")] = 18,
    network_only: Annotated[
        bool,
        typer.Option("--network-only", help="Only the network: per-level logits, box deltas and anchors, no postprocessing."),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Run the file on a few images and compare with the PyTorch model."),
    ] = True,
    set_: SetOption = None,
    overwrite: OverwriteFileOption = False,
) -> None:
    """Export a model file to ONNX or TorchScript: uint8 image in, boxes, scores and classes out."""
    from retinacli.commands.export import export

    with console.status("exporting and checking" if verify else "exporting"):
        result = export(
            model,
            export_format=export_format,
            out=out,
            opset=opset,
            network_only=network_only,
            verify=verify,
            overrides=set_ or [],
            overwrite=overwrite,
        )
    size = result.path.stat().st_size / 2**20
    kind = f"{export_format}, opset {opset}" if export_format == "onnx" else export_format
    what = "network only" if network_only else "whole detector"
    console.print(f"wrote {shown(result.path)} ({kind}, {what}, {size:.1f} MiB) in {result.seconds:.1f} s", highlight=False, soft_wrap=True)
    meta = result.metadata
    console.print(
        f"input: (3, H, W) uint8 {meta.input_format}, resized to short side {meta.short_size} (long side at most "
        f"{meta.max_size}); classes: {shown(', '.join(meta.class_names))}",
        highlight=False,
        soft_wrap=True,
    )
    parity = result.parity
    if parity is None:
        console.print("[yellow]not checked[/] (--no-verify)")
    elif network_only:
        console.print(
            f"checked on {shown(result.check_images)}: outputs equal (largest differences: score "
            f"{parity.max_score_difference:.2g}, anchor {parity.max_box_difference:.2g} px)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"checked on {shown(result.check_images)}: {parity.detections} detections equal (largest "
            f"differences: box {parity.max_box_difference:.2g} px, score {parity.max_score_difference:.2g})",
            highlight=False,
            soft_wrap=True,
        )
